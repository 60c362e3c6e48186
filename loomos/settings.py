"""Settings: temporal-dev.yaml, overridden by environment variables.

A bad value names its key (`node.cpu_slots: ...`) and where it came from, so an operator
can fix the file or the variable without reading a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SEARCH_ATTRIBUTE_TYPES = {"Keyword", "Text", "Int", "Double", "Bool", "Datetime", "KeywordList"}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TemporalSettings(_Section):
    address: str = "127.0.0.1:7233"
    ui_port: int = Field(8233, ge=1, le=65535)
    namespace: str = Field("default", min_length=1)
    db_file: str | None = ".loomos/temporal.db"
    search_attributes: dict[str, str] = Field(default_factory=dict)

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

    @model_validator(mode="after")
    def _one_price_source(self) -> NodeSettings:
        if self.offer and self.price_per_slot_hour is not None:
            raise ValueError("set node.offer (a catalog price) or node.price_per_slot_hour, not both")
        return self


class Settings(_Section):
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    loomdb: LoomDBSettings = Field(default_factory=LoomDBSettings)
    checkpoints: CheckpointSettings = Field(default_factory=CheckpointSettings)
    logs: LogSettings = Field(default_factory=LogSettings)
    node: NodeSettings = Field(default_factory=NodeSettings)

    @property
    def api_url(self) -> str:
        return f"http://{self.api.host}:{self.api.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.temporal.host}:{self.temporal.ui_port}"


# Environment variable -> dotted key. Every key users commonly change has one.
ENV_OVERRIDES: dict[str, str] = {
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

DEFAULT_CONFIG_FILE = "temporal-dev.yaml"


class ConfigError(ValueError):
    pass


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


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = dotted.split(".", 1)
    node = data.setdefault(section, {})
    if not isinstance(node, dict):
        raise ConfigError(f"{section}: expected a mapping")
    node[key] = None if value in ("", "null") else value


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read settings from `path` (default: LOOMOS_CONFIG or the nearest temporal-dev.yaml).

    Relative paths in the file (db files, roots) are resolved against the file's folder, so a
    worker started from any directory uses the same state folder.
    """
    env = os.environ if env is None else env
    file = Path(path) if path else _find_config_file()
    data: dict[str, Any] = {}
    base = Path.cwd()
    if file is not None:
        try:
            loaded = yaml.safe_load(file.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping at the top level")
        data = loaded
        base = file.resolve().parent
    sources: dict[str, str] = {}
    for var, dotted in ENV_OVERRIDES.items():
        if var in env:
            _set_path(data, dotted, env[var])
            sources[dotted] = f"${var}"
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            origin = sources.get(key, str(file) if file else "defaults")
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{key}: {msg} (from {origin})")
        raise ConfigError("; ".join(problems)) from None
    return _resolve_paths(settings, base)


def _resolve_paths(s: Settings, base: Path) -> Settings:
    def absolute(p: str) -> str:
        return p if "://" in p or Path(p).is_absolute() else str((base / p).resolve())

    if s.temporal.db_file:
        s.temporal.db_file = absolute(s.temporal.db_file)
    s.checkpoints.root = absolute(s.checkpoints.root)
    s.logs.root = absolute(s.logs.root)
    if s.loomdb.url.startswith("sqlite:///") and not s.loomdb.url.startswith("sqlite:////"):
        rel = s.loomdb.url.removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            s.loomdb.url = "sqlite:///" + absolute(rel)
    return s
