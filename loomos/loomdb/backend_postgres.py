"""Postgres backend: production. Writers serialise on the chain-head row (SELECT ... FOR UPDATE),
so a position is assigned only after every lower position has committed: a reader following
"position > last seen" can never skip a late commit. Large batches go in by binary COPY, built
while the rows are hashed (pg_copy.py). The event table is range-partitioned by recorded_at (one
partition per month, created on demand: pg_partitions.py). Commits NOTIFY a per-schema channel
that live subscribers LISTEN on.
"""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from loomos.loomdb import pg_lookup
from loomos.loomdb.backend import AppendState, Cursor, Head, PlannedEvent, PlanOutcome, pooled_cursor
from loomos.loomdb.canonical import iso, string_list_text
from loomos.loomdb.hashchain import EVENT_COLUMNS
from loomos.loomdb.migrate import upgrade
from loomos.loomdb.pg_copy import COPY_SQL, COPY_THRESHOLD, JSON_COLUMNS, encode_plan, json_insert_sql
from loomos.loomdb.pg_partitions import Partitions

_SAVE_STREAMS = (
    "INSERT INTO loomdb_streams (stream_id, version, last_position) "
    "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) "
    "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, "
    "last_position = excluded.last_position"
)
_READ_HEAD = "SELECT position, hash, recorded_at FROM loomdb_head WHERE id = 1"
_LOCK_HEAD = _READ_HEAD + " FOR UPDATE"
_STREAM_VERSIONS = (
    "SELECT NULL::uuid, stream_id, version FROM loomdb_streams WHERE stream_id = ANY(%s::text[])"
)
_SAVE_HEAD = "UPDATE loomdb_head SET position = %s, hash = %s, recorded_at = %s WHERE id = 1"
# Stream versions, head and NOTIFY (delivered at commit, only if it commits) in one statement.
_WRITE_STATE = f"WITH s AS ({_SAVE_STREAMS}), h AS ({_SAVE_HEAD}) SELECT pg_notify(%s, %s)"
_WRITE_JSON = (
    f"WITH e AS ({json_insert_sql()}), s AS ({_SAVE_STREAMS}), h AS ({_SAVE_HEAD}) SELECT pg_notify(%s, %s)"
)
# Postgres guesses JSON filters to be very selective and so prefers to read the whole type/time
# range (bitmap, seq or primary-key scan) and sort; the ordered (event_type, recorded_at,
# position) index scan that stops after `limit` matches is what a paged query wants: at a million
# events ~1 ms instead of 30-300 ms. JIT only slows such queries down.
_PAGED_QUERY_SETTINGS = (
    "SET LOCAL enable_bitmapscan = off",
    "SET LOCAL enable_seqscan = off",
    "SET LOCAL enable_sort = off",
    "SET LOCAL jit = off",
)
_I_ROLES = EVENT_COLUMNS.index("roles")
_I_TAGS = EVENT_COLUMNS.index("tags")
_I_DATA = EVENT_COLUMNS.index("data")
_I_METADATA = EVENT_COLUMNS.index("metadata")
_JSON_IDX = [i for i, c in enumerate(EVENT_COLUMNS) if c in JSON_COLUMNS]


def _as_is(text: str) -> str:
    return text


def _result_sets(cc: Any) -> list[list[tuple[Any, ...]]]:
    """The rows of each row-returning statement of a multi-statement simple query (BEGIN and
    SET return none)."""
    sets = []
    while True:
        if cc.description is not None:
            sets.append(cc.fetchall())
        if not cc.nextset():
            return sets


class PgWaker:
    """LISTEN on the store's channel; a NOTIFY (sent at commit) wakes the subscriber at once, and
    the poll interval bounds the wait if a notification is ever lost."""

    def __init__(self, conninfo: str, channel: str) -> None:
        self.conninfo, self.channel = conninfo, channel
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def start(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        await self.conn.execute(f'LISTEN "{self.channel}"')

    async def wait(self, timeout: float) -> None:
        assert self.conn is not None
        async for _ in self.conn.notifies(timeout=timeout, stop_after=1):
            break

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


class PostgresBackend:
    name = "postgresql"
    ph = "%s"
    poll_interval = 1.0  # a lost NOTIFY is the only reason to poll
    overlap_validation_from: int | None = COPY_THRESHOLD
    compresses_partitions = True
    # Appends of at least this many rows stream them into COPY as they are built and hashed.
    stream_threshold = COPY_THRESHOLD
    STREAM_CHUNK = 64 * 1024

    def __init__(self, url: str, pool_size: int = 5) -> None:
        self.engine = create_engine(url, pool_size=pool_size, max_overflow=20, pool_pre_ping=False)
        self.conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.schema_name = "public"
        self.channel = "loomdb_events"
        self.partitions = Partitions()
        # Idle autocommit connections for group commits, one per group in flight.
        self.append_connections: list[psycopg.Connection[Any]] = []
        self._conn_lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    def migrate(self) -> None:
        with self.engine.connect() as conn, conn.begin():
            # Two processes opening a fresh database at once: one migrates, one waits.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7410001)")
            upgrade(conn)
        with self.raw_cursor() as (conn, cur):
            cur.execute("SELECT current_schema()")
            schema = cur.fetchone()[0] or "public"
            conn.commit()
        self.schema_name = schema
        self.channel = "loomdb_" + re.sub(r"[^a-z0-9_]", "_", schema.lower())[:50]

    def close(self) -> None:
        with self._conn_lock:
            conns, self.append_connections = self.append_connections, []
        for conn in conns:
            conn.close()
        self.engine.dispose()

    # --- transactions ---------------------------------------------------------------------

    def raw_cursor(self) -> AbstractContextManager[tuple[Any, Any]]:
        return pooled_cursor(self.engine)

    @contextlib.contextmanager
    def read(self) -> Iterator[Cursor]:
        with self.raw_cursor() as (conn, cur):
            try:
                # A single snapshot for head position + rows read after it.
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield cur
            finally:
                conn.rollback()

    @contextlib.contextmanager
    def write(self) -> Iterator[Cursor]:
        # psycopg opens the transaction implicitly on the first statement.
        with self.raw_cursor() as (conn, cur):
            try:
                yield cur
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

    @contextlib.contextmanager
    def append_transaction(self) -> Iterator[Cursor]:
        """On a connection of its own (one per group in flight) in autocommit mode, so that no
        separate BEGIN round trip precedes it: read_state sends BEGIN with the head lock and
        write sends COMMIT with the rows. Anything else run in between is inside that explicit
        transaction; an error rolls it back, and a connection left in any other state is
        closed, not reused."""
        with self._conn_lock:
            conn = self.append_connections.pop() if self.append_connections else None
        if conn is None or conn.closed:
            conn = psycopg.connect(self.conninfo, autocommit=True)
        idle = TransactionStatus.IDLE
        try:
            with conn.cursor() as cur:
                try:
                    yield cur
                    if conn.info.transaction_status != idle:
                        conn.commit()
                except BaseException:
                    if not conn.closed and conn.info.transaction_status != idle:
                        conn.rollback()
                    raise
        finally:
            if conn.closed or conn.info.transaction_status != idle:
                conn.close()
            else:
                with self._conn_lock:
                    self.append_connections.append(conn)

    def sql(self, text: str) -> str:
        return text

    # --- values ---------------------------------------------------------------------------

    def ts(self, v: datetime) -> datetime:
        return v

    def uid(self, v: uuid.UUID) -> uuid.UUID:
        return v

    def json_param(self, value: Any) -> Jsonb:
        return Jsonb(value)

    def py_row(self, values: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(EVENT_COLUMNS, values, strict=True))

    def db_row(self, row: dict[str, Any]) -> tuple[Any, ...]:
        out = [row[c] for c in EVENT_COLUMNS]
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

    # --- the chain head and appends -------------------------------------------------------

    def read_head(self, cur: Cursor) -> Head:
        cur.execute(_READ_HEAD)
        pos, h, ts = cur.fetchone()
        return Head(int(pos), h, ts)

    def lock_head(self, cur: Cursor) -> Head:
        cur.execute(_LOCK_HEAD)
        pos, h, ts = cur.fetchone()
        return Head(int(pos), h, ts)

    def stream_versions(self, cur: Cursor, stream_ids: list[str]) -> dict[str, int]:
        cur.execute("SELECT stream_id, version FROM loomdb_streams WHERE stream_id = ANY(%s)", (stream_ids,))
        return {s: int(v) for s, v in cur.fetchall()}

    def before_append(self, now: datetime) -> None:
        if self.partitions.needed(now):
            with self.raw_cursor() as (conn, _):
                self.partitions.prepare(conn, now)

    def read_state(
        self,
        cur: Cursor,
        ids: list[uuid.UUID],
        stream_ids: list[str],
        validate: Callable[[], None],
        optimistic: bool = False,
    ) -> AppendState:
        """Lock the head, then read which ids exist and the streams' versions: one round trip.
        The two statements go as one simple query (values bound client-side, escaped by
        psycopg); the server runs the second only once the lock is granted, and, as each
        statement of a READ COMMITTED transaction takes a new snapshot, it sees every append
        that committed before the lock came free. (Pipeline mode would also need one round trip,
        but psycopg's pipeline spins on the writable socket while it waits, burning a core.)
        event_id cannot be unique on the partitioned table, so ids are always looked up."""
        conn = cur.connection
        cc = psycopg.ClientCursor(conn)
        # On an autocommit connection (append_transaction) the transaction starts here, in the
        # same round trip.
        begin = conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
        lock = ("BEGIN; " if begin else "") + _LOCK_HEAD + "; "
        if len(ids) >= COPY_THRESHOLD:
            return self._read_state_large(cc, lock, ids, stream_ids, validate)
        validate()
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
            lock + f"SET LOCAL jit = off; {lookup} UNION ALL {_STREAM_VERSIONS}; SET LOCAL jit TO DEFAULT",
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
        return AppendState(Head(int(pos), h, ts), existing, versions)

    def _read_state_large(
        self, cc: Any, lock: str, ids: list[uuid.UUID], stream_ids: list[str], validate: Callable[[], None]
    ) -> AppendState:
        """read_state for a large batch: three round trips instead of one, which is nothing next
        to what the ids cost as text. A 5,000-id literal took 4.5 ms to escape, send and parse
        alone; as a binary uuid[] parameter (16 bytes an id, built here in one join) it is a
        fraction of that. A bound parameter needs the extended protocol, one statement at a
        time, so the head lock and stream versions go first in one simple query, then the id
        lookup (pg_lookup.LOOKUP_SETTINGS around it). The lookup is sent without waiting for it: the
        server probes the ids (about 3 ms for 5,000) while `validate` runs here (the leader
        validates the batch), in this thread, so no second thread contends for the GIL."""
        settings = "".join(f"SET LOCAL {s}; " for s in pg_lookup.LOOKUP_SETTINGS)
        cc.execute(lock + settings + pg_lookup.IS_PREPARED + "; " + _STREAM_VERSIONS, (stream_ids,))
        head, prepared, stream_rows = _result_sets(cc)
        (pos, h, ts) = head[0]
        versions = {sid: int(n) for _, sid, n in stream_rows}
        conn = cc.connection
        pg_lookup.send_lookup(conn, ids, prepared[0][0])
        try:
            validate()
        finally:
            existing = pg_lookup.fetch_lookup(conn)  # the connection must be free again, whatever happened
        cc.execute("; ".join(f"SET LOCAL {s.split(' = ')[0]} TO DEFAULT" for s in pg_lookup.LOOKUP_SETTINGS))
        return AppendState(Head(int(pos), h, ts), existing, versions)

    def write_appends(
        self,
        cur: Cursor,
        events: Iterable[PlannedEvent],
        count: int,
        plan: PlanOutcome,
        head_hash: str,
        recorded: datetime,
        commit: bool,
    ) -> None:
        self.partitions.ensure(cur, recorded)
        recorded_iso = iso(recorded)
        if count >= self.stream_threshold:
            last = self.stream_plan(cur, events, recorded, recorded_iso, head_hash)
            rows = ""
        else:
            rows, last = self.plan_rows(events, recorded, recorded_iso, head_hash)
        self.write_batch(cur, rows, plan.streams, plan.position, last, recorded, commit)

    def plan_rows(
        self, plan: Iterable[PlannedEvent], recorded: datetime, recorded_iso: str, prev: str
    ) -> tuple[str, str]:
        """Hash planned appends into the jsonb parameter of pg_copy.json_insert_sql; returns it
        and the last hash."""
        rows: list[str] = []
        last = encode_plan(plan, recorded, recorded_iso, prev, 0, None, rows)
        return "[" + ",".join(rows) + "]", last

    def stream_plan(
        self, cur: Cursor, plan: Iterable[PlannedEvent], recorded: datetime, recorded_iso: str, prev: str
    ) -> str:
        """COPY planned appends while they are being hashed and encoded (pg_copy.encode_plan):
        each chunk is sent as soon as it is ready, so the server inserts (and indexes) one chunk
        while Python encodes the next, instead of the two taking turns. Returns the last hash."""
        with cur.copy(COPY_SQL) as copy:
            return encode_plan(plan, recorded, recorded_iso, prev, self.STREAM_CHUNK, copy.write)

    def write_batch(
        self,
        cur: Cursor,
        rows: str,
        streams: dict[str, tuple[int, int]],
        position: int,
        h: str,
        recorded_at: datetime,
        commit: bool,
    ) -> None:
        """plan_rows's payload (or "" when stream_plan has copied the rows already), stream
        versions, head and NOTIFY in one statement (data-modifying CTEs all run; each writes its
        own table), then COMMIT, sent as one simple query: one round trip, no pipeline (see
        read_state). COMMIT returns once the commit is flushed; if the statement fails, the
        server skips the COMMIT and the caller rolls back."""
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

    # --- reads ----------------------------------------------------------------------------

    def fetch_page(self, sql: str, params: list[Any], by_type: bool) -> list[dict[str, Any]]:
        # One statement reads one snapshot: no explicit transaction needed.
        with self.raw_cursor() as (conn, cur):
            try:
                with conn.pipeline():
                    if by_type:
                        for setting in _PAGED_QUERY_SETTINGS:
                            conn.cursor().execute(setting)
                    # Never a prepared (generic) plan: it cannot prune partitions or use the
                    # time range's selectivity, and fell back to scanning whole partitions.
                    cur.execute(sql, params, prepare=False)
                return [self.py_row(r) for r in cur.fetchall()]
            finally:
                conn.rollback()

    @contextlib.contextmanager
    def verify_rows(self) -> Iterator[tuple[Head, Iterator[dict[str, Any]]]]:
        """A server-side cursor streams the table; the head comes from the same snapshot."""
        with self.raw_cursor() as (conn, cur):
            stream = conn.cursor(name="loomdb_verify")
            try:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                head = self.read_head(cur)
                stream.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM loomdb_events ORDER BY position")
                yield head, (self.py_row(r) for r in stream)
            finally:
                stream.close()
                conn.rollback()

    def waker(self) -> PgWaker:
        return PgWaker(self.conninfo, self.channel)

    # --- retention ------------------------------------------------------------------------

    def drop_period(self, cur: Cursor, start: datetime, end: datetime) -> None:
        """A month is a partition: detach and drop it (no row trigger fires)."""
        self.partitions.drop(cur, start)

    def compress_period(self, cur: Cursor, start: datetime, dry_run: bool) -> int | None:
        return self.partitions.compress(cur, start, dry_run)

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
