"""SQLite backend: the embedded default. One writer at a time (BEGIN IMMEDIATE), so positions
become visible in order by construction; subscribers poll."""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from loomos.loomdb.errors import StoredEventId
from loomos.loomdb.hashchain import (
    CONTEXT_COLUMNS,
    EPOCH_2000,
    EVENT_COLUMNS,
    MICROSECOND,
    context_key,
    context_values,
    iso,
    iso_second,
    json_fragment,
    json_text,
    string_list_text,
)

JSON_COLUMNS = frozenset({"roles", "tags", "data", "metadata"})
TIME_COLUMNS = frozenset({"occurred_at", "recorded_at"})
_INSERT = (
    f"INSERT INTO loomdb_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)


def _dumps(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_ts(v: str) -> datetime:
    return datetime.fromisoformat(v)


# --- appends: hash input and row tuple from the same cached fragments ------------------------
# What EventStore._row and db_row make of an event, built in one pass: an event source repeats
# its audit and security context, event types, streams and tags, so their canonical JSON
# fragments (hashchain.json_fragment, the text those values take inside the hashed scalar
# array) and their column values are made once and reused; per event only the ids, positions,
# times and data are encoded, and no row dict is built. The hashed text is exactly
# hashchain.hash_values's (verify() re-derives every stored hash with event_hash), and each
# tuple holds exactly what db_row stores for the row dict (test_loomdb_sqlite_batch compares
# both paths column by column).
_I_ROLES = CONTEXT_COLUMNS.index("roles")
_sha256 = hashlib.sha256
# NULL as the rows bind it. SQLite stores a NaN bound as a double as NULL (sqlite3_bind_double
# sets a NaN to NULL), and sqlite3 binds a float directly, while None goes through its adapter
# lookup first: about 0.25 us per NULL, and a typical event has 15 or more of them (unused
# context columns, correlation ids, schema version, retention). The stored value is the same
# NULL (test_loomdb_sqlite_batch compares the rows with the row path's, typeof included).
_NULL = float("nan")


@functools.lru_cache(maxsize=1024)
def _context_parts(key: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """JSON fragment and column values (roles as its JSON text, NULL as _NULL) of context_key's
    columns."""
    values = [_NULL if v is None else v for v in key]
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


def plan_rows(
    plan: Iterable[tuple[Any, str | None, int, int]], recorded_iso: str, prev: str
) -> tuple[PlannedRows, str]:
    """Hash planned appends ((event, schema_version, position, stream_version) in chain order)
    into row tuples; returns them and the last hash."""
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
            occ = occ.astimezone(UTC)  # what hashchain.iso does (a naive time is local time)
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
        x = f"{e.event_id.int:032x}"
        eid = f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"  # str(event_id)
        # json_fragment([position, str(event_id)]) etc.: ints, a UUID's text, ISO times and hex
        # hashes need no JSON escaping, so they are written directly.
        head = (
            f'[{int(p)},"{eid}",{_type_json(etype, v)},{_stream_json(sid)},{int(sv)},"{occ_text}",'
            f'{recorded_json},{o_json},{c_json},{g_json},{r_json},"{prev}"]'
        )
        h = _sha256(f"{head}\x1e{data_json}\x1e{meta_json}".encode()).hexdigest()  # hash_text
        append(
            (
                p,
                eid,
                etype,
                _NULL if v is None else v,
                sid,
                sv,
                occ_text,
                recorded_iso,
                _NULL if corr is None else corr,
                _NULL if caus is None else caus,
                *c_values,
                tags_text,
                priority,
                data_json,
                meta_json,
                _NULL if ret is None else ret,
                prev,
                h,
            )
        )
        prev = h
    return rows, prev


class SqliteBackend:
    name = "sqlite"
    ph = "?"

    def configure(self, dbapi_conn: Any) -> None:
        # We issue BEGIN ourselves; WAL lets readers run while one writer appends.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    def begin_write(self, cur: Any) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def begin_read(self, cur: Any) -> None:
        # One snapshot for multi-statement reads (head position + events).
        cur.execute("BEGIN")

    def lock_head(self, cur: Any) -> tuple[int, str, datetime]:
        cur.execute("SELECT position, hash, recorded_at FROM loomdb_head WHERE id = 1")
        pos, h, ts = cur.fetchone()
        return int(pos), h, parse_ts(ts)

    def ts(self, v: datetime) -> str:
        return iso(v)

    def uid(self, v: uuid.UUID) -> str:
        return str(v)

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

    def existing_ids(self, cur: Any, ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
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

    def stream_versions(self, cur: Any, stream_ids: list[str]) -> dict[str, int]:
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

    def insert_events(self, cur: Any, rows: list[dict[str, Any]] | PlannedRows) -> None:
        try:
            if isinstance(rows, PlannedRows):
                cur.executemany(_INSERT, rows)
            else:
                cur.executemany(_INSERT, [self.db_row(r) for r in rows])
        except sqlite3.IntegrityError as exc:
            if "loomdb_events.event_id" in str(exc):
                raise StoredEventId(str(exc)) from exc
            raise

    def plan_rows(
        self, plan: Any, recorded: datetime, recorded_iso: str, prev: str
    ) -> tuple[PlannedRows, str]:
        """Hash planned appends into row tuples for write(); returns them and the last hash."""
        return plan_rows(plan, recorded_iso, prev)

    # event_id is UNIQUE here (the table is not partitioned): an append may skip looking its ids
    # up, and a stored one then fails the insert with StoredEventId (EventStore._append_group).
    unique_event_ids = True

    def read_state(
        self, cur: Any, ids: list[uuid.UUID], stream_ids: list[str], look_up_ids: bool = True
    ) -> tuple[tuple[int, str, datetime], dict[uuid.UUID, int], dict[str, int]]:
        head = self.lock_head(cur)  # BEGIN IMMEDIATE already holds the write lock
        existing = self.existing_ids(cur, ids) if look_up_ids else {}
        return head, existing, self.stream_versions(cur, stream_ids)

    def write(
        self,
        cur: Any,
        rows: list[dict[str, Any]] | PlannedRows,
        streams: dict[str, tuple[int, int]],
        position: int,
        h: str,
        recorded_at: datetime,
        commit: bool,
    ) -> None:
        """The caller commits (one local transaction, no round trips to save)."""
        self.insert_events(cur, rows)
        self.save_streams(cur, streams)
        self.save_head(cur, position, h, recorded_at)

    def save_streams(self, cur: Any, streams: dict[str, tuple[int, int]]) -> None:
        cur.executemany(
            "INSERT INTO loomdb_streams (stream_id, version, last_position) VALUES (?, ?, ?) "
            "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version, "
            "last_position = excluded.last_position",
            [(s, v, p) for s, (v, p) in streams.items()],
        )

    def save_head(self, cur: Any, position: int, h: str, recorded_at: datetime) -> None:
        cur.execute(
            "UPDATE loomdb_head SET position = ?, hash = ?, recorded_at = ? WHERE id = 1",
            (position, h, iso(recorded_at)),
        )

    def notify(self, cur: Any, position: int) -> None:
        """SQLite subscribers poll; nothing to wake."""

    def ensure_partitions(self, cur: Any, rows: list[dict[str, Any]]) -> None:
        """SQLite has no partitions; retention deletes rows by period instead."""

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
