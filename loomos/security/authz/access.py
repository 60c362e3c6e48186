"""One caller's authorization checks, each recorded in the audit trail as it is decided.

LoomCtl builds one per request (loomos.api.permissions), bound to the request's identity and
origin; a service asks it about the object at hand (`access.check(JOBS_READ, job_team, ...)`)
after the route's own check of the caller's team.
"""

from __future__ import annotations

from typing import Protocol

from loomos.models.events import NewEvent
from loomos.models.identity import Identity
from loomos.security.authz.audit import AccessContext, access_event
from loomos.security.authz.authorizer import Authorizer
from loomos.security.authz.engine import Decision


class AccessRecorder(Protocol):
    """Where access events go: a batching writer (loomos.security.authn.audit.AuditWriter)."""

    def record(self, event: NewEvent) -> None: ...


class Authorized(Protocol):
    """An authenticated caller that can be asked about objects (loomos.api.permissions.Caller):
    what services take, so they need no FastAPI."""

    identity: Identity

    def allowed(self, permission: str, team: str | None = None, obj: str = "") -> bool: ...

    def require(self, permission: str, team: str | None = None, obj: str = "") -> Decision: ...


class Access:
    def __init__(
        self, authorizer: Authorizer, identity: Identity, recorder: AccessRecorder, context: AccessContext
    ) -> None:
        self.authorizer = authorizer
        self.identity = identity
        self.recorder = recorder
        self.context = context

    def check(
        self, permission: str, team: str | None = None, obj: str = "", *, record_denial: bool = True
    ) -> Decision:
        """Decide (in the identity's team unless `team` is given) and record the decision.
        `record_denial=False` for a question that only narrows what the caller sees (may they
        see every team?): a "no" there is not an access attempt that failed."""
        identity = self.identity
        decision = self.authorizer.decide(
            identity.subject, team or identity.team, permission, identity.roles, identity.permissions
        )
        if decision.allowed or record_denial:
            self.recorder.record(access_event(decision, obj or f"team:{decision.team}", self.context))
        return decision

    def allowed(self, permission: str, team: str | None = None, obj: str = "") -> bool:
        return self.check(permission, team, obj).allowed
