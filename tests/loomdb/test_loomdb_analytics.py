"""Success rates, costs and compliance reports on both backends."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime

import pytest

from loomos.loomdb import NewEvent, QueryError
from loomos.loomdb.analytics import compliance_report, cost_by, report_csv, success_rate

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(month: int, day: int = 5) -> datetime:
    return datetime(2026, month, day, 12, tzinfo=UTC)


@pytest.fixture
def history(store):
    runs = [  # (month, gpu_type, outcome)
        (1, "H100", "job.succeeded"),
        (1, "H100", "job.failed"),
        (1, "A100", "job.succeeded"),
        (2, "H100", "job.succeeded"),
        (2, "H100", "job.succeeded"),
        (2, "A100", "job.failed"),
    ]
    for i, (month, gpu, outcome) in enumerate(runs):
        store.append(
            NewEvent(
                event_type=outcome,
                stream_id=f"job-{i}",
                occurred_at=at(month),
                data={"job_id": str(i), "attempts": 1, "hardware_config": {"gpu_type": gpu}},
            )
        )
    costs = [("vision", "H100", 10.0, 2), ("vision", "A100", 2.5, 1), ("nlp", "H100", 4.0, 1)]
    for team, gpu, amount, hours in costs:
        store.append(
            NewEvent(
                event_type="cost.recorded",
                stream_id="costs",
                occurred_at=at(1),
                context={"cost_center": f"cc-{team}"},
                data={"amount_usd": amount, "gpu_hours": hours, "gpu_type": gpu, "team": team},
            )
        )
    ds = str(uuid.uuid4())
    access = [
        ("alice", "confidential", "read"),
        ("bob", "confidential", "export"),
        ("alice", "public", "read"),
    ]
    for user, cls, kind in access:
        store.append(
            NewEvent(
                event_type="data.accessed",
                stream_id=f"dataset-{ds}",
                occurred_at=at(1, 7),
                context={"user_id": user},
                security={"data_classification": cls},
                data={"dataset_id": ds, "access_type": kind},
            )
        )
    store.append(
        NewEvent(
            event_type="security.access.denied",
            stream_id="api",
            occurred_at=at(1, 8),
            context={"user_id": "mallory", "source_ip": "203.0.113.9"},
            data={"reason": "role ml-viewer may not submit jobs", "resource": "jobs"},
        )
    )
    store.append(
        NewEvent(
            event_type="custom.approval",
            stream_id="deploy",
            occurred_at=at(1, 9),
            context={"user_id": "eve"},
            data={"outcome": "denied", "reason": "=cmd|' /C calc'!A0"},
        )
    )
    store.append(
        NewEvent(event_type="custom.later", stream_id="x", occurred_at=at(3), context={"user_id": "zed"})
    )
    return store


def test_success_rate_by_any_path_per_month(history):
    got = success_rate(history, "data.hardware_config.gpu_type")
    assert [(r["month"], r["group"], r["succeeded"], r["runs"]) for r in got] == [
        ("2026-01", "A100", 1, 1),
        ("2026-01", "H100", 1, 2),
        ("2026-02", "A100", 0, 1),
        ("2026-02", "H100", 2, 2),
    ]
    assert got[1]["success_rate"] == 0.5
    only_feb = success_rate(history, "event_type", start=at(2, 1), end=at(3, 1))
    assert {(r["group"], r["runs"]) for r in only_feb} == {("job.succeeded", 2), ("job.failed", 1)}


def test_cost_aggregation(history):
    by_team = {r["team"]: r for r in cost_by(history, "team")}
    assert by_team["vision"]["amount_usd"] == 12.5 and by_team["vision"]["gpu_hours"] == 3
    assert by_team["nlp"]["amount_usd"] == 4.0
    by_gpu = {r["gpu_type"]: r["amount_usd"] for r in cost_by(history, "gpu_type")}
    assert by_gpu == {"H100": 14.0, "A100": 2.5}
    by_cc = {r["cost_center"]: r["records"] for r in cost_by(history, "cost_center")}
    assert by_cc == {"cc-vision": 2, "cc-nlp": 1}


@pytest.mark.parametrize("path", ["data", "nope", "data.x'; DROP TABLE loomdb_events; --", "tags"])
def test_bad_group_paths(history, path):
    with pytest.raises(QueryError):
        success_rate(history, path)


def test_compliance_report(history):
    rep = compliance_report(history, at(1, 1), at(2, 1))
    who = {(r["user_id"], r["event_type"]): r["count"] for r in rep["access_audit"]}
    assert who[("alice", "data.accessed")] == 2 and who[("bob", "data.accessed")] == 1
    assert ("zed", "custom.later") not in who  # outside the range
    assert [(d["user_id"], d["event_type"]) for d in rep["denials"]] == [
        ("mallory", "security.access.denied"),
        ("eve", "custom.approval"),
    ]
    assert rep["denials"][0]["source_ip"] == "203.0.113.9"
    assert rep["denials"][0]["reason"] == "role ml-viewer may not submit jobs"
    by_class = {
        r["data_classification"]: (r["count"], r["users"]) for r in rep["data_access_by_classification"]
    }
    assert by_class == {"confidential": (2, 2), "public": (1, 1)}
    assert rep["totals"]["denials"] == 2
    rows = list(csv.DictReader(io.StringIO(report_csv(rep))))
    assert {r["section"] for r in rows} == {"access_audit", "denials", "data_access_by_classification"}
    assert any(r["user_id"] == "mallory" and r["section"] == "denials" for r in rows)
    # A value that a spreadsheet would run as a formula is neutralised.
    assert all(not (r["reason"] or "").startswith("=") for r in rows)


def test_compliance_report_bad_ranges(history):
    with pytest.raises(QueryError, match="after start"):
        compliance_report(history, at(2), at(1))
    with pytest.raises(QueryError, match="timezone"):
        compliance_report(history, datetime(2026, 1, 1), at(2))
