"""SQLite backend: the embedded default. One writer at a time (BEGIN IMMEDIATE), so positions
become visible in order by construction; subscribers poll."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from loomos.loomdb.hashchain import EVENT_COLUMNS, iso, string_list_text

JSON_COLUMNS = frozenset({"roles", "tags", "data", "metadata"})
TIME_COLUMNS = frozenset({"occurred_at", "recorded_at"})
_INSERT = (
    f"INSERT INTO loomdb_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)


def _dumps(v: Any) -> str:
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_ts(v: str) -> datetime:
    return datetime.fromisoformat(v)


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
        found: dict[uuid.UUID, int] = {}
        for i in range(0, len(ids), 500):
            chunk = [str(x) for x in ids[i : i + 500]]
            cur.execute(
                "SELECT event_id, position FROM loomdb_events "
                f"WHERE event_id IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update({uuid.UUID(e): int(p) for e, p in cur.fetchall()})
        return found

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

    def insert_events(self, cur: Any, rows: list[dict[str, Any]]) -> None:
        cur.executemany(_INSERT, [self.db_row(r) for r in rows])

    def read_state(
        self, cur: Any, ids: list[uuid.UUID], stream_ids: list[str]
    ) -> tuple[tuple[int, str, datetime], dict[uuid.UUID, int], dict[str, int]]:
        return self.lock_head(cur), self.existing_ids(cur, ids), self.stream_versions(cur, stream_ids)

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
