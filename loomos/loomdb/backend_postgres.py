"""Postgres backend: production. Writers serialise on the chain-head row (SELECT ... FOR UPDATE),
so a position is assigned only after every lower position has committed: a reader following
"position > last seen" can never skip a late commit. Large batches go in by binary COPY, built
here while the rows are hashed. The event table is range-partitioned by recorded_at (one
partition per month, created on demand). Commits NOTIFY a per-schema channel that live
subscribers LISTEN on.
"""

from __future__ import annotations

import functools
import operator
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
import psycopg.generators
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types.json import Jsonb

from loomos.loomdb.hashchain import (
    EPOCH_2000,
    EVENT_COLUMNS,
    MICROSECOND,
    SCALAR_COLUMNS,
    context_key,
    context_values,
    hash_text,
    iso_second,
    json_fragment,
    json_text,
    string_list_text,
)

JSON_COLUMNS = frozenset({"roles", "tags", "data", "metadata"})
COPY_THRESHOLD = 200  # below this, a multi-row INSERT is cheaper than setting up COPY
_COPY_TYPES = [
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
    "text",
]
assert len(_COPY_TYPES) == len(EVENT_COLUMNS)
_COPY_SQL = f"COPY loomdb_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_JSON_IDX = [i for i, c in enumerate(EVENT_COLUMNS) if c in JSON_COLUMNS]
_COLUMNS = operator.itemgetter(*EVENT_COLUMNS)
_I_DATA = EVENT_COLUMNS.index("data")
_I_METADATA = EVENT_COLUMNS.index("metadata")
_I_ROLES = EVENT_COLUMNS.index("roles")
_I_TAGS = EVENT_COLUMNS.index("tags")


def _as_is(text: str) -> str:
    return text


# --- binary COPY rows built directly ---------------------------------------------------------
# psycopg's write_row adapts each of the 30 values through its dumper machinery (and jsonb
# through a Jsonb wrapper); the append path already holds every value in its final form (the
# canonical JSON text it hashed), so it writes the COPY binary format itself: per row a field
# count, then per field a length and the type's binary form (jsonb: version byte 1 + text;
# timestamptz: microseconds since 2000-01-01 UTC; uuid: 16 bytes; NULL: length -1).
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
_FIELD_COUNT = struct.pack("!h", len(EVENT_COLUMNS))
_UUID_LEN = struct.pack("!i", 16)
_HASH_LEN = struct.pack("!i", 64)
_pack_len = struct.Struct("!i").pack
_pack_i8 = struct.Struct("!iq").pack
_pack_i4 = struct.Struct("!ii").pack


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
    """One appended row (with the canonical JSON texts it hashed) in COPY binary format, in
    EVENT_COLUMNS order. `recorded` is the encoded recorded_at, shared by a whole append."""
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
            _HASH_LEN + r["hash"].encode(),
        )
    )


# --- appends encoded in one pass: hash input and COPY row from the same cached fragments ----
# An event source repeats its audit and security context, event types, streams and tags, so
# their canonical JSON fragments (hashchain.json_fragment) and COPY bytes are made once and
# reused; only the per-event values (ids, positions, times, data) are encoded per row, and no
# row dict is built. The hashed text is exactly hashchain.hash_values's (verify() re-derives
# every stored hash with event_hash, and the tests check both agree).
_ROW_START = struct.Struct("!hiqi").pack  # field count, position (len + int8), uuid length
_VERSION_OCCURRED = struct.Struct("!iqiq").pack  # stream_version and occurred_at, with lengths
_NULL2 = _NULL + _NULL
_EMPTY_JSONB = _jsonb("{}")


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


def _json_insert_sql() -> str:
    """Small appends (below COPY_THRESHOLD) go in as one jsonb parameter: an array of rows, each
    the hashed scalar array (hashchain.SCALAR_COLUMNS order) followed by data, metadata and the
    hash, taken apart by the server. One text parameter instead of 30 adapted values per row;
    jsonb keeps every value exactly (data and metadata are the same canonical text either way,
    timestamps have microseconds, text comes back unescaped)."""
    index = {c: i for i, c in enumerate(SCALAR_COLUMNS)}
    index |= {
        "data": len(SCALAR_COLUMNS),
        "metadata": len(SCALAR_COLUMNS) + 1,
        "hash": len(SCALAR_COLUMNS) + 2,
    }
    casts = {
        "position": "bigint",
        "stream_version": "bigint",
        "event_id": "uuid",
        "occurred_at": "timestamptz",
        "recorded_at": "timestamptz",
        "retention_days": "int",
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


_INSERT_JSON = _json_insert_sql()
_SAVE_STREAMS = (
    "INSERT INTO loomdb_streams (stream_id, version, last_position) "
    "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) "
    "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, "
    "last_position = excluded.last_position"
)
# Around a large id lookup. The planner's own choice (a bitmap scan of the event_id hash index
# once the table is analyzed) is kept, but seq scans are off: on a table not analyzed yet it
# would scan every row, and a scan grows with the table. Its misestimates also priced lookups
# into JIT compilation (140 ms).
LOOKUP_SETTINGS = ("jit = off", "enable_seqscan = off")
_LOOKUP_IDS = "SELECT event_id, position FROM loomdb_events WHERE event_id = ANY(%s)"
_LOCK_HEAD = "SELECT position, hash, recorded_at FROM loomdb_head WHERE id = 1 FOR UPDATE"
_STREAM_VERSIONS = (
    "SELECT NULL::uuid, stream_id, version FROM loomdb_streams WHERE stream_id = ANY(%s::text[])"
)
_SAVE_HEAD = "UPDATE loomdb_head SET position = %s, hash = %s, recorded_at = %s WHERE id = 1"
# Stream versions, head and NOTIFY (delivered at commit, only if it commits) in one statement.
_WRITE_STATE = f"WITH s AS ({_SAVE_STREAMS}), h AS ({_SAVE_HEAD}) SELECT pg_notify(%s, %s)"
_WRITE_JSON = (
    f"WITH e AS ({_INSERT_JSON}), s AS ({_SAVE_STREAMS}), h AS ({_SAVE_HEAD}) SELECT pg_notify(%s, %s)"
)


def encode_plan(
    plan: Any,
    recorded: datetime,
    recorded_iso: str,
    prev: str,
    chunk: int,
    out: Any,
    json_rows: list[str] | None = None,
) -> str:
    """Hash and COPY-encode planned appends ((event, schema_version, position, stream_version)
    in chain order), handing `out` a COPY binary chunk (signature first, trailer last) whenever
    `chunk` bytes are ready; returns the last hash. With `json_rows`, each row goes there as a
    JSON array instead (see _INSERT_JSON) and `out` is not called."""
    rec_b = _timestamptz(recorded)
    seconds: dict[int, str] = {}  # ISO text of occurred_at up to the seconds, per second
    tail = f'+00:00","{recorded_iso}",'
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
            occ = occ.astimezone(UTC)  # what hashchain.iso does (a naive time is local time)
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
        eid_b = e.event_id.int.to_bytes(16)  # UUID.bytes, without the property's Python frame
        x = eid_b.hex()  # str(event_id), from the bytes COPY needs anyway
        # json_fragment([position, str(event_id)]) etc.: ints, a UUID's text, ISO times and hex
        # hashes need no JSON escaping, so they are written directly.
        head = (
            f'[{int(p)},"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}",{t_json},{s_json},{int(sv)},"'
            f"{occ_prefix}{micro:06d}{tail}"
            f'{o_json},{c_json},{g_json},{r_json},"{prev}"]'
        )
        h = hash_text(head, data_json, meta_json)
        if json_rows is not None:
            # The hashed scalars, then data, metadata and the hash: one JSON array per row.
            json_rows.append(f'{head[:-1]},{data_json},{meta_json},"{h}"]')
            prev = h
            continue
        h_b = h.encode()
        row = b"".join(
            (
                _ROW_START(30, 8, p, 16),
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
                _HASH_LEN,
                h_b,
            )
        )
        append(row)
        size += len(row)
        if size >= chunk:
            out(b"".join(parts))
            parts.clear()
            size = 0
        prev, prev_b = h, h_b
    if json_rows is not None:
        return prev
    append(_COPY_TRAILER)
    out(b"".join(parts))
    return prev


def copy_data(rows: list[dict[str, Any]]) -> bytes:
    """A whole COPY binary stream (signature, rows, trailer) for row dicts (EventStore._row),
    field by field: the reference encode_plan's bytes are tested against."""
    parts = [_COPY_SIGNATURE]
    cached: tuple[datetime, bytes] | None = None
    for r in rows:
        ts = r["recorded_at"]
        if cached is None or cached[0] is not ts:
            cached = (ts, _timestamptz(ts))
        parts.append(copy_row(r, cached[1]))
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


def _result_sets(cc: Any) -> list[list[tuple[Any, ...]]]:
    """The rows of each row-returning statement of a multi-statement simple query (BEGIN and
    SET return none)."""
    sets = []
    while True:
        if cc.description is not None:
            sets.append(cc.fetchall())
        if not cc.nextset():
            return sets


class UuidArray(bytes):
    """A uuid[] parameter already in Postgres's binary array form (see uuid_array)."""


_UUID_ARRAY_OID = 2951


class _UuidArrayDumper(Dumper):
    format = Format.BINARY
    oid = _UUID_ARRAY_OID

    def dump(self, obj: UuidArray) -> bytes:
        return obj


_ARRAY_HEADER = struct.Struct("!iiiii").pack  # dimensions, has-nulls flag, element type, size, lower bound


def uuid_array(ids: list[uuid.UUID]) -> UuidArray:
    """`ids` as a binary uuid[] parameter: a header, then each id's length and 16 bytes. psycopg
    would adapt a list element by element; this is one join."""
    items = b"".join([_UUID_LEN + u.int.to_bytes(16) for u in ids])
    return UuidArray(_ARRAY_HEADER(1, 0, 2950, len(ids), 1) + items)


psycopg.adapters.register_dumper(UuidArray, _UuidArrayDumper)


# The id lookup of a large append, sent with libpq's calls directly: psycopg's cursor would wait
# for the result, and the point is not to (read_state's `meanwhile`). A prepared statement of
# the session, so it is planned once and not per append (1-3 ms for 5,000 ids); whether it
# exists is asked in read_state's first round trip rather than remembered here, since psycopg
# runs DEALLOCATE ALL on a connection after some rollbacks. Its result comes back in binary:
# 16-byte uuids and int8s.
_LOOKUP_NAME = b"loomdb_lookup_ids"
_LOOKUP_PG = _LOOKUP_IDS.replace("%s", "$1").encode()
_LOOKUP_PREPARED = (
    f"SELECT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE name = '{_LOOKUP_NAME.decode()}')"
)


def _send_lookup(conn: Any, ids: list[uuid.UUID], prepared: bool) -> None:
    pg = conn.pgconn
    if not prepared:
        pg.send_prepare(_LOOKUP_NAME, _LOOKUP_PG, param_types=[_UUID_ARRAY_OID])
        _check(conn, conn.wait(psycopg.generators.fetch_many(pg)), psycopg.pq.ExecStatus.COMMAND_OK)
    pg.send_query_prepared(_LOOKUP_NAME, [bytes(uuid_array(ids))], param_formats=[1], result_format=1)
    conn.wait(psycopg.generators.send(pg))


def _fetch_lookup(conn: Any) -> dict[uuid.UUID, int]:
    results = conn.wait(psycopg.generators.fetch_many(conn.pgconn))
    _check(conn, results, psycopg.pq.ExecStatus.TUPLES_OK)
    found: dict[uuid.UUID, int] = {}
    for res in results:
        for i in range(res.ntuples):
            found[uuid.UUID(bytes=bytes(res.get_value(i, 0)))] = int.from_bytes(
                res.get_value(i, 1), "big", signed=True
            )
    return found


def _check(conn: Any, results: list[Any], ok: Any) -> None:
    for res in results:
        if res.status != ok:
            raise psycopg.errors.error_from_result(res, encoding=conn.info.encoding)


def month_start(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return datetime(ts.year, ts.month, 1, tzinfo=UTC)


def next_month(ts: datetime) -> datetime:
    return datetime(ts.year + (ts.month == 12), ts.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"loomdb_events_y{start.year:04d}m{start.month:02d}"


class PostgresBackend:
    name = "postgresql"
    ph = "%s"

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._partitions: set[str] = set()

    def configure(self, dbapi_conn: Any) -> None:
        """Nothing per connection: search_path comes from the URL's `options`."""

    def begin_write(self, cur: Any) -> None:
        """psycopg opens a transaction implicitly on the first statement."""

    def begin_read(self, cur: Any) -> None:
        # A single snapshot for head position + rows read after it.
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def lock_head(self, cur: Any) -> tuple[int, str, datetime]:
        cur.execute(_LOCK_HEAD)
        pos, h, ts = cur.fetchone()
        return int(pos), h, ts

    def ts(self, v: datetime) -> datetime:
        return v

    def uid(self, v: uuid.UUID) -> uuid.UUID:
        return v

    def db_row(self, row: dict[str, Any]) -> tuple[Any, ...]:
        out = list(_COLUMNS(row))
        if "data_json" not in row:
            for i in _JSON_IDX:
                out[i] = Jsonb(out[i])
        else:
            # Appends carry the canonical JSON text they hashed: send it as is, not serialised again.
            out[_I_DATA] = Jsonb(row["data_json"], dumps=_as_is)
            out[_I_METADATA] = Jsonb(row["metadata_json"], dumps=_as_is)
            out[_I_ROLES] = Jsonb(string_list_text(tuple(row["roles"])), dumps=_as_is)
            out[_I_TAGS] = Jsonb(string_list_text(tuple(row["tags"])), dumps=_as_is)
        return tuple(out)

    # read_state runs `meanwhile` while the server looks the ids of a large append up.
    overlaps_lookup = True

    def read_state(
        self,
        cur: Any,
        ids: list[uuid.UUID],
        stream_ids: list[str],
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[tuple[int, str, datetime], dict[uuid.UUID, int], dict[str, int]]:
        """Lock the head, then read which ids exist and the streams' versions: one round trip.
        The two statements go as one simple query (values bound client-side, escaped by
        psycopg); the server runs the second only once the lock is granted, and, as each
        statement of a READ COMMITTED transaction takes a new snapshot, it sees every append
        that committed before the lock came free. (Pipeline mode would also need one round trip,
        but psycopg's pipeline spins on the writable socket while it waits, burning a core.)"""
        import psycopg

        conn = cur.connection
        cc = psycopg.ClientCursor(conn)
        # On an autocommit connection (EventStore._append_transaction) the transaction starts
        # here, in the same round trip.
        begin = conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        lock = ("BEGIN; " if begin else "") + _LOCK_HEAD + "; "
        streams = _STREAM_VERSIONS
        if len(ids) >= COPY_THRESHOLD:
            return self._read_state_large(cc, lock, streams, ids, stream_ids, meanwhile)
        if meanwhile is not None:
            meanwhile()
        # Small lookups (group commits of single appends) go in one simple query with the head
        # lock: one round trip. They probe the event_id index once per id (LATERAL, kept from
        # being flattened by OFFSET 0): before the table is analyzed the planner takes event_id
        # for far from unique, and scanned all 100k rows for a 30-event group (24 ms, every
        # group commit). The same misestimate priced lookups into JIT compilation (140 ms), hence
        # jit off around them. The ids go as one text literal of 32-hex-digit UUIDs (no quoting
        # issue, a form uuid input accepts); stream rows carry a NULL event_id.
        lookup = (
            "SELECT e.event_id, NULL::text, e.position FROM unnest(%s::uuid[]) AS x(id) "
            "CROSS JOIN LATERAL (SELECT event_id, position FROM loomdb_events "
            "WHERE event_id = x.id OFFSET 0) AS e"
        )
        cc.execute(
            lock + f"SET LOCAL jit = off; {lookup} UNION ALL {streams}; SET LOCAL jit TO DEFAULT",
            ("{" + ",".join([u.bytes.hex() for u in ids]) + "}", stream_ids),
        )
        head, lookups = _result_sets(cc)
        (pos, h, ts) = head[0]
        existing: dict[uuid.UUID, int] = {}
        versions: dict[str, int] = {}
        for e, sid, n in lookups:
            if e is None:
                versions[sid] = int(n)
            else:
                existing[e] = int(n)
        return (int(pos), h, ts), existing, versions

    def _read_state_large(
        self,
        cc: Any,
        lock: str,
        streams: str,
        ids: list[uuid.UUID],
        stream_ids: list[str],
        meanwhile: Callable[[], None] | None,
    ) -> tuple[tuple[int, str, datetime], dict[uuid.UUID, int], dict[str, int]]:
        """read_state for a large batch: three round trips instead of one, which is nothing next
        to what the ids cost as text. A 5,000-id literal took 4.5 ms to escape, send and parse
        alone; as a binary uuid[] parameter (16 bytes an id, built here in one join) it is a
        fraction of that. A bound parameter needs the extended protocol, one statement at a
        time, so the head lock and stream versions go first in one simple query, then the id
        lookup (LOOKUP_SETTINGS around it). The lookup is sent without waiting for it: the
        server probes the ids (about 3 ms for 5,000) while `meanwhile` runs here (the caller
        validates the batch), in this thread, so no second thread contends for the GIL."""
        settings = "".join(f"SET LOCAL {s}; " for s in LOOKUP_SETTINGS)
        cc.execute(lock + settings + _LOOKUP_PREPARED + "; " + streams, (stream_ids,))
        head, prepared, stream_rows = _result_sets(cc)
        (pos, h, ts) = head[0]
        versions = {sid: int(n) for _, sid, n in stream_rows}
        conn = cc.connection
        _send_lookup(conn, ids, prepared[0][0])
        try:
            if meanwhile is not None:
                meanwhile()
        finally:
            existing = _fetch_lookup(conn)  # the connection must be free again, whatever happened
        cc.execute("; ".join(f"SET LOCAL {s.split(' = ')[0]} TO DEFAULT" for s in LOOKUP_SETTINGS))
        return (int(pos), h, ts), existing, versions

    def write(
        self,
        cur: Any,
        rows: str | list[Any],
        streams: dict[str, tuple[int, int]],
        position: int,
        h: str,
        recorded_at: datetime,
        commit: bool,
    ) -> None:
        """plan_rows's payload (or [] when stream_plan has copied the rows already), stream
        versions, head and NOTIFY in one statement (data-modifying CTEs all run; each writes its
        own table), then COMMIT, sent as one simple query: one round trip, no pipeline (see
        read_state). COMMIT returns once the commit is flushed; if the statement fails, the
        server skips the COMMIT and the caller rolls back."""
        import psycopg

        ids = list(streams)
        state = (
            ids,
            [streams[s][0] for s in ids],
            [streams[s][1] for s in ids],
            position,
            h,
            recorded_at,
            self.channel,
            str(position),
        )
        sql, params = (_WRITE_JSON, (rows, *state)) if rows else (_WRITE_STATE, state)
        psycopg.ClientCursor(cur.connection).execute(sql + ("; COMMIT" if commit else ""), params)

    def py_row(self, values: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(EVENT_COLUMNS, values, strict=True))

    def stream_versions(self, cur: Any, stream_ids: list[str]) -> dict[str, int]:
        cur.execute("SELECT stream_id, version FROM loomdb_streams WHERE stream_id = ANY(%s)", (stream_ids,))
        return {s: int(v) for s, v in cur.fetchall()}

    def ensure_partitions(self, cur: Any, rows: list[dict[str, Any]]) -> None:
        """Fallback inside the append transaction (the clock moved into a month that
        prepare_partitions did not create). Creating a partition locks the parent table until
        commit, so this path is kept rare."""
        # An append's rows share one recorded_at object: compute each distinct month once.
        stamps = {id(r["recorded_at"]): r["recorded_at"] for r in rows}.values()
        for start in sorted({month_start(ts) for ts in stamps}):
            if partition_name(start) not in self._partitions:
                self._create(cur, start)

    def needs_partitions(self, now: datetime) -> bool:
        this = month_start(now)
        return not {partition_name(this), partition_name(next_month(this))} <= self._partitions

    def prepare_partitions(self, conn: Any, now: datetime) -> None:
        """Create this month's and next month's partitions in their own short transaction, before
        an append takes the head lock: CREATE TABLE ... PARTITION OF holds an exclusive lock on
        the parent until commit, which would stall readers for the whole append."""
        import psycopg

        this = month_start(now)
        for start in (this, next_month(this)):
            if partition_name(start) in self._partitions:
                continue
            try:
                with conn.transaction():
                    self._create(conn.cursor(), start)
            except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                # Another process created it between our check and our CREATE.
                self._partitions.add(partition_name(start))
        conn.commit()

    def _create(self, cur: Any, start: datetime) -> None:
        name = partition_name(start)
        cur.execute(
            "SELECT 1 FROM pg_class WHERE relname = %s AND relnamespace = current_schema()::regnamespace",
            [name],
        )
        if cur.fetchone() is None:
            # The name and bounds are built from two integers, never from input.
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF loomdb_events "
                f"FOR VALUES FROM ('{start.isoformat()}') TO ('{next_month(start).isoformat()}')"
            )
        self._partitions.add(name)

    def forget_partition(self, name: str) -> None:
        self._partitions.discard(name)

    # Appends of at least this many rows stream them into COPY as they are built and hashed.
    stream_threshold = COPY_THRESHOLD
    STREAM_CHUNK = 64 * 1024

    def plan_rows(self, plan: Any, recorded: datetime, recorded_iso: str, prev: str) -> tuple[str, str]:
        """Hash planned appends into the JSON parameter of _INSERT_JSON; returns it and the last
        hash."""
        rows: list[str] = []
        last = encode_plan(plan, recorded, recorded_iso, prev, 0, None, rows)
        return "[" + ",".join(rows) + "]", last

    def stream_plan(self, cur: Any, plan: Any, recorded: datetime, recorded_iso: str, prev: str) -> str:
        """COPY planned appends while they are being hashed and encoded (encode_plan): each
        chunk is sent as soon as it is ready, so the server inserts (and indexes) one chunk while
        Python encodes the next, instead of the two taking turns. Returns the last hash."""
        with cur.copy(_COPY_SQL) as copy:
            return encode_plan(plan, recorded, recorded_iso, prev, self.STREAM_CHUNK, copy.write)

    # --- SQL fragments for queries: JSON paths are bound text[] parameters -----------------

    def json_value(self, column: str, keys: list[str]) -> tuple[str, list[Any]]:
        return f"({column} #> %s)", [keys]

    def json_type(self, column: str, keys: list[str]) -> tuple[str, list[Any]]:
        return f"jsonb_typeof({column} #> %s)", [keys]

    def json_text(self, column: str, keys: list[str]) -> tuple[str, list[Any]]:
        return f"({column} #>> %s)", [keys]

    def json_contains(self, column: str, keys: list[str], value: Any) -> tuple[str, list[Any]]:
        target = f"({column} #> %s)" if keys else column
        return f"{target} @> %s", ([keys] if keys else []) + [Jsonb([value])]

    def json_compare(self, column: str, keys: list[str], op: str, value: Any) -> tuple[str, list[Any]]:
        if op == "=":
            return f"({column} #> %s) = %s", [keys, Jsonb(value)]
        if op == "!=":
            return f"({column} #> %s) <> %s", [keys, Jsonb(value)]
        kind = "number" if isinstance(value, int | float) else "string"
        return (
            f"(jsonb_typeof({column} #> %s) = '{kind}' AND ({column} #> %s) {op} %s)",
            [keys, keys, Jsonb(value)],
        )

    def month_of(self, column: str) -> str:
        return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM')"
