"""The audit activity: lifecycle events with derived ids, retries without duplicates, costs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from loomos.activities.audit import AuditActivities, audit_event_id
from loomos.loomdb import EventQuery
from loomos.models.audit import AuditBatch, AuditEvent

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
WF = "job-abc123"


def batch(*events: tuple[int, str, dict, float]) -> AuditBatch:
    return AuditBatch(
        workflow_id=WF,
        job_id="abc123",
        user="alice",
        team="vision",
        events=[
            AuditEvent(seq=s, event_type=t, occurred_at=T0 + timedelta(hours=h), data=d)
            for s, t, d, h in events
        ],
    )


PLACED = {
    "attempt": 1,
    "nodes": [
        {
            "node_id": "n1",
            "task_queue": "q",
            "host": "h",
            "slots": 4,
            "gpu_type": "H100",
            "price_per_slot_hour": 2.5,
        }
    ],
    "price_per_slot_hour": 2.5,
}


async def test_lifecycle_is_recorded_once_and_costed(store):
    acts = AuditActivities(store)
    env = ActivityEnvironment()
    first = batch(
        (1, "job.submitted", {"spec": {"name": "x"}}, 0), (2, "job.queued", {"attempt": 1, "pool": "p"}, 0)
    )
    positions = await env.run(acts.record_audit_events, first)
    assert positions == [1, 2]
    # An activity retry (or a replayed workflow) sends the same batch again: nothing new.
    assert await env.run(acts.record_audit_events, first) == [1, 2]
    await env.run(
        acts.record_audit_events,
        batch((3, "job.placed", PLACED, 0.1), (4, "job.started", {"attempt": 1, "nodes": ["n1"]}, 0.1)),
    )
    end = batch(
        (
            5,
            "model.training.checkpoint",
            {
                "attempt": 1,
                "step": 100,
                "uri": "file:///c/100",
                "metrics": {"loss": 0.5, "bad": float("nan")},
            },
            1,
        ),
        (
            6,
            "job.succeeded",
            {
                "attempts": 1,
                "final_step": 100,
                "metrics": {"loss": 0.5},
                "error": None,
                "last_checkpoint": "file:///c/100",
            },
            2.1,
        ),
    )
    await env.run(acts.record_audit_events, end)
    await env.run(acts.record_audit_events, end)  # retried: no second cost record either
    stream = store.read_stream(WF)
    assert [e.event_type for e in stream] == [
        "job.submitted",
        "job.queued",
        "job.placed",
        "job.started",
        "model.training.checkpoint",
        "job.succeeded",
        "cost.recorded",
    ]
    for e in stream[:6]:
        assert e.event_id == audit_event_id(WF, e.metadata["seq"])
        assert (e.context.user_id, e.context.cost_center, e.correlation_id) == ("alice", "vision", "abc123")
        assert "team:vision" in e.tags
    ckpt = stream[4]
    assert ckpt.data["metrics"] == {"loss": 0.5, "bad": None}
    assert ckpt.metadata["non_finite"] == ["data.metrics.bad"]
    cost = stream[6]
    assert cost.data["gpu_hours"] == pytest.approx(4 * 2.0)
    assert cost.data["amount_usd"] == pytest.approx(4 * 2.5 * 2.0)
    assert (cost.data["gpu_type"], cost.data["team"]) == ("H100", "vision")
    assert store.verify().ok


async def test_cancel_before_placement_has_no_cost(store):
    env = ActivityEnvironment()
    await env.run(
        AuditActivities(store).record_audit_events,
        batch(
            (1, "job.submitted", {"spec": {}}, 0),
            (2, "job.cancelled", {"attempts": 0, "error": "cancelled"}, 1),
        ),
    )
    assert store.query(EventQuery(event_types=["cost.*"])).events == []


async def test_invalid_events_fail_without_retry(store):
    env = ActivityEnvironment()
    with pytest.raises(ApplicationError) as err:
        await env.run(AuditActivities(store).record_audit_events, batch((1, "job.placed", {"attempt": 0}, 0)))
    assert err.value.non_retryable and "nodes" in str(err.value) and "attempt" in str(err.value)
    assert store.head()[0] == 0


async def test_empty_batch(store):
    assert await ActivityEnvironment().run(AuditActivities(store).record_audit_events, batch()) == []
