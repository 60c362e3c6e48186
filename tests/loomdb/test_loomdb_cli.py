"""`loomos events query|tail|verify` and `loomos compliance report` against a real store."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from loomos.cli import app
from loomos.loomdb import NewEvent

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def seeded(store, store_url):
    store.append_many(
        [
            NewEvent(
                event_type="custom.metric",
                stream_id="run-1",
                context={"user_id": "alice"},
                data={"step": i, "hw": {"gpus": i}},
            )
            for i in range(6)
        ]
    )
    store.append(
        NewEvent(
            event_type="security.access.denied",
            stream_id="api",
            context={"user_id": "mallory"},
            data={"reason": "no role"},
        )
    )
    return store_url


def test_query(seeded):
    r = run(
        "events",
        "query",
        "--db-url",
        seeded,
        "--type",
        "custom.metric",
        "--filter",
        "data.hw.gpus >= 4",
        "--json",
    )
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["data"]["step"] for line in r.stdout.splitlines()] == [4, 5]
    r = run("events", "query", "--db-url", seeded, "--limit", "2")
    assert r.exit_code == 0 and "custom.metric" in r.stdout and "more: --cursor" in r.stdout


def test_tail_from_a_position(seeded):
    r = run("events", "tail", "--db-url", seeded, "--from-position", "4", "--count", "2", "--json")
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["position"] for line in r.stdout.splitlines()] == [5, 6]


def test_tail_with_a_consumer_resumes(seeded, store):
    r = run("events", "tail", "--db-url", seeded, "--consumer", "cli", "--count", "3", "--json")
    assert [json.loads(x)["position"] for x in r.stdout.splitlines()] == [1, 2, 3]
    r = run("events", "tail", "--db-url", seeded, "--consumer", "cli", "--count", "2", "--json")
    assert [json.loads(x)["position"] for x in r.stdout.splitlines()] == [4, 5]


def test_verify(seeded, raw_sql):
    r = run("events", "verify", "--db-url", seeded)
    assert r.exit_code == 0 and "7 events verified" in r.stdout
    raw_sql("DELETE FROM loomdb_events WHERE position = 3")
    r = run("events", "verify", "--db-url", seeded)
    assert r.exit_code == 1 and "deleted" in r.stdout and "position 3" in r.stdout
    r = run("events", "verify", "--db-url", seeded, "--json")
    assert json.loads(r.stdout)["problem"]["position"] == 3


def test_compliance_report(seeded, tmp_path):
    r = run("compliance", "report", "--db-url", seeded, "--start", "2020-01-01", "--end", "2100-01-01")
    assert r.exit_code == 0 and "mallory" in r.stdout and "Denials" in r.stdout
    out = tmp_path / "report.csv"
    r = run(
        "compliance",
        "report",
        "--db-url",
        seeded,
        "--start",
        "2020-01-01",
        "--end",
        "2100-01-01",
        "--format",
        "csv",
        "--output",
        str(out),
    )
    assert r.exit_code == 0 and out.read_text().startswith("section,")
    r = run(
        "compliance",
        "report",
        "--db-url",
        seeded,
        "--start",
        "2020-01-01",
        "--end",
        "2100-01-01",
        "--format",
        "json",
    )
    assert json.loads(r.stdout)["totals"]["denials"] == 1


@pytest.mark.parametrize(
    "args, needle",
    [
        (["events", "query", "--filter", "nonsense"], "PATH OP VALUE"),
        (["events", "query", "--cursor", "zzz"], "cursor"),
        (["events", "query", "--since", "last tuesday"], "ISO 8601"),
        (["events", "query", "--order", "up"], "asc or desc"),
        (["events", "query", "--since", "2026-02-01", "--until", "2026-01-01"], "--until"),
        (["events", "query", "--limit", "0"], "--limit"),
        (["events", "tail", "--consumer", "bad name"], "consumer name"),
        (["compliance", "report", "--start", "2026-02-01", "--end", "2026-01-01"], "after start"),
        (
            ["compliance", "report", "--start", "2026-01-01", "--end", "2026-02-01", "--format", "xml"],
            "table, json",
        ),
    ],
)
def test_bad_input_is_one_line(seeded, args, needle):
    r = runner.invoke(app, [*args, "--db-url", seeded])
    assert r.exit_code == 2, r.output
    assert needle in r.output and "Traceback" not in r.output


def test_unreachable_database_is_one_line(tmp_path):
    # An unreachable database is a failure, not bad input: exit 1 (the CLI's one rule, loomos.cli.errors).
    r = runner.invoke(app, ["events", "verify", "--db-url", "postgresql://nobody@127.0.0.1:1/none"])
    assert r.exit_code == 1 and "cannot use LoomDB" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["events", "verify", "--db-url", "mysql://x/y"])
    assert r.exit_code == 2 and "unsupported" in r.output


def test_retention(store_url, tmp_path):
    from datetime import UTC, datetime

    from loomos.loomdb import open_event_store

    now = [datetime(2026, 1, 10, tzinfo=UTC)]
    s = open_event_store(store_url, clock=lambda: now[0])
    s.append(NewEvent(event_type="custom.old", stream_id="s"))
    s.close()
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"archive_after_days: 30\narchive_uri: file://{tmp_path}/archive\n")
    r = run("events", "retention", "--db-url", store_url, "--policy", str(policy), "--json")
    assert r.exit_code == 0, r.output
    assert [a["partition"] for a in json.loads(r.stdout)] == ["2026-01"]
    assert run("events", "verify", "--db-url", store_url).exit_code == 0
    policy.write_text("archive_after_days: 0\narchive_uri: ftp://nowhere\n")
    r = runner.invoke(app, ["events", "retention", "--db-url", store_url, "--policy", str(policy)])
    assert r.exit_code == 2 and "archive_after_days" in r.output and "Traceback" not in r.output
    policy.write_text("[1, 2")
    r = runner.invoke(app, ["events", "retention", "--db-url", store_url, "--policy", str(policy)])
    assert r.exit_code == 2 and "not valid YAML" in r.output
