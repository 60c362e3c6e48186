"""EventStore: the one API over both backends.

Appends are serialised on the chain-head row and concurrent ones share a commit
(group_commit.py), so positions become visible strictly in order and a reader following
`position > last seen` never skips an event that commits late. Everything that differs between
SQLite and Postgres (transactions, encodings, locking, notifications, partitions) sits behind
the Backend protocol (backend.py); this module does not ask which database it talks to.

There is no update or delete method: events are immutable (and the database triggers refuse
UPDATE and DELETE); only retention (retention.py) removes whole archived periods.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine, make_url

from loomos.loomdb.backend import Backend, Cursor
from loomos.loomdb.backend_postgres import PostgresBackend
from loomos.loomdb.backend_sqlite import SqliteBackend
from loomos.loomdb.canonical import iso
from loomos.loomdb.errors import LoomDBError, QueryError, SchemaError
from loomos.loomdb.gcpause import GC_PAUSE_MIN, gc_paused
from loomos.loomdb.group_commit import GroupCommit
from loomos.loomdb.hashchain import EVENT_COLUMNS
from loomos.loomdb.query import EventQuery, SqlBuilder, encode_cursor
from loomos.loomdb.schemas import RegisteredSchema, SchemaRegistry, builtin_registry, schema_from_fields
from loomos.loomdb.tables import ARCHIVE_COLUMNS
from loomos.loomdb.validation import coerce_events, validate_events
from loomos.loomdb.verify import VerifyReport, verify_store
from loomos.models.events import (
    AUDIT_FIELDS,
    SECURITY_FIELDS,
    AuditContext,
    Event,
    NewEvent,
    Priority,
    SecurityContext,
    utcnow,
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


def open_backend(url: str, pool_size: int = 5) -> Backend:
    """The backend for a normalised URL (not yet migrated)."""
    if make_url(url).get_backend_name() == "sqlite":
        return SqliteBackend(url, pool_size)
    return PostgresBackend(url, pool_size)


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
            "hash_version": row["hash_version"],
            "hash": row["hash"],
        },
    )


class EventStore:
    """Open with `open_event_store(url)`. Thread-safe: each call takes a pooled connection."""

    def __init__(self, url: str, *, clock: Callable[[], datetime] = utcnow, pool_size: int = 5) -> None:
        self.url = normalise_url(url)
        self.clock = clock
        self.backend: Backend = open_backend(self.url, pool_size)
        self.backend.migrate()
        self.schema_name = self.backend.schema_name
        self.schemas: SchemaRegistry = builtin_registry()
        self._load_schemas()
        self.group_commit = GroupCommit(self.backend, clock, self.validate)

    @property
    def dialect(self) -> str:
        return self.backend.name

    @property
    def engine(self) -> Engine:
        return self.backend.engine

    def close(self) -> None:
        self.backend.close()

    # --- schemas --------------------------------------------------------------------------

    def _load_schemas(self) -> None:
        with self.backend.read() as cur:
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
        b = self.backend
        with b.write() as cur:
            cur.execute(
                b.sql("SELECT schema FROM loomdb_schemas WHERE event_type = %s AND version = %s"),
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
                cur.execute(
                    b.sql(
                        "INSERT INTO loomdb_schemas (event_type, version, schema, registered_at) "
                        "VALUES (%s, %s, %s, %s)"
                    ),
                    (event_type, version, b.json_param(schema), b.ts(self.clock())),
                )
        self.schemas.add(entry)
        return entry

    def validate(self, events: list[NewEvent]) -> list[str | None]:
        """Check events against the newest schema registered for each one's type, without
        appending them: the schema version each validated against (None: no schema for its
        type), or InvalidEvent listing every violation."""
        return validate_events(self.schemas, events)

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
        items = coerce_events(events)
        if expected_version is not None:
            if expected_version < 0:
                raise LoomDBError("expected_version must be 0 (no stream yet) or a positive version")
            streams = {e.stream_id for e in items}
            if len(streams) != 1:
                raise LoomDBError(f"expected_version needs all events in one stream, got {sorted(streams)}")
        overlap = self.backend.overlap_validation_from
        if overlap is not None and len(items) >= overlap:
            # Validated by the group's leader while the database looks the ids up: None marks
            # the request as not validated yet.
            return self.group_commit.append(items, None, expected_version)
        return self.group_commit.append(items, self.validate(items), expected_version)

    # --- reads ----------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        with self.backend.read() as cur:
            head = self.backend.read_head(cur)
        return head.position, head.hash

    def _rows(self, cur: Cursor, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        cur.execute(self.backend.sql(sql), list(params))
        return [self.backend.py_row(r) for r in cur.fetchall()]

    def read(self, after_position: int = 0, limit: int = 1000) -> list[Event]:
        """Events in global order after `after_position`."""
        with self.backend.read() as cur:
            rows = self._rows(
                cur,
                f"SELECT {_COLS} FROM loomdb_events WHERE position > %s ORDER BY position LIMIT %s",
                [after_position, limit],
            )
        return [row_to_event(r) for r in rows]

    def read_stream(self, stream_id: str, from_version: int = 1, limit: int = 1000) -> list[Event]:
        with self.backend.read() as cur:
            rows = self._rows(
                cur,
                f"SELECT {_COLS} FROM loomdb_events WHERE stream_id = %s AND "
                "stream_version >= %s ORDER BY stream_version LIMIT %s",
                [stream_id, from_version, limit],
            )
        return [row_to_event(r) for r in rows]

    def stream_version(self, stream_id: str) -> int:
        with self.backend.read() as cur:
            return self.backend.stream_versions(cur, [stream_id]).get(stream_id, 0)

    def get(self, event_id: uuid.UUID | str) -> Event | None:
        try:
            eid = uuid.UUID(str(event_id))
        except ValueError:
            raise QueryError(f"event id {event_id!r} is not a UUID") from None
        with self.backend.read() as cur:
            rows = self._rows(
                cur, f"SELECT {_COLS} FROM loomdb_events WHERE event_id = %s", [self.backend.uid(eid)]
            )
        return row_to_event(rows[0]) if rows else None

    def check_query(self, q: EventQuery) -> None:
        """Compile `q` without running it: a bad path, filter or cursor raises QueryError
        before any I/O (the API answers 400 before it opens a stream)."""
        SqlBuilder(self.backend).query(q)

    def query(self, q: EventQuery) -> QueryPage:
        sb = SqlBuilder(self.backend)
        sb.query(q)
        direction = "ASC" if q.order == "asc" else "DESC"
        # recorded_at never decreases with position, so both orders are the same order; with
        # a type filter, naming recorded_at first lets the (event_type, recorded_at, position)
        # index return rows already ordered and stop after `limit`.
        order = f"recorded_at {direction}, position {direction}" if q.event_types else f"position {direction}"
        sql = f"SELECT {_COLS} FROM loomdb_events WHERE {sb.where()} ORDER BY {order} LIMIT {self.backend.ph}"
        rows = self.backend.fetch_page(sql, [*sb.params, q.limit + 1], by_type=bool(q.event_types))
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
        with self.backend.read() as cur:
            head_pos = self.backend.read_head(cur).position
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
        position), then follow live. Yields non-empty batches; acknowledge with `ack`. Between
        reads it waits on the backend's waker (Postgres: LISTEN, woken by each commit's NOTIFY;
        SQLite: a poll), at most `poll_interval` seconds."""
        if consumer is not None:
            stored = await asyncio.to_thread(self.consumer_position, consumer)
            position = stored if from_position is None else from_position
        else:
            position = from_position or 0
        if position < 0:
            raise QueryError("from_position must be >= 0")
        if poll_interval is None:
            poll_interval = self.backend.poll_interval
        waker = self.backend.waker()
        try:
            await waker.start()
            while True:
                batch = await asyncio.to_thread(self.read_after, position, q, batch_size)
                position = batch.position
                if batch.events:
                    yield batch
                    continue
                await waker.wait(poll_interval)
        finally:
            await waker.close()

    def consumer_position(self, name: str) -> int:
        _check_consumer(name)
        with self.backend.read() as cur:
            cur.execute(self.backend.sql("SELECT position FROM loomdb_consumers WHERE name = %s"), (name,))
            row = cur.fetchone()
        return int(row[0]) if row else 0

    def ack(self, name: str, position: int) -> None:
        """Store a named consumer's position; it only moves forward (a late ack of an older
        batch cannot make a restarted consumer see events twice)."""
        _check_consumer(name)
        if position < 0:
            raise QueryError("position must be >= 0")
        with self.backend.write() as cur:
            cur.execute(
                self.backend.sql(
                    "INSERT INTO loomdb_consumers (name, position, updated_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET position = excluded.position, "
                    "updated_at = excluded.updated_at WHERE loomdb_consumers.position < excluded.position"
                ),
                (name, position, self.backend.ts(self.clock())),
            )

    # --- verification ---------------------------------------------------------------------

    def verify(self, deep_archives: bool = False) -> VerifyReport:
        """Walk the archive manifests and every stored event in position order; report the first
        altered, inserted or deleted event, and compare the end of the chain with the head.
        Each event is re-hashed in the form its hash_version names (hashchain.py)."""
        return verify_store(self, deep_archives)

    def archives(self) -> list[dict[str, Any]]:
        """The archive manifests in chain order (purged_at: None while the object is kept)."""
        with self.backend.read() as cur:
            cur.execute(f"SELECT {', '.join(ARCHIVE_COLUMNS)} FROM loomdb_archives ORDER BY first_position")
            return [dict(zip(ARCHIVE_COLUMNS, r, strict=True)) for r in cur.fetchall()]


_CONSUMER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


def _check_consumer(name: str) -> None:
    if not isinstance(name, str) or not _CONSUMER.match(name):
        raise QueryError(f"consumer name {name!r}: letters, digits and . _ : - only, at most 128 characters")


def open_event_store(url: str, *, clock: Callable[[], datetime] = utcnow) -> EventStore:
    """Open (and migrate) the LoomDB at `url`: sqlite:////abs/path.sqlite or postgresql://..."""
    return EventStore(url, clock=clock)


__all__ = ["EventStore", "QueryPage", "SubscriptionBatch", "open_event_store", "iso"]
