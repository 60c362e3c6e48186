"""What EventStore needs from a database: the `Backend` protocol, met by SqliteBackend
(backend_sqlite.py) and PostgresBackend (backend_postgres.py).

A backend owns its engine and connections, and everything that differs between the two
databases: how a transaction begins and ends, how the chain head is locked, how an append's
rows are encoded and written, how events are streamed for verification, how a subscriber is
woken, how a retention period is dropped, and the SQL of JSON filters (`QueryDialect`). EventStore
and the modules around it (group_commit, verify, retention, analytics) only call these methods,
so none of them asks which database it is talking to.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from sqlalchemy.engine import Engine

from loomos.loomdb.query import QueryDialect
from loomos.models.events import NewEvent

# A DB-API cursor (sqlite3.Cursor or psycopg.Cursor): the SQL the modules send is plain text
# with %s placeholders, passed through Backend.sql.
Cursor = Any
Connection = Any

# One event of an append's plan, in chain order: the event, the schema version it validated
# against, its position and its stream version.
PlannedEvent = tuple[NewEvent, str | None, int, int]


@contextlib.contextmanager
def pooled_cursor(engine: Engine) -> Iterator[tuple[Connection, Cursor]]:
    """A driver connection from the engine's pool and a cursor on it, both given back after."""
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        cur = conn.cursor()
        try:
            yield conn, cur
        finally:
            cur.close()
    finally:
        raw.close()


class Head(NamedTuple):
    """The chain head row: the last position, its hash and its recorded_at."""

    position: int
    hash: str
    recorded_at: datetime


class AppendState(NamedTuple):
    """What an append reads under the head lock."""

    head: Head
    stored: dict[uuid.UUID, int]  # the append's event ids already stored, with their positions
    stream_versions: dict[str, int]  # the append's streams that exist, with their versions


class PlanOutcome(Protocol):
    """What a plan (group_commit.Plan) knows once its events have been iterated."""

    position: int  # the head position after the last planned event
    streams: dict[str, tuple[int, int]]  # each written stream's new (version, last position)


class Waker(Protocol):
    """How a live subscription waits for new events (subscriptions.py)."""

    async def start(self) -> None: ...

    async def wait(self, timeout: float) -> None:
        """Return when an append may have committed, or after `timeout` seconds."""

    async def close(self) -> None: ...


class Backend(QueryDialect, Protocol):
    name: str  # EventStore.dialect: "sqlite" or "postgresql"
    engine: Engine
    schema_name: str  # the schema the store lives in (Postgres search_path; "main" on SQLite)
    poll_interval: float  # a subscription's default wait between reads (seconds)
    # Appends of at least this many events are validated by their group's leader while the
    # database looks their ids up (read_state's `validate`); None: validated before queueing.
    overlap_validation_from: int | None
    compresses_partitions: bool  # compress_period does something (retention.py)

    # --- lifecycle ------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (migrations/), one process at a
        time, and learn what the store needs from it (schema_name)."""

    def close(self) -> None: ...

    # --- transactions ---------------------------------------------------------------------

    def raw_cursor(self) -> AbstractContextManager[tuple[Connection, Cursor]]:
        """A pooled connection and a cursor on it, no transaction begun (tests, benchmarks)."""

    def read(self) -> AbstractContextManager[Cursor]:
        """A read-only transaction: one snapshot for every statement, rolled back after."""

    def write(self) -> AbstractContextManager[Cursor]:
        """A write transaction, committed when the block ends, rolled back if it raises."""

    def append_transaction(self) -> AbstractContextManager[Cursor]:
        """The transaction of one group commit (it may commit inside write_appends)."""

    def sql(self, text: str) -> str:
        """`text` (with %s placeholders) in the driver's placeholder style."""

    # --- values ---------------------------------------------------------------------------

    def ts(self, v: datetime) -> Any:
        """A timestamp as a query parameter."""

    def uid(self, v: uuid.UUID) -> Any: ...

    def json_param(self, value: Any) -> Any:
        """A JSON value (a registered schema) as a query parameter."""

    def py_row(self, values: tuple[Any, ...]) -> dict[str, Any]:
        """A selected EVENT_COLUMNS tuple as a row dict of Python values."""

    def db_row(self, row: dict[str, Any]) -> tuple[Any, ...]:
        """A row dict (hashchain.event_row's) as the EVENT_COLUMNS parameters that store it."""

    # --- the chain head and appends -------------------------------------------------------

    def read_head(self, cur: Cursor) -> Head:
        """The head as the transaction's snapshot sees it."""

    def lock_head(self, cur: Cursor) -> Head:
        """The head, locked until the transaction ends: serialises writers."""

    def stream_versions(self, cur: Cursor, stream_ids: list[str]) -> dict[str, int]: ...

    def before_append(self, now: datetime) -> None:
        """Whatever an append at `now` needs that must not happen under the head lock."""

    def read_state(
        self,
        cur: Cursor,
        ids: list[uuid.UUID],
        stream_ids: list[str],
        validate: Callable[[], None],
        optimistic: bool,
    ) -> AppendState:
        """Lock the head, then read which ids are stored and the streams' versions, calling
        `validate` before, or while the database looks the ids up. `optimistic`: the caller
        redoes the append if an id turns out stored (errors.StoredEventId), so a backend whose
        event_id is unique may skip the lookup."""

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
        """Hash and write `events` (at most `count`; each links to the one before it, the first
        to `head_hash`), then the streams' versions and the head from `plan` once the events
        are iterated; commit too when `commit` (one round trip where the backend can)."""

    # --- reads ----------------------------------------------------------------------------

    def fetch_page(self, sql: str, params: list[Any], by_type: bool) -> list[dict[str, Any]]:
        """Rows of one query page (`sql` in the driver's style). `by_type`: it filters on event
        types and orders by (recorded_at, position), which the type/time index answers."""

    def verify_rows(self) -> AbstractContextManager[tuple[Head, Iterator[dict[str, Any]]]]:
        """The head and every stored event in position order, from one snapshot, streamed."""

    def waker(self) -> Waker: ...

    # --- retention ------------------------------------------------------------------------

    def drop_period(self, cur: Cursor, start: datetime, end: datetime) -> None:
        """Delete the events recorded in [start, end) (a whole month) inside a write
        transaction that holds the head lock."""

    def compress_period(self, cur: Cursor, start: datetime, dry_run: bool) -> int | None:
        """Recompress the month starting at `start`; its event count, or None when there is
        nothing to do (already compressed, archived, or no compression here)."""
