"""How SQLite appends are encoded: row tuples for one executemany, each hashed (hash version 2)
in the same pass that builds it.

What hashchain.event_row and SqliteBackend.db_row make of an event, built in one pass: an event
source repeats its audit and security context, event types, streams and tags, so their
canonical JSON fragments (canonical.json_fragment, the text those values take inside the hashed
array) and their column values are made once and reused; per event only the ids, positions,
times and data are encoded, and no row dict is built. The hashed text is exactly
hashchain.canonical_bytes_v2's (verify() re-derives every stored hash with event_hash), and each
tuple holds exactly what db_row stores for the row dict (test_loomdb_sqlite_batch compares both
paths column by column).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable
from datetime import UTC
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
from loomos.loomdb.hashchain import CONTEXT_COLUMNS, HASH_V2, context_key, context_values

_I_ROLES = CONTEXT_COLUMNS.index("roles")
_sha256 = hashlib.sha256
# NULL as the rows bind it. SQLite stores a NaN bound as a double as NULL (sqlite3_bind_double
# sets a NaN to NULL), and sqlite3 binds a float directly, while None goes through its adapter
# lookup first: about 0.25 us per NULL, and a typical event has 15 or more of them (unused
# context columns, correlation ids, schema version, retention). The stored value is the same
# NULL (test_loomdb_sqlite_batch compares the rows with the row path's, typeof included).
NULL = float("nan")


@functools.lru_cache(maxsize=1024)
def _context_parts(key: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """JSON fragment and column values (roles as its JSON text, NULL as NULL) of context_key's
    columns."""
    values = [NULL if v is None else v for v in key]
    values[_I_ROLES] = string_list_text(key[_I_ROLES])
    return json_fragment(context_values(key)), tuple(values)


@functools.lru_cache(maxsize=1024)
def _type_json(event_type: str, schema_version: str | None) -> str:
    return json_fragment([event_type, schema_version])


@functools.lru_cache(maxsize=4096)
def _stream_json(stream_id: str) -> str:
    return json_fragment([stream_id])


@functools.lru_cache(maxsize=1024)
def _tags_parts(tags: tuple[str, ...], priority: str) -> tuple[str, str, str]:
    """JSON fragment of tags and priority, the tags column's text and the priority's."""
    return json_fragment([list(tags), str(priority)]), string_list_text(tags), str(priority)


class PlannedRows(list):  # type: ignore[type-arg]
    """plan_rows's rows: tuples in EVENT_COLUMNS order, ready for the INSERT."""


def plan_rows(plan: Iterable[PlannedEvent], recorded_iso: str, prev: str) -> tuple[PlannedRows, str]:
    """Hash planned appends (in chain order) into row tuples; returns them and the last hash."""
    rows = PlannedRows()
    append = rows.append
    seconds: dict[int, str] = {}  # ISO text of occurred_at up to the seconds, per second
    recorded_json = f'"{recorded_iso}"'
    for e, v, p, sv in plan:
        c_json, c_values = _context_parts(context_key(e))
        etype, sid = e.event_type, e.stream_id
        g_json, tags_text, priority = _tags_parts(tuple(e.tags), e.priority)
        occ = e.occurred_at
        if occ.tzinfo is not UTC:
            occ = occ.astimezone(UTC)  # what canonical.iso does (a naive time is local time)
        second, micro = divmod((occ - EPOCH_2000) // MICROSECOND, 1_000_000)
        occ_prefix = seconds.get(second)
        if occ_prefix is None:
            occ_prefix = seconds[second] = iso_second(second)
        occ_text = f"{occ_prefix}{micro:06d}+00:00"
        corr, caus = e.correlation_id, e.causation_id
        o_json = "null,null" if corr is None and caus is None else json_fragment([corr, caus])
        ret = e.retention_days
        r_json = "null" if ret is None else str(ret) if type(ret) is int else json_fragment([ret])
        data_json, meta_json = json_text(e.data), json_text(e.metadata)
        # Their JCS text: nearly always the same text (canonical.jcs_from_json_text).
        data_jcs, meta_jcs = jcs_from_json_text(data_json, e.data), jcs_from_json_text(meta_json, e.metadata)
        x = f"{e.event_id.int:032x}"
        eid = f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"  # str(event_id)
        # json_fragment([position, str(event_id)]) etc.: ints, a UUID's text, ISO times and hex
        # hashes need no JSON escaping, so they are written directly.
        doc = (
            f'[2,{int(p)},"{eid}",{_type_json(etype, v)},{_stream_json(sid)},{int(sv)},"{occ_text}",'
            f'{recorded_json},{o_json},{c_json},{g_json},{data_jcs},{meta_jcs},{r_json},"{prev}"]'
        )
        h = _sha256(doc.encode()).hexdigest()
        append(
            (
                p,
                eid,
                etype,
                NULL if v is None else v,
                sid,
                sv,
                occ_text,
                recorded_iso,
                NULL if corr is None else corr,
                NULL if caus is None else caus,
                *c_values,
                tags_text,
                priority,
                data_json,
                meta_json,
                NULL if ret is None else ret,
                prev,
                HASH_V2,
                h,
            )
        )
        prev = h
    return rows, prev
