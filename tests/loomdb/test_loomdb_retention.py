"""Retention: archive old months to JSON Lines (gzip) on file:// and s3://, drop them, keep the
chain verifiable across the boundary."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from loomos.loomdb import EventQuery, NewEvent, RetentionError
from loomos.loomdb.retention import RetentionPolicy, apply_retention, read_archive


def fill_months(store, clock, months: int = 4, per_month: int = 5) -> None:
    for m in range(months):
        store.append_many(
            [
                NewEvent(
                    event_type="custom.tick",
                    stream_id=f"s{i % 2}",
                    data={"m": m, "i": i, "x": 0.5 * i},
                    context={"compliance_level": "HIPAA" if i == 0 else None},
                )
                for i in range(per_month)
            ]
        )
        clock.advance(days=31)


def test_archive_round_trip_and_chain_across_the_boundary(clocked_store, clock, tmp_path, backend, raw_sql):
    s = clocked_store
    fill_months(s, clock)  # Jan..Apr 2026; the clock ends in mid-May
    before = {e.position: e for e in s.read(0)}
    policy = RetentionPolicy(
        archive_after_days=40,
        archive_uri=f"file://{tmp_path}/archive",
        per_compliance_level={"HIPAA": 2190},
        default_days=400,
    )
    actions = apply_retention(s, policy)
    assert [a["partition"] for a in actions] == ["2026-01", "2026-02", "2026-03"]
    assert [(a["first_position"], a["last_position"]) for a in actions] == [(1, 5), (6, 10), (11, 15)]
    # Archived rows left the table; the rest (and the retention records) remain.
    remaining = [e.position for e in s.read(0)]
    assert remaining[0] == 16 and remaining[:5] == [16, 17, 18, 19, 20]
    records = s.query(EventQuery(event_types=["compliance.retention.applied"])).events
    assert [r.data["partition"] for r in records] == ["2026-01", "2026-02", "2026-03"]
    assert records[0].data["policy"]["archive_after_days"] == 40
    # The archive holds exactly the events that left, byte for byte in content.
    archived = [row for a in actions for row in read_archive(a["uri"], a["sha256"])]
    assert [r["position"] for r in archived] == list(range(1, 16))
    for r in archived:
        e = before[r["position"]]
        assert (r["event_id"], r["data"], r["hash"]) == (e.event_id, e.data, e.hash)
    manifests = s.archives()
    assert manifests[0]["expires_at"] is not None
    hipaa_expiry = manifests[0]["expires_at"]
    if isinstance(hipaa_expiry, str):
        hipaa_expiry = datetime.fromisoformat(hipaa_expiry)
    assert hipaa_expiry.year == 2032  # the HIPAA event's 2190 days win over the default 400
    assert s.verify().ok and s.verify().archives_checked == 3
    deep = s.verify(deep_archives=True)
    assert deep.ok and deep.checked == s.head()[0]
    if backend == "postgres":
        parts = {
            r[0]
            for r in raw_sql(
                "SELECT relname FROM pg_class WHERE relname LIKE 'loomdb_events_y%%' "
                "AND relnamespace = current_schema()::regnamespace"
            )
        }
        assert "loomdb_events_y2026m01" not in parts and "loomdb_events_y2026m04" in parts
    # Nothing more is due: a second run changes nothing.
    assert apply_retention(s, policy) == []
    assert len(s.archives()) == 3


def test_tampered_archive_is_found(clocked_store, clock, tmp_path):
    s = clocked_store
    fill_months(s, clock, months=3)
    actions = apply_retention(s, RetentionPolicy(archive_after_days=30, archive_uri=f"file://{tmp_path}"))
    path = actions[0]["uri"].removeprefix("file://")
    import gzip

    lines = gzip.decompress(open(path, "rb").read()).decode().splitlines()
    lines[2] = lines[2].replace('"x":1.0', '"x":99.0')
    open(path, "wb").write(gzip.compress(("\n".join(lines) + "\n").encode()))
    assert s.verify().ok  # the manifests still link
    report = s.verify(deep_archives=True)
    assert not report.ok and "sha256" in report.problem.detail


def test_missing_archive_manifest_is_found(clocked_store, clock, tmp_path, raw_sql):
    s = clocked_store
    fill_months(s, clock, months=3)
    apply_retention(s, RetentionPolicy(archive_after_days=30, archive_uri=f"file://{tmp_path}"))
    raw_sql("DELETE FROM loomdb_archives WHERE period = '2026-01'")
    report = s.verify()
    assert (report.ok, report.problem.kind, report.problem.position) == (False, "deleted", 1)


def test_archive_to_s3(clocked_store, clock, monkeypatch):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    s = clocked_store
    fill_months(s, clock, months=2)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="loomdb-archive")
        actions = apply_retention(
            s, RetentionPolicy(archive_after_days=20, archive_uri="s3://loomdb-archive/prod")
        )
        assert actions and actions[0]["uri"].startswith("s3://loomdb-archive/prod/loomdb-")
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket="loomdb-archive")["Contents"]]
        assert len(keys) == len(actions)
        assert s.verify(deep_archives=True).ok


def test_unwritable_archive_loses_nothing(clocked_store, clock, tmp_path):
    s = clocked_store
    fill_months(s, clock, months=2)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RetentionError, match="cannot write archive"):
        apply_retention(s, RetentionPolicy(archive_after_days=20, archive_uri=f"file://{blocker}/sub"))
    assert s.head()[0] == 10 and len(s.read(0)) == 10 and s.archives() == []
    assert s.verify().ok


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"archive_uri": "ftp://x"}, "file:///dir or s3://"),
        ({"archive_uri": "s3://"}, "bucket"),
        (
            {"archive_uri": "file:///a", "compress_after_days": 100, "archive_after_days": 10},
            "compress_after_days",
        ),
        ({"archive_uri": "file:///a", "default_days": 0}, "default_days"),
        ({"archive_uri": "file:///a", "per_type": {"NOT A TYPE": 3}}, "per_type"),
        ({"archive_uri": "file:///a", "per_type": {"data.*": 0}}, "between"),
        ({"archive_uri": "file:///a", "per_compliance_level": {"SOX": 999999}}, "between"),
        ({"archive_uri": "file:///a", "surprise": 1}, "surprise"),
    ],
)
def test_bad_policies(kw, needle):
    with pytest.raises(ValidationError, match=needle):
        RetentionPolicy(**kw)


def test_days_for():
    p = RetentionPolicy(
        archive_uri="file:///a",
        default_days=100,
        per_type={"security.*": 3650, "debug.trace": 7},
        per_compliance_level={"SOX": 2555},
    )
    assert p.days_for({"event_type": "custom.x"}) == 100
    assert p.days_for({"event_type": "security.access.denied"}) == 3650
    assert p.days_for({"event_type": "debug.trace"}) == 7
    assert p.days_for({"event_type": "debug.trace", "compliance_level": "SOX"}) == 2555
    assert p.days_for({"event_type": "debug.trace", "retention_days": 1}) == 1


@pytest.mark.postgres
def test_trigger_allows_deletes_only_inside_a_retention_window(pg_schema_url):
    import psycopg

    from loomos.loomdb import open_event_store

    clock_now = [datetime(2026, 1, 5, tzinfo=UTC)]
    s = open_event_store(pg_schema_url, clock=lambda: clock_now[0])
    s.append(NewEvent(event_type="custom.old", stream_id="s"))
    clock_now[0] = datetime(2026, 3, 5, tzinfo=UTC)
    s.append(NewEvent(event_type="custom.new", stream_id="s"))
    s.close()
    with psycopg.connect(pg_schema_url.replace("+psycopg", "")) as conn:
        conn.execute("SET LOCAL loomdb.retention_cutoff = '2026-02-01T00:00:00Z'")
        assert conn.execute("DELETE FROM loomdb_events WHERE event_type = 'custom.old'").rowcount == 1
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="immutable"):
            conn.execute("DELETE FROM loomdb_events WHERE event_type = 'custom.new'")
        conn.rollback()


@pytest.mark.postgres
def test_compress_rewrites_old_partitions_with_lz4(pg_schema_url, tmp_path):
    from datetime import timedelta

    import psycopg

    from loomos.loomdb import open_event_store

    now = [datetime(2026, 1, 10, tzinfo=UTC)]
    s = open_event_store(pg_schema_url, clock=lambda: now[0])
    big = {"blob": "x" * 5000, "n": 1.5}  # large enough to be TOASTed and compressed
    for _ in range(3):
        s.append_many([NewEvent(event_type="custom.big", stream_id="s", data=big) for _ in range(3)])
        now[0] += timedelta(days=31)
    before = [(e.position, e.hash, e.data) for e in s.read(0)]
    policy = RetentionPolicy(archive_after_days=365, compress_after_days=20, archive_uri=f"file://{tmp_path}")
    planned = apply_retention(s, policy, dry_run=True)
    assert [(a["action"], a["partition"], a["event_count"], a["dry_run"]) for a in planned] == [
        ("compressed", "2026-01", 3, True),
        ("compressed", "2026-02", 3, True),
    ]
    actions = apply_retention(s, policy)
    assert [(a["action"], a["partition"], a["event_count"]) for a in actions] == [
        ("compressed", "2026-01", 3),
        ("compressed", "2026-02", 3),
    ]
    assert apply_retention(s, policy) == []  # already compressed
    with psycopg.connect(pg_schema_url.replace("+psycopg", "")) as conn:
        methods = dict(
            conn.execute(
                "SELECT c.relname, a.attcompression FROM pg_attribute a "
                "JOIN pg_class c ON c.oid = a.attrelid "
                "WHERE c.relname LIKE 'loomdb_events_y2026m0%%' AND a.attname = 'data' "
                "AND c.relnamespace = current_schema()::regnamespace"
            ).fetchall()
        )
        assert methods["loomdb_events_y2026m01"] == "l" and methods["loomdb_events_y2026m03"] != "l"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE loomdb_events SET event_type = 'x.y' WHERE position = 1")
    assert [(e.position, e.hash, e.data) for e in s.read(0)][:9] == before
    assert s.verify().ok
    s.close()


def test_the_month_being_written_is_never_archived(clocked_store, clock, tmp_path):
    """A `now` far ahead of the store's clock (a policy tried out for next year) must not archive
    the month the store is writing in: its own retention records go there, and the month would
    be archived again, half, on the next run."""
    from datetime import timedelta

    s = clocked_store
    fill_months(s, clock)  # Jan..Apr 2026; the clock is in mid-May, with nothing written yet
    s.append(NewEvent(event_type="custom.tick", stream_id="may", data={"m": 4}))
    policy = RetentionPolicy(archive_after_days=1, default_days=3650, archive_uri=f"file://{tmp_path}/a")
    far = clock.now + timedelta(days=400)
    first = apply_retention(s, policy, now=far)
    assert [a["partition"] for a in first] == ["2026-01", "2026-02", "2026-03", "2026-04"]
    assert apply_retention(s, policy, now=far) == []  # May is still being written: kept
    may = [e for e in s.read(0) if e.stream_id == "may"]
    assert len(may) == 1 and s.verify(deep_archives=True).ok
    clock.advance(days=31)  # June: May is complete now, retention records and all
    (done,) = apply_retention(s, policy)
    assert done["partition"] == "2026-05" and done["event_count"] == 1 + 4
    assert s.verify(deep_archives=True).ok
