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
    with store.backend.read() as cur:
        cur.execute(
            store.backend.sql(f"SELECT {', '.join(EVENT_COLUMNS)} FROM loomdb_events WHERE position = %s"),
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


def _shift(raw_sql, from_position: int, by: int) -> None:
    """Renumber every row from `from_position` on by `by`, in two steps so the primary key never
    sees a duplicate mid-update."""
    raw_sql("UPDATE loomdb_events SET position = -position WHERE position >= ?", (from_position,))
    raw_sql("UPDATE loomdb_events SET position = ? - position WHERE position < 0", (by,))


def _insert_raw(chain, raw_sql, backend, row: dict) -> None:
    db = chain.backend.db_row(row)
    if backend == "postgres":
        db = tuple(json.dumps(v.obj) if hasattr(v, "obj") else v for v in db)
    raw_sql(
        f"INSERT INTO loomdb_events ({', '.join(EVENT_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(EVENT_COLUMNS))})",
        db,
    )


def _forged_after(chain, position: int) -> dict:
    """A correctly hashed row that links to `position`, as a careful attacker would write it."""
    row = stored_row(chain, position + 1)
    row.update(
        position=position + 1,
        event_id=uuid.uuid4(),
        stream_version=999,
        prev_hash=stored_row(chain, position)["hash"],
        data={"forged": True},
    )
    row["hash"] = event_hash(row)
    return row


def test_inserted_row_in_the_middle_is_found(chain, raw_sql, backend):
    """The attacker renumbers rows 10.. to make room and writes a correctly hashed and linked
    row at 10, and moves the head so the end of the chain matches: the renumbered row at 11
    gives it away, and the report names position 10 as inserted."""
    forged = _forged_after(chain, 9)
    _shift(raw_sql, 10, 1)
    _insert_raw(chain, raw_sql, backend, forged)
    raw_sql("UPDATE loomdb_head SET position = 21")
    report = chain.verify()
    assert (report.ok, report.problem.kind, report.problem.position) == (False, "inserted", 10)
    assert report.checked == 9 and report.last_position == 9


def test_renumbered_deletion_in_the_middle_is_found(chain, raw_sql):
    """Delete row 10 and close the gap by renumbering the rest (and the head)."""
    raw_sql("DELETE FROM loomdb_events WHERE position = 10")
    _shift(raw_sql, 11, -1)
    raw_sql("UPDATE loomdb_head SET position = 19")
    report = chain.verify()
    assert (report.ok, report.problem.kind, report.problem.position) == (False, "deleted", 10)
    assert report.checked == 9


def test_gap_made_by_renumbering_is_found(chain, raw_sql):
    _shift(raw_sql, 10, 1)
    report = chain.verify()
    assert (report.ok, report.problem.kind, report.problem.position) == (False, "altered", 10)
    assert "renumbered" in report.problem.detail


def test_second_row_at_an_existing_position_is_found(chain, raw_sql, backend):
    """Postgres keys events by (position, recorded_at) for partitioning, so the database accepts
    a second row at position 5 with another recorded_at; the chain does not. SQLite's primary
    key refuses it outright."""
    later = "recorded_at + interval '1 microsecond'" if backend == "postgres" else "recorded_at || ' '"
    uid = "gen_random_uuid()" if backend == "postgres" else "lower(hex(randomblob(16)))"
    columns = [{"event_id": uid, "recorded_at": later}.get(c, c) for c in EVENT_COLUMNS]
    sql = (
        f"INSERT INTO loomdb_events ({', '.join(EVENT_COLUMNS)}) "
        f"SELECT {', '.join(columns)} FROM loomdb_events WHERE position = 5"
    )
    if backend == "sqlite":
        import sqlite3

        with pytest.raises(sqlite3.IntegrityError):
            raw_sql(sql)
        assert chain.verify().ok
        return
    raw_sql(sql)
    report = chain.verify()
    assert not report.ok and report.problem.position in (5, 6)
    assert report.problem.kind in ("inserted", "altered")


def test_appends_continue_the_chain_after_verify(chain):
    chain.append(NewEvent(event_type="custom.tick", stream_id="s", data={}))
    report = chain.verify()
    assert report.ok and report.checked == 21 and report.head_hash == chain.head()[1]
