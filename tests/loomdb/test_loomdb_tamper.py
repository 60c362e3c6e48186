"""Hash-chain tamper detection: edit, delete and insert rows behind LoomDB's back."""

from __future__ import annotations

import json
import uuid

import pytest

from loomos.loomdb import NewEvent
from loomos.loomdb.hashchain import EVENT_COLUMNS, event_hash


@pytest.fixture
def chain(store):
    store.append_many(
        [
            NewEvent(event_type="custom.tick", stream_id=f"s{i % 3}", data={"i": i, "amount": 10 * i})
            for i in range(20)
        ]
    )
    assert store.verify().ok
    return store


def stored_row(store, position: int) -> dict:
    with store._read() as cur:
        cur.execute(
            store._sql(f"SELECT {', '.join(EVENT_COLUMNS)} FROM loomdb_events WHERE position = %s"),
            [position],
        )
        return store.backend.py_row(cur.fetchone())


def test_edited_row_is_found(chain, raw_sql, backend):
    cast = "::jsonb" if backend == "postgres" else ""
    raw_sql(
        f"UPDATE loomdb_events SET data = ?{cast} WHERE position = 7", (json.dumps({"i": 6, "amount": 0}),)
    )
    report = chain.verify()
    assert not report.ok
    assert (report.problem.kind, report.problem.position) == ("altered", 7)
    assert report.checked == 6


def test_edited_row_with_recomputed_hash_is_found_at_its_successor(chain, raw_sql, backend):
    """A careful attacker recomputes the edited row's hash; the next row no longer links to it."""
    raw = stored_row(chain, 12)
    raw["data"] = {"i": 11, "amount": 1}
    forged = event_hash(raw)
    cast = "::jsonb" if backend == "postgres" else ""
    raw_sql(
        f"UPDATE loomdb_events SET data = ?{cast}, hash = ? WHERE position = 12",
        (json.dumps(raw["data"]), forged),
    )
    report = chain.verify()
    assert not report.ok and report.problem.position == 13 and report.problem.kind == "altered"


def test_deleted_row_is_found(chain, raw_sql):
    raw_sql("DELETE FROM loomdb_events WHERE position = 9")
    report = chain.verify()
    assert (report.ok, report.problem.kind, report.problem.position) == (False, "deleted", 9)


def test_deleted_last_row_is_found(chain, raw_sql):
    raw_sql("DELETE FROM loomdb_events WHERE position = 20")
    report = chain.verify()
    assert (report.ok, report.problem.kind, report.problem.position) == (False, "deleted", 20)


def test_inserted_row_is_found(chain, raw_sql, backend):
    """A row appended behind LoomDB's back, correctly hashed and linked: only the head knows."""
    last = chain.read(19)[0]
    row = stored_row(chain, 20)
    row.update(
        position=21, event_id=uuid.uuid4(), stream_version=99, prev_hash=last.hash, data={"forged": True}
    )
    row["hash"] = event_hash(row)
    db = chain.backend.db_row(row)
    if backend == "postgres":
        db = tuple(json.dumps(v.obj) if hasattr(v, "obj") else v for v in db)
    raw_sql(
        f"INSERT INTO loomdb_events ({', '.join(EVENT_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})",
        db,
    )
    report = chain.verify()
    assert (report.ok, report.problem.kind, report.problem.position) == (False, "inserted", 21)


def test_inserted_row_in_the_middle_is_found(chain, raw_sql, backend):
    """Shifting positions to make room changes every later row's content: the first shifted
    row no longer matches its hash."""
    # Two steps, so the primary key never sees a duplicate mid-update.
    raw_sql("UPDATE loomdb_events SET position = -position WHERE position >= 10")
    raw_sql("UPDATE loomdb_events SET position = 1 - position WHERE position < 0")
    report = chain.verify()
    assert not report.ok and report.problem.position in (10, 11)
    assert report.problem.kind in ("altered", "deleted", "inserted")


def test_appends_continue_the_chain_after_verify(chain):
    chain.append(NewEvent(event_type="custom.tick", stream_id="s", data={}))
    report = chain.verify()
    assert report.ok and report.checked == 21 and report.head_hash == chain.head()[1]
