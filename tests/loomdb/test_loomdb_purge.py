"""Retention deletes archive objects once their events have expired (file:// and s3://), records
each purge as an event, and the chain stays verifiable across a purged period."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loomos.loomdb import EventQuery, NewEvent, RetentionError
from loomos.loomdb.retention import (
    PURGE_EVENT,
    ArchiveMissing,
    RetentionPolicy,
    apply_retention,
    archive_manifests,
    deep_archive,
    purge_expired,
)


def fill_months(store, clock, months: int = 4, per_month: int = 5) -> None:
    """Events on Jan 10, Feb 10, Mar 13 and Apr 13 2026; the clock ends on May 14."""
    for m in range(months):
        store.append_many(
            [
                NewEvent(event_type="custom.tick", stream_id=f"s{i % 2}", data={"m": m, "i": i})
                for i in range(per_month)
            ]
        )
        clock.advance(days=31)


def policy_for(uri: str, **kw) -> RetentionPolicy:
    # Archive Jan..Mar; 100 days: January (Apr 20) has expired by May 14, February (May 21) has not.
    return RetentionPolicy(archive_after_days=40, default_days=100, archive_uri=uri, **kw)


def purges(store) -> list:
    return store.query(EventQuery(event_types=[PURGE_EVENT])).events


def by_period(store) -> dict:
    return {m["period"]: m for m in archive_manifests(store)}


def path_of(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def test_expired_archive_is_deleted_and_recorded(clocked_store, clock, tmp_path):
    s = clocked_store
    fill_months(s, clock)
    policy = policy_for(f"file://{tmp_path}/archive")
    actions = apply_retention(s, policy)
    assert [(a["action"], a["partition"]) for a in actions] == [
        ("archived", "2026-01"),
        ("archived", "2026-02"),
        ("archived", "2026-03"),
        ("purged", "2026-01"),
    ]
    purged = actions[-1]
    archived_jan = actions[0]
    assert purged["uri"] == archived_jan["uri"] and purged["object"] == "deleted"
    assert not path_of(purged["uri"]).exists()
    assert path_of(actions[1]["uri"]).exists() and path_of(actions[2]["uri"]).exists()  # not expired
    manifests = by_period(s)
    assert manifests["2026-01"]["purged_at"] == clock.now
    assert manifests["2026-02"]["purged_at"] is None and manifests["2026-03"]["purged_at"] is None
    (record,) = purges(s)
    assert record.event_id == uuid.uuid5(uuid.NAMESPACE_URL, f"loomdb:{s.schema_name}:purge:2026-01")
    assert record.stream_id == "loomdb-retention" and record.context.compliance_level == "SYSTEM"
    d = record.data
    assert (d["partition"], d["first_position"], d["last_position"], d["event_count"]) == ("2026-01", 1, 5, 5)
    assert (d["uri"], d["sha256"]) == (archived_jan["uri"], archived_jan["sha256"])
    assert d["expires_at"].startswith("2026-04-20") and d["object"] == "deleted"
    # The manifests still link the chain; the purge record is part of it.
    report = s.verify()
    assert report.ok and report.archives_checked == 3
    # A rerun has nothing to do and records nothing.
    assert apply_retention(s, policy) == []
    assert len(purges(s)) == 1 and s.verify().ok
    # February expires on May 21.
    clock.advance(days=7)
    assert [(a["action"], a["partition"]) for a in apply_retention(s, policy)] == [("purged", "2026-02")]
    assert not path_of(actions[1]["uri"]).exists() and path_of(actions[2]["uri"]).exists()
    assert [e.data["partition"] for e in purges(s)] == ["2026-01", "2026-02"]
    assert s.verify().ok


def test_purging_can_be_turned_off_and_never_runs_ahead_of_the_clock(clocked_store, clock, tmp_path):
    s = clocked_store
    fill_months(s, clock)
    actions = apply_retention(s, policy_for(f"file://{tmp_path}", purge_expired_archives=False))
    assert [a["action"] for a in actions] == ["archived"] * 3
    assert all(path_of(a["uri"]).exists() for a in actions)
    # A caller's later `now` (June 13) archives April, but expiry is the store's clock: nothing
    # deleted before its time (February expires May 21, the clock says May 14).
    later = apply_retention(s, policy_for(f"file://{tmp_path}"), now=clock.now + timedelta(days=30))
    assert [(a["action"], a["partition"]) for a in later] == [("archived", "2026-04"), ("purged", "2026-01")]
    assert path_of(actions[1]["uri"]).exists()
    assert by_period(s)["2026-02"]["purged_at"] is None


def test_retried_purge_is_never_recorded_twice(clocked_store, clock, tmp_path, raw_sql, monkeypatch):
    from loomos.loomdb import retention

    s = clocked_store
    fill_months(s, clock)
    policy = policy_for(f"file://{tmp_path}")

    def crash(*_a, **_k):
        raise RuntimeError("killed after the delete")

    # The object is deleted, then the run dies before marking the manifest.
    with monkeypatch.context() as m:
        m.setattr(retention, "mark_purged", crash)
        with pytest.raises(RuntimeError):
            apply_retention(s, policy)
    jan = by_period(s)["2026-01"]
    assert jan["purged_at"] is None and not path_of(jan["uri"]).exists() and purges(s) == []
    # Expired and gone, not yet marked: deep verification does not call that tampering.
    assert deep_archive(s, jan).rows is None and "not yet marked purged" in deep_archive(s, jan).note
    # The next run finishes the job: deleting a missing object is fine.
    (again,) = apply_retention(s, policy)
    assert (again["action"], again["partition"], again["object"]) == ("purged", "2026-01", "already missing")
    assert len(purges(s)) == 1
    # Even with the mark lost behind LoomDB's back, the deterministic event id keeps one record.
    raw_sql("UPDATE loomdb_archives SET purged_at = NULL WHERE period = '2026-01'")
    apply_retention(s, policy)
    assert len(purges(s)) == 1 and by_period(s)["2026-01"]["purged_at"] is not None
    assert s.verify().ok


def test_failed_delete_leaves_the_manifest_unpurged(clocked_store, clock, tmp_path):
    s = clocked_store
    fill_months(s, clock)
    policy = policy_for(f"file://{tmp_path}", purge_expired_archives=False)
    actions = apply_retention(s, policy)
    jan = path_of(actions[0]["uri"])
    jan.unlink()
    jan.mkdir()  # something the object store cannot delete as a file
    with pytest.raises(RetentionError, match="cannot delete archive .*stays unpurged"):
        apply_retention(s, policy_for(f"file://{tmp_path}"))
    assert by_period(s)["2026-01"]["purged_at"] is None and purges(s) == []
    assert jan.is_dir() and s.verify().ok


def test_early_deleted_archive_is_still_reported(clocked_store, clock, tmp_path):
    s = clocked_store
    fill_months(s, clock)
    apply_retention(s, policy_for(f"file://{tmp_path}", purge_expired_archives=False))
    feb = by_period(s)["2026-02"]
    assert len(deep_archive(s, feb).rows) == 5
    path_of(feb["uri"]).unlink()  # expires May 21; the clock says May 14
    with pytest.raises(ArchiveMissing, match="deleted before it expired"):
        deep_archive(s, feb)
    report = s.verify(deep_archives=True)
    assert not report.ok and "2026-02" in report.problem.detail and "does not exist" in report.problem.detail
    assert s.verify().ok  # the manifests still link: the chain is whole, the archive is not
    # A purge run deletes January (expired) but does not tidy February away: it has not expired.
    assert [a["partition"] for a in apply_retention(s, policy_for(f"file://{tmp_path}"))] == ["2026-01"]
    assert by_period(s)["2026-02"]["purged_at"] is None


def test_manifest_marked_purged_before_its_expiry_is_reported(
    clocked_store, clock, tmp_path, raw_sql, backend
):
    s = clocked_store
    fill_months(s, clock)
    apply_retention(s, policy_for(f"file://{tmp_path}"))
    feb = by_period(s)["2026-02"]
    path_of(feb["uri"]).unlink()
    when = "2026-05-14T12:00:00.000000+00:00"
    raw_sql("UPDATE loomdb_archives SET purged_at = ? WHERE period = '2026-02'", (when,))
    with pytest.raises(RetentionError, match="marked purged at .* kept until"):
        deep_archive(s, by_period(s)["2026-02"])
    # A manifest without purged_at (as an older caller may pass it): deep_archive reads it itself.
    plain = {k: v for k, v in by_period(s)["2026-02"].items() if k != "purged_at"}
    with pytest.raises(RetentionError, match="marked purged"):
        deep_archive(s, plain)


def test_purged_archive_has_nothing_to_rehash(clocked_store, clock, tmp_path):
    s = clocked_store
    fill_months(s, clock)
    apply_retention(s, policy_for(f"file://{tmp_path}"))
    found = {m["period"]: deep_archive(s, m) for m in s.archives()}
    assert found["2026-01"].rows is None and "purged at" in found["2026-01"].note
    assert [r["position"] for r in found["2026-02"].rows] == list(range(6, 11))
    assert found["2026-02"].note is None


def test_deep_verify_across_a_purged_archive(clocked_store, clock, tmp_path):
    s = clocked_store
    fill_months(s, clock)
    apply_retention(s, policy_for(f"file://{tmp_path}"))
    report = s.verify(deep_archives=True)
    assert report.ok, report.problem
    assert report.archives_checked == 3 and report.checked == s.head()[0] - 5
    assert any("2026-01" in n and "purged" in n for n in report.notes)
    # Past a purged archive, one deleted before its expiry is still found.
    path_of(by_period(s)["2026-02"]["uri"]).unlink()
    report = s.verify(deep_archives=True)
    assert (
        not report.ok and "2026-02" in report.problem.detail and "before it expired" in report.problem.detail
    )


def test_tampered_manifest_uri_is_not_obeyed(clocked_store, clock, tmp_path, raw_sql):
    s = clocked_store
    fill_months(s, clock)
    apply_retention(s, policy_for(f"file://{tmp_path}/archive", purge_expired_archives=False))
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    raw_sql("UPDATE loomdb_archives SET uri = ? WHERE period = '2026-01'", (f"file://{victim}",))
    with pytest.raises(RetentionError, match="refusing to delete"):
        apply_retention(s, policy_for(f"file://{tmp_path}/archive"))
    assert victim.read_text() == "keep me" and purges(s) == []
    assert by_period(s)["2026-01"]["purged_at"] is None


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 with the archive bucket; credentials for boto3's own chain."""
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="loomdb-archive")
        yield client


def _keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_s3_purge(clocked_store, clock, s3):
    s = clocked_store
    fill_months(s, clock)
    policy = policy_for("s3://loomdb-archive/prod")
    actions = apply_retention(s, policy)
    assert [(a["action"], a["partition"]) for a in actions][-1] == ("purged", "2026-01")
    assert actions[-1]["object"] == "deleted"
    keys = _keys(s3, "loomdb-archive")
    assert len(keys) == 2 and not any("-2026-01-" in k for k in keys)
    assert apply_retention(s, policy) == [] and len(purges(s)) == 1
    assert s.verify().ok
    assert deep_archive(s, by_period(s)["2026-01"]).rows is None
    # Deleted early from the bucket: reported.
    feb = by_period(s)["2026-02"]
    s3.delete_object(Bucket="loomdb-archive", Key=feb["uri"].removeprefix("s3://loomdb-archive/"))
    with pytest.raises(ArchiveMissing, match="deleted before it expired"):
        deep_archive(s, feb)
    assert not s.verify(deep_archives=True).ok


def test_s3_purge_deletes_every_version_on_a_versioned_bucket(clocked_store, clock, s3):
    """On a versioned bucket a plain DeleteObject only adds a delete marker and the archived
    events stay readable: a purge deletes every version of the object."""
    s3.put_bucket_versioning(Bucket="loomdb-archive", VersioningConfiguration={"Status": "Enabled"})
    s = clocked_store
    fill_months(s, clock)
    apply_retention(s, policy_for("s3://loomdb-archive/prod", purge_expired_archives=False))
    jan = by_period(s)["2026-01"]
    key = jan["uri"].removeprefix("s3://loomdb-archive/")
    body = s3.get_object(Bucket="loomdb-archive", Key=key)["Body"].read()
    s3.put_object(Bucket="loomdb-archive", Key=key, Body=body)  # a second version, same bytes

    def versions() -> list:
        listed = s3.list_object_versions(Bucket="loomdb-archive", Prefix=key)
        return [v for v in listed.get("Versions", []) + listed.get("DeleteMarkers", []) if v["Key"] == key]

    assert len(versions()) == 2
    (done,) = purge_expired(s)
    assert done["partition"] == "2026-01" and done["object"] == "deleted"
    assert versions() == []
    feb = by_period(s)["2026-02"]["uri"].removeprefix("s3://loomdb-archive/")
    assert s3.get_object(Bucket="loomdb-archive", Key=feb)["Body"].read()  # unexpired: kept
    assert s.verify(deep_archives=True).ok


def test_s3_delete_failure_leaves_the_manifest_unpurged(clocked_store, clock, s3, monkeypatch):
    from botocore.exceptions import ClientError

    from loomos.loomdb import archives

    s = clocked_store
    fill_months(s, clock)
    apply_retention(s, policy_for("s3://loomdb-archive/prod", purge_expired_archives=False))

    class Refusing:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def delete_object(self, **_kw):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "DeleteObject")

    with monkeypatch.context() as m:
        m.setattr(archives, "s3_client", lambda: Refusing(s3))
        with pytest.raises(RetentionError, match="cannot delete archive s3://.*AccessDenied"):
            purge_expired(s)
    assert by_period(s)["2026-01"]["purged_at"] is None and purges(s) == []
    assert len(_keys(s3, "loomdb-archive")) == 3
    (done,) = purge_expired(s)  # the store is reachable again
    assert done["partition"] == "2026-01" and len(_keys(s3, "loomdb-archive")) == 2


def test_dry_run_changes_nothing(clocked_store, clock, tmp_path):
    s = clocked_store
    fill_months(s, clock)
    head = s.head()
    policy = policy_for(f"file://{tmp_path}/archive")
    planned = apply_retention(s, policy, dry_run=True)
    assert [(a["action"], a["partition"]) for a in planned] == [
        ("archived", "2026-01"),
        ("archived", "2026-02"),
        ("archived", "2026-03"),
        ("purged", "2026-01"),
    ]
    assert all(a["dry_run"] for a in planned)
    assert s.head() == head and s.archives() == [] and not (tmp_path / "archive").exists()
    done = apply_retention(s, policy)
    assert [(a["action"], a["partition"], a["uri"]) for a in done] == [
        (a["action"], a["partition"], a["uri"]) for a in planned
    ]
    clock.advance(days=7)
    (feb,) = apply_retention(s, policy, dry_run=True)
    assert (feb["action"], feb["partition"], feb["dry_run"]) == ("purged", "2026-02", True)
    assert by_period(s)["2026-02"]["purged_at"] is None and path_of(feb["uri"]).exists()


def test_cli_shows_purges(store_url, tmp_path):
    from datetime import UTC, datetime

    from loomos.cli import app
    from loomos.loomdb import open_event_store

    runner = CliRunner()
    now = [datetime(2026, 1, 10, tzinfo=UTC)]
    s = open_event_store(store_url, clock=lambda: now[0])
    s.append(NewEvent(event_type="custom.old", stream_id="s"))
    s.close()
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"archive_after_days: 30\ndefault_days: 30\narchive_uri: file://{tmp_path}/archive\n")
    args = ["events", "retention", "--db-url", store_url, "--policy", str(policy)]
    r = runner.invoke(app, [*args, "--dry-run", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert [(a["action"], a["dry_run"]) for a in json.loads(r.stdout)] == [
        ("archived", True),
        ("purged", True),
    ]
    r = runner.invoke(app, [*args, "--dry-run"], catch_exceptions=False)
    assert r.exit_code == 0 and "dry run" in r.output and "│ purge " in r.output and "│ archive " in r.output
    assert not (tmp_path / "archive").exists()
    r = runner.invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "│ archived " in r.output and "│ purged " in r.output and "(deleted)" in r.output
    assert list((tmp_path / "archive").iterdir()) == []
    r = runner.invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0 and "nothing to do" in r.output
    assert runner.invoke(app, ["events", "verify", "--db-url", store_url]).exit_code == 0
    policy.write_text(
        f"archive_after_days: 30\npurge_expired_archives: sometimes\narchive_uri: file://{tmp_path}\n"
    )
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "purge_expired_archives" in r.output and "Traceback" not in r.output


def test_migration_adds_and_removes_purged_at(store_url):
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import inspect as sa_inspect

    from loomos.loomdb import open_event_store
    from loomos.loomdb.migrate import MIGRATIONS

    s = open_event_store(store_url)

    def columns() -> set[str]:
        with s.engine.connect() as conn:
            return {c["name"] for c in sa_inspect(conn).get_columns("loomdb_archives")}

    def alembic(action: str, target: str) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with s.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, action)(cfg, target)

    try:
        assert "purged_at" in columns()
        alembic("downgrade", "0002")
        assert "purged_at" not in columns() and "expires_at" in columns()
        alembic("upgrade", "head")
        assert "purged_at" in columns()
    finally:
        s.close()
