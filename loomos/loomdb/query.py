"""EventQuery: event types, time range, filters on top-level and nested paths, order, limit and
cursor pagination, compiled to SQL with bound parameters only.

Filters read `PATH OP VALUE`, e.g. `data.hardware_config.gpu_count >= 4`, `tags contains
healthcare`, `context.compliance_level = SOC2_TYPE2`. Paths are checked against a grammar and
every key and value travels as a bound parameter; operators come from a fixed list.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loomos.loomdb.errors import QueryError
from loomos.models.events import AUDIT_FIELDS, EVENT_TYPE_PATTERN, SECURITY_FIELDS

OPERATORS = ("=", "!=", ">=", "<=", ">", "<", "contains", "exists")
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
TEXT_COLUMNS = frozenset(
    {
        "event_type",
        "stream_id",
        "schema_version",
        "correlation_id",
        "causation_id",
        "priority",
        "prev_hash",
        "hash",
        *(f for f in AUDIT_FIELDS),
        *(f for f in SECURITY_FIELDS if f != "roles"),
    }
)
INT_COLUMNS = frozenset({"position", "stream_version", "retention_days"})
TIME_COLUMNS = frozenset({"occurred_at", "recorded_at"})
JSON_ARRAY_COLUMNS = frozenset({"tags", "roles"})
_FILTER = re.compile(r"^\s*(\S+)\s+(>=|<=|!=|=|>|<|contains|exists)(?:\s+(.*\S))?\s*$", re.S)


class Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    op: Literal["=", "!=", ">=", "<=", ">", "<", "contains", "exists"]
    value: Any = None

    @classmethod
    def parse(cls, text: str) -> Filter:
        """`data.x.y >= 4`; the value is JSON when it parses as JSON, otherwise a string."""
        if not isinstance(text, str) or len(text) > 2000:
            raise QueryError("a filter is a string of at most 2000 characters")
        m = _FILTER.match(text)
        if not m:
            raise QueryError(
                f"filter {text!r}: expected 'PATH OP VALUE' with OP one of {', '.join(OPERATORS)}"
            )
        path, op, raw = m.group(1), m.group(2), m.group(3)
        if op == "exists":
            if raw is not None:
                raise QueryError(f"filter {text!r}: 'exists' takes no value")
            return cls(path=path, op=op)
        if raw is None:
            raise QueryError(f"filter {text!r}: missing value after {op!r}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        return cls(path=path, op=op, value=value)


class ResolvedPath(BaseModel):
    kind: Literal["text", "int", "time", "uuid", "array", "json"]
    column: str
    keys: list[str] = Field(default_factory=list)


def resolve_path(path: str) -> ResolvedPath:
    parts = path.split(".")
    head, rest = parts[0], parts[1:]
    if any(not _KEY.match(p) for p in parts):
        raise QueryError(f"path {path!r}: each part must be letters, digits, '_' or '-' (at most 64)")
    if head in ("data", "metadata"):
        if not rest:
            raise QueryError(f"path {path!r}: name a field inside {head}, e.g. {head}.job_id")
        if len(rest) > 16:
            raise QueryError(f"path {path!r}: nested deeper than 16 levels")
        return ResolvedPath(kind="json", column=head, keys=rest)
    if head == "context" and len(rest) == 1 and rest[0] in AUDIT_FIELDS:
        return ResolvedPath(kind="text", column=rest[0])
    if head == "security" and len(rest) == 1 and rest[0] in SECURITY_FIELDS:
        return ResolvedPath(kind="array" if rest[0] == "roles" else "text", column=rest[0])
    if not rest:
        if head in TEXT_COLUMNS - set(AUDIT_FIELDS) - set(SECURITY_FIELDS):
            return ResolvedPath(kind="text", column=head)
        if head in INT_COLUMNS:
            return ResolvedPath(kind="int", column=head)
        if head in TIME_COLUMNS:
            return ResolvedPath(kind="time", column=head)
        if head == "event_id":
            return ResolvedPath(kind="uuid", column=head)
        if head in JSON_ARRAY_COLUMNS:
            return ResolvedPath(kind="array", column=head)
    raise QueryError(
        f"unknown path {path!r}: use a column (event_type, stream_id, position, occurred_at, tags, ...), "
        f"context.<{'|'.join(AUDIT_FIELDS)}>, security.<{'|'.join(SECURITY_FIELDS)}>, "
        "data.<path> or metadata.<path>"
    )


class EventQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_types: list[str] = Field(default_factory=list, max_length=100)
    stream_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    time_field: Literal["recorded_at", "occurred_at"] = "recorded_at"
    filters: list[Filter] = Field(default_factory=list, max_length=50)
    order: Literal["asc", "desc"] = "asc"
    limit: int = Field(100, ge=1, le=10000)
    cursor: str | None = None
    after_position: int | None = Field(None, ge=0)

    @field_validator("event_types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        for t in v:
            # A prefix pattern `data.*` selects a whole family.
            base = t[:-2] if t.endswith(".*") else t
            if not (re.fullmatch(EVENT_TYPE_PATTERN, base) or re.fullmatch(r"^[a-z][a-z0-9_]*$", base)):
                raise ValueError(f"event type {t!r} is not a dotted lowercase name (or a prefix like data.*)")
        return v

    @field_validator("filters", mode="before")
    @classmethod
    def _parse_filters(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [Filter.parse(f) if isinstance(f, str) else f for f in v]
        return v

    @field_validator("start", "end")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("timestamps need a timezone, e.g. 2026-01-01T00:00:00Z")
        return v

    @model_validator(mode="after")
    def _range(self) -> EventQuery:
        # An empty range is almost always swapped arguments: say so rather than return nothing.
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end.isoformat()}) must be after start ({self.start.isoformat()})")
        return self


def encode_cursor(position: int, order: str) -> str:
    raw = json.dumps({"p": position, "o": order}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, order: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        position, cursor_order = body["p"], body["o"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise QueryError("cursor is not one this server issued") from None
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise QueryError("cursor is not one this server issued")
    if cursor_order != order:
        raise QueryError(f"cursor was issued for order={cursor_order}, not order={order}")
    return position


class QueryDialect(Protocol):
    """What SqlBuilder needs from a backend: its placeholder, how it binds timestamps and
    UUIDs, and its SQL for JSON paths (each returns SQL and its parameters;
    keys are validated path parts; the SQL uses the backend's placeholder)."""

    ph: str  # the driver's placeholder: "%s" or "?"

    def ts(self, v: datetime) -> Any: ...

    def uid(self, v: uuid.UUID) -> Any: ...

    def json_value(self, column: str, keys: list[str]) -> tuple[str, list[Any]]: ...

    def json_type(self, column: str, keys: list[str]) -> tuple[str, list[Any]]: ...

    def json_text(self, column: str, keys: list[str]) -> tuple[str, list[Any]]: ...

    def json_contains(self, column: str, keys: list[str], value: Any) -> tuple[str, list[Any]]: ...

    def json_compare(self, column: str, keys: list[str], op: str, value: Any) -> tuple[str, list[Any]]: ...

    def month_of(self, column: str) -> str:
        """SQL of a timestamp column's month, as "YYYY-MM"."""


class SqlBuilder:
    """Collects WHERE clauses and their parameters for one backend."""

    def __init__(self, backend: QueryDialect) -> None:
        self.b = backend
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def add(self, clause: str, params: list[Any]) -> None:
        self.clauses.append(clause.replace("%s", self.b.ph) if self.b.ph != "%s" else clause)
        self.params.extend(params)

    def where(self) -> str:
        return " AND ".join(self.clauses) if self.clauses else "TRUE"

    def query(self, q: EventQuery) -> None:
        ph = "%s"
        if q.event_types:
            exact = [t for t in q.event_types if not t.endswith(".*")]
            prefixes = [t[:-1] for t in q.event_types if t.endswith(".*")]
            parts: list[str] = []
            params: list[Any] = []
            if exact:
                parts.append(f"event_type IN ({', '.join([ph] * len(exact))})")
                params.extend(exact)
            for p in prefixes:
                # Validated names hold no LIKE metacharacter except '_', which is escaped.
                parts.append(f"event_type LIKE {ph} ESCAPE '!'")
                params.append(p.replace("_", "!_") + "%")
            self.add("(" + " OR ".join(parts) + ")", params)
        if q.stream_id is not None:
            self.add(f"stream_id = {ph}", [q.stream_id])
        if q.start is not None:
            self.add(f"{q.time_field} >= {ph}", [self.b.ts(q.start)])
        if q.end is not None:
            self.add(f"{q.time_field} < {ph}", [self.b.ts(q.end)])
        if q.after_position is not None:
            self.add(f"position > {ph}", [q.after_position])
        if q.cursor:
            pos = decode_cursor(q.cursor, q.order)
            self.add(f"position {'>' if q.order == 'asc' else '<'} {ph}", [pos])
        for f in q.filters:
            self.filter(f)

    def filter(self, f: Filter) -> None:
        rp = resolve_path(f.path)
        ph = "%s"
        op = f.op
        if op not in OPERATORS:  # defence in depth: pydantic already restricts it
            raise QueryError(f"unknown operator {op!r}")
        if rp.kind == "json":
            if op == "exists":
                sql, params = self.b.json_type(rp.column, rp.keys)
                self.add(f"{sql} IS NOT NULL", params)
            elif op == "contains":
                self._check_scalar(f)
                self.add(*self.b.json_contains(rp.column, rp.keys, f.value))
            else:
                if op not in ("=", "!=") and not (
                    isinstance(f.value, int | float | str) and not isinstance(f.value, bool)
                ):
                    raise QueryError(f"filter on {f.path}: {op} needs a number or a string")
                self.add(*self.b.json_compare(rp.column, rp.keys, op, f.value))
            return
        if rp.kind == "array":
            if op == "exists":
                raise QueryError(f"filter on {f.path}: use 'contains'")
            if op != "contains":
                raise QueryError(f"filter on {f.path}: only 'contains' applies to a list")
            self._check_scalar(f)
            if not isinstance(f.value, str):
                raise QueryError(f"filter on {f.path}: contains needs a string")
            self.add(*self.b.json_contains(rp.column, [], f.value))
            return
        if op == "contains":
            raise QueryError(f"filter on {f.path}: 'contains' applies to tags, roles and data paths")
        if op == "exists":
            self.add(f"{rp.column} IS NOT NULL", [])
            return
        sql_op = "<>" if op == "!=" else op
        value = self._column_value(rp, f)
        self.add(f"{rp.column} {sql_op} {ph}", [value])

    @staticmethod
    def _check_scalar(f: Filter) -> None:
        if isinstance(f.value, dict | list) or f.value is None:
            raise QueryError(f"filter on {f.path}: contains needs a single value")

    def _column_value(self, rp: ResolvedPath, f: Filter) -> Any:
        v = f.value
        if rp.kind == "int":
            if not isinstance(v, int) or isinstance(v, bool):
                raise QueryError(f"filter on {f.path}: needs an integer, got {v!r}")
            return v
        if rp.kind == "time":
            try:
                ts = datetime.fromisoformat(str(v))
            except ValueError:
                raise QueryError(f"filter on {f.path}: needs an ISO 8601 timestamp, got {v!r}") from None
            if ts.tzinfo is None:
                raise QueryError(f"filter on {f.path}: the timestamp needs a timezone")
            return self.b.ts(ts)
        if rp.kind == "uuid":
            try:
                return self.b.uid(uuid.UUID(str(v)))
            except ValueError:
                raise QueryError(f"filter on {f.path}: needs a UUID, got {v!r}") from None
        if not isinstance(v, str):
            v = json.dumps(v) if isinstance(v, dict | list | bool) or v is None else str(v)
        return v
