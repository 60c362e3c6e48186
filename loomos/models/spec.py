"""JobSpec: what a user submits. Loaded from YAML or JSON, validated strictly.

Unknown fields and bad values are rejected with the field's dotted path, so a typo in a
spec never silently becomes a default. Fields that later parts of LoomOS act on (dependencies,
preemption, monitoring) are accepted and stored already, so specs written today keep working.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from loomos.models import input_limits as limits

JOB_NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"


class _Strict(BaseModel):
    # No NaN or infinity anywhere: "Input should be a finite number", not a confusing bound.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class JobType(StrEnum):
    TRAINING = "training"
    FINE_TUNING = "fine_tuning"
    EVALUATION = "evaluation"
    INFERENCE = "inference"
    DATA_PROCESSING = "data_processing"
    HYPERPARAMETER_TUNING = "hyperparameter_tuning"


class TimeoutBehavior(StrEnum):
    """What happens when max_runtime_hours is reached."""

    CHECKPOINT_AND_FAIL = "checkpoint_and_fail"
    FAIL = "fail"
    CHECKPOINT_AND_SUCCEED = "checkpoint_and_succeed"


class StorageBackend(StrEnum):
    LOCAL = "local"
    S3 = "s3"


class Resources(_Strict):
    gpu_count: int = Field(1, ge=0, le=64, description="GPUs (or CPU slots on a CPU node) per node")
    gpu_type: str | None = Field(
        None,
        description="H100, A100-80GB, ... or 'cpu'; empty means any device, CPU slots included",
    )
    gpu_memory_gb: float | None = Field(None, gt=0, le=1024)
    cpu_cores: float = Field(1, gt=0, le=1024)
    memory_gb: float = Field(1, gt=0, le=16384)
    nodes: int = Field(1, ge=1, le=256)

    @field_validator("gpu_type")
    @classmethod
    def _normalise_gpu_type(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip()
        if not v or v.lower() == "any":
            return None
        return "cpu" if v.lower() == "cpu" else v.upper()

    @property
    def world_size(self) -> int:
        return max(self.gpu_count, 1) * self.nodes


class RetryPolicy(_Strict):
    max_retries: int = Field(3, ge=0, le=100)
    retry_delay_seconds: float = Field(10, ge=0, le=86400)
    exponential_backoff: bool = True
    max_retry_delay_seconds: float = Field(3600, ge=0, le=86400)
    retry_on_node_failure: bool = True
    retry_on_resource_exhaustion: bool = False

    def delay_before_retry(self, retry_number: int) -> float:
        """Seconds to wait before retry number `retry_number` (1 = the first retry)."""
        delay = self.retry_delay_seconds
        if self.exponential_backoff:
            delay *= 2 ** (retry_number - 1)
        return min(delay, self.max_retry_delay_seconds)


class CheckpointConfig(_Strict):
    enabled: bool = True
    interval_minutes: float | None = Field(None, gt=0, le=10080)
    interval_steps: int | None = Field(None, ge=1)
    max_checkpoints: int = Field(3, ge=1, le=1000)
    storage_backend: StorageBackend = StorageBackend.LOCAL
    storage_uri: str | None = Field(
        None, description="file:///path or s3://bucket/prefix; default is the node's checkpoint root"
    )
    encryption_enabled: bool = Field(
        False,
        description="rank 0 writes checkpoints encrypted with the node's keyring (security.crypto); "
        "the key reaches the script by reference, never in the spec",
    )

    @field_validator("storage_uri")
    @classmethod
    def _storage_uri(cls, v: str | None) -> str | None:
        if v is None:
            return None
        limits.check_no_parent_parts(v, "storage_uri")
        if v.startswith("s3://"):
            if not v.removeprefix("s3://").split("/", 1)[0]:
                raise ValueError(f"{v!r} names no bucket")
        elif v.startswith("file://"):
            rest = v.removeprefix("file://")
            if not rest.startswith(("/", "localhost/")):
                raise ValueError(f"{v!r}: a file:// URI must name an absolute path on the node")
        elif "://" in v or not v.startswith("/"):
            raise ValueError(f"{v!r}: use s3://bucket/prefix, file:///absolute/path or an absolute path")
        return v

    @model_validator(mode="after")
    def _default_interval(self) -> CheckpointConfig:
        if self.enabled and self.interval_minutes is None and self.interval_steps is None:
            self.interval_minutes = 10
        if self.storage_uri and self.storage_backend == StorageBackend.S3:
            if not self.storage_uri.startswith("s3://"):
                raise ValueError("storage_uri must start with s3:// when storage_backend is s3")
        return self


class MonitoringConfig(_Strict):
    metrics: list[str] = Field(default_factory=list)
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    report_interval_seconds: float = Field(5, gt=0, le=3600)
    alerts: list[dict[str, Any]] = Field(default_factory=list)


class MarketplacePreferences(_Strict):
    """Where a job may run and what it may cost; read by the marketplace optimizer."""

    providers: list[str] = Field(default_factory=list, description="aws, gcp, azure, onprem; empty: any")
    regions: list[str] = Field(default_factory=list, description="empty: any region")
    max_price_per_hour: float | None = Field(None, gt=0, description="USD per hour for the whole job")
    expected_runtime_hours: float | None = Field(None, gt=0, le=24 * 365)


class DataClassification(StrEnum):
    """How sensitive a dataset is; reading one needs `data:read:<classification>`."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"


class DatasetRef(_Strict):
    """A dataset the job reads, declared so that admission can check the user may read it."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:-]{0,199}$")
    classification: DataClassification


class JobSpec(_Strict):
    name: str = Field(..., pattern=JOB_NAME_PATTERN, description="lower-case DNS-like name")
    description: str = Field("", max_length=4000)
    job_type: JobType = JobType.TRAINING
    entrypoint: str | None = Field(None, description="script path, relative to working_directory")
    command: list[str] | None = Field(None, description="a module or program, e.g. ['-m', 'pkg.train']")
    args: list[str] = Field(default_factory=list)
    working_directory: str | None = Field(
        None, description="directory on the node; relative paths are taken from the spec file's folder"
    )
    container_image: str | None = Field(None, description="recorded; processes run directly on the node")
    resources: Resources = Field(default_factory=Resources)
    priority: int = Field(50, ge=0, le=100)
    preemptible: bool = False
    can_preempt_lower_priority: bool = False
    max_runtime_hours: float = Field(24, gt=0, le=24 * 90)
    timeout_behavior: TimeoutBehavior = TimeoutBehavior.CHECKPOINT_AND_FAIL
    retry_policy: RetryPolicy = Field(default_factory=RetryPolicy)
    dependencies: list[str] = Field(default_factory=list, description="job ids that must succeed first")
    environment_variables: dict[str, str] = Field(default_factory=dict)
    # Values LoomCtl seals at submission (loomos.security.crypto.sealed_values): only the ranks'
    # environment ever holds them in clear; never Temporal, LoomDB, logs or API answers.
    secret_environment_variables: dict[str, str] = Field(default_factory=dict, repr=False)
    checkpoint_config: CheckpointConfig = Field(default_factory=CheckpointConfig)
    monitoring_config: MonitoringConfig = Field(default_factory=MonitoringConfig)
    marketplace: MarketplacePreferences = Field(default_factory=MarketplacePreferences)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Checked by the job's admission step: `data:read:<classification>` for each dataset, the
    # role's allowed_datasets and allowed_environments (development, staging, production, ...).
    datasets: list[DatasetRef] = Field(default_factory=list, max_length=100)
    environment: str | None = Field(None, pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    # Who submits: LoomCtl sets both from the caller's identity (see loomos.api.services.jobs).
    user: str = Field("anonymous", pattern=r"^[A-Za-z0-9._@-]{1,128}$")
    team: str = Field("default", pattern=r"^[A-Za-z0-9._-]{1,128}$")
    pool: str = Field("default", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")

    @field_validator("entrypoint")
    @classmethod
    def _entrypoint_inside(cls, v: str | None) -> str | None:
        # Absolute or relative to working_directory; never climbing with '..'. Whether the path is
        # somewhere a job may run is the node's to say (node.allowed_roots).
        return None if v is None else limits.check_no_parent_parts(v, "entrypoint")

    @field_validator("working_directory")
    @classmethod
    def _working_directory(cls, v: str | None) -> str | None:
        return None if v is None else limits.check_no_parent_parts(v, "working_directory")

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        if not v:
            raise ValueError("command must not be empty (e.g. ['-m', 'pkg.train'])")
        if len(v) > limits.MAX_COMMAND_ITEMS:
            raise ValueError(f"{len(v)} items; at most {limits.MAX_COMMAND_ITEMS}")
        for i, item in enumerate(v):
            limits.check_text(item, f"command[{i}]", limits.MAX_ARG_CHARS)
        return v

    @field_validator("args")
    @classmethod
    def _args(cls, v: list[str]) -> list[str]:
        return limits.check_args(v)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        if len(v) > limits.MAX_TAGS:
            raise ValueError(f"{len(v)} tags; at most {limits.MAX_TAGS}")
        for i, tag in enumerate(v):
            limits.check_text(tag, f"tags[{i}]", limits.MAX_TAG_CHARS)
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, Any]) -> dict[str, Any]:
        return limits.check_json_value(v, "metadata", limits.MAX_METADATA_BYTES)

    @field_validator("environment_variables", "secret_environment_variables")
    @classmethod
    def _env_names(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > limits.MAX_ENV_VARS:
            raise ValueError(f"{len(v)} variables; at most {limits.MAX_ENV_VARS}")
        for key, value in v.items():
            limits.check_text(value, f"value of {key}", limits.MAX_ENV_VALUE_CHARS)
            limits.check_env_name(key)
        for key in v:
            if (
                not key
                or not (key[0].isalpha() or key[0] == "_")
                or not all(c.isalnum() or c == "_" for c in key)
            ):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key.startswith("LOOMOS_") or key in RESERVED_ENV:
                raise ValueError(f"{key!r} is set by LoomOS and cannot be overridden")
        return v

    @field_validator("dependencies")
    @classmethod
    def _unique_deps(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("dependencies must not repeat a job id")
        return v

    @model_validator(mode="after")
    def _secrets_apart(self) -> JobSpec:
        both = sorted(set(self.environment_variables) & set(self.secret_environment_variables))
        if both:
            raise ValueError(f"{', '.join(both)}: set either as a plain or as a secret variable, not both")
        return self

    @model_validator(mode="after")
    def _one_entrypoint(self) -> JobSpec:
        if bool(self.entrypoint) == bool(self.command):
            raise ValueError("give exactly one of 'entrypoint' (a script) or 'command' (e.g. ['-m', 'pkg'])")
        return self

    def launch_target(self) -> list[str]:
        """What follows `torchrun [options]`: the script or `-m module`, then args."""
        if self.entrypoint:
            return [self.entrypoint, *self.args]
        assert self.command is not None
        target = list(self.command)
        if target[0] == "-m":
            return ["--module", *target[1:], *self.args]
        return ["--no-python", *target, *self.args]


RESERVED_ENV = frozenset(
    {
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "GROUP_RANK",
        "ROLE_RANK",
        "NODE_RANK",
        "TORCHELASTIC_RUN_ID",
    }
)


class SpecError(ValueError):
    """A spec that cannot be loaded; `errors` holds (field path, message) pairs."""

    def __init__(self, source: str, errors: list[tuple[str, str]]):
        self.source = source
        self.errors = errors
        lines = "; ".join(f"{path}: {msg}" if path else msg for path, msg in errors)
        super().__init__(f"{source}: {lines}")


def format_validation_error(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        out.append((path, msg))
    return out


def parse_spec(data: Any, source: str = "spec") -> JobSpec:
    if not isinstance(data, dict):
        raise SpecError(source, [("", "a job spec must be a mapping of fields")])
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(source, format_validation_error(exc)) from None


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values `node` becomes once every alias is expanded (as validating, serialising
    or sending it would): counted on the node graph, so a billion laughs costs microseconds."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a cycle counts once (the constructor refuses recursive aliases anyway)
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def _load_yaml(text: str) -> Any:
    """yaml.safe_load, refusing a document whose aliases expand it past MAX_YAML_NODES values
    (a few lines of anchors, the billion laughs, would otherwise become gigabytes downstream)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > limits.MAX_YAML_NODES:
            raise yaml.YAMLError(f"its aliases expand it to more than {limits.MAX_YAML_NODES} values")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_spec(path: str | Path) -> JobSpec:
    """Load a JobSpec from a YAML or JSON file.

    A relative working_directory is resolved against the spec file's folder, so
    `loomos submit examples/ddp-demo.yaml` works from any current directory.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(str(path), [("", f"cannot read file: {exc.strerror}")]) from None
    if len(text) > limits.MAX_SPEC_FILE_BYTES:
        too_big = f"the file is {len(text)} bytes; at most {limits.MAX_SPEC_FILE_BYTES}"
        raise SpecError(str(path), [("", too_big)])
    try:
        data = json.loads(text) if path.suffix == ".json" else _load_yaml(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise SpecError(str(path), [("", f"not valid {kind}: {exc}")]) from None
    spec = parse_spec(data, str(path))
    base = path.resolve().parent
    wd = Path(spec.working_directory) if spec.working_directory else Path(".")
    if not wd.is_absolute():
        spec.working_directory = str((base / wd).resolve())
    return spec
