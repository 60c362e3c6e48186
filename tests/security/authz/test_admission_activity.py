"""What the admit_job activity gathers before deciding: this month's recorded spend from
LoomDB's cost.recorded events (per user and team), and the marketplace's estimate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loomos.activities.admission import estimate_cost, recorded_spend
from loomos.loomdb import NewEvent, open_event_store
from loomos.models.admission import AdmissionRequest
from loomos.models.events import AuditContext
from loomos.models.spec import parse_spec
from loomos.security.authz.ledger import month_start

NOW = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)


def cost(amount: float, user: str, team: str, at: datetime) -> NewEvent:
    return NewEvent(
        event_type="cost.recorded",
        stream_id=f"job-{user}-{team}",
        occurred_at=at,
        context=AuditContext(user_id=user, cost_center=team),
        data={"amount_usd": amount, "team": team},
    )


def test_recorded_spend_this_month_per_user_and_team(sqlite_url: str) -> None:
    store = open_event_store(sqlite_url)
    store.append_many(
        [
            cost(100.5, "alice", "vision", NOW - timedelta(days=2)),
            cost(20, "alice", "vision", NOW - timedelta(hours=1)),
            cost(7, "bob", "vision", NOW - timedelta(days=1)),
            cost(1000, "alice", "nlp", NOW - timedelta(days=1)),  # another team
            cost(5000, "alice", "vision", month_start(NOW) - timedelta(seconds=1)),  # last month
        ]
    )
    since = month_start(NOW)
    assert recorded_spend(store, "vision", "alice", since, NOW) == 120.5
    assert recorded_spend(store, "vision", None, since, NOW) == 127.5
    assert recorded_spend(store, "nlp", "alice", since, NOW) == 1000
    assert recorded_spend(store, "audio", None, since, NOW) == 0
    store.close()


def request(**spec: object) -> AdmissionRequest:
    return AdmissionRequest(
        workflow_id="job-x",
        job_id="x",
        spec=parse_spec({"name": "x", "entrypoint": "t.py", **spec}),
        submitted_at=NOW,
    )


def test_the_marketplace_estimates_gpu_jobs_and_cpu_jobs_cost_from_their_placement() -> None:
    usd, note = estimate_cost(request(resources={"gpu_count": 8, "gpu_type": "H100"}, max_runtime_hours=2))
    assert usd > 0 and note and note.startswith("marketplace estimate $")
    usd, note = estimate_cost(request(resources={"gpu_count": 2, "gpu_type": "cpu"}))
    assert usd == 0 and "CPU job" in (note or "")
    usd, note = estimate_cost(request(resources={"gpu_count": 1, "gpu_type": "NO-SUCH-GPU"}))
    assert usd == 0 and "no marketplace estimate" in (note or "")
