"""Postgres's monthly partitions of loomdb_events: created ahead of the appends that need them,
dropped when retention archives a month, rewritten with LZ4 when it compresses one.

Partition names and bounds are built from two integers (periods.partition_name), never from
input, so they are spliced into DDL directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from loomos.loomdb.hashchain import EVENT_COLUMNS
from loomos.loomdb.periods import month_start, next_month, partition_name

_EXISTS = "SELECT 1 FROM pg_class WHERE relname = %s AND relnamespace = current_schema()::regnamespace"


def _bounds(start: datetime) -> str:
    return f"FOR VALUES FROM ('{start.isoformat()}') TO ('{next_month(start).isoformat()}')"


class Partitions:
    """The partitions this process knows exist (a cache: asking Postgres each append costs a
    round trip). A set's single operations are atomic under the GIL: no lock needed."""

    def __init__(self) -> None:
        self._known: set[str] = set()

    def needed(self, now: datetime) -> bool:
        """Whether this month's or next month's partition may be missing."""
        this = month_start(now)
        return not {partition_name(this), partition_name(next_month(this))} <= self._known

    def prepare(self, conn: Any, now: datetime) -> None:
        """Create this month's and next month's partitions in their own short transaction, before
        an append takes the head lock: CREATE TABLE ... PARTITION OF holds an exclusive lock on
        the parent until commit, which would stall readers for the whole append."""
        this = month_start(now)
        for start in (this, next_month(this)):
            if partition_name(start) in self._known:
                continue
            try:
                with conn.transaction():
                    self.create(conn.cursor(), start)
            except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                # Another process created it between our check and our CREATE.
                self._known.add(partition_name(start))
        conn.commit()

    def ensure(self, cur: Any, recorded: datetime) -> None:
        """Fallback inside the append transaction (the clock moved into a month that prepare
        did not create). Creating a partition locks the parent table until commit, so this
        path is kept rare."""
        start = month_start(recorded)
        if partition_name(start) not in self._known:
            self.create(cur, start)

    def create(self, cur: Any, start: datetime) -> None:
        name = partition_name(start)
        cur.execute(_EXISTS, [name])
        if cur.fetchone() is None:
            cur.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF loomdb_events {_bounds(start)}")
        self._known.add(name)

    def drop(self, cur: Any, start: datetime) -> None:
        """Detach and drop the month's partition, if it exists. DDL is transactional: if the
        caller's transaction fails, the partition is still there."""
        name = partition_name(start)
        cur.execute(_EXISTS, [name])
        if cur.fetchone() is None:
            return
        cur.execute(f"ALTER TABLE loomdb_events DETACH PARTITION {name}")
        cur.execute(f"DROP TABLE {name}")
        self._known.discard(name)

    def compress(self, cur: Any, start: datetime, dry_run: bool) -> int | None:
        """Rewrite the month into a new partition whose data and metadata use LZ4 (values are
        decompressed and recompressed on the way: ::text::jsonb, since VACUUM FULL and CLUSTER
        keep stored values as they are), swapped in within the caller's transaction; the
        content, and so the hash chain, is unchanged. Returns the event count, or None when
        the month is archived already or compressed already."""
        name = partition_name(start)
        cur.execute(
            "SELECT a.attcompression FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "WHERE c.relname = %s AND c.relnamespace = current_schema()::regnamespace AND a.attname = 'data'",
            [name],
        )
        found = cur.fetchone()
        if found is None or found[0] == "l":
            return None
        if dry_run:
            cur.execute(f"SELECT count(*) FROM {name}")
            return int(cur.fetchone()[0])
        fresh = f"{name}_lz4"
        columns = ", ".join(EVENT_COLUMNS)
        select = ", ".join(f"{c}::text::jsonb" if c in ("data", "metadata") else c for c in EVENT_COLUMNS)
        cur.execute(f"CREATE TABLE {fresh} (LIKE loomdb_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        cur.execute(
            f"ALTER TABLE {fresh} ALTER COLUMN data SET COMPRESSION lz4, "
            "ALTER COLUMN metadata SET COMPRESSION lz4"
        )
        cur.execute(f"INSERT INTO {fresh} ({columns}) SELECT {select} FROM {name} ORDER BY position")
        count = int(cur.rowcount)
        cur.execute(f"ALTER TABLE loomdb_events DETACH PARTITION {name}")
        cur.execute(f"DROP TABLE {name}")
        cur.execute(f"ALTER TABLE {fresh} RENAME TO {name}")
        # Attaching builds the partition's indexes and clones the immutability triggers.
        cur.execute(f"ALTER TABLE loomdb_events ATTACH PARTITION {name} {_bounds(start)}")
        return count
