"""The audit activity: the job workflow's lifecycle events go into LoomDB.

Event ids are uuid5(AUDIT_NAMESPACE, f"{workflow_id}:{seq}"): an activity retry, or a replayed
workflow sending the same batch again, appends nothing new and gets the original positions.

Mapping of an AuditBatch onto LoomDB events:
- stream_id = the workflow id (`job-<job_id>`), so a job's lifecycle is one stream;
- user_id = batch.user; the team goes into `context.cost_center` (costs roll up by it) and a
  `team:<team>` tag; correlation_id = the job id; causation_id = the previous event of the
  same workflow;
- when an attempt ends (job.retrying, job.succeeded, job.failed, job.cancelled) and the attempt
  was placed on priced slots, a `cost.recorded` event with id uuid5(f"{workflow_id}:{seq}:cost")
  records slots x price x hours between job.started and the end of the attempt.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from loomos.loomdb import EventStore, InvalidEvent, NewEvent
from loomos.models.audit import AuditBatch, AuditEvent
from loomos.temporal import names

AUDIT_NAMESPACE = uuid.UUID("6f1c3a52-8d0e-5b7a-9f43-2c6d1e0a7b18")
ATTEMPT_END_TYPES = ("job.retrying", "job.succeeded", "job.failed", "job.cancelled")


def audit_event_id(workflow_id: str, seq: int, suffix: str = "") -> uuid.UUID:
    return uuid.uuid5(AUDIT_NAMESPACE, f"{workflow_id}:{seq}{suffix}")


def _finite(value: Any, path: str, replaced: list[str]) -> Any:
    """NaN or infinite metrics (a diverging loss) are recorded as null instead of refusing the
    whole batch; the paths are listed in the event's metadata."""
    if isinstance(value, float) and not math.isfinite(value):
        replaced.append(path)
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{path}.{k}", replaced) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v, f"{path}[{i}]", replaced) for i, v in enumerate(value)]
    return value


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def to_new_event(batch: AuditBatch, event: AuditEvent) -> NewEvent:
    replaced: list[str] = []
    data = _finite(dict(event.data), "data", replaced)
    data.setdefault("job_id", batch.job_id)
    metadata: dict[str, Any] = {"seq": event.seq, "source": "job-workflow"}
    if replaced:
        metadata["non_finite"] = replaced
    return NewEvent(
        event_id=audit_event_id(batch.workflow_id, event.seq),
        event_type=event.event_type,
        stream_id=batch.workflow_id,
        occurred_at=_aware(event.occurred_at),
        correlation_id=batch.job_id,
        causation_id=str(audit_event_id(batch.workflow_id, event.seq - 1)) if event.seq > 1 else None,
        context={"user_id": batch.user, "cost_center": batch.team, "project_id": batch.job_id},
        tags=[f"team:{batch.team}"] if batch.team else [],
        data=data,
        metadata=metadata,
    )


def attempt_cost(store: EventStore, batch: AuditBatch, end: AuditEvent) -> NewEvent | None:
    """cost.recorded for the attempt that `end` closes, or None when it never started or has no
    price. Reads the attempt's job.placed and job.started events from the job's stream."""
    data = end.data
    attempt = data.get("attempt") if end.event_type == "job.retrying" else data.get("attempts")
    if not isinstance(attempt, int) or attempt < 1:
        return None
    placed = started = None
    version = 1
    while True:
        events = store.read_stream(batch.workflow_id, from_version=version, limit=1000)
        for e in events:
            if e.data.get("attempt") == attempt and e.event_type == "job.placed":
                placed = e
            elif e.data.get("attempt") == attempt and e.event_type == "job.started":
                started = e
        if len(events) < 1000:
            break
        version = events[-1].stream_version + 1
    if placed is None or started is None:
        return None
    nodes = [n for n in placed.data.get("nodes", []) if isinstance(n, dict)]
    priced = [n for n in nodes if isinstance(n.get("price_per_slot_hour"), int | float)]
    if not priced:
        return None
    hours = max((_aware(end.occurred_at) - started.occurred_at).total_seconds(), 0) / 3600
    slots = sum(int(n.get("slots", 1)) for n in nodes)
    amount = sum(int(n.get("slots", 1)) * float(n["price_per_slot_hour"]) for n in priced) * hours
    return NewEvent(
        event_id=audit_event_id(batch.workflow_id, end.seq, ":cost"),
        event_type="cost.recorded",
        stream_id=batch.workflow_id,
        occurred_at=_aware(end.occurred_at),
        correlation_id=batch.job_id,
        causation_id=str(audit_event_id(batch.workflow_id, end.seq)),
        context={"user_id": batch.user, "cost_center": batch.team, "project_id": batch.job_id},
        tags=[f"team:{batch.team}"] if batch.team else [],
        data={
            "amount_usd": round(amount, 6),
            "gpu_hours": round(slots * hours, 6),
            "gpu_type": str(nodes[0].get("gpu_type", "unknown")),
            "team": batch.team,
            "job_id": batch.job_id,
            "attempt": attempt,
            "outcome": end.event_type,
            # The offer and price the placement recorded (nodes started on a catalog offer).
            **_offer_fields(nodes),
        },
        metadata={"source": "audit-activity", "seq": end.seq},
    )


def _offer_fields(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    records = [n["price"] for n in nodes if isinstance(n.get("price"), dict)]
    if not records:
        return {}
    keys = sorted({str(r.get("offer_key")) for r in records})
    return {
        "provider": str(records[0].get("provider")),
        "offer_keys": keys,
        "pricing_model": str(records[0].get("pricing_model")),
        "catalog_as_of": str(records[0].get("catalog_as_of")),
    }


class AuditActivities:
    """Construct with an open store; register `record_audit_events` with the control worker."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    def _record(self, batch: AuditBatch) -> list[int]:
        positions = self.store.append_many([to_new_event(batch, e) for e in batch.events])
        costs = [
            c
            for e in batch.events
            if e.event_type in ATTEMPT_END_TYPES
            if (c := attempt_cost(self.store, batch, e)) is not None
        ]
        if costs:
            self.store.append_many(costs)
        return positions

    @activity.defn(name=names.RECORD_AUDIT_EVENTS)
    async def record_audit_events(self, batch: AuditBatch) -> list[int]:
        """Implements ControlActivities.record_audit_events: append the batch; returns the
        events' positions (the original ones on a retry)."""
        if not batch.events:
            return []
        try:
            # The store is synchronous: keep the worker's event loop free.
            return await asyncio.to_thread(self._record, batch)
        except InvalidEvent as exc:
            # Retrying cannot make an event valid; fail fast with every violation listed.
            raise ApplicationError(str(exc), type=names.ErrorType.INVALID_EVENT, non_retryable=True) from exc
