"""load_settings on pydantic-settings: defaults < the YAML file < environment variables, one
list of variables (ENV_VARS) for every key, and errors that name the key and its origin."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from loomos.settings import (
    DEFAULT_CONFIG_FILE,
    ENV_OVERRIDES,
    ENV_VARS,
    ConfigError,
    EnvVar,
    Settings,
    leaf_keys,
    load_settings,
    project_root,
)
from tests.helpers import REPO
from tests.security.authn.settings_samples import SAMPLES as AUTHN_SAMPLES
from tests.security.authz.settings_samples import SAMPLES as AUTHZ_SAMPLES
from tests.security.crypto.settings_samples import SAMPLES as CRYPTO_SAMPLES

# Every variable the README documented before the one list, with its key: they keep working.
DOCUMENTED = {
    "TEMPORAL_ADDRESS": "temporal.address",
    "TEMPORAL_NAMESPACE": "temporal.namespace",
    "LOOMOS_TEMPORAL_UI_PORT": "temporal.ui_port",
    "LOOMOS_TEMPORAL_DB_FILE": "temporal.db_file",
    "LOOMOS_API_HOST": "api.host",
    "LOOMOS_API_PORT": "api.port",
    "LOOMOS_DB_URL": "loomdb.url",
    "LOOMOS_CHECKPOINT_ROOT": "checkpoints.root",
    "LOOMOS_LOG_ROOT": "logs.root",
    "LOOMOS_LOG_FORMAT": "logs.format",
    "LOOMOS_POOL": "node.pool",
    "LOOMOS_NODE_ID": "node.node_id",
    "LOOMOS_NODE_HOST": "node.host",
    "LOOMOS_NODE_CPU_SLOTS": "node.cpu_slots",
    "LOOMOS_NODE_HEARTBEAT_TIMEOUT_S": "node.heartbeat_timeout_s",
    "LOOMOS_NODE_CANCEL_GRACE_S": "node.cancel_grace_s",
    "LOOMOS_NODE_PRICE_PER_SLOT_HOUR": "node.price_per_slot_hour",
    "LOOMOS_NODE_OFFER": "node.offer",
    "LOOMOS_NODE_PRICING_MODEL": "node.pricing_model",
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- the one list -------------------------------------------------------------------------------


def test_every_key_has_exactly_one_variable_and_every_variable_a_key() -> None:
    keys = [var.key for var in ENV_VARS]
    assert sorted(keys) == sorted(leaf_keys())
    assert len(set(keys)) == len(keys)
    names = [var.name for var in ENV_VARS]
    assert len(set(names)) == len(names)
    assert all(var.description for var in ENV_VARS)


def test_documented_variables_keep_their_keys() -> None:
    assert DOCUMENTED.items() <= ENV_OVERRIDES.items()


# A value for each key's variable, and what the key reads then (run from an empty folder, no file:
# relative paths resolve against it).
SAMPLES: dict[str, tuple[str, object]] = {
    "temporal.address": ("temporal.example:7233", "temporal.example:7233"),
    "temporal.namespace": ("prod", "prod"),
    "temporal.ui_port": ("9233", 9233),
    "temporal.db_file": ("/srv/t.db", "/srv/t.db"),
    "temporal.search_attributes": ('{"LoomRegion": "Keyword"}', {"LoomRegion": "Keyword"}),
    "temporal.envconfig": ("false", False),
    "temporal.profile": ("prod", "prod"),
    "temporal.config_file": ("/etc/temporal.toml", "/etc/temporal.toml"),
    "temporal.api_key": ("k-123", "k-123"),
    "temporal.tls.client_cert": ("/pki/c.pem", "/pki/c.pem"),
    "temporal.tls.client_key": ("/pki/k.pem", "/pki/k.pem"),
    "temporal.tls.server_ca_cert": ("/pki/ca.pem", "/pki/ca.pem"),
    "temporal.tls.server_name": ("temporal.internal", "temporal.internal"),
    "api.host": ("0.0.0.0", "0.0.0.0"),
    "api.port": ("9080", 9080),
    "api.tls_cert": ("/pki/api.pem", "/pki/api.pem"),
    "api.tls_key": ("/pki/api-key.pem", "/pki/api-key.pem"),
    "api.hsts": ("false", False),
    "loomdb.url": ("postgresql://u:p@db/loom", "postgresql://u:p@db/loom"),
    "checkpoints.root": ("s3://b/ckpt", "s3://b/ckpt"),
    "logs.root": ("/var/log/loomos", "/var/log/loomos"),
    "logs.format": ("json", "json"),
    "node.pool": ("gpu-a", "gpu-a"),
    "node.node_id": ("n-1", "n-1"),
    "node.host": ("10.0.0.5", "10.0.0.5"),
    "node.cpu_slots": ("16", 16),
    "node.heartbeat_timeout_s": ("12.5", 12.5),
    "node.cancel_grace_s": ("0", 0),
    "node.register_interval_s": ("5", 5),
    "node.price_per_slot_hour": ("2.5", 2.5),
    "node.offer": ("aws/us-east-1/-/p5.48xlarge", "aws/us-east-1/-/p5.48xlarge"),
    "node.pricing_model": ("spot", "spot"),
    "node.allowed_roots": ('["/srv/jobs", "/data"]', ["/srv/jobs", "/data"]),
    "node.allowed_programs": ('["bash"]', ["bash"]),
    # Each security section lists its own, beside its tests.
    **AUTHN_SAMPLES,
    **AUTHZ_SAMPLES,
    **CRYPTO_SAMPLES,
}


def test_samples_cover_every_key() -> None:
    assert SAMPLES.keys() == set(leaf_keys())


@pytest.mark.parametrize("var", ENV_VARS, ids=lambda v: v.name)
def test_each_variable_sets_its_key(var: EnvVar) -> None:
    raw, expected = SAMPLES[var.key]
    settings = load_settings(env={var.name: raw})
    value = settings.get(var.key)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    assert value == expected
    assert settings.origins == {var.key: f"${var.name}"}


# --- sources and precedence ---------------------------------------------------------------------


def test_defaults_then_file_then_variables(hermetic: Path) -> None:
    file = write(
        hermetic / DEFAULT_CONFIG_FILE, "node:\n  cpu_slots: 4\n  pool: from-file\napi:\n  port: 9000\n"
    )
    settings = load_settings(env={"LOOMOS_NODE_CPU_SLOTS": "8"})
    assert settings.node.cpu_slots == 8  # variable over file
    assert settings.node.pool == "from-file"  # file over default
    assert settings.api.port == 9000 and settings.api.host == "127.0.0.1"  # default where neither says
    assert settings.origins["node.cpu_slots"] == "$LOOMOS_NODE_CPU_SLOTS"
    assert settings.origins["node.pool"] == str(file.resolve())
    assert "api.host" not in settings.origins
    assert settings.source_file == file.resolve()


def test_nearest_file_upward_and_loomos_config(hermetic: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(hermetic / DEFAULT_CONFIG_FILE, "api:\n  port: 9001\n")
    sub = hermetic / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert load_settings(env={}).api.port == 9001
    assert project_root() == hermetic.resolve()
    other = write(hermetic / "elsewhere" / "x.yaml", "api:\n  port: 9002\n")
    monkeypatch.setenv("LOOMOS_CONFIG", str(other))
    assert load_settings(env={}).api.port == 9002
    assert project_root() == other.parent.resolve()


def test_no_file_is_defaults(hermetic: Path) -> None:
    settings = load_settings(env={})
    assert settings.source_file is None and settings.origins == {}
    assert settings.checkpoints.root == str(hermetic.resolve() / ".loomos" / "checkpoints")


def test_relative_paths_resolve_against_the_files_folder(hermetic: Path) -> None:
    folder = hermetic / "conf"
    write(
        folder / "loom.yaml",
        "temporal:\n  db_file: state/t.db\n  config_file: temporal.toml\n  tls:\n    client_cert: pki/c.pem\n"
        "loomdb:\n  url: sqlite:///state/l.sqlite\ncheckpoints:\n  root: s3://bucket/ckpt\n",
    )
    s = load_settings(
        folder / "loom.yaml", env={"LOOMOS_LOG_ROOT": "logs", "LOOMOS_TEMPORAL_TLS_CLIENT_KEY": "k.pem"}
    )
    base = folder.resolve()
    assert s.temporal.db_file == str(base / "state" / "t.db")
    assert s.temporal.config_file == str(base / "temporal.toml")
    assert s.temporal.tls.client_cert == str(base / "pki" / "c.pem")
    assert s.temporal.tls.client_key == str(base / "k.pem")
    assert s.loomdb.url == f"sqlite:///{base / 'state' / 'l.sqlite'}"
    assert s.checkpoints.root == "s3://bucket/ckpt"
    assert s.logs.root == str(base / "logs")


def test_empty_or_null_variable_clears_what_the_file_sets(hermetic: Path) -> None:
    write(hermetic / DEFAULT_CONFIG_FILE, "node:\n  node_id: from-file\n  price_per_slot_hour: 2.5\n")
    s = load_settings(env={"LOOMOS_NODE_ID": "", "LOOMOS_NODE_PRICE_PER_SLOT_HOUR": "null"})
    assert s.node.node_id is None and s.node.price_per_slot_hour is None


def test_mapping_variable_is_json_added_to_the_files(hermetic: Path) -> None:
    write(hermetic / DEFAULT_CONFIG_FILE, "temporal:\n  search_attributes:\n    LoomA: Keyword\n")
    s = load_settings(env={"LOOMOS_TEMPORAL_SEARCH_ATTRIBUTES": '{"LoomB": "Int"}'})
    assert s.temporal.search_attributes == {"LoomA": "Keyword", "LoomB": "Int"}


def test_settings_in_code_read_no_environment(monkeypatch: pytest.MonkeyPatch, hermetic: Path) -> None:
    write(hermetic / DEFAULT_CONFIG_FILE, "api:\n  port: 9003\n")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "elsewhere:1")
    monkeypatch.setenv("LOOMOS_API_PORT", "9004")
    assert Settings().temporal.address == "127.0.0.1:7233" and Settings().api.port == 8080
    assert Settings(api={"port": 9005}).api.port == 9005
    assert Settings.model_validate({"api": {"port": 9006}}).api.port == 9006
    assert load_settings().api.port == 9004  # os.environ by default


def test_the_repos_file_loads_as_before() -> None:
    s = load_settings(REPO / DEFAULT_CONFIG_FILE, env={})
    assert s.temporal.address == "127.0.0.1:7233" and s.temporal.namespace == "default"
    assert s.temporal.search_attributes["LoomGpuCount"] == "Int"
    assert s.temporal.envconfig is True and s.temporal.api_key is None and s.temporal.tls.client_cert is None
    assert s.node.cpu_slots == 2 and s.loomdb.url == f"sqlite:///{REPO / '.loomos' / 'loomdb.sqlite'}"


def test_as_env_round_trips(tmp_path: Path) -> None:
    s = load_settings(
        REPO / DEFAULT_CONFIG_FILE, env={"LOOMOS_TEMPORAL_API_KEY": "secret", "LOOMOS_NODE_ID": "n7"}
    )
    again = load_settings(write(tmp_path / "other.yaml", "node:\n  cpu_slots: 99\n"), env=s.as_env())
    assert again.model_dump() == s.model_dump()
    assert again.temporal.api_key is not None and again.temporal.api_key.get_secret_value() == "secret"


def test_api_key_is_not_printed_by_accident() -> None:
    s = load_settings(env={"LOOMOS_TEMPORAL_API_KEY": "very-secret"})
    assert "very-secret" not in repr(s) and "very-secret" not in s.model_dump_json()


# --- errors: key, message, origin ---------------------------------------------------------------


def test_bad_variable_names_key_and_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"LOOMOS_NODE_CPU_SLOTS": "many", "LOOMOS_API_PORT": "0"})
    assert str(caught.value) == (
        "api.port: Input should be greater than or equal to 1 (from $LOOMOS_API_PORT); "
        "node.cpu_slots: Input should be a valid integer, unable to parse string as an integer "
        "(from $LOOMOS_NODE_CPU_SLOTS)"
    )


def test_bad_file_value_and_unknown_keys_name_the_file(hermetic: Path) -> None:
    file = write(hermetic / DEFAULT_CONFIG_FILE, "node:\n  cpu_slots: 0\n  gpus: 8\nTemporal: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env={})
    where = f"(from {file.resolve()})"
    assert str(caught.value) == (
        f"node.cpu_slots: Input should be greater than or equal to 1 {where}; "
        f"node.gpus: unknown key {where}; Temporal: unknown key {where}"
    )


def test_variable_errors_name_the_variables() -> None:
    with pytest.raises(
        ConfigError, match=r"^temporal.address: expected host:port, got 'nohost' \(from \$TEMPORAL_"
    ):
        load_settings(env={"TEMPORAL_ADDRESS": "nohost"})
    with pytest.raises(
        ConfigError, match=r"not both \(from \$LOOMOS_NODE_OFFER, \$LOOMOS_NODE_PRICE_PER_SLOT_HOUR\)"
    ):
        load_settings(
            env={"LOOMOS_NODE_OFFER": "aws/us-east-1/-/p5.48xlarge", "LOOMOS_NODE_PRICE_PER_SLOT_HOUR": "1"}
        )


def test_section_error_without_variables_names_the_file(hermetic: Path) -> None:
    file = write(
        hermetic / "x.yaml", "node:\n  offer: aws/us-east-1/-/p5.48xlarge\n  price_per_slot_hour: 1\n"
    )
    with pytest.raises(ConfigError, match=rf"^node: .*not both \(from {file.resolve()}\)$"):
        load_settings(file, env={})


def test_bad_json_variable() -> None:
    with pytest.raises(
        ConfigError, match=r"^temporal.search_attributes: not valid JSON: .*\(from \$LOOMOS_TEMPORAL"
    ):
        load_settings(env={"LOOMOS_TEMPORAL_SEARCH_ATTRIBUTES": "LoomA=Keyword"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a list\n", "expected a mapping at the top level"),
        ("temporal: [\n", "not valid YAML"),
    ],
)
def test_unusable_file(tmp_path: Path, text: str, message: str) -> None:
    file = write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=rf"^{file}: {message}"):
        load_settings(file, env={})


def test_missing_named_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOMOS_CONFIG", str(tmp_path / "nowhere.yaml"))
    with pytest.raises(ConfigError, match=r"nowhere.yaml: cannot read \(No such file or directory\)"):
        load_settings(env={})
