"""Hash versions: new events are hashed as RFC 8785 (JCS) JSON (version 2), which any JCS
implementation re-derives; events stored before hash versions existed keep verifying as
version 1; a chain holding both verifies, and tampering is found in either."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import rfc8785
from alembic import command

from loomos.loomdb import Event, NewEvent
from loomos.loomdb.archives import read_archive
from loomos.loomdb.canonical import iso, jcs_from_json_text, jcs_text, json_normal, json_text
from loomos.loomdb.hashchain import HASH_V1, HASHED_COLUMNS, event_hash, event_row
from loomos.loomdb.migrate import alembic_config
from loomos.loomdb.pg_copy import COPY_THRESHOLD

# Data whose JCS text differs from json_text (small floats, keys beyond U+FFFF next to keys in
# U+E000..U+FFFF, whose order differs between code points and UTF-16), and data whose does not.
TRICKY = {
    "small": 1e-7,
    "smaller": 1.5e-5,
    "tiny": 5e-324,
    "third": 1 / 3,
    "whole": 3.0,
    "neg_zero": -0.0,
    "max_safe": 2**53 - 1,
    "\U0001f600": "emoji key",
    "\ue000": "private-use key",
    "nested": {"\U00010000": [1e-6, 0.000123, {"z": None, "a": True}], "\uffff": "last in code points"},
    "text": 'ünïcode "q" \\ \x01 \u2028 \x85 😀',
}
PLAIN = {"step": 7, "loss": 0.123456, "hardware_config": {"gpu_count": 8, "gpu_type": "H100"}, "ok": False}


def documented_array(e: Event) -> list[Any]:
    """Hash version 2's array as hashchain's docstring defines it, built here from the event as
    the store returns it, independently of LoomDB's encoders."""
    ctx, sec = e.context, e.security
    return [
        2,
        e.position,
        str(e.event_id),
        e.event_type,
        e.schema_version,
        e.stream_id,
        e.stream_version,
        e.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
        e.recorded_at.astimezone(UTC).isoformat(timespec="microseconds"),
        e.correlation_id,
        e.causation_id,
        ctx.user_id,
        ctx.session_id,
        ctx.request_id,
        ctx.source_ip,
        ctx.user_agent,
        ctx.compliance_level,
        ctx.cost_center,
        ctx.project_id,
        sec.authentication_method,
        list(sec.roles),
        sec.access_level,
        sec.data_classification,
        sec.geographic_restriction,
        list(e.tags),
        str(e.priority),
        e.data,
        e.metadata,
        e.retention_days,
        e.prev_hash,
    ]


def independent_hash(e: Event) -> str:
    return hashlib.sha256(rfc8785.dumps(documented_array(e))).hexdigest()


def sample(i: int, data: dict[str, Any]) -> NewEvent:
    return NewEvent(
        event_type="model.training.checkpoint" if i % 3 == 0 else "custom.hashed",
        stream_id=f"s-{i % 4}",
        occurred_at=datetime(2026, 1, 5, 10, 0, tzinfo=UTC) + timedelta(seconds=i, microseconds=i),
        correlation_id="corr-ü" if i % 2 else None,
        context={"user_id": f"u{i % 3}", "user_agent": 'curl "8" 😀', "cost_center": "ml"},
        security={"roles": ["ml", "admin"] if i % 2 else [], "data_classification": "pii"},
        tags=["t1", "team:vision"] if i % 2 else [],
        priority="high" if i % 5 == 0 else "normal",
        retention_days=30 if i % 7 == 0 else None,
        data={**data, "i": i, "job_id": f"j{i}", "step": i, "uri": f"s3://c/{i}"},
        metadata={"source": "t", "ratio": 2.5e-5} if i % 2 else {},
    )


@pytest.mark.parametrize("count", [1, 30, COPY_THRESHOLD + 7], ids=["single", "small-batch", "copy-batch"])
def test_v2_hashes_are_rfc8785_of_the_documented_array(store, count):
    """Every append path (one event; a small batch, on Postgres a jsonb parameter; a large one,
    on Postgres binary COPY) hashes exactly sha256(rfc8785.dumps(array))."""
    events = [sample(i, TRICKY if i % 2 else PLAIN) for i in range(count)]
    store.append_many(events)
    stored = store.read(0, limit=1000)
    assert len(stored) == count
    for e in stored:
        assert e.hash_version == 2
        assert e.hash == independent_hash(e), e.position
    assert store.verify().ok


def test_ints_beyond_jcs_keep_every_digit(store, raw_sql, backend):
    """JCS has no form for 2**60 + 1 (rfc8785 refuses it): its digits are hashed as they are, so
    changing the stored number to 2**60 (the nearest double's value) is found."""
    e = NewEvent(event_type="custom.big", stream_id="big", data={"n": 2**60 + 1, "m": -(10**30) - 7})
    store.append(e)
    got = store.get(e.event_id)
    assert got.data["n"] == 2**60 + 1 and got.hash_version == 2
    with pytest.raises(rfc8785.IntegerDomainError):
        rfc8785.dumps(documented_array(got))
    # The documented extension, computed independently: rfc8785 for everything else, the
    # big ints' decimal digits in their place.
    marked = documented_array(got)
    marked[26] = {"n": "@N@", "m": "@M@"}
    text = rfc8785.dumps(marked).replace(b'"@N@"', str(2**60 + 1).encode())
    text = text.replace(b'"@M@"', str(-(10**30) - 7).encode())
    assert hashlib.sha256(text).hexdigest() == got.hash
    assert store.verify().ok
    cast = "::jsonb" if backend == "postgres" else ""
    raw_sql(
        f"UPDATE loomdb_events SET data = ?{cast} WHERE position = 1",
        (json.dumps({"n": 2**60, "m": -(10**30) - 7}),),
    )
    report = store.verify()
    assert (report.ok, report.problem.kind, report.problem.position) == (False, "altered", 1)


# --- a store from before hash versions ---------------------------------------------------------


def _alembic(store, action: str, target: str) -> None:
    with store.engine.begin() as conn:
        getattr(command, action)(alembic_config(conn), target)


def _write_v1_events(store, events: list[NewEvent], recorded: datetime) -> None:
    """Append as LoomDB did before hash versions: hash version 1 rows, no hash_version column."""
    b = store.backend
    columns = [*HASHED_COLUMNS, "hash"]
    insert = f"INSERT INTO loomdb_events ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
    with b.write() as cur:
        head = b.lock_head(cur)
        prev, streams = head.hash, {}
        for i, e in enumerate(events):
            sv = streams[e.stream_id] = streams.get(e.stream_id, 0) + 1
            pos = head.position + i + 1
            row = event_row(e, None, pos, sv, recorded, iso(recorded), prev, hash_version=HASH_V1)
            prev = row["hash"]
            db = dict(zip([*HASHED_COLUMNS, "hash_version", "hash"], b.db_row(row), strict=True))
            cur.execute(b.sql(insert), [db[c] for c in columns])
        for sid, version in streams.items():
            cur.execute(
                b.sql("INSERT INTO loomdb_streams (stream_id, version, last_position) VALUES (%s, %s, %s)"),
                [sid, version, head.position + len(events)],
            )
        cur.execute(
            b.sql("UPDATE loomdb_head SET position = %s, hash = %s, recorded_at = %s WHERE id = 1"),
            [head.position + len(events), prev, b.ts(recorded)],
        )


@pytest.fixture
def mixed_chain(clocked_store, clock):
    """Four version 1 events written before the hash_version column existed (migration 0004),
    then, after the upgrade, four appended as version 2."""
    store = clocked_store
    store.backend.before_append(clock())  # Postgres: this month's partition
    _alembic(store, "downgrade", "0003")
    _write_v1_events(store, [sample(i, PLAIN if i % 2 else TRICKY) for i in range(4)], clock())
    _alembic(store, "upgrade", "head")
    old = store.read(0)
    assert [e.hash_version for e in old] == [1, 1, 1, 1]
    assert store.verify().ok and store.verify().checked == 4
    clock.advance(seconds=1)
    store.append_many([sample(10 + i, TRICKY if i % 2 else PLAIN) for i in range(3)])
    store.append(sample(20, TRICKY))
    return store


def test_a_chain_of_version_1_then_version_2_events_verifies(mixed_chain):
    events = mixed_chain.read(0)
    assert [e.hash_version for e in events] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert events[4].prev_hash == events[3].hash  # the first v2 event links to the last v1 one
    assert all(e.hash == event_hash(_row(e)) for e in events)
    for e in events[4:]:
        assert e.hash == independent_hash(e)
    report = mixed_chain.verify()
    assert report.ok and report.checked == 8 and report.head_hash == events[-1].hash


def _row(e: Event) -> dict[str, Any]:
    ctx, sec = e.context.model_dump(), e.security.model_dump()
    return {**e.model_dump(exclude={"context", "security"}), **ctx, **sec, "priority": str(e.priority)}


@pytest.mark.parametrize("position, version", [(2, 1), (6, 2)])
def test_tampering_is_found_under_either_version(mixed_chain, raw_sql, backend, position, version):
    assert mixed_chain.read(position - 1, limit=1)[0].hash_version == version
    cast = "::jsonb" if backend == "postgres" else ""
    raw_sql(f"UPDATE loomdb_events SET data = ?{cast} WHERE position = ?", (json.dumps({"i": 99}), position))
    report = mixed_chain.verify()
    assert (report.ok, report.problem.kind, report.problem.position) == (False, "altered", position)
    assert report.checked == position - 1


@pytest.mark.parametrize("position, forged", [(2, 2), (6, 1), (6, 3)])
def test_a_changed_hash_version_is_found(mixed_chain, raw_sql, position, forged):
    """Relabelling an event's version (to make a forged row verify under the other form, or an
    unknown one) breaks its hash."""
    raw_sql("UPDATE loomdb_events SET hash_version = ? WHERE position = ?", (forged, position))
    report = mixed_chain.verify()
    assert (report.ok, report.problem.kind, report.problem.position) == (False, "altered", position)


def test_archives_from_before_hash_versions_verify_as_version_1(clock, tmp_path):
    """An archive line without hash_version (written before it existed) is a version 1 event."""
    now = clock()
    prev, lines = "0" * 64, []
    for i in range(3):
        row = event_row(sample(i, TRICKY), None, i + 1, 1, now, iso(now), prev, hash_version=HASH_V1)
        prev = row["hash"]
        line = {c: row[c] for c in (*HASHED_COLUMNS, "hash")}
        line.update(event_id=str(row["event_id"]), occurred_at=iso(row["occurred_at"]), recorded_at=iso(now))
        lines.append(json.dumps(line, sort_keys=True, ensure_ascii=False))
    path = tmp_path / "old.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    back = list(read_archive(f"file://{path}"))
    assert [r["hash_version"] for r in back] == [1, 1, 1]
    assert all(event_hash(r) == r["hash"] for r in back)
    assert [r["hash"] for r in back][-1] == prev


# --- the JCS encoder ---------------------------------------------------------------------------


def _random_value(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rnd.randint(-(2**53) + 1, 2**53 - 1)
    if kind == 1:
        x = rnd.choice([rnd.random(), rnd.uniform(-1e6, 1e6), 10 ** rnd.uniform(-12, 15)])
        return x if not x.is_integer() else x + 0.5
    if kind == 2:
        return rnd.choice([True, False, None])
    if kind in (3, 4, 5):
        alphabet = ["a", "é", "\x01", '"', "\\", "\u2028", "\ue000", "\uffff", "😀", "\U00010000", "z"]
        return "".join(rnd.choice(alphabet) for _ in range(rnd.randrange(6)))
    if kind in (6, 7):
        keys = ["a", "B", "é", "\ue000", "\uffff", "😀", "\U00010000", "aa", "", "z\U0001f600"]
        return {rnd.choice(keys) + str(rnd.randrange(3)): _random_value(rnd, depth + 1) for _ in range(4)}
    return [_random_value(rnd, depth + 1) for _ in range(rnd.randrange(4))]


def test_jcs_text_is_rfc8785_for_every_value_it_can_write():
    """jcs_text and the appends' shortcut from json_text (jcs_from_json_text) write exactly
    rfc8785.dumps, on random trees of every kind of JSON value JCS can write."""
    rnd = random.Random(8785)
    for _ in range(3000):
        value = {"v": _random_value(rnd), "w": _random_value(rnd)}
        want = rfc8785.dumps(json_normal(value)).decode()
        assert jcs_text(value) == want, value
        assert jcs_from_json_text(json_text(value), value) == want, value


@pytest.mark.parametrize(
    "value",
    [
        {"f": 1e-7},
        {"f": [0.0001, 0.00001, 1e-6, 1.5e-7, 5e-324, 2.5e-3]},
        {"\U0001f600": 1, "\ue000": 2},
        {"whole": 3.0, "big_whole": 1e15, "neg_zero": -0.0},
        {"s": "x1e-5y", "t": "no exponent"},
        {},
    ],
)
def test_jcs_of_the_values_where_it_differs_from_json_text(value):
    assert jcs_from_json_text(json_text(value), value) == rfc8785.dumps(json_normal(value)).decode()


def test_ints_jcs_cannot_write_keep_their_digits_and_stay_distinct():
    assert jcs_text({"n": 2**60 + 1}) == '{"n":1152921504606846977}'
    assert jcs_text({"n": 2**60}) != jcs_text({"n": 2**60 + 1})
    assert jcs_text({"n": 2**60, "f": 1e-7, "\U0001f600": 1, "\ue000": 2}) == (
        '{"f":1e-7,"n":1152921504606846976,"\U0001f600":1,"\ue000":2}'
    )
    assert jcs_text({"n": -(10**30)}) == '{"n":-1000000000000000000000000000000}'
