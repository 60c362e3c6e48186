"""Settings: temporal-dev.yaml, overridden by environment variables.

pydantic-settings merges the sources, in increasing precedence: the defaults below, the YAML
file (LOOMOS_CONFIG, else the nearest temporal-dev.yaml upward from the current folder), then
the variables of ENV_VARS. That one list is what everything else reads too: `loomos dev`
hands its children their settings through it, `loomos config vars` prints it, the README's
table is made from it.

A bad value names its key (`node.cpu_slots: ...`) and where it came from, so an operator
can fix the file or the variable without reading a traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from loomos.security.config import VARIABLES as SECURITY_VARIABLES
from loomos.security.config import SecuritySettings
from loomos.settings_vars import EnvVar

SEARCH_ATTRIBUTE_TYPES = {"Keyword", "Text", "Int", "Double", "Bool", "Datetime", "KeywordList"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemporalTLSSettings(_Section):
    """TLS to Temporal, over whatever Temporal's client profile says (loomos/temporal/client.py).

    Paths to PEM files; they are read when connecting, so a command that never talks to
    Temporal does not fail on a certificate it does not need.
    """

    client_cert: str | None = None
    client_key: str | None = None
    server_ca_cert: str | None = None
    server_name: str | None = Field(None, min_length=1)


class TemporalSettings(_Section):
    address: str = "127.0.0.1:7233"
    ui_port: int = Field(8233, ge=1, le=65535)
    namespace: str = Field("default", min_length=1)
    db_file: str | None = ".loomos/temporal.db"
    search_attributes: dict[str, str] = Field(default_factory=dict)
    # Temporal's own client configuration (temporalio.envconfig: a TOML profile and the TEMPORAL_*
    # variables it defines) is read under these settings unless envconfig is false; see
    # loomos/temporal/client.py for what overrides what.
    envconfig: bool = True
    profile: str | None = Field(None, min_length=1)
    config_file: str | None = None
    api_key: SecretStr | None = None
    tls: TemporalTLSSettings = Field(default_factory=TemporalTLSSettings)

    @field_validator("address")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {v!r}")
        return v

    @field_validator("search_attributes")
    @classmethod
    def _types(cls, v: dict[str, str]) -> dict[str, str]:
        for name, kind in v.items():
            if kind not in SEARCH_ATTRIBUTE_TYPES:
                raise ValueError(f"{name}: type {kind!r} is not one of {sorted(SEARCH_ATTRIBUTE_TYPES)}")
        return v

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0]


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # HTTPS (TLS 1.3 only) with both set: PEM files, read (and checked to go together) when
    # `loomos api` starts.
    tls_cert: str | None = None
    tls_key: str | None = None
    # Strict-Transport-Security on every answer while serving HTTPS.
    hsts: bool = True


class LoomDBSettings(_Section):
    url: str = "sqlite:///.loomos/loomdb.sqlite"

    @field_validator("url")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return v


class CheckpointSettings(_Section):
    root: str = ".loomos/checkpoints"


class LogSettings(_Section):
    root: str = ".loomos/logs"
    format: str = Field("console", pattern=r"^(console|json)$")


class NodeSettings(_Section):
    pool: str = Field("default", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    node_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    host: str = "127.0.0.1"
    cpu_slots: int = Field(2, ge=1, le=1024)
    heartbeat_timeout_s: float = Field(30, gt=0, le=3600)
    cancel_grace_s: float = Field(30, ge=0, le=3600)
    register_interval_s: float = Field(15, gt=0, le=3600)
    price_per_slot_hour: float | None = Field(None, gt=0)
    # The catalog offer this host is ("aws/us-east-1/-/p5.48xlarge", the `key` of
    # `loomos market offers --json`): its price is looked up when the node starts and recorded
    # with every placement on it. For owned hardware set price_per_slot_hour instead.
    offer: str | None = Field(None, pattern=r"^[a-z]+/[A-Za-z0-9-]+/[A-Za-z0-9-]+/[A-Za-z0-9._-]+$")
    pricing_model: str = Field("on_demand", pattern=r"^(on_demand|spot)$")
    # The folders a job's working directory, script and local checkpoints must lie under, so a
    # job cannot run (or write) arbitrary paths of a shared host. None configured: no job runs.
    allowed_roots: list[str] = Field(default_factory=list)
    # Programs a `command:` job may start by name from PATH (its own scripts under the roots
    # need no entry), e.g. ["bash"]; `-m module` and entrypoint jobs need none.
    allowed_programs: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_price_source(self) -> NodeSettings:
        if self.offer and self.price_per_slot_hour is not None:
            raise ValueError("set node.offer (a catalog price) or node.price_per_slot_hour, not both")
        return self


@dataclass(frozen=True)
class _Loading:
    """The sources load_settings adds for one construction (see Settings.settings_customise_sources)."""

    variables: PydanticBaseSettingsSource
    file: PydanticBaseSettingsSource | None


_loading: ContextVar[_Loading | None] = ContextVar("loomos_settings_loading", default=None)


class Settings(BaseSettings):
    # case_sensitive: `Temporal:` in the file is an unknown key, as it always was.
    model_config = SettingsConfigDict(extra="forbid", case_sensitive=True)

    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    loomdb: LoomDBSettings = Field(default_factory=LoomDBSettings)
    checkpoints: CheckpointSettings = Field(default_factory=CheckpointSettings)
    logs: LogSettings = Field(default_factory=LogSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    # Where load_settings found each value it set: "$VARIABLE" or the file's path; keys absent
    # from it are defaults (or were set by code).
    _origins: dict[str, str] = PrivateAttr(default_factory=dict)
    _file: Path | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `Settings(...)` in code (tests, the API harness) is exactly its arguments over the
        # defaults: nothing read from the environment behind its back. Only load_settings adds
        # the variables and the file, which it names for this one construction.
        loading = _loading.get()
        if loading is None:
            return (init_settings,)
        return (init_settings, loading.variables, *((loading.file,) if loading.file else ()))

    @property
    def api_url(self) -> str:
        scheme = "https" if self.api.tls_cert else "http"
        return f"{scheme}://{self.api.host}:{self.api.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.temporal.host}:{self.temporal.ui_port}"

    @property
    def origins(self) -> dict[str, str]:
        """Dotted key -> "$VARIABLE" or the file's path, for the values load_settings read."""
        return dict(self._origins)

    @property
    def source_file(self) -> Path | None:
        """The YAML file load_settings read, if any."""
        return self._file

    def get(self, key: str) -> Any:
        """The value at a dotted key (`node.cpu_slots`, `temporal.tls.client_cert`)."""
        node: Any = self
        for part in key.split("."):
            node = getattr(node, part)
        return node

    def as_env(self) -> dict[str, str]:
        """Every variable of ENV_VARS with this value as text, so that load_settings in another
        process (a `loomos dev` child) arrives at these settings whatever its file says: ""
        stands for None, mappings are JSON, secrets are in clear."""
        env = {}
        for var in ENV_VARS:
            value = self.get(var.key)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is None:
                env[var.name] = ""
            elif isinstance(value, bool):
                env[var.name] = "true" if value else "false"
            elif isinstance(value, dict | list):
                env[var.name] = json.dumps(value)
            else:
                env[var.name] = str(value)
        return env

    def for_local_dev_server(self) -> Settings:
        """A copy that connects to Temporal as a dev server of `loomos dev` takes it: plaintext,
        no API key, no client profile (one for Temporal Cloud on this machine must not apply)."""
        copy = self.model_copy(deep=True)
        copy.temporal.envconfig = False
        copy.temporal.profile = copy.temporal.config_file = copy.temporal.api_key = None
        copy.temporal.tls = TemporalTLSSettings()
        return copy


# THE list of LoomOS's environment variables: each sets one key, every key has one.
# (temporalio.envconfig's own TEMPORAL_* variables are read beneath these when connecting.)
ENV_VARS: tuple[EnvVar, ...] = (
    EnvVar("TEMPORAL_ADDRESS", "temporal.address", "Temporal frontend (gRPC) host:port"),
    EnvVar("TEMPORAL_NAMESPACE", "temporal.namespace", "Temporal namespace"),
    EnvVar("LOOMOS_TEMPORAL_UI_PORT", "temporal.ui_port", "port of the dev server's Web UI (`loomos dev`)"),
    EnvVar("LOOMOS_TEMPORAL_DB_FILE", "temporal.db_file", "the dev server's SQLite file (empty: in memory)"),
    EnvVar(
        "LOOMOS_TEMPORAL_SEARCH_ATTRIBUTES", "temporal.search_attributes",
        'extra search attributes to register, as JSON {"Name": "Keyword"}, added to the file\'s',
    ),
    EnvVar(
        "LOOMOS_TEMPORAL_ENVCONFIG", "temporal.envconfig",
        "read Temporal's client config (TOML profile, TEMPORAL_* variables) under these settings",
    ),
    EnvVar(
        "LOOMOS_TEMPORAL_PROFILE", "temporal.profile",
        "Temporal client profile to read (empty: $TEMPORAL_PROFILE, else default)",
    ),
    EnvVar(
        "LOOMOS_TEMPORAL_CONFIG_FILE", "temporal.config_file",
        "Temporal client config TOML (empty: $TEMPORAL_CONFIG_FILE, else Temporal's default path)",
    ),
    EnvVar("LOOMOS_TEMPORAL_API_KEY", "temporal.api_key", "Temporal API key (Temporal Cloud); turns TLS on"),
    EnvVar(
        "LOOMOS_TEMPORAL_TLS_CLIENT_CERT", "temporal.tls.client_cert", "mTLS: client certificate (PEM file)",
    ),
    EnvVar("LOOMOS_TEMPORAL_TLS_CLIENT_KEY", "temporal.tls.client_key", "mTLS: its private key (PEM file)"),
    EnvVar(
        "LOOMOS_TEMPORAL_TLS_SERVER_CA_CERT", "temporal.tls.server_ca_cert",
        "CA certificate (PEM file) that signed the server's, when not a public one",
    ),
    EnvVar(
        "LOOMOS_TEMPORAL_TLS_SERVER_NAME", "temporal.tls.server_name",
        "name in the server's certificate (SNI), when not the address' host",
    ),
    EnvVar("LOOMOS_API_HOST", "api.host", "address LoomCtl (`loomos api`) binds and clients call"),
    EnvVar("LOOMOS_API_PORT", "api.port", "LoomCtl's port"),
    EnvVar("LOOMOS_API_TLS_CERT", "api.tls_cert", "LoomCtl serves HTTPS (TLS 1.3 only): certificate (PEM)"),
    EnvVar("LOOMOS_API_TLS_KEY", "api.tls_key", "its private key (PEM file)"),
    EnvVar("LOOMOS_API_HSTS", "api.hsts", "send Strict-Transport-Security while serving HTTPS"),
    EnvVar("LOOMOS_DB_URL", "loomdb.url", "LoomDB: sqlite:///file or postgresql://user:password@host/db"),
    EnvVar("LOOMOS_CHECKPOINT_ROOT", "checkpoints.root", "checkpoint root: a folder or s3://bucket/prefix"),
    EnvVar("LOOMOS_LOG_ROOT", "logs.root", "per-attempt training logs on each node"),
    EnvVar("LOOMOS_LOG_FORMAT", "logs.format", "console or json"),
    EnvVar("LOOMOS_POOL", "node.pool", "the pool a node worker joins"),
    EnvVar("LOOMOS_NODE_ID", "node.node_id", "node id (empty: the host name)"),
    EnvVar("LOOMOS_NODE_HOST", "node.host", "address other nodes use to reach this one (MASTER_ADDR)"),
    EnvVar("LOOMOS_NODE_CPU_SLOTS", "node.cpu_slots", "training slots a node without GPUs offers"),
    EnvVar(
        "LOOMOS_NODE_HEARTBEAT_TIMEOUT_S", "node.heartbeat_timeout_s",
        "a node that stops heartbeating this long is lost",
    ),
    EnvVar("LOOMOS_NODE_CANCEL_GRACE_S", "node.cancel_grace_s", "grace after SIGTERM for a last checkpoint"),
    EnvVar(
        "LOOMOS_NODE_REGISTER_INTERVAL_S", "node.register_interval_s",
        "how often a node re-announces itself to its scheduler",
    ),
    EnvVar(
        "LOOMOS_NODE_PRICE_PER_SLOT_HOUR", "node.price_per_slot_hour",
        "amortised $/GPU-hour of owned hardware, for cost records",
    ),
    EnvVar("LOOMOS_NODE_OFFER", "node.offer", "the catalog offer this host is (aws/us-east-1/-/p5.48xlarge)"),
    EnvVar("LOOMOS_NODE_PRICING_MODEL", "node.pricing_model", "on_demand or spot: which price of the offer"),
    EnvVar(
        "LOOMOS_NODE_ALLOWED_ROOTS", "node.allowed_roots",
        'folders jobs may run and checkpoint under on this node, as JSON ["/srv/jobs"]',
    ),
    EnvVar(
        "LOOMOS_NODE_ALLOWED_PROGRAMS", "node.allowed_programs",
        'programs a command: job may start from PATH, as JSON ["bash"]',
    ),
    *SECURITY_VARIABLES,
)  # fmt: skip

# Variable -> dotted key: the view of ENV_VARS that older code reads.
ENV_OVERRIDES: dict[str, str] = {var.name: var.key for var in ENV_VARS}

DEFAULT_CONFIG_FILE = "temporal-dev.yaml"


class ConfigError(ValueError):
    pass


def leaf_keys(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[str]:
    """Every dotted key of the settings, sections descended (a mapping such as
    temporal.search_attributes is one key)."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from leaf_keys(field.annotation, f"{prefix}{name}.")
        else:
            yield prefix + name


def _field_at(key: str) -> FieldInfo:
    model: Any = Settings
    *sections, name = key.split(".")
    for section in sections:
        model = model.model_fields[section].annotation
    return model.model_fields[name]


class _VariablesSource(PydanticBaseSettingsSource):
    """ENV_VARS read from `env`, each at its dotted key. "" and "null" are None (so a variable can
    clear what the file sets); mappings are JSON, decoded as pydantic-settings decodes them."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.env = env
        self.origins: dict[str, str] = {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ goes by ENV_VARS, not by field

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for var in ENV_VARS:
            if var.name not in self.env:
                continue
            raw = self.env[var.name]
            value: Any = None if raw in ("", "null") else raw
            field = _field_at(var.key)
            if value is not None and self.field_is_complex(field):
                try:
                    value = self.decode_complex_value(var.key, field, value)
                except ValueError as exc:
                    raise ConfigError(f"{var.key}: not valid JSON: {exc} (from ${var.name})") from None
            *sections, name = var.key.split(".")
            node = data
            for section in sections:
                node = node.setdefault(section, {})
            node[name] = value
            self.origins[var.key] = f"${var.name}"
        return data


class _FileSource(YamlConfigSettingsSource):
    """pydantic-settings' YAML source, with LoomOS's messages for a file it cannot use."""

    def __init__(self, settings_cls: type[BaseSettings], file: Path) -> None:
        self.file = file
        self.data: dict[str, Any] = {}
        # A missing file is an error here (pydantic-settings would skip it): it was named.
        try:
            file.open("rb").close()
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read ({exc.strerror})") from None
        super().__init__(settings_cls, yaml_file=file)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        try:
            loaded = yaml.safe_load(Path(file_path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{self.file}: cannot read ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self.file}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{self.file}: expected a mapping at the top level")
        self.data = loaded
        return loaded


def _find_config_file() -> Path | None:
    explicit = os.environ.get("LOOMOS_CONFIG")
    if explicit:
        return Path(explicit)
    for folder in (Path.cwd(), *Path.cwd().parents):
        candidate = folder / DEFAULT_CONFIG_FILE
        if candidate.is_file():
            return candidate
    return None


def project_root() -> Path:
    """The folder of the temporal-dev.yaml in use (a checkout), else the current folder."""
    file = _find_config_file()
    return file.resolve().parent if file is not None else Path.cwd()


def _file_keys(data: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for name, value in data.items():
        key = prefix + str(name)
        if isinstance(value, Mapping) and key not in _MAPPING_KEYS:
            yield from _file_keys(value, key + ".")
        else:
            yield key


# Keys whose value is a mapping (temporal.search_attributes): one origin for the whole of it.
_MAPPING_KEYS = {key for key in leaf_keys() if get_origin(_field_at(key).annotation) is dict}


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from `path` (default: LOOMOS_CONFIG or the nearest temporal-dev.yaml).

    Relative paths in the file (db files, roots) are resolved against the file's folder, so a
    worker started from any directory uses the same state folder.
    """
    env = os.environ if env is None else env
    file = Path(path) if path else _find_config_file()
    variables = _VariablesSource(Settings, env)
    file_source = _FileSource(Settings, file) if file is not None else None
    origins = dict.fromkeys(_file_keys(file_source.data), str(file)) if file_source else {}
    token = _loading.set(_Loading(variables, file_source))
    try:
        settings = Settings()
    except ValidationError as exc:
        origins |= variables.origins
        raise ConfigError("; ".join(_problem(err, origins, file) for err in exc.errors())) from None
    finally:
        _loading.reset(token)
    settings._origins = origins | variables.origins
    settings._file = file.resolve() if file is not None else None
    return _resolve_paths(settings, file.resolve().parent if file is not None else Path.cwd())


def _problem(err: Any, origins: Mapping[str, str], file: Path | None) -> str:
    key = ".".join(str(p) for p in err["loc"])
    origin = origins.get(key)
    if origin is None:
        # A whole section's error (node.offer with node.price_per_slot_hour): name the variables
        # that set keys in it, else the file as ever.
        within = sorted({o for k, o in origins.items() if k.startswith(key + ".") and o.startswith("$")})
        origin = ", ".join(within) or (str(file) if file else "defaults")
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{key}: {msg} (from {origin})"


def _resolve_paths(s: Settings, base: Path) -> Settings:
    def absolute(p: str) -> str:
        return p if "://" in p or Path(p).is_absolute() else str((base / p).resolve())

    if s.temporal.db_file:
        s.temporal.db_file = absolute(s.temporal.db_file)
    if s.temporal.config_file:
        s.temporal.config_file = absolute(s.temporal.config_file)
    tls = s.temporal.tls
    for name in ("client_cert", "client_key", "server_ca_cert"):
        if getattr(tls, name):
            setattr(tls, name, absolute(getattr(tls, name)))
    for section, name in ((s.api, "tls_cert"), (s.api, "tls_key"), (s.security.crypto, "key_file")):
        if getattr(section, name):
            setattr(section, name, absolute(getattr(section, name)))
    s.checkpoints.root = absolute(s.checkpoints.root)
    s.logs.root = absolute(s.logs.root)
    s.node.allowed_roots = [absolute(root) for root in s.node.allowed_roots]
    if s.loomdb.url.startswith("sqlite:///") and not s.loomdb.url.startswith("sqlite:////"):
        rel = s.loomdb.url.removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            s.loomdb.url = "sqlite:///" + absolute(rel)
    return s
