"""The hash chain: every event carries the SHA-256 of its own canonical form, which includes
its position and its predecessor's hash. Editing, inserting or deleting a row behind LoomDB's
back breaks the chain at that row, and verify.py names the first row where it breaks.

Each event records the version of the canonical form its hash was made with (`hash_version`),
so the form can change without rewriting history: a stored event keeps verifying under its
own version, new events are written with HASH_VERSION.

Version 1 (events written before hash_version existed; the column's default): the JSON array
of the scalar columns (SCALAR_COLUMNS order; roles and tags as lists of strings), then data,
then metadata, separated by U+001E, all three in canonical.json_text's form (compact, keys
sorted by code point, Python's float text).

Version 2: RFC 8785 (JCS), so any JCS implementation re-derives the hash. The hashed bytes are
the JCS text (UTF-8) of the JSON array

    [hash_version, position, event_id, event_type, schema_version, stream_id, stream_version,
     occurred_at, recorded_at, correlation_id, causation_id, user_id, session_id, request_id,
     source_ip, user_agent, compliance_level, cost_center, project_id, authentication_method,
     roles, access_level, data_classification, geographic_restriction, tags, priority, data,
     metadata, retention_days, prev_hash]

(V2_COLUMNS) with the values as an event is returned (Event, or a stored row): event_id as
lowercase text, occurred_at and recorded_at as canonical.iso writes them
("2026-01-10T12:00:00.000000+00:00"), roles and tags as lists of strings, data and metadata as
JSON values, absent values as null. In Python:

    hashlib.sha256(rfc8785.dumps([2, e.position, str(e.event_id), ..., e.prev_hash])).hexdigest()

One extension: an int beyond +-(2**53 - 1), which JCS cannot write (rfc8785 refuses it), is
written with all its decimal digits, so the chain still protects every digit (canonical.py).
"""

from __future__ import annotations

import hashlib
import operator
from datetime import datetime
from typing import Any

from loomos.loomdb.canonical import (
    canonical_json,
    iso,
    jcs_from_json_text,
    json_fragment,
    json_text,
)
from loomos.models.events import NewEvent

HASH_V1 = 1
HASH_V2 = 2
HASH_VERSIONS = (HASH_V1, HASH_V2)
HASH_VERSION = HASH_V2  # what appends write

# The columns hash version 1 covers: every stored column except hash_version and hash itself.
HASHED_COLUMNS: tuple[str, ...] = (
    "position",
    "event_id",
    "event_type",
    "schema_version",
    "stream_id",
    "stream_version",
    "occurred_at",
    "recorded_at",
    "correlation_id",
    "causation_id",
    "user_id",
    "session_id",
    "request_id",
    "source_ip",
    "user_agent",
    "compliance_level",
    "cost_center",
    "project_id",
    "authentication_method",
    "roles",
    "access_level",
    "data_classification",
    "geographic_restriction",
    "tags",
    "priority",
    "data",
    "metadata",
    "retention_days",
    "prev_hash",
)
# Version 2's hashed array, in order.
V2_COLUMNS: tuple[str, ...] = ("hash_version", *HASHED_COLUMNS)
# Every column of loomdb_events, as reads select them.
EVENT_COLUMNS: tuple[str, ...] = (*HASHED_COLUMNS, "hash_version", "hash")

SCALAR_COLUMNS = tuple(c for c in HASHED_COLUMNS if c not in ("data", "metadata"))
# The audit and security context: a run of SCALAR_COLUMNS that the append encoders take from
# context_key (and cache per distinct context), so their order is defined once.
CONTEXT_COLUMNS = SCALAR_COLUMNS[
    SCALAR_COLUMNS.index("user_id") : SCALAR_COLUMNS.index("geographic_restriction") + 1
]
_I_ROLES = CONTEXT_COLUMNS.index("roles")


def context_key(e: Any) -> tuple[Any, ...]:
    """An event's CONTEXT_COLUMNS values, roles as a tuple (hashable: a cache key)."""
    ctx, sec = e.context, e.security
    return (
        ctx.user_id,
        ctx.session_id,
        ctx.request_id,
        ctx.source_ip,
        ctx.user_agent,
        ctx.compliance_level,
        ctx.cost_center,
        ctx.project_id,
        sec.authentication_method,
        tuple(sec.roles),
        sec.access_level,
        sec.data_classification,
        sec.geographic_restriction,
    )


def context_values(key: tuple[Any, ...]) -> list[Any]:
    """context_key's values as they are hashed (roles as a JSON list)."""
    values = list(key)
    values[_I_ROLES] = list(key[_I_ROLES])
    return values


_I_EVENT_ID = SCALAR_COLUMNS.index("event_id")
_I_OCCURRED = SCALAR_COLUMNS.index("occurred_at")
_I_RECORDED = SCALAR_COLUMNS.index("recorded_at")
_I_RETENTION = SCALAR_COLUMNS.index("retention_days")
_SCALARS = operator.itemgetter(*SCALAR_COLUMNS)


def _scalars(row: dict[str, Any]) -> list[Any]:
    """SCALAR_COLUMNS's values of a row as they are hashed (ids and times as text)."""
    values = list(_SCALARS(row))
    values[_I_EVENT_ID] = str(values[_I_EVENT_ID])
    values[_I_OCCURRED] = iso(values[_I_OCCURRED])
    values[_I_RECORDED] = row.get("recorded_iso") or iso(values[_I_RECORDED])
    return values


def _data_texts(row: dict[str, Any]) -> tuple[str, str]:
    """json_text of data and metadata (an append's row carries them already)."""
    return row.get("data_json") or json_text(row["data"]), row.get("metadata_json") or json_text(
        row["metadata"]
    )


def canonical_bytes_v1(row: dict[str, Any]) -> bytes:
    data, metadata = _data_texts(row)
    return f"{canonical_json(_scalars(row))}\x1e{data}\x1e{metadata}".encode()


def canonical_bytes_v2(row: dict[str, Any]) -> bytes:
    data, metadata = _data_texts(row)
    scalars = _scalars(row)
    # V2_COLUMNS: the version, the scalars up to priority, data, metadata, retention, prev_hash.
    head = json_fragment(scalars[:_I_RETENTION])
    tail = json_fragment(scalars[_I_RETENTION:])
    data = jcs_from_json_text(data, row["data"])
    metadata = jcs_from_json_text(metadata, row["metadata"])
    return f"[{HASH_V2},{head},{data},{metadata},{tail}]".encode()


_CANONICAL = {HASH_V1: canonical_bytes_v1, HASH_V2: canonical_bytes_v2}


class UnknownHashVersion(ValueError):
    """A row names a hash version this LoomDB does not know (verify reports it as altered)."""


def canonical_bytes(row: dict[str, Any]) -> bytes:
    """The bytes an event's hash is taken over, in the form its hash_version names (1 when the
    row has none: archives and rows written before the column existed)."""
    version = row.get("hash_version") or HASH_V1
    form = _CANONICAL.get(version)
    if form is None:
        raise UnknownHashVersion(f"unknown hash version {version!r}")
    return form(row)


def event_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(row)).hexdigest()


def event_row(
    e: NewEvent,
    schema_version: str | None,
    position: int,
    stream_version: int,
    recorded: datetime,
    recorded_iso: str,
    prev: str,
    hash_version: int = HASH_VERSION,
) -> dict[str, Any]:
    """One appended event as a row dict (every EVENT_COLUMNS value, plus the canonical texts
    it hashed: data_json, metadata_json, recorded_iso), hashed under `hash_version`. The
    reference the backends' one-pass encoders are tested against, and what writes an old
    version's rows in the tests."""
    ctx, sec = e.context, e.security
    row = {
        "position": position,
        "event_id": e.event_id,
        "event_type": e.event_type,
        "schema_version": schema_version,
        "stream_id": e.stream_id,
        "stream_version": stream_version,
        "occurred_at": e.occurred_at,
        "recorded_at": recorded,
        "correlation_id": e.correlation_id,
        "causation_id": e.causation_id,
        "user_id": ctx.user_id,
        "session_id": ctx.session_id,
        "request_id": ctx.request_id,
        "source_ip": ctx.source_ip,
        "user_agent": ctx.user_agent,
        "compliance_level": ctx.compliance_level,
        "cost_center": ctx.cost_center,
        "project_id": ctx.project_id,
        "authentication_method": sec.authentication_method,
        "roles": list(sec.roles),
        "access_level": sec.access_level,
        "data_classification": sec.data_classification,
        "geographic_restriction": sec.geographic_restriction,
        "tags": list(e.tags),
        "priority": str(e.priority),
        "data": e.data,
        "metadata": e.metadata,
        "retention_days": e.retention_days,
        "prev_hash": prev,
        "hash_version": hash_version,
        "data_json": json_text(e.data),
        "metadata_json": json_text(e.metadata),
        "recorded_iso": recorded_iso,
    }
    row["hash"] = event_hash(row)
    return row
