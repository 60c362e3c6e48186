"""EventStore: the one API over both backends.

Appends are serialised on the chain-head row: each append locks the head, assigns the next
positions, links each event to its predecessor's hash, writes, moves the head and commits.
Because the next writer can only read the head after this commit is visible, positions become
visible strictly in order, and a reader following `position > last seen` never skips an event
that commits late (the failure of bigserial-based stores). This "serialised writers" technique
costs one row lock per append; batches amortise it.

There is no update or delete method: events are immutable (and the database triggers refuse
UPDATE and DELETE); only retention (retention.py) removes whole archived periods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url

from loomos.loomdb.backend_postgres import COPY_THRESHOLD, PostgresBackend
from loomos.loomdb.backend_sqlite import SqliteBackend
from loomos.loomdb.errors import (
    ConcurrencyError,
    InvalidEvent,
    LoomDBError,
    QueryError,
    SchemaError,
    StoredEventId,
)
from loomos.loomdb.gcpause import GC_PAUSE_MIN, gc_paused
from loomos.loomdb.hashchain import (
    EVENT_COLUMNS,
    ChainWalker,
    VerifyReport,
    context_key,
    context_values,
    hash_values,
    iso,
    json_text,
)
from loomos.loomdb.query import EventQuery, SqlBuilder, encode_cursor
from loomos.loomdb.schemas import RegisteredSchema, SchemaRegistry, builtin_registry, schema_from_fields
from loomos.loomdb.tables import ARCHIVE_COLUMNS
from loomos.models.events import (
    AUDIT_FIELDS,
    GENESIS_HASH,
    SECURITY_FIELDS,
    AuditContext,
    Event,
    NewEvent,
    Priority,
    SecurityContext,
    utcnow,
)

MIGRATIONS = Path(__file__).parent / "migrations"
_PAGED_QUERY_SETTINGS = (
    "SET LOCAL enable_bitmapscan = off",
    "SET LOCAL enable_seqscan = off",
    "SET LOCAL enable_sort = off",
    "SET LOCAL jit = off",
)
_COLS = ", ".join(EVENT_COLUMNS)


@dataclass
class QueryPage:
    events: list[Event]
    next_cursor: str | None


@dataclass
class SubscriptionBatch:
    """Events delivered together, and the position the subscription has read through (which
    can be past the last event when filters skipped some): acknowledge `position`."""

    events: list[Event]
    position: int


def normalise_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if not url.startswith(("sqlite://", "postgresql+psycopg://")):
        raise LoomDBError(f"unsupported LoomDB URL {url!r}: use sqlite:///path or postgresql://...")
    return url


def _construct(cls: type[Any], values: dict[str, Any]) -> Any:
    """What pydantic's model_construct does for a model with every field given, without its
    per-field bookkeeping: reading 100 events spent most of its time there."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def row_to_event(row: dict[str, Any]) -> Event:
    # Rows were validated on the way in; reads skip revalidating them (any tampering is
    # verify()'s job).
    return _construct(
        Event,
        {
            "event_id": row["event_id"],
            "event_type": row["event_type"],
            "stream_id": row["stream_id"],
            "occurred_at": row["occurred_at"],
            "correlation_id": row["correlation_id"],
            "causation_id": row["causation_id"],
            "context": _construct(AuditContext, {f: row[f] for f in AUDIT_FIELDS}),
            "security": _construct(SecurityContext, {f: row[f] for f in SECURITY_FIELDS}),
            "tags": row["tags"],
            "priority": Priority(row["priority"]),
            "data": row["data"],
            "metadata": row["metadata"],
            "retention_days": row["retention_days"],
            "position": int(row["position"]),
            "stream_version": int(row["stream_version"]),
            "recorded_at": row["recorded_at"],
            "schema_version": row["schema_version"],
            "prev_hash": row["prev_hash"],
            "hash": row["hash"],
        },
    )


class EventStore:
    """Open with `open_event_store(url)`. Thread-safe: each call takes a pooled connection."""

    def __init__(self, url: str, *, clock: Callable[[], datetime] = utcnow, pool_size: int = 5) -> None:
        self.url = normalise_url(url)
        self.clock = clock
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            db = parsed.database
            if not db or db == ":memory:":
                raise LoomDBError("LoomDB needs a SQLite file (sqlite:////abs/path.sqlite), not :memory:")
            Path(db).parent.mkdir(parents=True, exist_ok=True)
            self.backend: Any = SqliteBackend()
            self.engine: Engine = create_engine(
                self.url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=pool_size,
                max_overflow=20,
            )
        else:
            self.backend = PostgresBackend(channel="loomdb_events")
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=20, pool_pre_ping=False)
        backend = self.backend
        event.listen(self.engine, "connect", lambda dbapi_conn, _rec: backend.configure(dbapi_conn))
        self._migrate()
        if self.backend.name == "postgresql":
            with self._cursor() as (conn, cur):
                cur.execute("SELECT current_schema()")
                schema = cur.fetchone()[0] or "public"
                conn.commit()
            self.schema_name = schema
            self.backend.channel = "loomdb_" + re.sub(r"[^a-z0-9_]", "_", schema.lower())[:50]
        else:
            self.schema_name = "main"
        self.schemas: SchemaRegistry = builtin_registry()
        self._load_schemas()
        self._group_lock = threading.Lock()
        self._group_queue: list[_AppendRequest] = []
        self._append_conns: list[Any] = []  # Postgres: idle connections for group commits
        self._groups_in_flight = 0
        # Postgres may run a second group while the first one's commit is flushed: its
        # transaction waits on the chain-head lock, so the next commit starts the moment the
        # lock is released (see _append_validated; tested with 2). Measured on a busy 2-core
        # machine, one group at a time was faster (16 writers ~2.4k vs ~1.7k appends/s, 64
        # writers ~4.2k vs ~3.3k): bigger groups spend less CPU per event, and CPU, not the
        # fsync, was the limit. SQLite has one writer at a time anyway.
        self._max_groups_in_flight = 1

    @property
    def dialect(self) -> str:
        return self.backend.name

    def close(self) -> None:
        with self._group_lock:
            conns, self._append_conns = self._append_conns, []
        for conn in conns:
            conn.close()
        self.engine.dispose()

    # --- connections ----------------------------------------------------------------------

    def _migrate(self) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.connect() as conn:
            if self.backend.name == "postgresql":
                with conn.begin():
                    # Two processes opening a fresh database at once: one migrates, one waits.
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7410001)")
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                    conn.exec_driver_sql("COMMIT")
                except BaseException:
                    conn.exec_driver_sql("ROLLBACK")
                    raise

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[tuple[Any, Any]]:
        raw = self.engine.raw_connection()
        try:
            conn = raw.driver_connection
            cur = conn.cursor()
            try:
                yield conn, cur
            finally:
                cur.close()
        finally:
            raw.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Any]:
        with self._cursor() as (conn, cur):
            try:
                self.backend.begin_write(cur)
                yield cur
                conn.commit() if self.backend.name == "postgresql" else cur.execute("COMMIT")
            except BaseException:
                if self.backend.name == "postgresql":
                    conn.rollback()
                elif conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _append_transaction(self) -> Iterator[Any]:
        """The transaction of one group commit. On Postgres it runs on a connection of its own
        (one per group in flight) in autocommit mode, so that no separate BEGIN round trip
        precedes it: read_state sends BEGIN with the head lock and write sends COMMIT with the
        rows. Anything else run in between is inside that explicit transaction; an error rolls
        it back, and a connection left in any other state is closed, not reused."""
        if self.backend.name != "postgresql":
            with self._write() as cur:
                yield cur
            return
        import psycopg

        with self._group_lock:
            conn = self._append_conns.pop() if self._append_conns else None
        if conn is None or conn.closed:
            url = make_url(self.url).set(drivername="postgresql")
            conn = psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)
        idle = psycopg.pq.TransactionStatus.IDLE
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
                with self._group_lock:
                    self._append_conns.append(conn)

    @contextlib.contextmanager
    def _read(self) -> Iterator[Any]:
        with self._cursor() as (conn, cur):
            try:
                self.backend.begin_read(cur)
                yield cur
            finally:
                if self.backend.name == "postgresql":
                    conn.rollback()
                elif conn.in_transaction:
                    cur.execute("ROLLBACK")

    def _sql(self, sql: str) -> str:
        return sql if self.backend.ph == "%s" else sql.replace("%s", "?")

    # --- schemas --------------------------------------------------------------------------

    def _load_schemas(self) -> None:
        with self._read() as cur:
            cur.execute("SELECT event_type, version, schema FROM loomdb_schemas")
            rows = cur.fetchall()
        for event_type, version, schema in rows:
            if isinstance(schema, str):
                schema = json.loads(schema)
            self.schemas.add(SchemaRegistry.check(event_type, version, schema))

    def register_schema(
        self,
        event_type: str,
        version: str,
        schema: dict[str, Any] | None = None,
        *,
        required_fields: list[str] | None = None,
        optional_fields: list[str] | None = None,
        validation_rules: dict[str, Any] | None = None,
    ) -> RegisteredSchema:
        """Register a JSON Schema (or the documents' field-list form) for an event type's data.
        Re-registering the same version with the same schema is a no-op; a different schema
        under a registered version is refused."""
        if schema is None:
            if required_fields is None:
                raise SchemaError("give a JSON Schema or required_fields")
            schema = schema_from_fields(required_fields, optional_fields, validation_rules)
        elif required_fields is not None:
            raise SchemaError("give either a JSON Schema or the field-list form, not both")
        entry = SchemaRegistry.check(event_type, version, schema)
        latest = self.schemas.latest(event_type)
        if latest is not None and entry.key < latest.key and version not in self.schemas.versions(event_type):
            raise SchemaError(
                f"{event_type}: version {version} is older than the registered {latest.version}"
            )
        with self._write() as cur:
            cur.execute(
                self._sql("SELECT schema FROM loomdb_schemas WHERE event_type = %s AND version = %s"),
                (event_type, version),
            )
            found = cur.fetchone()
            if found is not None:
                stored = json.loads(found[0]) if isinstance(found[0], str) else found[0]
                if stored != schema:
                    raise SchemaError(
                        f"{event_type} {version} is already registered with a different schema; "
                        "register a new version instead"
                    )
            else:
                if self.backend.name == "postgresql":
                    from psycopg.types.json import Jsonb

                    value: Any = Jsonb(schema)
                else:
                    value = json.dumps(schema, sort_keys=True)
                cur.execute(
                    self._sql(
                        "INSERT INTO loomdb_schemas (event_type, version, schema, registered_at) "
                        "VALUES (%s, %s, %s, %s)"
                    ),
                    (event_type, version, value, self.backend.ts(self.clock())),
                )
        self.schemas.add(entry)
        return entry

    # --- appends --------------------------------------------------------------------------

    def append(self, event: NewEvent | dict[str, Any], expected_version: int | None = None) -> int:
        """Append one event; returns its global position (the original one on a retry)."""
        return self.append_many([event], expected_version=expected_version)[0]

    def append_many(
        self, events: Sequence[NewEvent | dict[str, Any]], expected_version: int | None = None
    ) -> list[int]:
        """Append events atomically, in order; returns their positions in input order.

        `expected_version` (all events then belong to one stream): the stream's current version,
        0 for "the stream must not exist yet"; otherwise ConcurrencyError. Events whose
        event_id is already stored are not written again: their original positions come back.
        """
        if not events:
            return []
        if len(events) < GC_PAUSE_MIN:
            return self._append_many(events, expected_version)
        with gc_paused():
            return self._append_many(events, expected_version)

    def _append_many(
        self, events: Sequence[NewEvent | dict[str, Any]], expected_version: int | None
    ) -> list[int]:
        if all(isinstance(e, NewEvent) for e in events):
            items = list(events)
        else:
            items = [self._coerce(e, i, len(events)) for i, e in enumerate(events)]
        if expected_version is not None:
            if expected_version < 0:
                raise LoomDBError("expected_version must be 0 (no stream yet) or a positive version")
            streams = {e.stream_id for e in items}
            if len(streams) != 1:
                raise LoomDBError(f"expected_version needs all events in one stream, got {sorted(streams)}")
        if len(items) >= COPY_THRESHOLD and getattr(self.backend, "overlaps_lookup", False):
            # Validated by the group's leader while the server looks the ids up (_append_group):
            # None marks the request as not validated yet.
            return self._append_validated(items, None, expected_version)
        versions = self._validate(items)
        return self._append_validated(items, versions, expected_version)

    def _coerce(self, e: NewEvent | dict[str, Any], index: int, total: int) -> NewEvent:
        if isinstance(e, NewEvent):
            return e
        from pydantic import ValidationError

        try:
            return NewEvent.model_validate(e)
        except ValidationError as exc:
            where = f"events[{index}]." if total > 1 else ""
            problems = [f"{where}{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in exc.errors()]
            etype = e.get("event_type", "?") if isinstance(e, dict) else "?"
            raise InvalidEvent(str(etype), problems) from None

    def _validate(self, items: list[NewEvent]) -> list[str | None]:
        versions: list[str | None] = []
        problems: list[str] = []
        first_bad: InvalidEvent | None = None
        latest: dict[str, RegisteredSchema | None] = {}  # per type, looked up once per append
        for i, e in enumerate(items):
            t = e.event_type
            entry = latest[t] if t in latest else latest.setdefault(t, self.schemas.latest(t))
            if entry is None:
                versions.append(None)  # a type with no schema: accepted as is
                continue
            try:
                versions.append(entry.validate(e.data))
            except InvalidEvent as exc:
                first_bad = first_bad or exc
                prefix = f"events[{i}] ({e.event_type}) " if len(items) > 1 else ""
                problems.extend(prefix + v for v in exc.violations)
                versions.append(None)
        if first_bad is not None:
            raise InvalidEvent(first_bad.event_type, problems, first_bad.schema_version)
        return versions

    def _append_validated(
        self, items: list[NewEvent], versions: list[str | None] | None, expected_version: int | None
    ) -> list[int]:
        """Group commit: concurrent callers queue their appends; a caller that finds fewer than
        `_max_groups_in_flight` groups being committed takes the whole queue and writes it in one
        transaction. With serialised writers a commit's fsync would otherwise cap throughput at
        one append per fsync, whatever the number of writers. Each caller still returns only
        after its own events are committed, and each request keeps its own idempotency and
        expected-version check.

        With _max_groups_in_flight = 2 (Postgres), the second group's transaction queues on the
        chain-head row lock (in the database) while the first one's commit is flushed, and reads
        the head, the existing ids and the stream versions only once the first has committed
        (each statement of a READ COMMITTED transaction sees what committed before it started),
        exactly like two processes appending to one database. Positions, the hash chain and
        the checks therefore stay as serial as with one group at a time.

        A finished group's leader wakes only its own group's callers, and hands the queue that
        built up meanwhile to one of its callers, who becomes the next leader."""
        req = _AppendRequest(items, versions, expected_version)
        with self._group_lock:
            self._group_queue.append(req)
            if self._groups_in_flight < self._max_groups_in_flight:
                self._groups_in_flight += 1
                group, self._group_queue = self._group_queue, []
            else:
                group = None
        if group is None:
            req.wake.wait()
            if req.group is None:
                return req.outcome()
            group = req.group  # promoted: lead the queue handed over
        nxt: _AppendRequest | None = None
        try:
            self._commit_group(group)
        finally:
            with self._group_lock:
                if self._group_queue:
                    nxt = self._group_queue[0]
                    nxt.group, self._group_queue = self._group_queue, []
                else:
                    self._groups_in_flight -= 1
            for r in group:
                if r is not req:
                    r.wake.set()
            if nxt is not None:
                nxt.wake.set()
        return req.outcome()

    def _commit_group(self, group: list[_AppendRequest]) -> None:
        try:
            if self.backend.name == "postgresql" and self.backend.needs_partitions(self.clock()):
                with self._cursor() as (conn, _):
                    self.backend.prepare_partitions(conn, self.clock())
            try:
                with self._append_transaction() as cur:
                    self._append_group(cur, group, commit=True, optimistic=True)
            except StoredEventId:
                # Rolled back: an id planned as new is stored (a retry). Redo with the lookup.
                for r in group:
                    r.result, r.error, r.done = None, None, False
                with self._append_transaction() as cur:
                    self._append_group(cur, group, commit=True)
        except BaseException as exc:
            for r in group:
                if not r.done:
                    r.error = exc
        finally:
            for r in group:
                r.done = True

    def _append_locked(
        self,
        cur: Any,
        items: list[NewEvent],
        versions: list[str | None],
        expected_version: int | None,
        commit: bool = True,
    ) -> list[int]:
        """Append inside a transaction the caller holds (retention records its own actions)."""
        req = _AppendRequest(items, versions, expected_version)
        self._append_group(cur, [req], commit)
        return req.outcome()

    def _append_group(
        self, cur: Any, group: list[_AppendRequest], commit: bool, optimistic: bool = False
    ) -> None:
        b = self.backend
        # Ids are looked up as they come, repeats included (the lookups return each stored id
        # once per repeat at most, and `found` is a dict); deduplicating 5,000 UUIDs first cost
        # more than the repeats ever could.
        ids = [e.event_id for r in group for e in r.items]
        stream_ids = list({e.stream_id: None for r in group for e in r.items})
        deferred = [r for r in group if r.versions is None]

        def validate() -> None:
            # A request that fails validation gets its InvalidEvent and is left out of the
            # plan; nothing has been written yet, so the others go ahead.
            for r in deferred:
                try:
                    r.versions = self._validate(r.items)
                except InvalidEvent as exc:
                    r.error, r.done = exc, True

        if deferred and getattr(b, "overlaps_lookup", False):
            (head_pos, head_hash, head_ts), found, current = b.read_state(cur, ids, stream_ids, validate)
        elif (
            optimistic
            and getattr(b, "unique_event_ids", False)
            and all(r.expected_version is None for r in group)
        ):
            # SQLite: event_id is UNIQUE, so the insert itself finds a stored id (StoredEventId,
            # and _commit_group redoes the group with the lookup); ids repeat only when an
            # append is retried, so the lookup, 8 ms of a 5,000-event batch, is skipped.
            # Expected versions need the lookup before planning (a retry is not a conflict).
            validate()
            (head_pos, head_hash, head_ts), found, current = b.read_state(cur, ids, stream_ids, False)
        else:
            validate()
            (head_pos, head_hash, head_ts), found, current = b.read_state(cur, ids, stream_ids)
        # Event ids are keyed by their integer from here: a UUID's hash and == are Python code,
        # an int's are not.
        positions = {(k if isinstance(k, uuid.UUID) else uuid.UUID(str(k))).int: p for k, p in found.items()}
        now = self.clock()
        recorded = now if now > head_ts else head_ts  # keeps recorded_at monotonic in position
        recorded_iso = iso(recorded)
        plan = _Plan(group, positions, current, head_pos)
        self._write_plan(cur, plan, head_hash, recorded, recorded_iso, commit)

    def _write_plan(
        self,
        cur: Any,
        plan: _Plan,
        head_hash: str,
        recorded: datetime,
        recorded_iso: str,
        commit: bool,
    ) -> None:
        b = self.backend
        planned: Any = plan
        count = plan.upper_bound
        if plan.positions:
            # Some ids are stored already (a retry, mostly): plan first, to know what is left.
            planned = list(plan)
            count = len(planned)
        if count == 0:
            return
        prev = head_hash
        b.ensure_partitions(cur, [{"recorded_at": recorded}])
        if count >= getattr(b, "stream_threshold", count + 1):
            # Unless some ids were found stored, the plan is made while it is encoded and copied:
            # assigning positions to 5,000 events then costs Python time that the database's
            # COPY waits out anyway.
            prev = b.stream_plan(cur, planned, recorded, recorded_iso, prev)
            rows: Any = []
        else:
            planned = list(planned)
            if hasattr(b, "plan_rows"):
                rows, prev = b.plan_rows(planned, recorded, recorded_iso, prev)
            else:
                # One row dict per event, hashed in chain order.
                rows = []
                for e, v, p, sv in planned:
                    row = self._row(e, v, p, sv, recorded, recorded_iso, prev)
                    prev = row["hash"]
                    rows.append(row)
        b.write(cur, rows, plan.streams, plan.position, prev, recorded, commit)

    @staticmethod
    def _row(
        e: NewEvent,
        schema_version: str | None,
        position: int,
        stream_version: int,
        recorded: datetime,
        recorded_iso: str,
        prev: str,
    ) -> dict[str, Any]:
        ctx, sec = e.context, e.security
        roles, tags, priority = list(sec.roles), list(e.tags), str(e.priority)
        data_json, metadata_json = json_text(e.data), json_text(e.metadata)
        # The hashed scalars, in hashchain.SCALAR_COLUMNS order (test_loomdb_tamper checks
        # that the hash equals event_hash of the stored row).
        h = hash_values(
            [
                position,
                str(e.event_id),
                e.event_type,
                schema_version,
                e.stream_id,
                stream_version,
                iso(e.occurred_at),
                recorded_iso,
                e.correlation_id,
                e.causation_id,
                *context_values(context_key(e)),
                tags,
                priority,
                e.retention_days,
                prev,
            ],
            data_json,
            metadata_json,
        )
        return {
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
            "roles": roles,
            "access_level": sec.access_level,
            "data_classification": sec.data_classification,
            "geographic_restriction": sec.geographic_restriction,
            "tags": tags,
            "priority": priority,
            "data": e.data,
            "metadata": e.metadata,
            "retention_days": e.retention_days,
            "prev_hash": prev,
            "data_json": data_json,
            "metadata_json": metadata_json,
            "recorded_iso": recorded_iso,
            "hash": h,
        }

    # --- reads ----------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        with self._read() as cur:
            pos, h, _ = (
                self.backend.lock_head(cur) if self.backend.name == "sqlite" else self._head_nolock(cur)
            )
        return pos, h

    @staticmethod
    def _head_nolock(cur: Any) -> tuple[int, str, Any]:
        cur.execute("SELECT position, hash, recorded_at FROM loomdb_head WHERE id = 1")
        pos, h, ts = cur.fetchone()
        return int(pos), h, ts

    def _rows(self, cur: Any, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        cur.execute(self._sql(sql), list(params))
        return [self.backend.py_row(r) for r in cur.fetchall()]

    def read(self, after_position: int = 0, limit: int = 1000) -> list[Event]:
        """Events in global order after `after_position`."""
        with self._read() as cur:
            rows = self._rows(
                cur,
                f"SELECT {_COLS} FROM loomdb_events WHERE position > %s ORDER BY position LIMIT %s",
                [after_position, limit],
            )
        return [row_to_event(r) for r in rows]

    def read_stream(self, stream_id: str, from_version: int = 1, limit: int = 1000) -> list[Event]:
        with self._read() as cur:
            rows = self._rows(
                cur,
                f"SELECT {_COLS} FROM loomdb_events WHERE stream_id = %s AND "
                "stream_version >= %s ORDER BY stream_version LIMIT %s",
                [stream_id, from_version, limit],
            )
        return [row_to_event(r) for r in rows]

    def stream_version(self, stream_id: str) -> int:
        with self._read() as cur:
            return self.backend.stream_versions(cur, [stream_id]).get(stream_id, 0)

    def get(self, event_id: uuid.UUID | str) -> Event | None:
        try:
            eid = uuid.UUID(str(event_id))
        except ValueError:
            raise QueryError(f"event id {event_id!r} is not a UUID") from None
        with self._read() as cur:
            rows = self._rows(
                cur, f"SELECT {_COLS} FROM loomdb_events WHERE event_id = %s", [self.backend.uid(eid)]
            )
        return row_to_event(rows[0]) if rows else None

    def query(self, q: EventQuery) -> QueryPage:
        sb = SqlBuilder(self.backend)
        sb.query(q)
        direction = "ASC" if q.order == "asc" else "DESC"
        # recorded_at never decreases with position, so both orders are the same order; with
        # a type filter, naming recorded_at first lets the (event_type, recorded_at, position)
        # index return rows already ordered and stop after `limit`.
        order = f"recorded_at {direction}, position {direction}" if q.event_types else f"position {direction}"
        sql = f"SELECT {_COLS} FROM loomdb_events WHERE {sb.where()} ORDER BY {order} LIMIT {self.backend.ph}"
        params = [*sb.params, q.limit + 1]
        if self.backend.name == "postgresql":
            # One statement reads one snapshot: no explicit transaction needed.
            with self._cursor() as (conn, cur):
                try:
                    with conn.pipeline():
                        if q.event_types:
                            # Postgres guesses JSON filters to be very selective and so prefers to
                            # read the whole type/time range (bitmap, seq or primary-key scan) and
                            # sort; the ordered (event_type, recorded_at, position) index scan that
                            # stops after `limit` matches is what a paged query wants: at a million
                            # events ~1 ms instead of 30-300 ms. JIT only slows such queries down.
                            for setting in _PAGED_QUERY_SETTINGS:
                                conn.cursor().execute(setting)
                        # Never a prepared (generic) plan: it cannot prune partitions or use the
                        # time range's selectivity, and fell back to scanning whole partitions.
                        cur.execute(sql, params, prepare=False)
                    rows = [self.backend.py_row(r) for r in cur.fetchall()]
                finally:
                    conn.rollback()
        else:
            with self._read() as cur:
                cur.execute(sql, params)
                rows = [self.backend.py_row(r) for r in cur.fetchall()]
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        cursor = encode_cursor(int(rows[-1]["position"]), q.order) if more and rows else None
        return QueryPage([row_to_event(r) for r in rows], cursor)

    def read_after(self, after: int, q: EventQuery | None = None, limit: int = 500) -> SubscriptionBatch:
        """Next events after `after` matching q's types and filters, read from one snapshot that
        also gives the head: when fewer than `limit` match, the caller has seen everything up to
        the head, matching or not."""
        sb = SqlBuilder(self.backend)
        if q is not None:
            sb.query(q.model_copy(update={"cursor": None, "after_position": None, "order": "asc"}))
        ph = self.backend.ph
        with self._read() as cur:
            head_pos = self._head_nolock(cur)[0]
            if head_pos <= after:
                return SubscriptionBatch([], after)
            cur.execute(
                f"SELECT {_COLS} FROM loomdb_events WHERE position > {ph} AND position <= {ph} AND "
                f"{sb.where()} ORDER BY position LIMIT {ph}",
                [after, head_pos, *sb.params, limit],
            )
            rows = [self.backend.py_row(r) for r in cur.fetchall()]
        events = [row_to_event(r) for r in rows]
        through = events[-1].position if len(events) >= limit else head_pos
        return SubscriptionBatch(events, through)

    # --- subscriptions and consumers ------------------------------------------------------

    async def subscribe(
        self,
        q: EventQuery | None = None,
        from_position: int | None = None,
        *,
        consumer: str | None = None,
        batch_size: int = 500,
        poll_interval: float | None = None,
    ) -> AsyncIterator[SubscriptionBatch]:
        """Catch up from `from_position` (exclusive; default 0, or a named consumer's acknowledged
        position), then follow live. Yields non-empty batches; acknowledge with `ack`."""
        if consumer is not None:
            stored = await asyncio.to_thread(self.consumer_position, consumer)
            position = stored if from_position is None else from_position
        else:
            position = from_position or 0
        if position < 0:
            raise QueryError("from_position must be >= 0")
        if poll_interval is None:
            poll_interval = 0.02 if self.backend.name == "sqlite" else 1.0
        waker = _PgWaker(self) if self.backend.name == "postgresql" else None
        try:
            if waker is not None:
                await waker.start()
            while True:
                batch = await asyncio.to_thread(self.read_after, position, q, batch_size)
                position = batch.position
                if batch.events:
                    yield batch
                    continue
                if waker is not None:
                    await waker.wait(poll_interval)
                else:
                    await asyncio.sleep(poll_interval)
        finally:
            if waker is not None:
                await waker.close()

    def consumer_position(self, name: str) -> int:
        _check_consumer(name)
        with self._read() as cur:
            cur.execute(self._sql("SELECT position FROM loomdb_consumers WHERE name = %s"), (name,))
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def ack(self, name: str, position: int) -> None:
        """Store a named consumer's position; it only moves forward (a late ack of an older
        batch cannot make a restarted consumer see events twice)."""
        _check_consumer(name)
        if position < 0:
            raise QueryError("position must be >= 0")
        with self._write() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO loomdb_consumers (name, position, updated_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
                    "updated_at = excluded.updated_at WHERE loomdb_consumers.position < excluded.position"
                ),
                (name, position, self.backend.ts(self.clock())),
            )

    # --- verification ---------------------------------------------------------------------

    def verify(self, deep_archives: bool = False) -> VerifyReport:
        """Walk the archive manifests and every stored event in position order; report the first
        altered, inserted or deleted event, and compare the end of the chain with the head."""
        from loomos.loomdb.retention import ArchiveMissing, deep_archive

        report = VerifyReport()
        expected_pos, expected_prev = 1, GENESIS_HASH
        for m in self.archives():
            if m["first_position"] != expected_pos or m["first_prev_hash"] != expected_prev:
                return report.fail(
                    expected_pos,
                    "deleted",
                    f"archive {m['period']} does not continue the chain at position {expected_pos}",
                )
            if deep_archives:
                # A purged (or expired and gone) archive has no events left to re-hash: its
                # manifest's hashes link the chain. An object missing before its expiry is a
                # deletion.
                try:
                    found = deep_archive(self, m)
                except LoomDBError as exc:
                    kind = "deleted" if isinstance(exc, ArchiveMissing) else "altered"
                    return report.fail(expected_pos, kind, f"archive {m['period']}: {exc}")
                if found.note is not None:
                    report.notes.append(f"archive {m['period']}: {found.note}")
                if found.rows is not None:
                    walker = ChainWalker(report, expected_pos, expected_prev)
                    if not walker.feed_all(found.rows):
                        return report
                    if walker.prev_hash != m["last_hash"] or walker.next_position != m["last_position"] + 1:
                        return report.fail(
                            m["last_position"],
                            "deleted",
                            f"archive {m['period']} ends before its manifest says",
                        )
            report.archives_checked += 1
            expected_pos, expected_prev = m["last_position"] + 1, m["last_hash"]
        walker = ChainWalker(report, expected_pos, expected_prev)
        with self._cursor() as (conn, cur):
            stream_cur = conn.cursor(name="loomdb_verify") if self.backend.name == "postgresql" else cur
            try:
                if self.backend.name == "postgresql":
                    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                else:
                    cur.execute("BEGIN")
                head_pos, head_hash, _ = self._head_nolock(cur)
                stream_cur.execute(f"SELECT {_COLS} FROM loomdb_events ORDER BY position")
                for raw in stream_cur:
                    if not walker.feed(self.backend.py_row(raw)):
                        return report
            finally:
                if self.backend.name == "postgresql":
                    stream_cur.close()
                    conn.rollback()
                else:
                    cur.execute("ROLLBACK")
        last_pos = walker.next_position - 1
        report.head_hash = walker.prev_hash
        if last_pos < head_pos:
            return report.fail(
                last_pos + 1,
                "deleted",
                f"the head says {head_pos} events, the table ends at position {last_pos}",
            )
        if last_pos > head_pos:
            return report.fail(
                head_pos + 1,
                "inserted",
                f"positions after the head ({head_pos}) were written behind LoomDB's back",
            )
        if walker.prev_hash != head_hash:
            return report.fail(last_pos, "altered", "the last event's hash differs from the recorded head")
        return report

    def archives(self) -> list[dict[str, Any]]:
        """The archive manifests in chain order (purged_at: None while the object is kept)."""
        with self._read() as cur:
            cur.execute(f"SELECT {', '.join(ARCHIVE_COLUMNS)} FROM loomdb_archives ORDER BY first_position")
            return [dict(zip(ARCHIVE_COLUMNS, r, strict=True)) for r in cur.fetchall()]


@dataclass
class _AppendRequest:
    items: list[NewEvent]
    # The schema version that validated each event; None until the group's leader validates
    # the request (a large append, see _append_many).
    versions: list[str | None] | None
    expected_version: int | None
    result: list[int] | None = None
    error: BaseException | None = None
    done: bool = False
    # Group commit: set when the request is done, or when `group` hands it the lead.
    wake: threading.Event = field(default_factory=threading.Event)
    group: list[_AppendRequest] | None = None

    def outcome(self) -> list[int]:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _Plan:
    """The events a group commit writes, in chain order, as (event, schema version, position,
    stream version), made while it is iterated (once): an event whose id is stored, or came
    earlier in the group, gets that position and is not written again, and a request whose
    expected version is not the stream's gets its ConcurrencyError. Iterating fills each
    request's result, the streams' new (version, last position) and the last position."""

    def __init__(
        self, requests: list[_AppendRequest], positions: dict[int, int], versions: dict[str, int], head: int
    ) -> None:
        self.requests, self.positions, self.versions = requests, positions, versions
        self.head = self.position = head
        self.streams: dict[str, tuple[int, int]] = {}
        self.upper_bound = sum(len(r.items) for r in requests if not r.done)

    def __iter__(self) -> Iterator[tuple[NewEvent, str | None, int, int]]:
        positions, versions = self.positions, self.versions
        last: dict[str, int] = {}  # each written stream's last position
        pos = self.position
        for r in self.requests:
            if r.done:  # failed validation
                continue
            if r.expected_version is not None:
                # Checked in turn, after the requests before it in the group, and only when
                # the request writes anything: a retry of a stored batch gets its positions,
                # whatever the stream's version is now.
                sid = r.items[0].stream_id
                actual = versions.get(sid, 0)
                if actual != r.expected_version and any(e.event_id.int not in positions for e in r.items):
                    r.error = ConcurrencyError(sid, r.expected_version, actual)
                    r.done = True
                    continue
            result: list[int] = []
            add = result.append
            assert r.versions is not None
            for e, v in zip(r.items, r.versions, strict=True):
                key = e.event_id.int
                p = positions.get(key)
                if p is None:
                    pos += 1
                    sid = e.stream_id
                    sv = versions.get(sid, 0) + 1
                    versions[sid] = sv
                    last[sid] = pos
                    positions[key] = p = pos
                    yield e, v, pos, sv
                add(p)
            r.result = result
        self.position = pos
        self.streams = {sid: (versions[sid], p) for sid, p in last.items()}


_CONSUMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def _check_consumer(name: str) -> None:
    if not isinstance(name, str) or not _CONSUMER.match(name):
        raise QueryError(f"consumer name {name!r}: letters, digits and . _ : - only, at most 128 characters")


class _PgWaker:
    """LISTEN on the store's channel; a NOTIFY (sent at commit) wakes the subscriber at once, and
    the poll interval bounds the wait if a notification is ever lost."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.conn: Any = None

    async def start(self) -> None:
        import psycopg

        url = make_url(self.store.url).set(drivername="postgresql")
        self.conn = await psycopg.AsyncConnection.connect(
            url.render_as_string(hide_password=False), autocommit=True
        )
        await self.conn.execute(f'LISTEN "{self.store.backend.channel}"')

    async def wait(self, timeout: float) -> None:
        async for _ in self.conn.notifies(timeout=timeout, stop_after=1):
            break

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


def open_event_store(url: str, *, clock: Callable[[], datetime] = utcnow) -> EventStore:
    """Open (and migrate) the LoomDB at `url`: sqlite:////abs/path.sqlite or postgresql://..."""
    return EventStore(url, clock=clock)


__all__ = ["EventStore", "QueryPage", "SubscriptionBatch", "open_event_store", "iso"]
