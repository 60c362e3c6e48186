"""SQLite's fast append path (SqliteBackend.plan_rows: row tuples hashed and encoded from cached
fragments, NULL bound as NaN) against the row path it replaces (hashchain.event_row +
SqliteBackend.db_row): the same bytes in every column, the same chain, the same refusals."""

from __future__ import annotations

import json
import random
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from loomos.loomdb import (
    AuditContext,
    ConcurrencyError,
    EventStore,
    InvalidEvent,
    NewEvent,
    Priority,
    SecurityContext,
    open_event_store,
)
from loomos.loomdb.backend_sqlite import SqliteBackend
from loomos.loomdb.canonical import json_text
from loomos.loomdb.hashchain import EVENT_COLUMNS, event_hash, event_row

CHECKED = "custom.checked"  # the type with a registered schema (events get a schema_version)
TEXTS = [
    "ünïcode",
    "emoji 🧪🚀",
    'quote " back \\ slash /',
    "control \x01\x1f\x7f",
    "separators \u2028\u2029 \x1e",
    "rtl שלום مرحبا",
    "tab\tnew\nline\r",
    "",
]
FLOATS = [0.1, 1.0, 1e16, 1e-7, -0.0, 5e-324, 1.7976931348623157e308, 3.0, 2.5e-3, -123.456, 1e22]
TIMEZONES = [
    UTC,
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-8)),
    timezone(timedelta(hours=14)),
]
TIMES = [
    datetime(2026, 3, 1, 8, 30, 15, 123456),
    datetime(2026, 3, 1, 8, 30, 15),  # microsecond 0: still written with six digits
    datetime(1969, 12, 31, 23, 59, 59, 999999),  # before both epochs
    datetime(999, 6, 1, 0, 0, 0, 1),
    datetime(2099, 12, 31, 23, 59, 59, 500000),
]


class RowPath:
    """SQLite without its fast path: one row dict per event (hashchain.event_row) stored
    through db_row, in place of SqliteBackend.plan_rows. Counts the row dicts, so a test
    notices if the store stops taking this path."""

    def __init__(self, backend: SqliteBackend) -> None:
        self.backend = backend
        self.row_dicts = 0

    def __call__(self, plan: Any, recorded: datetime, recorded_iso: str, prev: str) -> tuple[list, str]:
        rows = []
        for e, v, p, sv in plan:
            row = event_row(e, v, p, sv, recorded, recorded_iso, prev)
            assert isinstance(row, dict)
            prev = row["hash"]
            rows.append(self.backend.db_row(row))
        self.row_dicts += len(rows)
        return rows, prev


def _open(path: Path, clock: Any) -> EventStore:
    store = open_event_store(f"sqlite:///{path}", clock=clock)
    store.register_schema(CHECKED, "1.2.0", {"type": "object", "required": ["i"]})
    return store


@pytest.fixture
def pair(tmp_path: Path, clock: Any) -> Iterator[tuple[EventStore, EventStore]]:
    """A store on the fast path, counting the events it encoded, and one on the row path."""
    fast = _open(tmp_path / "fast.sqlite", clock)
    slow = _open(tmp_path / "slow.sqlite", clock)
    slow.backend.plan_rows = RowPath(slow.backend)  # type: ignore[method-assign]
    fast.encoded = []  # type: ignore[attr-defined]
    original = fast.backend.plan_rows

    def counted(plan: Any, *args: Any) -> Any:
        rows, last = original(plan, *args)
        fast.encoded.append(len(rows))  # type: ignore[attr-defined]
        return rows, last

    fast.backend.plan_rows = counted
    yield fast, slow
    fast.close()
    slow.close()


def _path(store: EventStore) -> str:
    return store.url.removeprefix("sqlite:///")


def varied(i: int, rnd: random.Random) -> NewEvent:
    """An event exercising one combination of every column's kinds of values."""
    etype = [CHECKED, "custom.thing", "custom.metric.sample", "ops.note"][i % 4]
    data: dict[str, Any] = {
        "i": i,
        "text": TEXTS[i % len(TEXTS)],
        "big": 2**53 + i,
        "huge": 2**64 + i,
        "neg": -(2**70) - i,
        "f": FLOATS[i % len(FLOATS)],
        "ratio": i / 7,
        "nested": {"a": [1, {"b": [None, True, False, "x", 2.0]}], "z": {"y": {"x": [i, [i, [i]]]}}},
        "none": None,
        "empty": {},
        "empty_list": [],
        "ключ": "значение",
        "B": 1,
        "a": 2,
    }
    metadata: dict[str, Any] = [{}, {"source": "t", "n": 1.5}, {"é": [1, 2.0, "ü"]}, {}][i % 4]
    context: dict[str, Any] = {}
    if i % 3:
        context = {
            "user_id": f"user-{i % 4}",
            "session_id": None if i % 2 else "sess",
            "request_id": f"req-{i}",
            "source_ip": "10.0.0.1",
            "user_agent": 'Mozilla/5.0 (ünï) "q"' if i % 2 else None,
            "compliance_level": "SOC2_TYPE2",
            "cost_center": "ml-research",
            "project_id": None,
        }
    security: dict[str, Any] = {
        "authentication_method": None if i % 2 else "jwt",
        "roles": [[], ["admin"], ["b", "a", "a"], ["ml"]][i % 4],
        "access_level": "write" if i % 5 == 0 else None,
        "data_classification": "confidential" if i % 3 == 0 else None,
        "geographic_restriction": "EU" if i % 7 == 0 else None,
    }
    fields: dict[str, Any] = {
        "event_id": uuid.UUID(int=rnd.getrandbits(128), version=4),
        "event_type": etype,
        "stream_id": [f"s-{i % 5}", "a/b:c@d.e-f", f"job-{i % 3}"][i % 3],
        "occurred_at": TIMES[i % len(TIMES)].replace(tzinfo=TIMEZONES[i % len(TIMEZONES)])
        + timedelta(seconds=i * 37, microseconds=i % 3),
        "correlation_id": [None, "corr-ü", "corr-2"][i % 3],
        "causation_id": [None, None, "cause-1", "cause-\u00e9"][i % 4],
        "tags": [[], ["t1"], ["team:vision", "x/y=z", "t1"]][i % 3],
        "priority": list(Priority)[i % 4],
        "data": data,
        "metadata": metadata,
        "retention_days": [None, 30, 36500][i % 3],
    }
    if i % 2:
        # As the API builds events: validated (occurred_at converted to UTC, priority an enum).
        return NewEvent.model_validate({**fields, "context": context, "security": security})
    # As trusted callers (the benchmark) build them: no validation, so occurred_at keeps its
    # time zone and priority may be a plain string.
    return NewEvent.model_construct(
        **{**fields, "priority": str(fields["priority"])},
        context=AuditContext.model_validate(context),
        security=SecurityContext.model_validate(security),
    )


def batch(n: int, seed: int) -> list[NewEvent]:
    rnd = random.Random(seed)
    return [varied(i, rnd) for i in range(n)]


def stored(store: EventStore) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], tuple[Any, ...]]:
    """Every event column's SQLite type and bytes, the streams and the head, read directly."""
    con = sqlite3.connect(_path(store))
    try:
        cols = ", ".join(f"typeof({c}), hex({c})" for c in EVENT_COLUMNS)
        events = con.execute(f"SELECT {cols} FROM loomdb_events ORDER BY position").fetchall()
        streams = con.execute("SELECT * FROM loomdb_streams ORDER BY stream_id").fetchall()
        head = con.execute("SELECT * FROM loomdb_head").fetchone()
    finally:
        con.close()
    return events, streams, head


def assert_same_storage(fast: EventStore, slow: EventStore) -> None:
    f_events, f_streams, f_head = stored(fast)
    s_events, s_streams, s_head = stored(slow)
    assert len(f_events) == len(s_events) > 0
    for n, (f, s) in enumerate(zip(f_events, s_events, strict=True)):
        for k, column in enumerate(EVENT_COLUMNS):
            got, want = f[2 * k : 2 * k + 2], s[2 * k : 2 * k + 2]
            assert got == want, f"row {n + 1}, {column}: {got} != {want}"
    assert f_streams == s_streams
    assert f_head == s_head


def both(pair: tuple[EventStore, EventStore], events: list[NewEvent], **kw: Any) -> list[int]:
    fast, slow = pair
    got = fast.append_many(events, **kw)
    assert slow.append_many(events, **kw) == got
    return got


@pytest.mark.parametrize("n", [1, 40, 1234])
def test_the_fast_path_stores_exactly_what_the_row_path_stores(pair, n):
    fast, slow = pair
    events = batch(2 * n, seed=n)
    # Two appends: the second continues streams (versions > 1) and the chain (prev_hash).
    assert both(pair, events[:n]) == list(range(1, n + 1))
    assert both(pair, events[n:]) == list(range(n + 1, 2 * n + 1))
    assert fast.encoded == [n, n]
    assert slow.backend.plan_rows.row_dicts == 2 * n
    assert_same_storage(fast, slow)
    for store in pair:
        assert store.verify().ok
    # What reads give back is what was appended.
    got = {e.event_id: e for e in fast.read(0, limit=10_000)}
    for e in events:
        s = got[e.event_id]
        # Numbers come back as their canonical JSON denotes (an integral float as an int).
        assert s.data == json.loads(json_text(e.data)) and s.metadata == json.loads(json_text(e.metadata))
        assert s.occurred_at == e.occurred_at and s.occurred_at.tzinfo == UTC
        assert (s.context, s.security, s.tags) == (e.context, e.security, e.tags)
        assert (str(s.priority), s.retention_days) == (str(e.priority), e.retention_days)
        assert s.schema_version == ("1.2.0" if e.event_type == CHECKED else None)


def test_stored_hashes_are_event_hash_of_the_rows(pair):
    fast, _ = pair
    fast.append_many(batch(1100, seed=3))
    with fast.backend.read() as cur:
        cur.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM loomdb_events ORDER BY position")
        rows = [fast.backend.py_row(r) for r in cur.fetchall()]
    prev = "0" * 64
    for r in rows:
        assert r["prev_hash"] == prev and event_hash(r) == r["hash"], r["position"]
        prev = r["hash"]
    assert fast.head() == (1100, prev)


@pytest.mark.parametrize("n", [30, 1200])
def test_retries_return_the_original_positions(pair, n):
    fast, slow = pair
    events = batch(n, seed=5)
    positions = both(pair, events)
    head = fast.head()
    assert both(pair, events) == positions  # the whole batch again: nothing written
    assert fast.head() == head
    fresh = batch(n + 50, seed=6)[n:] if n < 100 else batch(2 * n, seed=6)[n:]
    mixed = [x for pair_ in zip(events[: len(fresh)], fresh, strict=False) for x in pair_]
    got = both(pair, mixed)
    assert got[0::2] == positions[: len(got[0::2])]
    assert got[1::2] == list(range(n + 1, n + 1 + len(got[1::2])))
    assert_same_storage(fast, slow)
    assert fast.verify().ok


def test_duplicate_ids_inside_one_batch(pair):
    fast, slow = pair
    events = batch(1100, seed=8)
    repeated = [x for i, e in enumerate(events) for x in ([e, events[i // 2]] if i % 3 == 0 else [e])]
    got = both(pair, repeated)
    by_id = {}
    for e, p in zip(repeated, got, strict=True):
        assert by_id.setdefault(e.event_id, p) == p
    assert sorted(by_id.values()) == list(range(1, len(events) + 1))
    assert fast.head()[0] == len(events)
    assert_same_storage(fast, slow)
    assert fast.verify().ok


@pytest.mark.parametrize("n", [20, 1500])
def test_expected_version_conflicts(pair, n):
    fast, slow = pair
    one_stream = [e.model_copy(update={"stream_id": "only"}) for e in batch(3 * n, seed=9)]
    first, second, third = one_stream[:n], one_stream[n : 2 * n], one_stream[2 * n :]
    assert both(pair, first, expected_version=0) == list(range(1, n + 1))
    for store in pair:
        with pytest.raises(ConcurrencyError):
            store.append_many(second, expected_version=0)
        with pytest.raises(ConcurrencyError):
            store.append_many(second, expected_version=n - 1)
        assert store.head()[0] == n and store.stream_version("only") == n
    # A retry of the stored batch returns its positions, whatever the stream's version now.
    assert both(pair, first, expected_version=0) == list(range(1, n + 1))
    assert both(pair, second, expected_version=n) == list(range(n + 1, 2 * n + 1))
    assert both(pair, third) == list(range(2 * n + 1, 3 * n + 1))
    assert fast.stream_version("only") == 3 * n
    assert_same_storage(fast, slow)
    assert fast.verify().ok


def _count(store: EventStore) -> tuple[int, int, int]:
    con = sqlite3.connect(_path(store))
    try:
        events = con.execute("SELECT count(*) FROM loomdb_events").fetchone()[0]
        streams = con.execute("SELECT count(*) FROM loomdb_streams").fetchone()[0]
        head = con.execute("SELECT position FROM loomdb_head").fetchone()[0]
    finally:
        con.close()
    return events, streams, head


@pytest.mark.parametrize("n", [25, 1500])
def test_an_invalid_event_refuses_the_whole_batch(pair, n):
    fast, _ = pair
    events = batch(n, seed=10)
    bad = n * 4 // 5
    events[bad] = NewEvent(event_type=CHECKED, stream_id="s-1", data={"no_i": 1})
    with pytest.raises(InvalidEvent, match=rf"events\[{bad}\]"):
        fast.append_many(events)
    assert _count(fast) == (0, 0, 0)
    assert fast.encoded == []


def test_an_error_while_encoding_writes_nothing(pair):
    """A value that cannot be encoded (a lone surrogate is not UTF-8) deep in a batch."""
    fast, _ = pair
    fast.append_many(batch(10, seed=11))
    before = _count(fast)
    events = batch(1700, seed=12)
    events[1600] = events[1600].model_copy(update={"data": {"i": 1, "bad": "\ud800"}})
    with pytest.raises(UnicodeEncodeError):
        fast.append_many(events)
    assert fast.encoded == [10]
    assert _count(fast) == before
    # The store (and its connection) carry on.
    assert fast.append_many(events[:1500]) == list(range(11, 1511))
    assert fast.verify().ok


def test_an_error_while_inserting_writes_nothing(pair):
    """The INSERT failing part way (a stream version already taken, by a row written behind
    LoomDB's back) fails the append with the database's error, nothing written; the next
    append goes ahead."""
    fast, _ = pair
    con = sqlite3.connect(_path(fast))
    row = dict.fromkeys(EVENT_COLUMNS, "x")
    row.update(
        position=10**6, event_id=str(uuid.uuid4()), stream_id="clash", stream_version=900, retention_days=None
    )
    marks = ", ".join("?" * len(EVENT_COLUMNS))
    con.execute(
        f"INSERT INTO loomdb_events ({', '.join(EVENT_COLUMNS)}) VALUES ({marks})",
        [row[c] for c in EVENT_COLUMNS],
    )
    con.commit()
    con.close()
    events = [e.model_copy(update={"stream_id": "clash"}) for e in batch(1500, seed=13)]
    with pytest.raises(sqlite3.IntegrityError, match="stream_id"):
        fast.append_many(events)  # the 900th event
    assert fast.encoded == [1500]
    assert _count(fast) == (1, 0, 0)
    assert fast.append_many(events[:899]) == list(range(1, 900))
    assert _count(fast) == (900, 1, 899)
