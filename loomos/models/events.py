"""The event model: what callers append (`NewEvent`) and what LoomDB stores and returns (`Event`).

Pure pydantic, no SQL: LoomDB, the API, the SDK, the CLI and the audit activity share these
models.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Event types named in the LoomOS documents, plus those the orchestrator itself records.
# Custom types are allowed: anything matching EVENT_TYPE_PATTERN.
DOCUMENTED_EVENT_TYPES: tuple[str, ...] = (
    "data.ingested",
    "data.accessed",
    "data.transformed",
    "data.exported",
    "data.deleted",
    "model.training.started",
    "model.training.checkpoint",
    "model.training.completed",
    "model.training.failed",
    "model.evaluation.started",
    "model.evaluation.completed",
    "model.deployment.requested",
    "model.deployment.approved",
    "model.deployment.completed",
    "model.deployment.rolled_back",
    "security.authentication.succeeded",
    "security.authentication.failed",
    "security.access.granted",
    "security.access.denied",
    "security.policy.changed",
    "compliance.audit.requested",
    "compliance.report.generated",
    "compliance.retention.applied",
    "job.submitted",
    "job.queued",
    "job.placed",
    "job.started",
    "job.retrying",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "worker.registered",
    "worker.lost",
    "worker.drained",
    "cost.recorded",
)

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){1,5}$"
STREAM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}$"
GENESIS_HASH = "0" * 64


def utcnow() -> datetime:
    return datetime.now(UTC)


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


class AuditContext(BaseModel):
    """Who did it, from where, under which compliance regime and budget."""

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, max_length=200)
    session_id: str | None = Field(None, max_length=200)
    request_id: str | None = Field(None, max_length=200)
    source_ip: str | None = Field(None, max_length=64)
    user_agent: str | None = Field(None, max_length=500)
    compliance_level: str | None = Field(None, max_length=64)
    cost_center: str | None = Field(None, max_length=200)
    project_id: str | None = Field(None, max_length=200)


class SecurityContext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    authentication_method: str | None = Field(None, max_length=64)
    roles: list[str] = Field(default_factory=list, max_length=64)
    access_level: str | None = Field(None, max_length=64)
    data_classification: str | None = Field(None, max_length=64)
    geographic_restriction: str | None = Field(None, max_length=64)


AUDIT_FIELDS = tuple(AuditContext.model_fields)
SECURITY_FIELDS = tuple(SecurityContext.model_fields)


def _check_json(value: Any, where: str, depth: int = 0) -> None:
    """Only JSON that survives a round trip through both backends unchanged may be hashed."""
    if depth > 32:
        raise ValueError(f"{where}: nested deeper than 32 levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where}: object keys must be strings")
            _check_json(v, f"{where}.{k}", depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]", depth + 1)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{where}: NaN and infinity are not JSON")
    elif isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where}: NUL characters are not allowed")
    elif value is not None and not isinstance(value, bool | int):
        raise ValueError(f"{where}: {type(value).__name__} is not a JSON value")


class NewEvent(BaseModel):
    """An event as a caller appends it. `event_id` is the idempotency key: append the same id
    twice and the second append returns the first one's position.

    Numbers in `data` and `metadata` are JSON decimals, as Postgres's jsonb keeps them: ints
    stay exact at any size, and an integral float comes back (on both backends) as the integer
    its JSON text denotes (3.0 as 3, 1e16 as 10**16)."""

    model_config = ConfigDict(extra="forbid")

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    event_type: str = Field(pattern=EVENT_TYPE_PATTERN, max_length=200)
    stream_id: str = Field(pattern=STREAM_ID_PATTERN)
    occurred_at: datetime = Field(default_factory=utcnow)
    correlation_id: str | None = Field(None, max_length=200)
    causation_id: str | None = Field(None, max_length=200)
    context: AuditContext = Field(default_factory=AuditContext)
    security: SecurityContext = Field(default_factory=SecurityContext)
    tags: list[str] = Field(default_factory=list, max_length=64)
    priority: Priority = Priority.NORMAL
    data: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    retention_days: int | None = Field(None, ge=1, le=36500, description="overrides every policy")

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("occurred_at needs a timezone (UTC recommended)")
        return v.astimezone(UTC)

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for t in v:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:=/-]{0,99}", t):
                raise ValueError(f"tag {t!r}: letters, digits and . _ : = / - only, at most 100 characters")
        return v

    @field_validator("data", "metadata")
    @classmethod
    def _json(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        _check_json(v, info.field_name)
        return v


class Event(NewEvent):
    """A stored event: a NewEvent plus what LoomDB assigned when it recorded it."""

    position: int
    stream_version: int
    recorded_at: datetime
    schema_version: str | None = None
    prev_hash: str
    # The canonical form `hash` was taken over (loomos.loomdb.hashchain): 1 for events stored
    # before versions were recorded, 2 (RFC 8785 JSON) since.
    hash_version: int = 1
    hash: str

    def sse_id(self) -> str:
        return str(self.position)
