"""The id lookup of a large Postgres append: which of its event ids are stored already (the
idempotency check), asked so that the append's leader validates the batch while the server
looks the ids up (PostgresBackend.read_state).

The lookup is sent with libpq's calls directly (psycopg.pq, psycopg's public libpq interface):
psycopg's cursor would wait for the result, and the point is not to. Waiting is a select() on
the connection's socket, so other threads run meanwhile. It is a prepared statement of the
session, so it is planned once and not per append (1-3 ms for 5,000 ids); whether it exists is
asked in read_state's first round trip (IS_PREPARED) rather than remembered here, since psycopg
runs DEALLOCATE ALL on a connection after some rollbacks. The ids go as one binary uuid[]
parameter and the result comes back in binary: 16-byte uuids and int8s.
"""

from __future__ import annotations

import select
import struct
import uuid
from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import ExecStatus, Format

# Around a large id lookup. The planner's own choice (a bitmap scan of the event_id hash index
# once the table is analyzed) is kept, but seq scans are off: on a table not analyzed yet it
# would scan every row, and a scan grows with the table. Its misestimates also priced lookups
# into JIT compilation (140 ms).
LOOKUP_SETTINGS = ("jit = off", "enable_seqscan = off")
_LOOKUP_IDS = "SELECT event_id, position FROM loomdb_events WHERE event_id = ANY($1)"


class UuidArray(bytes):
    """A uuid[] parameter already in Postgres's binary array form (see uuid_array)."""


_UUID_ARRAY_OID = 2951
_UUID_LEN = struct.pack("!i", 16)


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


_LOOKUP_NAME = b"loomdb_lookup_ids"
_LOOKUP_PG = _LOOKUP_IDS.encode()
IS_PREPARED = f"SELECT EXISTS (SELECT 1 FROM pg_prepared_statements WHERE name = '{_LOOKUP_NAME.decode()}')"


def send_lookup(conn: Any, ids: list[uuid.UUID], prepared: bool) -> None:
    """Send the id lookup without waiting for its result (fetch_lookup reads it)."""
    pg = conn.pgconn
    if not prepared:
        pg.send_prepare(_LOOKUP_NAME, _LOOKUP_PG, param_types=[_UUID_ARRAY_OID])
        _flush(pg)
        _check(conn, _results(pg), ExecStatus.COMMAND_OK)
    pg.send_query_prepared(_LOOKUP_NAME, [bytes(uuid_array(ids))], param_formats=[1], result_format=1)
    _flush(pg)


def fetch_lookup(conn: Any) -> dict[uuid.UUID, int]:
    results = _results(conn.pgconn)
    _check(conn, results, ExecStatus.TUPLES_OK)
    found: dict[uuid.UUID, int] = {}
    for res in results:
        for i in range(res.ntuples):
            found[uuid.UUID(bytes=bytes(res.get_value(i, 0)))] = int.from_bytes(
                res.get_value(i, 1), "big", signed=True
            )
    return found


def _flush(pg: Any) -> None:
    """Send what libpq has queued (psycopg's connections are non-blocking: a send may stop short)."""
    while pg.flush() == 1:
        select.select([], [pg.socket], [])


def _results(pg: Any) -> list[Any]:
    """Every result of the query sent, waiting on the socket (not inside libpq) until each is in."""
    results = []
    while True:
        pg.consume_input()
        while pg.is_busy():
            select.select([pg.socket], [], [])
            pg.consume_input()
        res = pg.get_result()
        if res is None:
            return results
        results.append(res)


def _check(conn: Any, results: list[Any], ok: Any) -> None:
    for res in results:
        if res.status != ok:
            raise psycopg.errors.error_from_result(res, encoding=conn.info.encoding)
