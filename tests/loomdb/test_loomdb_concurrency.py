"""Gap safety under concurrent writers, and exactly-once resumption of named consumers."""

from __future__ import annotations

import asyncio
import threading

import psycopg
import pytest

from loomos.loomdb import EventQuery, NewEvent


def ev(i: int, stream: str = "s") -> NewEvent:
    return NewEvent(event_type="custom.tick", stream_id=stream, data={"i": i})


@pytest.mark.postgres
def test_naive_bigserial_reader_skips_a_late_commit(pg_schema_url):
    """The failure mode LoomDB must avoid, shown on a plain bigserial table: a reader following
    `id > last` misses a row whose transaction got its id first but committed last."""
    url = pg_schema_url.replace("+psycopg", "")
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE TABLE naive_events (id bigserial PRIMARY KEY, body text)")
    a, b, reader = (psycopg.connect(url) for _ in range(3))
    try:
        a.execute("INSERT INTO naive_events (body) VALUES ('first')")  # takes id 1, stays open
        b.execute("INSERT INTO naive_events (body) VALUES ('second')")  # takes id 2
        b.commit()
        seen = [r[0] for r in reader.execute("SELECT id FROM naive_events WHERE id > 0 ORDER BY id")]
        reader.commit()
        a.commit()
        seen += [
            r[0] for r in reader.execute("SELECT id FROM naive_events WHERE id > %s ORDER BY id", [seen[-1]])
        ]
        assert seen == [2]  # id 1 was skipped for good
    finally:
        for c in (a, b, reader):
            c.close()


def test_a_writer_cannot_overtake_an_uncommitted_append(store, store_url):
    """The same interleaving against LoomDB: while one append is in flight (positions assigned,
    not committed), an append from another process (another store on the same database) waits
    on the database, so no reader can see position 2 before position 1."""
    from loomos.loomdb import open_event_store

    other = open_event_store(store_url)
    inside = threading.Event()
    release = threading.Event()
    original = store.backend.write_batch
    calls = []

    def slow_write(cur, rows, streams, position, *args):
        calls.append(position)  # the head position the write moves to
        if len(calls) == 1:
            inside.set()
            release.wait(10)
        return original(cur, rows, streams, position, *args)

    store.backend.write_batch = slow_write
    first = threading.Thread(target=store.append, args=(ev(1, "a"),))
    first.start()
    assert inside.wait(10)
    result: list[int] = []
    second = threading.Thread(target=lambda: result.append(other.append(ev(2, "b"))))
    second.start()
    second.join(0.5)
    assert second.is_alive(), "the second writer must wait for the first one's commit"
    assert store.read(0) == []
    release.set()
    first.join(10)
    second.join(10)
    assert [e.position for e in store.read(0)] == [1, 2] and result == [2]
    assert calls == [1]
    other.close()


def test_concurrent_appends_share_commits_and_keep_their_own_checks(store):
    """Group commit: many threads appending one event each; each call returns its own position,
    a conflicting expected version fails only its own call."""
    results: dict[int, int] = {}
    conflicts: list[Exception] = []
    store.append(ev(-1, "guarded"))

    def one(i: int) -> None:
        if i % 10 == 0:
            try:
                store.append(ev(i, "guarded"), expected_version=0)  # always stale: the stream exists
            except Exception as exc:
                conflicts.append(exc)
            return
        e = ev(i, f"t{i % 4}")
        results[i] = store.append(e)
        assert store.append(e) == results[i]  # a retry inside the race still dedupes

    threads = [threading.Thread(target=one, args=(i,)) for i in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(conflicts) == 6 and all("expected version 0" in str(c) for c in conflicts)
    assert sorted(results.values()) == list(range(2, 56))
    by_pos = {e.position: e.data["i"] for e in store.read(0)}
    assert all(by_pos[p] == i for i, p in results.items())
    assert store.verify().ok


@pytest.mark.parametrize("in_flight", [1, 2])
def test_groups_in_flight_keep_ids_and_versions_serial(store, backend, in_flight):
    """With two group commits in flight, the second reads ids and stream versions only after
    the first committed: one event id raced by many threads is stored once (all get its
    position), and optimistic writers retrying on one stream never both win a version."""
    from loomos.loomdb.errors import ConcurrencyError

    if backend == "postgres":
        store.group_commit.max_in_flight = in_flight
    elif in_flight > 1:
        pytest.skip("SQLite has one writer at a time")

    shared = ev(0, "shared")
    got: list[int] = []
    wins: list[int] = []

    def racer(i: int) -> None:
        got.append(store.append(shared))
        for _ in range(3):
            while True:
                version = store.stream_version("cas")
                try:
                    store.append(ev(1000 + i, "cas"), expected_version=version)
                except ConcurrencyError:
                    continue
                wins.append(version + 1)
                break
            i += 100

    threads = [threading.Thread(target=racer, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1
    assert sorted(wins) == list(range(1, 37))
    stored = store.read(0, limit=10_000)
    assert [e.position for e in stored] == list(range(1, len(stored) + 1))
    assert sum(e.event_id == shared.event_id for e in stored) == 1
    assert sorted(e.stream_version for e in stored if e.stream_id == "cas") == list(range(1, 37))
    assert store.verify().ok


def test_many_concurrent_writers_and_a_naive_tailing_reader(store):
    writers, per_writer = 6, 40
    done = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            for k in range(per_writer):
                if k % 4 == 0:
                    store.append_many([ev(k, f"w{w}"), ev(k, f"w{w}"), ev(k, f"w{w}x")])
                else:
                    store.append(ev(k, f"w{w}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        last = 0
        while True:
            finished = done.is_set()
            batch = store.read(last, limit=50)
            seen.extend(e.position for e in batch)
            if batch:
                last = batch[-1].position
            elif finished:
                return

    reader = threading.Thread(target=read)
    reader.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join(60)
    assert not errors
    total = store.head()[0]
    assert total == writers * (per_writer + 2 * (per_writer // 4))
    assert seen == list(range(1, total + 1)), "the reader skipped or repeated a position"
    assert store.verify().ok


async def test_restarted_consumer_resumes_exactly_after_its_ack(store):
    total = 150
    writer_done = threading.Event()

    def write() -> None:
        for i in range(0, total, 3):
            store.append_many([ev(i), ev(i + 1), ev(i + 2)])
        writer_done.set()

    threading.Thread(target=write).start()
    delivered: list[int] = []

    async def consume(stop_after: int | None) -> None:
        sub = store.subscribe(consumer="billing", batch_size=7, poll_interval=0.05)
        try:
            async for batch in sub:
                for e in batch.events:
                    delivered.append(e.data["i"])
                    if stop_after is not None and len(delivered) >= stop_after:
                        # Crash right after acknowledging this event, mid-batch.
                        await asyncio.to_thread(store.ack, "billing", e.position)
                        return
                await asyncio.to_thread(store.ack, "billing", batch.position)
                if len(delivered) >= total:
                    return
        finally:
            await sub.aclose()

    await asyncio.wait_for(consume(stop_after=40), 30)
    assert store.consumer_position("billing") == 40
    await asyncio.wait_for(consume(stop_after=None), 30)
    assert writer_done.wait(10)
    assert delivered == list(range(total))


async def test_filtered_subscription_acknowledges_past_skipped_events(store):
    store.append_many(
        [
            NewEvent(event_type="custom.a" if i % 2 else "custom.b", stream_id="s", data={"i": i})
            for i in range(10)
        ]
    )
    sub = store.subscribe(EventQuery(event_types=["custom.a"]), consumer="only-a", poll_interval=0.05)
    batch = await asyncio.wait_for(anext(sub), 10)
    await sub.aclose()
    assert [e.data["i"] for e in batch.events] == [1, 3, 5, 7, 9]
    assert batch.position == 10
    store.ack("only-a", batch.position)
    store.ack("only-a", 3)  # a late ack of an older batch never moves it back
    assert store.consumer_position("only-a") == 10


async def test_live_subscriber_gets_events_appended_after_it_started(store):
    store.append(ev(0))
    # On Postgres a 5 s poll interval shows the NOTIFY wake-up at work; SQLite polls.
    poll = 5 if store.dialect == "postgresql" else 0.05
    sub = store.subscribe(from_position=store.head()[0], poll_interval=poll)
    pending = asyncio.ensure_future(anext(sub))
    await asyncio.sleep(0.3)
    assert not pending.done()
    await asyncio.to_thread(store.append, ev(1))
    batch = await asyncio.wait_for(pending, 4)
    await sub.aclose()
    assert [e.data["i"] for e in batch.events] == [1]


def test_consumer_bad_input(store):
    from loomos.loomdb import QueryError

    for name in ("", "has space", "x" * 200, "semi;colon"):
        with pytest.raises(QueryError, match="consumer name"):
            store.ack(name, 1)
    with pytest.raises(QueryError, match=">= 0"):
        store.ack("ok", -1)


def test_a_failed_group_commit_releases_the_head(store, store_url):
    """An error inside a group commit's transaction (after the head is locked) rolls it back:
    the caller gets the error, nothing is written, and later appends (from this store and
    another) proceed and verify."""
    from loomos.loomdb import open_event_store

    store.append(ev(1))
    original = store.backend.write_batch

    def failing(*args):
        raise RuntimeError("disk on fire")

    store.backend.write_batch = failing
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.append(ev(2))
    store.backend.write_batch = original
    other = open_event_store(store_url)
    try:
        assert other.append(ev(3)) == 2
        assert store.append(ev(4)) == 3
    finally:
        other.close()
    assert [e.data["i"] for e in store.read(0)] == [1, 3, 4]
    assert store.verify().ok
