"""Appends on both backends: positions, idempotency, expected versions, schemas, immutability."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from loomos.loomdb import ConcurrencyError, InvalidEvent, LoomDBError, NewEvent, SchemaError, open_event_store
from loomos.loomdb.pg_copy import COPY_THRESHOLD


def ev(stream: str = "s-1", etype: str = "custom.thing", **data) -> NewEvent:
    return NewEvent(event_type=etype, stream_id=stream, data=data)


def test_positions_and_stream_versions(store):
    assert store.append(ev("a", n=1)) == 1
    assert store.append_many([ev("b", n=2), ev("a", n=3)]) == [2, 3]
    got = store.read(0)
    assert [e.position for e in got] == [1, 2, 3]
    assert [(e.stream_id, e.stream_version) for e in got] == [("a", 1), ("b", 1), ("a", 2)]
    assert store.stream_version("a") == 2 and store.stream_version("nope") == 0
    assert [e.data["n"] for e in store.read_stream("a")] == [1, 3]


def test_every_field_round_trips(store):
    e = NewEvent(
        event_type="model.training.started",
        stream_id="job-42",
        occurred_at=datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC),
        correlation_id="corr-1",
        causation_id="cause-1",
        context={
            "user_id": "alice",
            "session_id": "s",
            "request_id": "r",
            "source_ip": "10.0.0.1",
            "user_agent": "curl/8",
            "compliance_level": "SOC2_TYPE2",
            "cost_center": "ml-research",
            "project_id": "p1",
        },
        security={
            "authentication_method": "jwt",
            "roles": ["admin", "ml"],
            "access_level": "write",
            "data_classification": "confidential",
            "geographic_restriction": "EU",
        },
        tags=["healthcare", "team:vision"],
        priority="high",
        retention_days=3650,
        data={
            "model_id": "m",
            "dataset_id": str(uuid.uuid4()),
            "hardware_config": {"gpu_count": 8, "node_count": 2, "memory_gb": 640},
            "flops": 3.2e18,
            "lr": 1e-4,
            "ratio": 1.0,
            "big": 2**60,
            "text": 'héllo "q"',
            "none": None,
        },
        metadata={"k": [1, 2.5, True]},
    )
    pos = store.append(e)
    got = store.get(e.event_id)
    assert got is not None and got.position == pos
    for field in (
        "event_type",
        "stream_id",
        "occurred_at",
        "correlation_id",
        "causation_id",
        "context",
        "security",
        "tags",
        "priority",
        "retention_days",
        "metadata",
    ):
        assert getattr(got, field) == getattr(e, field), field
    assert got.data["hardware_config"] == e.data["hardware_config"]
    assert got.data["text"] == e.data["text"]
    assert got.schema_version == "1.0.0"
    assert store.verify().ok


def test_retried_append_returns_original_position(store):
    e = ev(n=1)
    first = store.append(e)
    store.append(ev(n=2))
    assert store.append(e) == first
    assert store.append_many([ev(n=3), e]) == [3, first]
    assert len(store.read(0)) == 3


def test_duplicate_ids_inside_one_batch_are_written_once(store):
    e = ev(n=1)
    assert store.append_many([e, e, ev(n=2)]) == [1, 1, 2]
    assert store.head()[0] == 2


def test_expected_version(store):
    assert store.append(ev("orders"), expected_version=0) == 1
    store.append(ev("orders"), expected_version=1)
    with pytest.raises(ConcurrencyError) as err:
        store.append(ev("orders"), expected_version=1)
    assert err.value.stream_id == "orders" and err.value.expected == 1 and err.value.actual == 2
    assert "stream 'orders': expected version 1, but it is at version 2" in str(err.value)
    with pytest.raises(ConcurrencyError, match="expected version 0"):
        store.append(ev("orders"), expected_version=0)
    assert store.stream_version("orders") == 2  # nothing written by the refused appends


def test_retry_of_a_versioned_append_is_idempotent(store):
    e = ev("acct")
    assert store.append(e, expected_version=0) == 1
    # The first call succeeded but its answer was lost; the retry must not conflict.
    assert store.append(e, expected_version=0) == 1


def test_expected_version_bad_input(store):
    with pytest.raises(LoomDBError, match="one stream"):
        store.append_many([ev("a"), ev("b")], expected_version=0)
    with pytest.raises(LoomDBError, match="expected_version"):
        store.append(ev("a"), expected_version=-1)
    assert store.head()[0] == 0


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"event_type": "Not A Type", "stream_id": "s"}, "event_type"),
        ({"event_type": "x.y", "stream_id": "bad stream id!"}, "stream_id"),
        ({"event_type": "x.y", "stream_id": "s", "occurred_at": "2026-01-01T00:00:00"}, "timezone"),
        ({"event_type": "x.y", "stream_id": "s", "data": {"v": float("nan")}}, "NaN"),
        ({"event_type": "x.y", "stream_id": "s", "data": {"v": "a\x00b"}}, "NUL"),
        ({"event_type": "x.y", "stream_id": "s", "tags": ["has space"]}, "tag"),
        ({"event_type": "x.y", "stream_id": "s", "unknown": 1}, "unknown"),
        ({"event_type": "x.y", "stream_id": "s", "retention_days": 0}, "retention_days"),
    ],
)
def test_malformed_events_are_refused(store, bad, needle):
    with pytest.raises(InvalidEvent) as err:
        store.append(bad)
    assert needle.lower() in str(err.value).lower()
    assert store.head()[0] == 0


def test_schema_violations_are_all_listed(store):
    with pytest.raises(InvalidEvent) as err:
        store.append(
            ev(etype="model.training.started", dataset_id="not-a-uuid", hardware_config={"gpu_count": 4})
        )
    v = err.value.violations
    assert any("data.dataset_id" in x for x in v)
    assert any("model_id" in x and "required" in x for x in v)
    assert any("node_count" in x for x in v) and any("memory_gb" in x for x in v)
    assert err.value.schema_version == "1.0.0"
    assert store.head()[0] == 0


def test_one_invalid_event_refuses_the_whole_batch(store):
    with pytest.raises(InvalidEvent, match=r"events\[1\]"):
        store.append_many([ev(n=1), ev(etype="job.queued", attempt=0), ev(n=3)])
    assert store.head()[0] == 0


def test_register_schema_in_field_list_form(store):
    store.register_schema(
        "data.labelled",
        "1.0.0",
        required_fields=["dataset_id", "labels"],
        optional_fields=["quality"],
        validation_rules={
            "dataset_id": "uuid",
            "labels": "positive_integer",
            "quality": {"min": 0, "max": 1},
        },
    )
    ok = ev(etype="data.labelled", dataset_id=str(uuid.uuid4()), labels=3, quality=0.9)
    store.append(ok)
    assert store.get(ok.event_id).schema_version == "1.0.0"
    with pytest.raises(InvalidEvent) as err:
        store.append(ev(etype="data.labelled", dataset_id="x", labels=0, quality=2))
    assert len(err.value.violations) == 3
    # A new version applies from now on and is recorded on the event.
    store.register_schema("data.labelled", "1.1.0", {"type": "object", "required": ["labels"]})
    newer = ev(etype="data.labelled", labels=1)
    store.append(newer)
    assert store.get(newer.event_id).schema_version == "1.1.0"


def test_registered_schemas_survive_reopening(store_url, store):
    store.register_schema("custom.audit", "2.0.0", {"type": "object", "required": ["who"]})
    from loomos.loomdb import open_event_store

    again = open_event_store(store_url)
    try:
        with pytest.raises(InvalidEvent, match="who"):
            again.append(ev(etype="custom.audit"))
    finally:
        again.close()


@pytest.mark.parametrize(
    "args, kwargs, needle",
    [
        (("Bad Type", "1.0.0", {"type": "object"}), {}, "dotted"),
        (("custom.x", "1.0", {"type": "object"}), {}, "semantic version"),
        (("custom.x", "1.0.0", {"type": "nonsense"}), {}, "not a valid JSON Schema"),
        (("custom.x", "1.0.0"), {"required_fields": ["a"], "validation_rules": {"b": "uuid"}}, "neither"),
        (("custom.x", "1.0.0"), {"required_fields": ["a"], "validation_rules": {"a": "colour"}}, "unknown"),
        (("custom.x", "1.0.0"), {}, "required_fields"),
    ],
)
def test_bad_schemas_are_refused(store, args, kwargs, needle):
    with pytest.raises(SchemaError, match=needle):
        store.register_schema(*args, **kwargs)


def test_schema_versions_are_immutable(store):
    store.register_schema("custom.x", "1.0.0", {"type": "object"})
    store.register_schema("custom.x", "1.0.0", {"type": "object"})  # same: a no-op
    with pytest.raises(SchemaError, match="different schema"):
        store.register_schema("custom.x", "1.0.0", {"type": "object", "required": ["a"]})
    store.register_schema("custom.x", "1.2.0", {"type": "object"})
    with pytest.raises(SchemaError, match="older"):
        store.register_schema("custom.x", "1.1.0", {"type": "object"})


def test_database_refuses_update_and_delete(store, backend):
    store.append(ev(n=1))
    with store.backend.raw_cursor() as (conn, cur):
        for sql in ("UPDATE loomdb_events SET event_type = 'x.y'", "DELETE FROM loomdb_events"):
            with pytest.raises(Exception, match="immutable"):
                cur.execute(sql)
            if backend == "postgres":
                conn.rollback()
        if backend == "postgres":
            with pytest.raises(Exception, match="immutable"):
                cur.execute("TRUNCATE loomdb_events")
            conn.rollback()
    assert [e.data for e in store.read(0)] == [{"n": 1}]
    assert not hasattr(store, "update") and not hasattr(store, "delete")


def test_bad_urls(tmp_path):
    from loomos.loomdb import open_event_store

    with pytest.raises(LoomDBError, match="unsupported"):
        open_event_store("mysql://x/y")
    with pytest.raises(LoomDBError, match=":memory:"):
        open_event_store("sqlite:///:memory:")


def _varied(i: int) -> NewEvent:
    return NewEvent(
        event_type="custom.bulk" if i % 3 else "model.training.checkpoint",
        stream_id=f"bulk-{i % 7}",
        occurred_at=datetime(2026, 2, 1, tzinfo=UTC).replace(microsecond=i),
        correlation_id=f"c{i}" if i % 2 else None,
        context={"user_id": f"u{i % 5}", "source_ip": "10.0.0.9" if i % 4 == 0 else None},
        security={"roles": ["ml", f"r{i % 3}"], "data_classification": "pii" if i % 6 == 0 else None},
        tags=[f"t{i % 4}"],
        priority="critical" if i % 11 == 0 else "normal",
        retention_days=365 if i % 13 == 0 else None,
        data={
            "step": i,
            "uri": f"s3://b/{i}",
            "text": f'ünïcode "quoted" \\ {i}',
            "nested": {"f": i / 7, "big": 2**60 + i, "whole": 3.0, "none": None, "list": [1, "a", False]},
        },
        metadata={"i": i},
    )


def test_large_batches_round_trip(store, backend):
    """Batches past COPY_THRESHOLD go through binary COPY on Postgres: every field survives, the
    chain verifies, and a retried batch (whole, or mixed with new events) writes only new ids."""

    copies: list[int] = []
    if backend == "postgres":
        original = store.backend.stream_plan

        def counted(cur, plan, *args):
            planned = list(plan)  # the rows the COPY writes
            copies.append(len(planned))
            return original(cur, planned, *args)

        store.backend.stream_plan = counted
    events = [_varied(i) for i in range(COPY_THRESHOLD * 2 + 17)]
    positions = store.append_many(events)
    assert positions == list(range(1, len(events) + 1))
    assert store.append_many(events) == positions  # the whole batch retried
    fresh = [_varied(i) for i in range(1000, 1000 + COPY_THRESHOLD + 5)]
    mixed = [x for pair in zip(events[: len(fresh)], fresh, strict=True) for x in pair]
    got = store.append_many(mixed)
    assert got[0::2] == positions[: len(fresh)]
    assert got[1::2] == list(range(len(events) + 1, len(events) + len(fresh) + 1))
    if backend == "postgres":
        assert copies == [len(events), len(fresh)]  # the whole retry wrote nothing
    stored = {e.event_id: e for e in store.read(0, limit=10_000)}
    assert len(stored) == len(events) + len(fresh)
    for e in events + fresh:
        s = stored[e.event_id]
        assert s.model_dump(include=set(NewEvent.model_fields)) == e.model_dump(), e.event_id
    assert store.verify().ok


def test_numbers_keep_their_value_and_their_hash(store):
    """jsonb keeps numbers as exact decimals and may give an integral float back as an int
    (1e16 as 10000000000000000): values must come back equal and the chain must still verify;
    large ints must stay exact (2**60 + 1 is not 2**60)."""
    numbers = {
        "big": 2**60 + 1,
        "huge": 10**30 + 7,
        "neg": -(2**63) - 1,
        "e16": 1e16,
        "e300": 1e300,
        "whole": 3.0,
        "zero": -0.0,
        "small": 1.5e-7,
        "third": 1 / 3,
        "list": [2.0, 2**53 + 1, 1e20],
    }
    e = NewEvent(event_type="custom.numbers", stream_id="n", data=numbers)
    store.append(e)
    got = store.get(e.event_id).data
    # JSON numbers are decimals: an integral float comes back as the integer its JSON text
    # denotes, which for 1e300 is 10**300, not the binary float's exact value.
    assert got["e300"] == 10**300 and float(got["e300"]) == 1e300
    assert {k: v for k, v in got.items() if k != "e300"} == {k: v for k, v in numbers.items() if k != "e300"}
    assert got["big"] == 2**60 + 1 and isinstance(got["big"], int)
    assert got["huge"] == 10**30 + 7 and got["list"][1] == 2**53 + 1
    assert store.verify().ok
    from loomos.loomdb.canonical import json_text

    assert json_text({"v": 2**60}) != json_text({"v": 2**60 + 1})
    assert json_text({"v": 1e16}) == json_text({"v": 10**16})


def test_small_batches_round_trip(store):
    """Appends below COPY_THRESHOLD (on Postgres: one jsonb parameter taken apart by the
    server) keep every field exactly, and the chain verifies."""
    events = [_varied(i) for i in range(40)]
    events[0] = events[0].model_copy(update={"occurred_at": datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC)})
    positions = store.append_many(events[:25]) + [store.append(e) for e in events[25:]]
    assert positions == list(range(1, 41))
    stored = {e.event_id: e for e in store.read(0)}
    for e in events:
        assert stored[e.event_id].model_dump(include=set(NewEvent.model_fields)) == e.model_dump()
    assert store.verify().ok


def test_gc_pause_is_contained(store):
    """A large append postpones cyclic GC only while it runs (nested pauses too), and leaves it
    off if it was off before."""
    import gc

    from loomos.loomdb.gcpause import GC_PAUSE_MIN, gc_paused

    seen = []
    original = store.group_commit.append

    def spy(*args):
        seen.append(gc.isenabled())
        return original(*args)

    store.group_commit.append = spy
    assert gc.isenabled()
    store.append_many([_varied(i) for i in range(GC_PAUSE_MIN)])
    store.append_many([_varied(i) for i in range(1000, 1005)])
    assert seen == [False, True] and gc.isenabled()
    with gc_paused():
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def _ckpt(i: int, **extra) -> NewEvent:
    return ev(f"job-{i % 7}", "model.training.checkpoint", job_id=f"j{i}", step=i, uri=f"s3://c/{i}", **extra)


def test_large_batches_list_every_violation_and_write_nothing(store):
    """A batch large enough for COPY with invalid events is refused whole with every violation
    listed, and nothing is written; a retry of stored events with invalid data is refused too
    (every event is validated, even one that is already stored)."""
    n = COPY_THRESHOLD + 50
    bad = [_ckpt(i) for i in range(n)]
    bad[7] = ev("job-1", "job.queued", job_id="j", attempt=0)
    bad[n - 1] = ev("job-1", "job.queued", attempt=2)
    with pytest.raises(InvalidEvent) as err:
        store.append_many(bad)
    assert any(x.startswith("events[7] (job.queued)") for x in err.value.violations)
    assert any(x.startswith(f"events[{n - 1}] (job.queued)") and "job_id" in x for x in err.value.violations)
    assert store.head()[0] == 0 and store.read(0) == []
    good = [_ckpt(i) for i in range(n)]
    positions = store.append_many(good)
    assert positions == list(range(1, n + 1))
    assert {e.schema_version for e in store.read(0, limit=n)} == {"1.0.0"}
    tampered = [e.model_copy(update={"data": {"step": 1}}) for e in good]  # no job_id, uri: invalid
    with pytest.raises(InvalidEvent):
        store.append_many(tampered)
    assert store.append_many(good) == positions
    assert store.head()[0] == n and store.verify().ok


def test_a_group_with_an_invalid_large_request_commits_the_others(store):
    """One group commit carrying valid and invalid large requests, validated by the group's
    leader (on Postgres while the server looks the ids up): the invalid one gets its
    InvalidEvent with every violation, the others are written, positions stay gap-free."""
    from loomos.loomdb.group_commit import AppendRequest

    n = COPY_THRESHOLD + 10
    first = store.append(ev("pre", n=0))
    ok = AppendRequest([_ckpt(i) for i in range(n)], None, None)
    bad_items = [_ckpt(1000 + i) for i in range(n)]
    bad_items[3] = ev("job-1", "job.queued", job_id="j", attempt=0)
    bad_items[n - 2] = ev("job-1", "job.queued", attempt=1)
    bad = AppendRequest(bad_items, None, None)
    fresh = [_ckpt(2000 + i).model_copy(update={"stream_id": "fresh"}) for i in range(n)]
    ok2 = AppendRequest(fresh, None, 0)
    store.group_commit.commit([bad, ok, ok2])
    with pytest.raises(InvalidEvent) as err:
        bad.outcome()
    assert [v.split(" ")[0] for v in err.value.violations] == ["events[3]", f"events[{n - 2}]"]
    assert ok.outcome() == list(range(first + 1, first + n + 1))
    assert ok2.outcome() == list(range(first + n + 1, first + 2 * n + 1))
    stored = store.read(0, limit=10_000)
    assert [e.position for e in stored] == list(range(1, first + 2 * n + 1))
    assert not {e.event_id for e in bad_items} & {e.event_id for e in stored}
    assert {e.schema_version for e in stored if e.stream_id != "pre"} == {"1.0.0"}
    assert store.stream_version("fresh") == n and store.verify().ok


def test_a_group_of_only_invalid_requests_writes_nothing(store):
    from loomos.loomdb.group_commit import AppendRequest

    bad_items = [_ckpt(i) for i in range(COPY_THRESHOLD)]
    bad_items[0] = ev("job-1", "job.queued", job_id="j", attempt=0)
    bad = AppendRequest(bad_items, None, None)
    store.group_commit.commit([bad])
    with pytest.raises(InvalidEvent):
        bad.outcome()
    assert store.head()[0] == 0 and store.verify().ok
    assert store.append(ev("after")) == 1


def test_large_appends_keep_idempotency_and_versions(store):
    """Large appends: a retried versioned batch still returns its original positions (no
    conflict), a group mixing a stored and a new request writes only the new one, and the chain
    and positions stay gap-free."""
    from loomos.loomdb.group_commit import AppendRequest

    n = COPY_THRESHOLD + 5
    batch = [_ckpt(i).model_copy(update={"stream_id": "one"}) for i in range(n)]
    positions = store.append_many(batch, expected_version=0)
    assert positions == list(range(1, n + 1))
    assert store.append_many(batch, expected_version=0) == positions  # a retry, not a conflict
    with pytest.raises(ConcurrencyError):
        store.append_many([_ckpt(5000 + i).model_copy(update={"stream_id": "one"}) for i in range(n)], 0)
    old = AppendRequest(list(batch), store.validate(batch), None)
    fresh = [_ckpt(9000 + i) for i in range(n)]
    new = AppendRequest(fresh, store.validate(fresh), None)
    store.group_commit.commit([old, new])
    assert old.outcome() == positions
    assert new.outcome() == list(range(n + 1, 2 * n + 1))
    stored = store.read(0, limit=10_000)
    assert [e.position for e in stored] == list(range(1, 2 * n + 1))
    assert len({e.event_id for e in stored}) == 2 * n
    assert store.stream_version("one") == n and store.verify().ok


@pytest.mark.postgres
def test_a_large_append_sees_what_another_writer_stored(pg_schema_url):
    """Another store (another process) stored the same large batch first: the append returns
    the original positions and writes nothing twice."""
    first, second = open_event_store(pg_schema_url), open_event_store(pg_schema_url)
    try:
        batch = [_varied(i) for i in range(COPY_THRESHOLD + 40)]
        positions = first.append_many(batch)
        assert second.append_many(batch) == positions
        fresh = [_varied(5000 + i) for i in range(COPY_THRESHOLD + 3)]
        assert second.append_many(fresh) == list(range(len(batch) + 1, len(batch) + len(fresh) + 1))
        assert first.head()[0] == len(batch) + len(fresh) and first.verify().ok
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
def test_racing_writers_store_each_id_once(pg_schema_url):
    """Two stores append overlapping large batches at the same time, in opposite orders: every
    id is stored once, everyone gets the same position for it, and the chain verifies."""
    import threading

    stores = [open_event_store(pg_schema_url) for _ in range(2)]
    try:
        batches = [[_varied(b * 1000 + i) for i in range(COPY_THRESHOLD + 20)] for b in range(4)]
        got: list[dict] = [{}, {}]

        def writer(k: int) -> None:
            for batch in batches if k == 0 else batches[::-1]:
                got[k].update(zip([e.event_id for e in batch], stores[k].append_many(batch), strict=True))

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        total = sum(len(b) for b in batches)
        assert got[0] == got[1] and len(got[0]) == total
        stored = stores[0].read(0, limit=10_000)
        assert [e.position for e in stored] == list(range(1, total + 1))
        assert {e.event_id: e.position for e in stored} == got[0]
        assert stores[0].verify().ok
    finally:
        for st in stores:
            st.close()


@pytest.mark.postgres
def test_large_appends_validate_while_the_server_looks_ids_up(pg_schema_url, monkeypatch):
    """The id lookup of a large append is sent, the batch validated, and only then is the
    lookup's result read. An error while validating still leaves the connection usable."""
    import loomos.loomdb.pg_lookup as bp

    st = open_event_store(pg_schema_url)
    try:
        order: list[str] = []
        fetch, validate = bp.fetch_lookup, st.group_commit.validate
        monkeypatch.setattr(bp, "fetch_lookup", lambda conn: order.append("fetched") or fetch(conn))
        monkeypatch.setattr(
            st.group_commit, "validate", lambda items: order.append("validated") or validate(items)
        )
        batch = [_ckpt(i) for i in range(COPY_THRESHOLD)]
        assert st.append_many(batch) == list(range(1, len(batch) + 1))
        assert order == ["validated", "fetched"]

        def broken(items):
            raise RuntimeError("validator crashed")

        monkeypatch.setattr(st.group_commit, "validate", broken)
        with pytest.raises(RuntimeError, match="validator crashed"):
            st.append_many([_ckpt(1000 + i) for i in range(COPY_THRESHOLD)])
        monkeypatch.setattr(st.group_commit, "validate", validate)
        assert st.append_many(batch) == list(range(1, len(batch) + 1))  # a retry: same positions
        more = [_ckpt(2000 + i) for i in range(COPY_THRESHOLD)]
        assert st.append_many(more)[0] == len(batch) + 1
        assert st.head()[0] == 2 * len(batch) and st.verify().ok
    finally:
        st.close()


def test_sqlite_appends_let_the_unique_index_find_stored_ids(store, backend):
    """SQLite's event_id is UNIQUE: appends skip the id lookup, and a stored id (a retry) fails
    the insert, which rolls back and is redone with the lookup: same positions, nothing twice.
    Versioned appends still look up first (a retry of a stored batch is not a conflict)."""
    if backend != "sqlite":
        pytest.skip("Postgres looks ids up: its partitioned table cannot make event_id unique")
    lookups: list[int] = []
    original = store.backend.existing_ids
    store.backend.existing_ids = lambda cur, ids: lookups.append(len(ids)) or original(cur, ids)
    batch = [_varied(i) for i in range(300)]
    assert store.append_many(batch) == list(range(1, 301))
    assert lookups == []
    mixed = [_varied(1000 + i) for i in range(10)] + batch[:5]
    got = store.append_many(mixed)
    assert got == list(range(301, 311)) + [1, 2, 3, 4, 5] and lookups == [15]
    assert store.append(batch[7]) == 8 and lookups == [15, 1]
    one = [ev("versioned", n=i) for i in range(3)]
    assert store.append_many(one, expected_version=0) == [311, 312, 313]
    assert store.append_many(one, expected_version=0) == [311, 312, 313]
    assert lookups[-2:] == [3, 3]
    assert store.head()[0] == 313 and store.verify().ok
    stored = store.read(0, limit=1000)
    assert len({e.event_id for e in stored}) == len(stored) == 313


@pytest.mark.postgres
def test_the_lookup_statement_survives_deallocate_all(pg_schema_url):
    """psycopg runs DEALLOCATE ALL on a connection after some rollbacks; the large-append id
    lookup is a prepared statement of the session, so it must be prepared again, not assumed."""
    st = open_event_store(pg_schema_url)
    try:
        assert st.append_many([_ckpt(i) for i in range(COPY_THRESHOLD)])[0] == 1
        assert st.backend.append_connections
        for conn in st.backend.append_connections:
            conn.execute("DEALLOCATE ALL")
        got = st.append_many([_ckpt(1000 + i) for i in range(COPY_THRESHOLD)])
        assert got[0] == COPY_THRESHOLD + 1 and st.verify().ok
    finally:
        st.close()
