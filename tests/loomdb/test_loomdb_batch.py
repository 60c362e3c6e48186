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
