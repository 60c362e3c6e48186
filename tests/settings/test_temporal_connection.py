"""connect_temporal's arguments: Temporal's client profile (temporalio.envconfig: its TOML file
and TEMPORAL_* variables) with LoomOS's settings over it, TLS files read and checked, errors
that name the key; and `loomos dev`'s children connecting plainly to their own dev server."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from loomos.devstack.binaries import temporal_cli
from loomos.devstack.stack import StackLayout
from loomos.settings import ENV_VARS, ConfigError, Settings, load_settings
from loomos.temporal.client import connect_temporal, temporal_connect_config, temporal_connection
from tests.helpers import REPO

CERT = b"-----BEGIN CERTIFICATE-----\nMIIBclient\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIEkey\n-----END PRIVATE KEY-----\n"
CA = b"-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n"


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    folder = tmp_path / "pki"
    write(folder / "client.pem", CERT)
    write(folder / "client.key", KEY)
    write(folder / "ca.pem", CA)
    return folder


@pytest.fixture
def toml(tmp_path: Path, pki: Path) -> Path:
    """A client config as the `temporal` CLI writes it: a local profile and a cloud one."""
    return write(
        tmp_path / "temporal.toml",
        f"""
[profile.default]
address = "localhost:7233"

[profile.prod]
address = "prod.a1b2c.tmprl.cloud:7233"
namespace = "prod.a1b2c"
api_key = "profile-key"

[profile.prod.tls]
client_cert_path = "{pki / "client.pem"}"
client_key_path = "{pki / "client.key"}"
server_ca_cert_path = "{pki / "ca.pem"}"
server_name = "prod.internal"
""",
    )


def settings(file: Path | None = None, **env: str) -> Settings:
    return load_settings(file or "/dev/null", env=env)


# --- (a) a plain address ------------------------------------------------------------------------


def test_plain_address_from_the_repos_file() -> None:
    s = load_settings(REPO / "temporal-dev.yaml", env={})
    assert temporal_connect_config(s, env={}) == {
        "target_host": "127.0.0.1:7233",
        "namespace": "default",
        "tls": False,
    }


def test_settings_built_in_code_connect_where_they_say() -> None:
    s = Settings.model_validate({"temporal": {"address": "10.0.0.1:7233", "namespace": "ns"}})
    conn = temporal_connection(s, env={})
    assert conn.config == {"target_host": "10.0.0.1:7233", "namespace": "ns", "tls": False}
    assert conn.origins["target_host"] == "temporal.address (settings)"
    assert temporal_connect_config(Settings(), env={})["target_host"] == "127.0.0.1:7233"


# --- (b) a TOML profile with TLS files and an API key -------------------------------------------


def test_profile_with_tls_files_and_api_key(toml: Path) -> None:
    s = settings(LOOMOS_TEMPORAL_PROFILE="prod", LOOMOS_TEMPORAL_CONFIG_FILE=str(toml))
    conn = temporal_connection(s, env={})
    assert conn.profile == "prod"
    config = conn.config
    assert config["target_host"] == "prod.a1b2c.tmprl.cloud:7233"
    assert config["namespace"] == "prod.a1b2c"
    assert config["api_key"] == "profile-key"
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert (tls.client_cert, tls.client_private_key, tls.server_root_ca_cert) == (CERT, KEY, CA)
    assert tls.domain == "prod.internal"
    assert conn.origins["target_host"] == f"profile 'prod' ({toml})"
    assert conn.origins["profile"] == "temporal.profile ($LOOMOS_TEMPORAL_PROFILE)"


def test_profile_chosen_by_envconfigs_own_variables(toml: Path) -> None:
    env = {"TEMPORAL_CONFIG_FILE": str(toml), "TEMPORAL_PROFILE": "prod", "TEMPORAL_API_KEY": "env-key"}
    conn = temporal_connection(settings(), env=env)
    assert conn.config["namespace"] == "prod.a1b2c"
    assert conn.config["api_key"] == "env-key"  # envconfig: its variables over its file
    assert conn.origins["api_key"] == "profile 'prod' ($TEMPORAL_API_KEY)"
    assert conn.origins["profile"] == "$TEMPORAL_PROFILE"


def test_api_key_alone_turns_tls_on() -> None:
    env = {"TEMPORAL_ADDRESS": "ns.tmprl.cloud:7233", "TEMPORAL_API_KEY": "k"}
    conn = temporal_connection(settings(), env=env)
    assert conn.config == {
        "target_host": "ns.tmprl.cloud:7233",
        "namespace": "default",
        "api_key": "k",
        "tls": True,
    }
    assert conn.origins["target_host"] == "profile 'default' ($TEMPORAL_ADDRESS)"
    # TEMPORAL_ADDRESS is LoomOS's variable too: with it, temporal.address says the same.
    conn = temporal_connection(settings(**env), env=env)
    assert conn.config["target_host"] == "ns.tmprl.cloud:7233" and conn.config["tls"] is True
    assert conn.origins["target_host"] == "temporal.address ($TEMPORAL_ADDRESS)"


def test_default_profile_from_temporals_default_path(tmp_path: Path) -> None:
    write(tmp_path / "xdg" / "temporalio" / "temporal.toml", '[profile.default]\naddress = "home:7233"\n')
    conn = temporal_connection(settings(), env={})
    assert conn.config["target_host"] == "home:7233"
    assert conn.origins["target_host"] == "profile 'default' (Temporal's default config file)"


def test_profile_tls_disabled_by_envconfig_variable(toml: Path) -> None:
    env = {"TEMPORAL_CONFIG_FILE": str(toml), "TEMPORAL_PROFILE": "prod", "TEMPORAL_TLS": "false"}
    config = temporal_connect_config(settings(), env=env)
    assert config["tls"] is False and config["api_key"] == "profile-key"


def test_inline_pem_data_from_envconfig_variables() -> None:
    env = {"TEMPORAL_TLS_SERVER_CA_CERT_DATA": CA.decode()}
    tls = temporal_connect_config(settings(), env=env)["tls"]
    assert isinstance(tls, TLSConfig) and tls.server_root_ca_cert == CA and tls.client_cert is None


# --- (c) LoomOS's settings override the profile where set ---------------------------------------


def test_loomos_settings_override_the_profile(tmp_path: Path, toml: Path) -> None:
    mine = tmp_path / "mine"
    write(mine / "c.pem", CERT.replace(b"client", b"mine"))
    write(mine / "k.pem", KEY.replace(b"key", b"mine"))
    file = write(
        tmp_path / "loom.yaml",
        f"temporal:\n  address: 10.1.1.1:7233\n  profile: prod\n  config_file: {toml}\n"
        "  tls:\n    client_cert: mine/c.pem\n    client_key: mine/k.pem\n",
    )
    s = settings(file, LOOMOS_TEMPORAL_API_KEY="loomos-key", LOOMOS_TEMPORAL_TLS_SERVER_NAME="loomos.sni")
    conn = temporal_connection(s, env={})
    c = conn.config
    assert c["target_host"] == "10.1.1.1:7233"  # the file's
    assert c["namespace"] == "prod.a1b2c"  # not in the file: the profile's, not LoomOS's default
    assert c["api_key"] == "loomos-key"
    tls = c["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.client_cert == CERT.replace(b"client", b"mine") and tls.client_private_key == KEY.replace(
        b"key", b"mine"
    )
    assert tls.server_root_ca_cert == CA  # LoomOS sets no CA: the profile's stays
    assert tls.domain == "loomos.sni"
    assert conn.origins["target_host"] == f"temporal.address ({file.resolve()})"
    assert conn.origins["namespace"] == f"profile 'prod' ({toml})"
    assert conn.origins["api_key"] == "temporal.api_key ($LOOMOS_TEMPORAL_API_KEY)"
    assert conn.origins["tls"].startswith(
        f"profile 'prod' ({toml}), temporal.tls.client_cert ({file.resolve()})"
    )


def test_loomos_tls_over_a_profile_that_disables_it(pki: Path) -> None:
    s = settings(LOOMOS_TEMPORAL_TLS_SERVER_CA_CERT=str(pki / "ca.pem"))
    tls = temporal_connect_config(s, env={"TEMPORAL_TLS": "false"})["tls"]
    assert isinstance(tls, TLSConfig) and tls.server_root_ca_cert == CA


def test_envconfig_false_reads_no_profile(toml: Path) -> None:
    env = {"TEMPORAL_CONFIG_FILE": str(toml), "TEMPORAL_PROFILE": "prod", "TEMPORAL_API_KEY": "k"}
    conn = temporal_connection(settings(LOOMOS_TEMPORAL_ENVCONFIG="false"), env=env)
    assert conn.config == {"target_host": "127.0.0.1:7233", "namespace": "default", "tls": False}
    assert conn.profile is None


# --- (d) bad input: a ConfigError naming the key ------------------------------------------------


def test_missing_cert_file_from_loomos_settings(tmp_path: Path, pki: Path) -> None:
    s = settings(
        LOOMOS_TEMPORAL_TLS_CLIENT_CERT=str(tmp_path / "gone.pem"),
        LOOMOS_TEMPORAL_TLS_CLIENT_KEY=str(pki / "client.key"),
    )
    with pytest.raises(ConfigError) as caught:
        temporal_connect_config(s, env={})
    assert str(caught.value) == (
        f"temporal.tls.client_cert: cannot read {tmp_path / 'gone.pem'} (No such file or directory) "
        "(from $LOOMOS_TEMPORAL_TLS_CLIENT_CERT)"
    )


def test_missing_cert_file_from_the_profile(toml: Path, pki: Path) -> None:
    (pki / "ca.pem").unlink()
    s = settings(LOOMOS_TEMPORAL_PROFILE="prod", LOOMOS_TEMPORAL_CONFIG_FILE=str(toml))
    with pytest.raises(
        ConfigError,
        match=rf"^temporal.tls.server_ca_cert: cannot read .*ca.pem .*\(from profile 'prod' \({toml}\)\)$",
    ):
        temporal_connect_config(s, env={})


def test_unknown_profile(toml: Path) -> None:
    s = settings(LOOMOS_TEMPORAL_PROFILE="staging", LOOMOS_TEMPORAL_CONFIG_FILE=str(toml))
    with pytest.raises(ConfigError) as caught:
        temporal_connect_config(s, env={})
    assert str(caught.value) == (
        f"temporal.profile: no profile 'staging' in {toml} (it has: default, prod)"
        " (from $LOOMOS_TEMPORAL_PROFILE)"
    )
    with pytest.raises(
        ConfigError, match=r"^temporal.profile: no profile 'x' in .* \(from \$TEMPORAL_PROFILE\)$"
    ):
        temporal_connect_config(settings(), env={"TEMPORAL_PROFILE": "x", "TEMPORAL_CONFIG_FILE": str(toml)})


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    s = settings(LOOMOS_TEMPORAL_CONFIG_FILE=str(tmp_path / "none.toml"))
    with pytest.raises(
        ConfigError,
        match=r"^temporal.config_file: cannot read .*none.toml \(No such file or directory\)"
        r" \(from \$LOOMOS_TEMPORAL_CONFIG_FILE\)$",
    ):
        temporal_connect_config(s, env={})
    broken = write(tmp_path / "broken.toml", "[profile.default\naddress = \n")
    with pytest.raises(
        ConfigError, match=r"^temporal.config_file: .*TOML.* \(from \$TEMPORAL_CONFIG_FILE\)$"
    ):
        temporal_connect_config(settings(), env={"TEMPORAL_CONFIG_FILE": str(broken)})


def test_not_pem_and_half_a_key_pair(tmp_path: Path, pki: Path) -> None:
    der = write(tmp_path / "c.der", b"\x30\x82\x01")
    with pytest.raises(
        ConfigError,
        match=r"^temporal.tls.server_ca_cert: .*c.der is not PEM .*\(from \$LOOMOS_TEMPORAL_TLS_SERVER_CA",
    ):
        temporal_connect_config(settings(LOOMOS_TEMPORAL_TLS_SERVER_CA_CERT=str(der)), env={})
    with pytest.raises(
        ConfigError, match=r"^temporal.tls.client_key: missing, mTLS needs it with client_cert"
    ):
        temporal_connect_config(settings(LOOMOS_TEMPORAL_TLS_CLIENT_CERT=str(pki / "client.pem")), env={})


# --- loomos dev's children: a plain connection to the stack's own dev server --------------------


def test_child_env_connects_children_plainly(
    tmp_path: Path, toml: Path, pki: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This machine is set up for Temporal Cloud every way there is...
    write(
        tmp_path / "xdg" / "temporalio" / "temporal.toml",
        toml.read_text().replace("[profile.prod", "[profile.x"),
    )
    for name, value in {
        "TEMPORAL_PROFILE": "prod", "TEMPORAL_CONFIG_FILE": str(toml), "TEMPORAL_API_KEY": "k",
        "TEMPORAL_TLS": "true", "LOOMOS_TEMPORAL_API_KEY": "k2",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    yaml = write(tmp_path / "loom.yaml", f"temporal:\n  tls:\n    server_ca_cert: {pki / 'ca.pem'}\n")
    monkeypatch.setenv("LOOMOS_CONFIG", str(yaml))
    stack_settings = load_settings()
    stack_settings.temporal.address = "127.0.0.1:17233"
    layout = StackLayout(stack_settings, state_dir=tmp_path / "state", node_id="child-node")

    env = layout.child_env()
    assert {var.name for var in ENV_VARS} <= env.keys()
    assert env["LOOMOS_CONFIG"] == str(yaml) and env["PYTHONUNBUFFERED"] == "1"
    assert not {
        k for k in env if k.startswith("TEMPORAL_") and k not in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE")
    }
    # ... and a child, reading its file and this environment, connects to the dev server as it is.
    monkeypatch.setattr("os.environ", env)
    child = load_settings()
    assert child.node.node_id == "child-node"
    assert temporal_connect_config(child) == {
        "target_host": "127.0.0.1:17233",
        "namespace": "default",
        "tls": False,
    }


async def test_connect_temporal_reaches_a_dev_server() -> None:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(), dev_server_log_level="error"
    ) as env:
        address = env.client.service_client.config.target_host
        client = await connect_temporal(Settings.model_validate({"temporal": {"address": address}}))
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        assert info.server_version
        assert client.namespace == "default"
