"""How Postgres appends are encoded: binary COPY rows for large appends, one jsonb parameter for
small ones, each hashed (hash version 2) in the same pass that encodes it.

psycopg's copy.write_row adapts each of a row's 31 values through its dumper machinery (jsonb
through a Jsonb wrapper); the append path already holds every value in its final form (the
canonical JSON text it hashed), so it writes the COPY binary format itself: per row a field
count, then per field a length and the type's binary form (jsonb: version byte 1 + text;
timestamptz: microseconds since 2000-01-01 UTC; uuid: 16 bytes; NULL: length -1).

Measured against psycopg's set_types + write_row on rows hashed the same way, in the same runs
(benchmarks/loomdb.py --backend postgres --quick, copy_encoder_*, eight runs on a shared 2-core
machine): the appending thread spent 12.3-18.8 us of CPU per event with these rows against
19.0-26.2 us with write_row (medians 16.4 and 22.7), and appended 1.02-1.37 times as many events
per second (median 1.11; Postgres shares the two cores, so the client's saving shows in part).
"""

from __future__ import annotations

import functools
import hashlib
import struct
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from loomos.loomdb.backend import PlannedEvent
from loomos.loomdb.canonical import (
    EPOCH_2000,
    MICROSECOND,
    iso_second,
    jcs_from_json_text,
    json_fragment,
    json_text,
    string_list_text,
)
from loomos.loomdb.hashchain import EVENT_COLUMNS, HASH_V2, V2_COLUMNS, context_key, context_values

JSON_COLUMNS = frozenset({"roles", "tags", "data", "metadata"})
COPY_THRESHOLD = 200  # below this, one jsonb parameter is cheaper than setting up COPY
# Each EVENT_COLUMNS column's type, as copy.set_types names them.
COPY_TYPES = [
    "int8",
    "uuid",
    "text",
    "text",
    "text",
    "int8",
    "timestamptz",
    "timestamptz",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "jsonb",
    "text",
    "text",
    "text",
    "jsonb",
    "text",
    "jsonb",
    "jsonb",
    "int4",
    "text",
    "int2",
    "text",
]
assert len(COPY_TYPES) == len(EVENT_COLUMNS)
COPY_SQL = f"COPY loomdb_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_FIELDS = len(EVENT_COLUMNS)
_FIELD_COUNT = struct.pack("!h", _FIELDS)
_UUID_LEN = struct.pack("!i", 16)
_HASH_LEN = struct.pack("!i", 64)
_pack_len = struct.Struct("!i").pack
_pack_i8 = struct.Struct("!iq").pack
_pack_i4 = struct.Struct("!ii").pack
_pack_i2 = struct.Struct("!ih").pack
_sha256 = hashlib.sha256


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    b = value.encode()
    return _pack_len(len(b)) + b


def _jsonb(text: str) -> bytes:
    b = text.encode()
    return _pack_len(len(b) + 1) + b"\x01" + b


def _timestamptz(ts: datetime) -> bytes:
    return _pack_i8(8, (ts - EPOCH_2000) // MICROSECOND)


@functools.lru_cache(maxsize=4096)
def _jsonb_list(values: tuple[str, ...]) -> bytes:
    return _jsonb(string_list_text(values))


@functools.lru_cache(maxsize=256)
def _text_cached(value: str | None) -> bytes:
    """Columns with few distinct values (event types, schema versions, priority)."""
    return _text(value)


def copy_row(r: dict[str, Any], recorded: bytes) -> bytes:
    """One row dict (hashchain.event_row's, with the canonical JSON texts it hashed) in COPY
    binary format, in EVENT_COLUMNS order. `recorded` is the encoded recorded_at, shared by a
    whole append."""
    retention = r["retention_days"]
    return b"".join(
        (
            _FIELD_COUNT,
            _pack_i8(8, r["position"]),
            _UUID_LEN + r["event_id"].bytes,
            _text_cached(r["event_type"]),
            _text_cached(r["schema_version"]),
            _text(r["stream_id"]),
            _pack_i8(8, r["stream_version"]),
            _timestamptz(r["occurred_at"]),
            recorded,
            _text(r["correlation_id"]),
            _text(r["causation_id"]),
            _text(r["user_id"]),
            _text(r["session_id"]),
            _text(r["request_id"]),
            _text(r["source_ip"]),
            _text(r["user_agent"]),
            _text(r["compliance_level"]),
            _text(r["cost_center"]),
            _text(r["project_id"]),
            _text(r["authentication_method"]),
            _jsonb_list(tuple(r["roles"])),
            _text(r["access_level"]),
            _text(r["data_classification"]),
            _text(r["geographic_restriction"]),
            _jsonb_list(tuple(r["tags"])),
            _text_cached(r["priority"]),
            _jsonb(r["data_json"]),
            _jsonb(r["metadata_json"]),
            _NULL if retention is None else _pack_i4(4, retention),
            _HASH_LEN + r["prev_hash"].encode(),
            _pack_i2(2, r["hash_version"]),
            _HASH_LEN + r["hash"].encode(),
        )
    )


def copy_data(rows: list[dict[str, Any]]) -> bytes:
    """A whole COPY binary stream (signature, rows, trailer) for row dicts, field by field: the
    reference encode_plan's bytes are tested against."""
    parts = [_COPY_SIGNATURE]
    cached: tuple[datetime, bytes] | None = None
    for r in rows:
        ts = r["recorded_at"]
        if cached is None or cached[0] is not ts:
            cached = (ts, _timestamptz(ts))
        parts.append(copy_row(r, cached[1]))
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


# --- appends encoded in one pass: hash input and COPY row from the same cached fragments ----
# An event source repeats its audit and security context, event types, streams and tags, so
# their canonical JSON fragments (canonical.json_fragment) and COPY bytes are made once and
# reused; only the per-event values (ids, positions, times, data) are encoded per row, and no
# row dict is built. The hashed text is exactly hashchain.canonical_bytes_v2's (verify()
# re-derives every stored hash with event_hash, and the tests check both agree).
_ROW_START = struct.Struct("!hiqi").pack  # field count, position (len + int8), uuid length
_VERSION_OCCURRED = struct.Struct("!iqiq").pack  # stream_version and occurred_at, with lengths
_NULL2 = _NULL + _NULL
_EMPTY_JSONB = _jsonb("{}")
_HASH_VERSION = _pack_i2(2, HASH_V2)


@functools.lru_cache(maxsize=1024)
def _context_parts(key: tuple[Any, ...]) -> tuple[str, bytes]:
    """JSON and COPY fragments of hashchain.context_key's CONTEXT_COLUMNS."""
    copy = b"".join(_jsonb_list(v) if isinstance(v, tuple) else _text(v) for v in key)
    return json_fragment(context_values(key)), copy


@functools.lru_cache(maxsize=1024)
def _type_parts(event_type: str, schema_version: str | None) -> tuple[str, bytes]:
    return json_fragment([event_type, schema_version]), _text(event_type) + _text(schema_version)


@functools.lru_cache(maxsize=4096)
def _stream_parts(stream_id: str) -> tuple[str, bytes]:
    return json_fragment([stream_id]), _text(stream_id)


@functools.lru_cache(maxsize=1024)
def _tags_parts(tags: tuple[str, ...], priority: str) -> tuple[str, bytes]:
    return json_fragment([list(tags), priority]), _jsonb_list(tags) + _text(priority)


def json_insert_sql() -> str:
    """Small appends (below COPY_THRESHOLD) go in as one jsonb parameter: an array of rows, each
    the hashed array of hash version 2 (V2_COLUMNS order) followed by the hash, taken apart by
    the server. One text parameter instead of 31 adapted values per row; jsonb keeps every value
    exactly (data and metadata are the same values in JCS and json_text form, timestamps have
    microseconds, text comes back unescaped)."""
    index = {c: i for i, c in enumerate(V2_COLUMNS)}
    index["hash"] = len(V2_COLUMNS)
    casts = {
        "position": "bigint",
        "stream_version": "bigint",
        "event_id": "uuid",
        "occurred_at": "timestamptz",
        "recorded_at": "timestamptz",
        "retention_days": "int",
        "hash_version": "smallint",
    }
    exprs = []
    for c in EVENT_COLUMNS:
        if c in JSON_COLUMNS:
            exprs.append(f"r -> {index[c]}")
        elif c in casts:
            exprs.append(f"(r ->> {index[c]})::{casts[c]}")
        else:
            exprs.append(f"r ->> {index[c]}")
    return (
        f"INSERT INTO loomdb_events ({', '.join(EVENT_COLUMNS)}) SELECT {', '.join(exprs)} "
        "FROM jsonb_array_elements(%s::jsonb) AS r"
    )


def encode_plan(
    plan: Iterable[PlannedEvent],
    recorded: datetime,
    recorded_iso: str,
    prev: str,
    chunk: int,
    out: Callable[[bytes], Any] | None,
    json_rows: list[str] | None = None,
) -> str:
    """Hash and COPY-encode planned appends (in chain order), handing `out` a COPY binary chunk
    (signature first, trailer last) whenever `chunk` bytes are ready; returns the last hash.
    With `json_rows`, each row goes there as a JSON array instead (see json_insert_sql) and
    `out` is not called."""
    rec_b = _timestamptz(recorded)
    seconds: dict[int, str] = {}  # ISO text of occurred_at up to the seconds, per second
    rec_json = f'+00:00","{recorded_iso}",'
    prev_b = prev.encode()
    parts = [_COPY_SIGNATURE]
    size = 0
    append = parts.append
    for e, v, p, sv in plan:
        c_json, c_copy = _context_parts(context_key(e))
        t_json, t_copy = _type_parts(e.event_type, v)
        s_json, s_copy = _stream_parts(e.stream_id)
        g_json, g_copy = _tags_parts(tuple(e.tags), str(e.priority))
        occ = e.occurred_at
        if occ.tzinfo is not UTC:
            occ = occ.astimezone(UTC)  # what canonical.iso does (a naive time is local time)
        occ_us = (occ - EPOCH_2000) // MICROSECOND
        second, micro = divmod(occ_us, 1_000_000)
        occ_prefix = seconds.get(second)
        if occ_prefix is None:
            occ_prefix = seconds[second] = iso_second(second)
        corr, caus = e.correlation_id, e.causation_id
        if corr is None and caus is None:
            o_json, o_copy = "null,null", _NULL2
        else:
            o_json, o_copy = json_fragment([corr, caus]), _text(corr) + _text(caus)
        ret = e.retention_days
        r_json, r_copy = ("null", _NULL) if ret is None else (json_fragment([ret]), _pack_i4(4, ret))
        data_json, meta_json = json_text(e.data), json_text(e.metadata)
        # Their JCS text: nearly always the same text (canonical.jcs_from_json_text).
        data_jcs, meta_jcs = jcs_from_json_text(data_json, e.data), jcs_from_json_text(meta_json, e.metadata)
        eid_b = e.event_id.int.to_bytes(16)  # UUID.bytes, without the property's Python frame
        x = eid_b.hex()  # str(event_id), from the bytes COPY needs anyway
        # json_fragment([position, str(event_id)]) etc.: ints, a UUID's text, ISO times and hex
        # hashes need no JSON escaping, so they are written directly.
        doc = (
            f'[2,{int(p)},"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}",{t_json},{s_json},{int(sv)},"'
            f'{occ_prefix}{micro:06d}{rec_json}{o_json},{c_json},{g_json},{data_jcs},{meta_jcs},{r_json},"{prev}"]'
        )
        h = _sha256(doc.encode()).hexdigest()
        if json_rows is not None:
            json_rows.append(f'{doc[:-1]},"{h}"]')  # the hashed array, then the hash
            prev = h
            continue
        h_b = h.encode()
        row = b"".join(
            (
                _ROW_START(_FIELDS, 8, p, 16),
                eid_b,
                t_copy,
                s_copy,
                _VERSION_OCCURRED(8, sv, 8, occ_us),
                rec_b,
                o_copy,
                c_copy,
                g_copy,
                _jsonb(data_json),
                _EMPTY_JSONB if meta_json == "{}" else _jsonb(meta_json),
                r_copy,
                _HASH_LEN,
                prev_b,
                _HASH_VERSION,
                _HASH_LEN,
                h_b,
            )
        )
        append(row)
        size += len(row)
        if size >= chunk:
            assert out is not None
            out(b"".join(parts))
            parts.clear()
            size = 0
        prev, prev_b = h, h_b
    if json_rows is not None:
        return prev
    assert out is not None
    append(_COPY_TRAILER)
    out(b"".join(parts))
    return prev
