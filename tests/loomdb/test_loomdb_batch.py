"""EventBatch: flush on size and on time, duplicate detection, bad events refused alone."""

from __future__ import annotations

import asyncio

import pytest

from loomos.loomdb import InvalidEvent, NewEvent
from loomos.loomdb.batch import EventBatch


def ev(i: int) -> NewEvent:
    return NewEvent(event_type="custom.metric", stream_id="run-1", data={"i": i})


async def test_flushes_on_size(store):
    batch = EventBatch(store, max_batch_size=10, max_batch_wait_ms=60_000)
    futures = [await batch.add(ev(i)) for i in range(25)]
    assert batch.flushes == 2 and store.head()[0] == 20  # 5 still waiting for size or time
    await batch.close()
    assert [f.result() for f in futures] == list(range(1, 26))
    assert batch.flushes == 3


async def test_flushes_on_time(store):
    batch = EventBatch(store, max_batch_size=1000, max_batch_wait_ms=30)
    fut = await batch.add(ev(1))
    assert store.head()[0] == 0
    assert await asyncio.wait_for(fut, 5) == 1
    assert store.head()[0] == 1
    await batch.close()


async def test_duplicates_are_detected(store):
    async with EventBatch(store, max_batch_size=100, max_batch_wait_ms=10_000) as batch:
        e = ev(1)
        f1 = await batch.add(e)
        f2 = await batch.add(e)  # still pending
        await batch.flush()
        f3 = await batch.add(e)  # already written
        assert (f1.result(), f2.result(), f3.result()) == (1, 1, 1)
        assert batch.duplicates == 2
    assert store.head()[0] == 1


async def test_a_bad_event_is_refused_alone(store):
    async with EventBatch(store, max_batch_size=100, max_batch_wait_ms=10_000) as batch:
        good = await batch.add(ev(1))
        with pytest.raises(InvalidEvent, match="step"):
            await batch.add(
                NewEvent(event_type="model.training.checkpoint", stream_id="r", data={"uri": "x"})
            )
        with pytest.raises(InvalidEvent):
            await batch.add({"event_type": "BAD", "stream_id": "r"})
    assert good.result() == 1 and store.head()[0] == 1


def test_bad_settings(store):
    with pytest.raises(ValueError, match="max_batch_size"):
        EventBatch(store, max_batch_size=0)
    with pytest.raises(ValueError, match="max_batch_wait_ms"):
        EventBatch(store, max_batch_wait_ms=-1)
    with pytest.raises(ValueError, match="dedupe_window"):
        EventBatch(store, dedupe_window=-1)


async def test_a_size_flush_restarts_the_wait(store):
    """After a flush on size, the next event waits its own max_batch_wait_ms: a timer started by
    an earlier event must not flush it early."""
    loop = asyncio.get_running_loop()
    batch = EventBatch(store, max_batch_size=3, max_batch_wait_ms=1000)
    for i in range(3):
        await batch.add(ev(i))  # the first one starts the timer; the third flushes on size
    assert store.head()[0] == 3
    await asyncio.sleep(0.6)
    added = loop.time()
    fut = await batch.add(ev(3))
    assert await asyncio.wait_for(fut, 10) == 4
    assert loop.time() - added >= 0.95  # a stale timer would have flushed it ~0.4 s after adding
    await batch.close()


def _fail_inserts(raw_sql, backend: str) -> None:
    """The database refuses every insert, as a full disk or a revoked grant would."""
    if backend == "sqlite":
        raw_sql(
            "CREATE TRIGGER fail_inserts BEFORE INSERT ON loomdb_events "
            "BEGIN SELECT RAISE(ABORT, 'disk full (simulated)'); END"
        )
    else:
        raw_sql(
            "CREATE FUNCTION fail_inserts() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk full (simulated)'; END $$"
        )
        raw_sql(
            "CREATE TRIGGER fail_inserts BEFORE INSERT ON loomdb_events "
            "FOR EACH ROW EXECUTE FUNCTION fail_inserts()"
        )


async def test_a_failed_timed_flush_reaches_every_waiting_future(store, raw_sql, backend):
    loop = asyncio.get_running_loop()
    unhandled: list[dict] = []
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    _fail_inserts(raw_sql, backend)
    batch = EventBatch(store, max_batch_size=100, max_batch_wait_ms=20)
    futures = [await batch.add(ev(i)) for i in range(3)]
    for f in futures:
        with pytest.raises(Exception, match="disk full"):
            await asyncio.wait_for(f, 10)
    await batch.close()
    import gc

    gc.collect()
    await asyncio.sleep(0)
    assert unhandled == [] and store.head()[0] == 0
