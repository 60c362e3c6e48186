"""Lifecycle events the job workflow hands to LoomDB (activity `record_audit_events`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditEvent(BaseModel):
    """A lifecycle event the job workflow asks LoomDB to record.

    `seq` is the event's position in its workflow's own sequence; together with the workflow id
    it derives the event id, so activity retries and workflow replays never duplicate an event.
    """

    seq: int
    event_type: str
    occurred_at: datetime
    data: dict[str, Any] = Field(default_factory=dict)


class AuditBatch(BaseModel):
    """Input of `record_audit_events`."""

    workflow_id: str
    job_id: str
    user: str
    team: str
    events: list[AuditEvent]
