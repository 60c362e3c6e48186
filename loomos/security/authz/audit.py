"""Every authorization decision, allowed or denied, as a LoomDB event: the product documents'
`audit_logger.log_access_attempt`, with the types `security.access.granted` and
`security.access.denied`.

An event says who (subject, roles, authentication method), where (team), what (object and
action = the permission), the decision, the policy rule that matched and the policy version,
and where the request came from (source IP, request id) or which workflow asked. Denials are
high priority and carry `data.outcome = "denied"` and `data.reason`, which the compliance
report (loomos.loomdb.analytics.compliance_report) lists.

Writing them must not slow a request down: LoomCtl hands them to authentication's batching
writer (loomos.security.authn.audit.AuditWriter: a queue drained by one thread, one
`append_many` per batch). Admission writes its few directly, with ids derived from the
workflow id, so an activity retry appends nothing twice.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from loomos.models.events import AuditContext, NewEvent, Priority, SecurityContext, utcnow
from loomos.security.authz.engine import Decision

ACCESS_GRANTED = "security.access.granted"
ACCESS_DENIED = "security.access.denied"
ACCESS_NAMESPACE = uuid.UUID("0c8f5a1e-3b7d-5e2a-9c41-7d2b6e8f1a03")
_SAFE_STREAM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,150}$")


@dataclass(frozen=True)
class AccessContext:
    """Where a decision was asked from: a request (source IP, request id) or a workflow."""

    source_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    session_id: str | None = None
    auth_method: str | None = None
    workflow_id: str | None = None
    route: str | None = None


def access_stream(subject: str) -> str:
    """One stream per user's access decisions (`authz-user:alice`)."""
    return f"authz-user:{subject}" if _SAFE_STREAM.match(subject or "") else "authz-unknown-user"


def access_event_id(workflow_id: str, index: int) -> uuid.UUID:
    return uuid.uuid5(ACCESS_NAMESPACE, f"{workflow_id}:admission:{index}")


def access_event(
    decision: Decision,
    obj: str,
    ctx: AccessContext,
    *,
    event_id: uuid.UUID | None = None,
    occurred_at: datetime | None = None,
) -> NewEvent:
    outcome = "granted" if decision.allowed else "denied"
    classification = None
    if decision.permission.startswith("data:read:"):
        classification = decision.permission.removeprefix("data:read:")
    data = {
        "subject": decision.subject,
        "roles": list(decision.roles),
        "team": decision.team,
        "object": obj[:500],
        "action": decision.permission,
        "decision": outcome,
        "outcome": outcome,
        "reason": decision.reason,
        "matched_rule": decision.matched_rule,
        "policy_version": decision.policy_version,
        "source_ip": ctx.source_ip,
        "request_id": ctx.request_id,
        "workflow_id": ctx.workflow_id,
        "route": ctx.route,
    }
    return NewEvent(
        event_id=event_id or uuid.uuid4(),
        event_type=ACCESS_GRANTED if decision.allowed else ACCESS_DENIED,
        stream_id=access_stream(decision.subject),
        occurred_at=occurred_at or utcnow(),
        correlation_id=ctx.workflow_id or ctx.request_id,
        context=AuditContext(
            user_id=decision.subject[:200] or None,
            session_id=ctx.session_id,
            request_id=ctx.request_id and ctx.request_id[:200],
            source_ip=ctx.source_ip and ctx.source_ip[:64],
            user_agent=ctx.user_agent and ctx.user_agent[:500],
            cost_center=decision.team,
        ),
        security=SecurityContext(
            authentication_method=ctx.auth_method,
            roles=list(decision.roles)[:64],
            access_level=decision.permission,
            data_classification=classification,
        ),
        priority=Priority.NORMAL if decision.allowed else Priority.HIGH,
        tags=["security", "authz", f"team:{decision.team}" if decision.team != "*" else "team:all"],
        data={k: v for k, v in data.items() if v is not None},
    )
