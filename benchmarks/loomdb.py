"""LoomDB benchmark. Prints one JSON object on its last line of stdout.

    python benchmarks/loomdb.py --backend postgres [--quick]
    python benchmarks/loomdb.py --backend sqlite [--quick]

Figures:
- batch_append_eps: events/s through EventStore.append_many (validation, dedupe, hash chain,
  binary COPY on Postgres) in batches of --batch-size, each batch committed;
- raw_copy_eps: the same rows (already hashed) written by a plain binary COPY (Postgres) or a
  plain executemany (SQLite) into a table of the same shape and indexes, same batches, same run;
- batch_ratio: the median over --rounds rounds of (batch append of a share of the events, then a
  raw copy of the same rows) of each round's quotient; batch_append_eps and raw_copy_eps are
  the medians of each side, batch_ratio_rounds the single rounds;
- client_cpu_us_per_event: the median over those rounds of the appending thread's CPU time per
  event (the client's cost alone: validating, hashing, encoding, driving the connection);
- Postgres only, run last so its writes do not touch the other figures: copy_encoder_eps and
  copy_encoder_eps_psycopg, batch appends (as above) with LoomDB's hand-written binary COPY rows
  (pg_copy.py) and with psycopg's own encoding (copy.set_types + copy.write_row, rows hashed
  exactly as LoomDB hashes them: psycopg_stream_plan), --rounds rounds alternating which goes
  first; copy_encoder_ratio the median of each round's quotient (copy_encoder_ratio_rounds);
  copy_encoder_cpu_us and copy_encoder_cpu_us_psycopg the client's CPU time per event on each;
- single_append_eps: one event per append() call, each call returning after its commit, from
  --writers concurrent threads (default 64, named in single_append_writers);
  single_append_eps_16_writers and single_append_eps_1_writer: the same from 16 threads and
  from one, which is bounded by the disk's fsync latency (every commit waits for it);
- query_p99_ms: type + time range (a tenth of the events) + one nested data filter, limit 100,
  over >= --query-events events (default 1,000,000, also with --quick; appended through
  append_many, except with --quick, where the bulk is generated in SQL: see sql_fill; the
  output names the method); query_avg_hits shows the queries found their 100;
- subscribe_latency_p99_ms: from an append's commit to delivery to a live subscriber.

Postgres runs in a schema of its own (loomdb_bench_<pid>), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loomos.loomdb import EventQuery, NewEvent, open_event_store  # noqa: E402
from loomos.loomdb.canonical import (  # noqa: E402
    EPOCH_2000,
    MICROSECOND,
    iso_second,
    jcs_from_json_text,
    json_fragment,
    json_text,
    string_list_text,
)
from loomos.loomdb.hashchain import (  # noqa: E402
    CONTEXT_COLUMNS,
    EVENT_COLUMNS,
    HASH_V2,
    context_key,
    context_values,
)
from loomos.loomdb.pg_copy import COPY_SQL, COPY_TYPES  # noqa: E402

TYPES = [
    "model.training.checkpoint",
    "job.heartbeat",
    "data.read",
    "security.access.granted",
    "custom.metric",
    "worker.stats",
    "job.log",
    "data.write",
    "model.evaluation.progress",
    "cost.sample",
]
GPU_TYPES = ["H100", "A100", "L4", "T4"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_events(n: int, seed: int) -> list[NewEvent]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        etype = TYPES[i % len(TYPES)]
        data = {
            "step": i,
            "loss": round(rnd.random(), 6),
            "job_id": f"j{i % 500}",
            "hardware_config": {"gpu_count": rnd.randint(1, 8), "gpu_type": rnd.choice(GPU_TYPES)},
        }
        if etype == "model.training.checkpoint":
            data["uri"] = f"s3://ckpt/j{i % 500}/{i}"
        out.append(
            NewEvent.model_construct(
                event_id=uuid.UUID(int=rnd.getrandbits(128), version=4),
                event_type=etype,
                stream_id=f"job-{i % 500}",
                occurred_at=datetime.now(UTC),
                correlation_id=None,
                causation_id=None,
                context=NewEvent.model_fields["context"].default_factory(),
                security=NewEvent.model_fields["security"].default_factory(),
                tags=["bench"],
                priority="normal",
                data=data,
                metadata={},
                retention_days=None,
            )
        )
    return out


def pg_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options={quote(f'-csearch_path={schema}')}"


def sqlite_fill(store, n: int, since: datetime) -> None:
    """--quick on SQLite: the same as sql_fill, with a recursive CTE."""
    if n <= 0:
        return
    with store.backend.raw_cursor() as (conn, cur):
        head = store.backend.read_head(cur).position
        start = since.timestamp()
        span = max(time.time() - start, 1.0)
        types = ", ".join(f"'{t}'" for t in TYPES)  # constants of this file
        cur.execute("BEGIN IMMEDIATE")
        cur.execute(
            f"""
            WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ?)
            INSERT INTO loomdb_events ({", ".join(EVENT_COLUMNS)})
            SELECT ? + x, lower(hex(randomblob(16))),
                   json_extract(json_array({types}), '$[' || (x % 10) || ']'),
                   NULL, 'fill-' || (x % 500), x, strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now'),
                   strftime('%Y-%m-%dT%H:%M:%S', ? + x * ?, 'unixepoch') || '.000000+00:00',
                   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '[]', NULL, NULL, NULL,
                   '["bench"]', 'normal',
                   json_object('step', x, 'loss', abs(random() % 1000000) / 1e6, 'job_id', 'j' || (x % 500),
                               'hardware_config', json_object('gpu_count', 1 + abs(random() % 8),
                               'gpu_type',
                               json_extract('["H100","A100","L4","T4"]', '$[' || (x % 4) || ']'))),
                   '{{}}', NULL, 'fill', 2, 'fill'
            FROM g
            """,
            [n, head, start, span / n],
        )
        cur.execute("UPDATE loomdb_head SET position = position + ?", [n])
        cur.execute("COMMIT")


def sql_fill(store, n: int, since: datetime) -> None:
    """--quick on Postgres: generate the query benchmark's bulk rows server-side (same table,
    same indexes, same value distributions as make_events) instead of appending them one
    million at a time. Their hashes are placeholders: only query speed is measured on them,
    and the schema is dropped afterwards."""
    if n <= 0:
        return
    with store.backend.raw_cursor() as (conn, cur):
        head, _, last_ts = store.backend.read_head(cur)
        start = max(since, last_ts)
        span = max((datetime.now(UTC) - start).total_seconds(), 1.0)
        cur.execute(
            f"""
            INSERT INTO loomdb_events ({", ".join(EVENT_COLUMNS)})
            SELECT %(head)s + g, gen_random_uuid(), (%(types)s::text[])[1 + g %% 10], NULL,
                   'fill-' || (g %% 500), g, now(),
                   %(start)s::timestamptz + (g * %(step)s) * interval '1 microsecond',
                   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '[]'::jsonb,
                   NULL, NULL, NULL, '["bench"]'::jsonb, 'normal',
                   jsonb_build_object(
                       'step', g, 'loss', round(random()::numeric, 6), 'job_id', 'j' || (g %% 500),
                       'hardware_config', jsonb_build_object(
                           'gpu_count', 1 + floor(random() * 8)::int,
                           'gpu_type', (ARRAY['H100','A100','L4','T4'])[1 + g %% 4])),
                   '{{}}'::jsonb, NULL, 'fill', 2, 'fill'
            FROM generate_series(1, %(n)s) AS g
            """,
            {"head": head, "types": TYPES, "start": start, "step": span * 1e6 / n, "n": n},
        )
        cur.execute(
            "UPDATE loomdb_head SET position = position + %s, recorded_at = %s", [n, datetime.now(UTC)]
        )
        conn.commit()


def timed_batch_append(store, events: list[NewEvent], batch_size: int) -> tuple[float, float]:
    """Events per second, and this thread's CPU time per event in microseconds: what the client
    spends (validating, hashing, encoding, driving the connection), unaffected by how long the
    server takes or by another process's load."""
    t0, c0 = time.perf_counter(), time.thread_time()
    for i in range(0, len(events), batch_size):
        store.append_many(events[i : i + batch_size])
    return len(events) / (time.perf_counter() - t0), (time.thread_time() - c0) / len(events) * 1e6


def _raw_table(store) -> None:
    """bench_raw: the event table's shape, indexes and (on Postgres) partitioning, empty."""
    with store.backend.raw_cursor() as (conn, cur):
        if store.dialect == "postgresql":
            cur.execute(
                "CREATE TABLE bench_raw (LIKE loomdb_events INCLUDING DEFAULTS INCLUDING INDEXES) "
                "PARTITION BY RANGE (recorded_at)"
            )
            cur.execute("CREATE TABLE bench_raw_p PARTITION OF bench_raw DEFAULT")
            conn.commit()
            return
        cur.execute("SELECT sql FROM sqlite_master WHERE name = 'loomdb_events'")
        cur.execute(cur.fetchone()[0].replace("loomdb_events", "bench_raw", 1))
        cur.execute("CREATE INDEX bench_raw_t ON bench_raw (event_type, recorded_at, position)")
        cur.execute("CREATE INDEX bench_raw_r ON bench_raw (recorded_at)")


def raw_copy(store, first: int, count: int, batch_size: int) -> float:
    """Copy the rows LoomDB just wrote (hashes included) with no LoomDB logic in the way."""
    with store.backend.read() as cur:
        cur.execute(
            store.backend.sql(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM loomdb_events WHERE position >= %s "
                "ORDER BY position LIMIT %s"
            ),
            [first, count],
        )
        rows = [store.backend.py_row(r) for r in cur.fetchall()]
    prepared = [store.backend.db_row(r) for r in rows]
    if store.dialect == "postgresql":
        from loomos.loomdb.pg_copy import COPY_TYPES

        with store.backend.raw_cursor() as (conn, cur):
            t0 = time.perf_counter()
            for i in range(0, len(prepared), batch_size):
                with cur.copy(
                    f"COPY bench_raw ({', '.join(EVENT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
                ) as cp:
                    cp.set_types(COPY_TYPES)
                    for r in prepared[i : i + batch_size]:
                        cp.write_row(r)
                conn.commit()
            return len(prepared) / (time.perf_counter() - t0)
    with store.backend.raw_cursor() as (conn, cur):
        marks = ", ".join("?" * len(EVENT_COLUMNS))
        sql = f"INSERT INTO bench_raw ({', '.join(EVENT_COLUMNS)}) VALUES ({marks})"
        t0 = time.perf_counter()
        for i in range(0, len(prepared), batch_size):
            cur.execute("BEGIN IMMEDIATE")
            cur.executemany(sql, prepared[i : i + batch_size])
            cur.execute("COMMIT")
        return len(prepared) / (time.perf_counter() - t0)


def _as_is(text: str) -> str:
    return text


@functools.lru_cache(maxsize=1024)
def _context_json(key: tuple) -> tuple[str, tuple]:
    from psycopg.types.json import Jsonb

    values = list(key)
    roles = CONTEXT_COLUMNS.index("roles")
    values[roles] = Jsonb(string_list_text(key[roles]), dumps=_as_is)
    return json_fragment(context_values(key)), tuple(values)


@functools.lru_cache(maxsize=1024)
def _tags_json(tags: tuple[str, ...], priority: str) -> tuple[str, object]:
    from psycopg.types.json import Jsonb

    return json_fragment([list(tags), priority]), Jsonb(string_list_text(tags), dumps=_as_is)


def psycopg_stream_plan(cur, plan, recorded: datetime, recorded_iso: str, prev: str) -> str:
    """PostgresBackend.stream_plan with psycopg's own COPY encoding in place of pg_copy's
    hand-written rows: the same hashed text, made from the same kind of cached fragments, and
    each row handed to copy.write_row (after copy.set_types) as the Python values psycopg
    adapts, jsonb as Jsonb wrappers around the canonical text (not serialised again)."""
    from psycopg.types.json import Jsonb

    seconds: dict[int, str] = {}
    empty = Jsonb("{}", dumps=_as_is)
    with cur.copy(COPY_SQL) as copy:
        copy.set_types(COPY_TYPES)
        write_row = copy.write_row
        for e, v, p, sv in plan:
            c_json, c_values = _context_json(context_key(e))
            g_json, tags = _tags_json(tuple(e.tags), str(e.priority))
            occ = e.occurred_at.astimezone(UTC)
            second, micro = divmod((occ - EPOCH_2000) // MICROSECOND, 1_000_000)
            occ_prefix = seconds.get(second)
            if occ_prefix is None:
                occ_prefix = seconds[second] = iso_second(second)
            corr, caus, ret = e.correlation_id, e.causation_id, e.retention_days
            data_json, meta_json = json_text(e.data), json_text(e.metadata)
            doc = (
                f'[2,{p},"{e.event_id}",{json_fragment([e.event_type, v])},{json_fragment([e.stream_id])},'
                f'{sv},"{occ_prefix}{micro:06d}+00:00","{recorded_iso}",{json_fragment([corr, caus])},'
                f"{c_json},{g_json},{jcs_from_json_text(data_json, e.data)},"
                f'{jcs_from_json_text(meta_json, e.metadata)},{json_fragment([ret])},"{prev}"]'
            )
            h = hashlib.sha256(doc.encode()).hexdigest()
            write_row(
                (
                    p,
                    e.event_id,
                    e.event_type,
                    v,
                    e.stream_id,
                    sv,
                    occ,
                    recorded,
                    corr,
                    caus,
                    *c_values,
                    tags,
                    str(e.priority),
                    Jsonb(data_json, dumps=_as_is),
                    empty if meta_json == "{}" else Jsonb(meta_json, dumps=_as_is),
                    ret,
                    prev,
                    HASH_V2,
                    h,
                )
            )
            prev = h
    return prev


def batch_vs_raw(store, events: list[NewEvent], batch_size: int, rounds: int) -> dict[str, object]:
    """Rounds of (LoomDB batch append, then a raw copy of the same rows), each round's ratio
    taken from two adjacent measurements, so machine drift (another tenant, a Postgres
    checkpoint) hits both sides of a ratio alike; the medians are reported."""
    _raw_table(store)
    per_round = max(batch_size, len(events) // rounds)
    batch_eps, raw_eps, ratios, cpu = [], [], [], []
    for start in range(0, len(events), per_round):
        chunk = events[start : start + per_round]
        first = store.head()[0] + 1
        b, us = timed_batch_append(store, chunk, batch_size)
        r = raw_copy(store, first, len(chunk), batch_size)
        batch_eps.append(b)
        raw_eps.append(r)
        ratios.append(b / r)
        cpu.append(us)
        log(f"round {len(ratios)}: batch {b:.0f}/s, raw {r:.0f}/s, ratio {b / r:.3f}")
    return {
        "batch_append_eps": round(statistics.median(batch_eps)),
        "raw_copy_eps": round(statistics.median(raw_eps)),
        "batch_ratio": round(statistics.median(ratios), 3),
        "batch_ratio_rounds": [round(x, 3) for x in ratios],
        "client_cpu_us_per_event": round(statistics.median(cpu), 1),
    }


def copy_encoders(store, events: list[NewEvent], batch_size: int, rounds: int) -> dict[str, object]:
    """Postgres: LoomDB's hand-written COPY rows (pg_copy) against psycopg's own encoding
    (psycopg_stream_plan), in rounds that append one share of `events` with each, the order
    alternating so neither always meets the larger table. Run last, so its writes (and the
    vacuuming they bring about) do not touch the other figures."""
    half = len(events) // 2
    ours, theirs = events[:half], events[half:]
    per_round = max(batch_size, half // rounds)
    eps: dict[str, list[float]] = {"loomdb": [], "psycopg": []}
    cpu: dict[str, list[float]] = {"loomdb": [], "psycopg": []}
    ratios = []

    def run(kind: str, chunk: list[NewEvent]) -> None:
        if kind == "psycopg":
            store.backend.stream_plan = psycopg_stream_plan
        try:
            e, us = timed_batch_append(store, chunk, batch_size)
        finally:
            if kind == "psycopg":
                del store.backend.stream_plan
        eps[kind].append(e)
        cpu[kind].append(us)

    for n, start in enumerate(range(0, half, per_round)):
        for kind in ("psycopg", "loomdb") if n % 2 else ("loomdb", "psycopg"):
            run(kind, (ours if kind == "loomdb" else theirs)[start : start + per_round])
        ratios.append(eps["loomdb"][-1] / eps["psycopg"][-1])
        log(
            f"round {n + 1}: LoomDB's COPY rows {eps['loomdb'][-1]:.0f}/s ({cpu['loomdb'][-1]:.1f} us CPU "
            f"an event), psycopg's write_row {eps['psycopg'][-1]:.0f}/s ({cpu['psycopg'][-1]:.1f} us), "
            f"ratio {ratios[-1]:.3f}"
        )
    return {
        "copy_encoder_eps": round(statistics.median(eps["loomdb"])),
        "copy_encoder_eps_psycopg": round(statistics.median(eps["psycopg"])),
        "copy_encoder_ratio": round(statistics.median(ratios), 3),
        "copy_encoder_ratio_rounds": [round(x, 3) for x in ratios],
        "copy_encoder_cpu_us": round(statistics.median(cpu["loomdb"]), 1),
        "copy_encoder_cpu_us_psycopg": round(statistics.median(cpu["psycopg"]), 1),
    }


def single_appends(store, n: int, writers: int) -> float:
    """`writers` threads, each calling append() with one event at a time; every call returns
    after its event is committed (concurrent calls share commits: group commit)."""
    events = make_events(n, seed=7 + writers)
    share = [events[w::writers] for w in range(writers)]

    def run(mine: list[NewEvent]) -> None:
        for e in mine:
            store.append(e)

    threads = [threading.Thread(target=run, args=(s,)) for s in share]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - t0)


def _recorded_at(store, position: int) -> datetime:
    with store.backend.read() as cur:
        cur.execute(
            store.backend.sql("SELECT recorded_at FROM loomdb_events WHERE position = %s"), [position]
        )
        ts = cur.fetchone()[0]
    return datetime.fromisoformat(ts) if isinstance(ts, str) else ts


def query_p99(store, runs: int) -> tuple[float, float, int]:
    """Each query's time range spans a tenth of all events, starting at a random position, so
    every range holds ~100k events (~10k of the queried type) wherever the rows' timestamps
    cluster: a range that happened to hold nothing would answer instantly and flatter p99."""
    rnd = random.Random(3)
    total = store.head()[0]
    width = max(total // 10, 1)
    times, hits = [], 0
    for _ in range(runs):
        first = rnd.randint(1, max(total - width, 1))
        a = _recorded_at(store, first)
        b = _recorded_at(store, min(first + width, total))
        q = EventQuery(
            event_types=[rnd.choice(TYPES)],
            start=a,
            end=max(b, a + timedelta(microseconds=1)),
            filters=[f"data.hardware_config.gpu_count >= {rnd.randint(2, 7)}"],
            limit=100,
        )
        t0 = time.perf_counter()
        page = store.query(q)
        times.append((time.perf_counter() - t0) * 1000)
        hits += len(page.events)
    times.sort()
    return times[int(len(times) * 0.99) - 1], statistics.median(times), hits // runs


async def subscribe_latency(store, n: int, interval: float) -> tuple[float, float]:
    committed: dict[int, float] = {}
    received: dict[int, float] = {}
    start_pos = store.head()[0]
    sub = store.subscribe(
        from_position=start_pos, poll_interval=1.0 if store.dialect == "postgresql" else 0.005
    )

    async def consume() -> None:
        async for batch in sub:
            now = time.perf_counter()
            for e in batch.events:
                received[e.position] = now
            if len(received) >= n:
                return

    def produce() -> None:
        for e in make_events(n, seed=11):
            p = store.append(e)
            committed[p] = time.perf_counter()
            time.sleep(interval)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.3)
    writer = threading.Thread(target=produce)
    writer.start()
    await asyncio.wait_for(task, 120)
    writer.join()
    await sub.aclose()
    lat = sorted(max(received[p] - committed[p], 0) * 1000 for p in committed)
    return lat[int(len(lat) * 0.99) - 1], statistics.median(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", choices=["postgres", "sqlite"], required=True)
    ap.add_argument("--quick", action="store_true", help="smaller runs (CI-sized machines)")
    ap.add_argument(
        "--url",
        default=os.environ.get(
            "LOOMOS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    ap.add_argument("--query-events", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--writers", type=int, default=64, help="threads for single_append_eps")
    ap.add_argument("--rounds", type=int, default=5, help="alternating batch/raw rounds (medians reported)")
    args = ap.parse_args()
    batch_n = 50_000 if args.quick else 200_000
    single_n = 2_000 if args.quick else 10_000
    latency_n = 200 if args.quick else 1000

    tmp = tempfile.TemporaryDirectory()
    schema = f"loomdb_bench_{os.getpid()}"
    admin = None
    if args.backend == "postgres":
        import psycopg

        admin = psycopg.connect(args.url.replace("+psycopg", ""), autocommit=True)
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.execute(f'CREATE SCHEMA "{schema}"')
        url = pg_url(args.url, schema)
    else:
        url = f"sqlite:///{tmp.name}/bench.sqlite"
    store = open_event_store(url)
    try:
        result: dict[str, object] = {"backend": args.backend, "quick": args.quick}
        log(f"batch append vs raw copy: {batch_n} events, {args.rounds} rounds, batches of {args.batch_size}")
        events = make_events(batch_n, seed=1)
        result.update(batch_vs_raw(store, events, args.batch_size, args.rounds))
        log(f"single appends: {single_n} from {args.writers} writers and from 16, {single_n // 4} from one")
        result["single_append_eps"] = round(single_appends(store, single_n, args.writers))
        result["single_append_writers"] = args.writers
        result["single_append_eps_16_writers"] = round(single_appends(store, single_n, 16))
        result["single_append_eps_1_writer"] = round(single_appends(store, single_n // 4, 1))
        started = datetime.now(UTC)
        need = args.query_events - store.head()[0]
        fill = "sql" if args.quick else "append_many"
        log(f"filling to {args.query_events} events ({need} more, via {fill})")
        if fill == "sql":
            (sql_fill if args.backend == "postgres" else sqlite_fill)(store, need, started)
        else:
            chunk = 20_000
            while need > 0:
                k = min(chunk, need)
                evs = make_events(k, seed=need)
                for i in range(0, k, args.batch_size):
                    store.append_many(evs[i : i + args.batch_size])
                need -= k
        result["query_fill"] = fill
        if args.backend == "postgres":
            with store.backend.raw_cursor() as (conn, cur):
                cur.execute("ANALYZE loomdb_events")
                conn.commit()
        result["query_events"] = store.head()[0]
        log("queries")
        p99, p50, hits = query_p99(store, 300)
        result["query_p99_ms"], result["query_p50_ms"], result["query_avg_hits"] = (
            round(p99, 2),
            round(p50, 2),
            hits,
        )
        log(f"subscribe latency: {latency_n} appends")
        p99, p50 = asyncio.run(subscribe_latency(store, latency_n, 0.005))
        result["subscribe_latency_p99_ms"], result["subscribe_latency_p50_ms"] = round(p99, 2), round(p50, 2)
        if args.backend == "postgres":
            log(f"COPY encoders: {batch_n} events each, {args.rounds} rounds, batches of {args.batch_size}")
            result.update(
                copy_encoders(store, make_events(2 * batch_n, seed=2), args.batch_size, args.rounds)
            )
    finally:
        store.close()
        if admin is not None:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            admin.close()
        tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
