"""Postgres backend: production. Writers serialise on the chain-head row (SELECT ... FOR UPDATE),
so a position is assigned only after every lower position has committed: a reader following
"position > last seen" can never skip a late commit. Large batches go in by binary COPY. The
event table is range-partitioned by recorded_at (one partition per month, created on demand).
Commits NOTIFY a per-schema channel that live subscribers LISTEN on.
"""

from __future__ import annotations

import functools
import operator
import struct
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from loomos.loomdb.hashchain import EVENT_COLUMNS, string_list_text

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
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    b = value.encode()
    return _pack_len(len(b)) + b


def _jsonb(text: str) -> bytes:
    b = text.encode()
    return _pack_len(len(b) + 1) + b"\x01" + b


def _timestamptz(ts: datetime) -> bytes:
    return _pack_i8(8, (ts - _PG_EPOCH) // _MICROSECOND)


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


def copy_data(rows: list[dict[str, Any]]) -> bytes:
    """A whole COPY binary stream (signature, rows, trailer) for appended rows."""
    parts = [_COPY_SIGNATURE]
    cached: tuple[datetime, bytes] | None = None
    for r in rows:
        ts = r["recorded_at"]
        if cached is None or cached[0] is not ts:
            cached = (ts, _timestamptz(ts))
        parts.append(copy_row(r, cached[1]))
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


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
        cur.execute("SELECT position, hash, recorded_at FROM loomdb_head WHERE id = 1 FOR UPDATE")
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

    def read_state(
        self, cur: Any, ids: list[uuid.UUID], stream_ids: list[str]
    ) -> tuple[tuple[int, str, datetime], dict[uuid.UUID, int], dict[str, int]]:
        """Lock the head, then read which ids exist and the streams' versions: one round trip
        (pipeline mode); the later statements run after the lock is granted."""
        conn = cur.connection
        with conn.pipeline():
            c_head, c_ids, c_streams = conn.cursor(), conn.cursor(), conn.cursor()
            c_head.execute("SELECT position, hash, recorded_at FROM loomdb_head WHERE id = 1 FOR UPDATE")
            # One text literal instead of a uuid[] adapted element by element: much cheaper for
            # large batches, and the ids are UUID objects (no quoting issue).
            c_ids.execute(
                "SELECT event_id, position FROM loomdb_events WHERE event_id = ANY(%s::uuid[])",
                ("{" + ",".join(map(str, ids)) + "}",),
            )
            c_streams.execute(
                "SELECT stream_id, version FROM loomdb_streams WHERE stream_id = ANY(%s)", (stream_ids,)
            )
        pos, h, ts = c_head.fetchone()
        existing = {e: int(p) for e, p in c_ids.fetchall()}
        versions = {sid: int(v) for sid, v in c_streams.fetchall()}
        return (int(pos), h, ts), existing, versions

    def write(
        self,
        cur: Any,
        rows: list[dict[str, Any]],
        streams: dict[str, tuple[int, int]],
        position: int,
        h: str,
        recorded_at: datetime,
        commit: bool,
    ) -> None:
        """Rows, stream versions, head and NOTIFY (and the commit) in one round trip, after a
        COPY for large batches (COPY cannot run in pipeline mode)."""
        conn = cur.connection
        if len(rows) >= COPY_THRESHOLD:
            self._copy(cur, rows)
        with conn.pipeline():
            if rows and len(rows) < COPY_THRESHOLD:
                self._insert(cur, rows)
            self.save_streams(cur, streams)
            self.save_head(cur, position, h, recorded_at)
            self.notify(cur, position)
            if commit:
                conn.commit()

    def py_row(self, values: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(EVENT_COLUMNS, values, strict=True))

    def existing_ids(self, cur: Any, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        cur.execute("SELECT event_id, position FROM loomdb_events WHERE event_id = ANY(%s)", (ids,))
        return {e: int(p) for e, p in cur.fetchall()}

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

    def insert_events(self, cur: Any, rows: list[dict[str, Any]]) -> None:
        if len(rows) >= COPY_THRESHOLD:
            self._copy(cur, rows)
        else:
            self._insert(cur, rows)

    # Appends of at least this many rows stream them into COPY as they are built and hashed.
    stream_threshold = COPY_THRESHOLD
    STREAM_CHUNK = 64 * 1024

    def stream_rows(self, cur: Any, rows: Any) -> None:
        """COPY appended rows while they are being built: each chunk is sent as soon as it is
        encoded, so the server inserts (and indexes) one chunk while Python hashes the next,
        instead of the two taking turns."""
        chunk = self.STREAM_CHUNK
        with cur.copy(_COPY_SQL) as copy:
            parts = [_COPY_SIGNATURE]
            size = 0
            cached: tuple[datetime, bytes] | None = None
            for r in rows:
                ts = r["recorded_at"]
                if cached is None or cached[0] is not ts:
                    cached = (ts, _timestamptz(ts))
                b = copy_row(r, cached[1])
                parts.append(b)
                size += len(b)
                if size >= chunk:
                    copy.write(b"".join(parts))
                    parts, size = [], 0
            parts.append(_COPY_TRAILER)
            copy.write(b"".join(parts))

    def _copy(self, cur: Any, rows: list[dict[str, Any]]) -> None:
        if all("data_json" in r for r in rows):
            with cur.copy(_COPY_SQL) as copy:
                copy.write(copy_data(rows))
            return
        with cur.copy(_COPY_SQL) as copy:
            copy.set_types(_COPY_TYPES)
            for r in rows:
                copy.write_row(self.db_row(r))

    def _insert(self, cur: Any, rows: list[dict[str, Any]]) -> None:
        n = len(EVENT_COLUMNS)
        values = ", ".join("(" + ", ".join(["%s"] * n) + ")" for _ in rows)
        params: list[Any] = []
        for r in rows:
            params.extend(self.db_row(r))
        cur.execute(f"INSERT INTO loomdb_events ({', '.join(EVENT_COLUMNS)}) VALUES {values}", params)

    def save_streams(self, cur: Any, streams: dict[str, tuple[int, int]]) -> None:
        ids = list(streams)
        cur.execute(
            "INSERT INTO loomdb_streams (stream_id, version, last_position) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) "
            "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, "
            "last_position = excluded.last_position",
            (ids, [streams[s][0] for s in ids], [streams[s][1] for s in ids]),
        )

    def save_head(self, cur: Any, position: int, h: str, recorded_at: datetime) -> None:
        cur.execute(
            "UPDATE loomdb_head SET position = %s, hash = %s, recorded_at = %s WHERE id = 1",
            (position, h, recorded_at),
        )

    def notify(self, cur: Any, position: int) -> None:
        # Delivered at commit, only if the transaction commits: a wake-up, never the data.
        cur.execute("SELECT pg_notify(%s, %s)", (self.channel, str(position)))

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
