"""SQLite backend: the embedded default. One writer at a time (BEGIN IMMEDIATE), so positions
become visible in order by construction; subscribers poll. Appends are encoded by
sqlite_rows.plan_rows."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import make_url

from loomos.loomdb.backend import AppendState, Cursor, Head, PlannedEvent, PlanOutcome, pooled_cursor
from loomos.loomdb.canonical import iso, string_list_text
from loomos.loomdb.errors import LoomDBError, StoredEventId
from loomos.loomdb.hashchain import EVENT_COLUMNS
from loomos.loomdb.migrate import upgrade
from loomos.loomdb.sqlite_rows import PlannedRows, plan_rows

JSON_COLUMNS = frozenset({"roles", "tags", "data", "metadata"})
TIME_COLUMNS = frozenset({"occurred_at", "recorded_at"})
_INSERT = (
    f"INSERT INTO loomdb_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)
_READ_HEAD = "SELECT position, hash, recorded_at FROM loomdb_head WHERE id = 1"


def _dumps(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_ts(v: str) -> datetime:
    return datetime.fromisoformat(v)


def _configure(dbapi_conn: Any, _record: Any) -> None:
    """Every new pooled connection: we issue BEGIN ourselves; WAL lets readers run while one
    writer appends."""
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class SleepWaker:
    """SQLite has no notifications: a subscriber polls."""

    async def start(self) -> None:
        pass

    async def wait(self, timeout: float) -> None:
        await asyncio.sleep(timeout)

    async def close(self) -> None:
        pass


class SqliteBackend:
    name = "sqlite"
    ph = "?"
    schema_name = "main"
    poll_interval = 0.02
    overlap_validation_from: int | None = None
    compresses_partitions = False
    # event_id is UNIQUE here (the table is not partitioned): an optimistic append skips
    # looking its ids up, and a stored one then fails the insert with StoredEventId.
    unique_event_ids = True

    def __init__(self, url: str, pool_size: int = 5) -> None:
        db = make_url(url).database
        if not db or db == ":memory:":
            raise LoomDBError("LoomDB needs a SQLite file (sqlite:////abs/path.sqlite), not :memory:")
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=20,
        )
        event.listen(self.engine, "connect", _configure)

    # --- lifecycle ------------------------------------------------------------------------

    def migrate(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # one migrating process at a time
            try:
                upgrade(conn)
                conn.exec_driver_sql("COMMIT")
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise

    def close(self) -> None:
        self.engine.dispose()

    # --- transactions ---------------------------------------------------------------------

    def raw_cursor(self) -> AbstractContextManager[tuple[Any, Any]]:
        return pooled_cursor(self.engine)

    @contextlib.contextmanager
    def read(self) -> Iterator[Cursor]:
        with self.raw_cursor() as (conn, cur):
            try:
                cur.execute("BEGIN")  # one snapshot for multi-statement reads (head + events)
                yield cur
            finally:
                if conn.in_transaction:
                    cur.execute("ROLLBACK")

    @contextlib.contextmanager
    def write(self) -> Iterator[Cursor]:
        with self.raw_cursor() as (conn, cur):
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise

    def append_transaction(self) -> contextlib.AbstractContextManager[Cursor]:
        """A local write transaction: no round trips to save."""
        return self.write()

    def sql(self, text: str) -> str:
        return text.replace("%s", "?")

    # --- values ---------------------------------------------------------------------------

    def ts(self, v: datetime) -> str:
        return iso(v)

    def uid(self, v: uuid.UUID) -> str:
        return str(v)

    def json_param(self, value: Any) -> str:
        return json.dumps(value, sort_keys=True)

    def db_row(self, row: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for c in EVENT_COLUMNS:
            v = row[c]
            if c in ("data", "metadata") and f"{c}_json" in row:
                v = row[f"{c}_json"]  # the canonical text the append hashed
            elif c in ("roles", "tags"):
                v = string_list_text(tuple(v))
            elif c in JSON_COLUMNS:
                v = _dumps(v)
            elif c in TIME_COLUMNS:
                v = iso(v)
            elif c == "event_id":
                v = str(v)
            out.append(v)
        return tuple(out)

    def py_row(self, values: tuple[Any, ...]) -> dict[str, Any]:
        row = dict(zip(EVENT_COLUMNS, values, strict=True))
        for c in JSON_COLUMNS:
            row[c] = json.loads(row[c])
        for c in TIME_COLUMNS:
            row[c] = parse_ts(row[c])
        row["event_id"] = uuid.UUID(row["event_id"])
        return row

    # --- the chain head and appends -------------------------------------------------------

    def read_head(self, cur: Cursor) -> Head:
        cur.execute(_READ_HEAD)
        pos, h, ts = cur.fetchone()
        return Head(int(pos), h, parse_ts(ts))

    def lock_head(self, cur: Cursor) -> Head:
        """BEGIN IMMEDIATE already holds the write lock."""
        return self.read_head(cur)

    def existing_ids(self, cur: Cursor, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The stored positions of `ids` (repeats allowed): one statement, the ids as one JSON
        array parameter (a UUID's text needs no escaping), each probed in the event_id index."""
        if not ids:
            return {}
        texts = []
        for u in ids:
            x = f"{u.int:032x}"
            texts.append(f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}")  # str(u)
        cur.execute(
            "SELECT event_id, position FROM loomdb_events WHERE event_id IN (SELECT value FROM json_each(?))",
            ('["' + '","'.join(texts) + '"]',),
        )
        return {uuid.UUID(e): int(p) for e, p in cur.fetchall()}

    def stream_versions(self, cur: Cursor, stream_ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for i in range(0, len(stream_ids), 500):
            chunk = stream_ids[i : i + 500]
            cur.execute(
                "SELECT stream_id, version FROM loomdb_streams "
                f"WHERE stream_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update({s: int(v) for s, v in cur.fetchall()})
        return found

    def before_append(self, now: datetime) -> None:
        """SQLite has no partitions to prepare."""

    def read_state(
        self,
        cur: Cursor,
        ids: list[uuid.UUID],
        stream_ids: list[str],
        validate: Callable[[], None],
        optimistic: bool = False,
    ) -> AppendState:
        """Optimistic appends skip the id lookup: ids repeat only when an append is retried,
        so the lookup, 8 ms of a 5,000-event batch, is left to the UNIQUE index."""
        validate()
        head = self.lock_head(cur)
        existing = {} if optimistic and self.unique_event_ids else self.existing_ids(cur, ids)
        return AppendState(head, existing, self.stream_versions(cur, stream_ids))

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
        """The caller commits (one local transaction, no round trips to save)."""
        rows, last = self.plan_rows(events, recorded, iso(recorded), head_hash)
        self.write_batch(cur, rows, plan.streams, plan.position, last, recorded, commit)

    def plan_rows(
        self, plan: Iterable[PlannedEvent], recorded: datetime, recorded_iso: str, prev: str
    ) -> tuple[PlannedRows, str]:
        """Hash planned appends into row tuples for write(); returns them and the last hash."""
        return plan_rows(plan, recorded_iso, prev)

    def write_batch(
        self,
        cur: Cursor,
        rows: list[tuple[Any, ...]],
        streams: dict[str, tuple[int, int]],
        position: int,
        h: str,
        recorded_at: datetime,
        commit: bool,
    ) -> None:
        """Insert the rows, move the streams and the head."""
        try:
            cur.executemany(_INSERT, rows)
        except sqlite3.IntegrityError as exc:
            if "loomdb_events.event_id" in str(exc):
                raise StoredEventId(str(exc)) from exc
            raise
        cur.executemany(
            "INSERT INTO loomdb_streams (stream_id, version, last_position) VALUES (?, ?, ?) "
            "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, "
            "last_position = excluded.last_position",
            [(s, v, p) for s, (v, p) in streams.items()],
        )
        cur.execute(
            "UPDATE loomdb_head SET position = ?, hash = ?, recorded_at = ? WHERE id = 1",
            (position, h, iso(recorded_at)),
        )

    # --- reads ----------------------------------------------------------------------------

    def fetch_page(self, sql: str, params: list[Any], by_type: bool) -> list[dict[str, Any]]:
        with self.read() as cur:
            cur.execute(sql, params)
            return [self.py_row(r) for r in cur.fetchall()]

    @contextlib.contextmanager
    def verify_rows(self) -> Iterator[tuple[Head, Iterator[dict[str, Any]]]]:
        with self.read() as cur:
            head = self.read_head(cur)
            cur.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM loomdb_events ORDER BY position")
            yield head, (self.py_row(r) for r in cur)

    def waker(self) -> SleepWaker:
        return SleepWaker()

    # --- retention ------------------------------------------------------------------------

    def drop_period(self, cur: Cursor, start: datetime, end: datetime) -> None:
        """Delete the period's rows; the delete trigger lets through only rows older than a
        cutoff recorded in loomdb_retention_window for the length of this statement."""
        cur.execute("INSERT INTO loomdb_retention_window (cutoff) VALUES (?)", [self.ts(end)])
        cur.execute(
            "DELETE FROM loomdb_events WHERE recorded_at >= ? AND recorded_at < ?",
            [self.ts(start), self.ts(end)],
        )
        cur.execute("DELETE FROM loomdb_retention_window")

    def compress_period(self, cur: Cursor, start: datetime, dry_run: bool) -> int | None:
        """SQLite has no per-table compression."""
        return None

    # --- SQL fragments for queries: JSON paths are bound parameters, never spliced ---------

    def json_value(self, column: str, keys: list[str]) -> tuple[str, list[Any]]:
        """SQL yielding the scalar at a path (SQL number or text)."""
        return f"json_extract({column}, ?)", [self._path(keys)]

    def json_type(self, column: str, keys: list[str]) -> tuple[str, list[Any]]:
        return f"json_type({column}, ?)", [self._path(keys)]

    def json_text(self, column: str, keys: list[str]) -> tuple[str, list[Any]]:
        return f"CAST(json_extract({column}, ?) AS TEXT)", [self._path(keys)]

    def json_contains(self, column: str, keys: list[str], value: Any) -> tuple[str, list[Any]]:
        path = self._path(keys) if keys else "$"
        return (
            f"EXISTS (SELECT 1 FROM json_each({column}, ?) j WHERE j.value = ? AND j.type <> 'object')",
            [path, self._scalar(value)],
        )

    def json_compare(self, column: str, keys: list[str], op: str, value: Any) -> tuple[str, list[Any]]:
        path = self._path(keys)
        if op in ("=", "!="):
            if isinstance(value, dict | list):
                return f"json_extract({column}, ?) {op} json(?)", [path, _dumps(value)]
            if value is None:
                if op == "=":
                    return f"json_type({column}, ?) = 'null'", [path]
                return f"COALESCE(json_type({column}, ?), 'missing') <> 'null'", [path]
            return f"json_extract({column}, ?) {'=' if op == '=' else '<>'} ?", [path, self._scalar(value)]
        kinds = "('integer','real')" if isinstance(value, int | float) else "('text')"
        return (
            f"(json_type({column}, ?) IN {kinds} AND json_extract({column}, ?) {op} ?)",
            [path, path, self._scalar(value)],
        )

    def month_of(self, column: str) -> str:
        return f"substr({column}, 1, 7)"

    @staticmethod
    def _scalar(v: Any) -> Any:
        if isinstance(v, bool):
            return 1 if v else 0
        return v

    @staticmethod
    def _path(keys: list[str]) -> str:
        # Keys are validated to [A-Za-z0-9_-] before they get here; quoting keeps '-' literal.
        return "$" + "".join(f"[{k}]" if k.isdigit() else f'."{k}"' for k in keys)
