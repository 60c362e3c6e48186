"""Authorization for the harnesses: the identity tests act as, LoomCtl apps that authenticate it
without credentials, and the real admission activities on a throwaway database.

Existing tests call the API and start job workflows as an administrator, as they did before
authorization existed; tests of authorization itself (tests/security/authz) use other
identities and the real get_identity.
"""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from temporalio.client import Client

from loomos.activities.admission import AdmissionActivities
from loomos.api.identity import get_identity
from loomos.loomdb import open_event_store
from loomos.models.events import NewEvent
from loomos.models.identity import AuthMethod, Identity
from loomos.security.authz.authorizer import Authorizer, open_authorizer
from loomos.security.authz.ledger import QuotaLedger
from loomos.settings import Settings
from loomos.temporal.identity import acting_as, with_identity_header

TEST_ADMIN = Identity(
    subject="test-admin",
    display_name="the test suite",
    team="default",
    roles={"*": ["platform_admin"]},
    auth_method=AuthMethod.SYSTEM,
    source_ip="127.0.0.1",
)


class MemoryAudit:
    """Keeps access events in memory: a harness app's decisions stay out of the LoomDB a test
    reads (tests of the audit trail use the app's own writer)."""

    def __init__(self) -> None:
        self.events: list[NewEvent] = []

    def record(self, event: NewEvent) -> None:
        self.events.append(event)


_policy: dict[str, Authorizer] = {}


def harness_authorizer() -> Authorizer:
    """One authorizer per test session on a throwaway database (the shipped policy, seeded)."""
    if "default" not in _policy:
        folder = Path(tempfile.mkdtemp(prefix="loomos-harness-policy-"))
        url = f"sqlite:///{folder / 'policy.sqlite'}"
        _policy["default"] = open_authorizer(Settings.model_validate({"loomdb": {"url": url}}), watch=False)
    return _policy["default"]


def authenticated(app: FastAPI, identity: Identity = TEST_ADMIN) -> FastAPI:
    """`app`, answering every request as `identity` (no credentials needed), deciding with the
    shipped policy on a database of the harness's own and keeping its audit in memory."""
    app.dependency_overrides[get_identity] = lambda: identity
    if getattr(app.state, "authorizer", None) is None:
        app.state.authorizer = harness_authorizer()
    if getattr(app.state, "authz_audit", None) is None:
        app.state.authz_audit = MemoryAudit()
    return app


async def start_as(client: Client, identity: Identity, *args: Any, **kwargs: Any) -> Any:
    """client.start_workflow(...) with `identity` in the workflow's headers, as LoomCtl does."""
    with acting_as(identity):
        return await with_identity_header(client).start_workflow(*args, **kwargs)


class AdmissionHarness:
    """The production admission activities (Casbin, the quota ledger, LoomDB for recorded costs
    and access events) on a SQLite file of their own."""

    def __init__(
        self, folder: Path | None = None, sweep_min_age: timedelta | None = None, **authz: Any
    ) -> None:
        self.folder = folder or Path(tempfile.mkdtemp(prefix="loomos-admission-"))
        self.url = f"sqlite:///{self.folder / 'loomdb.sqlite'}"
        self.settings = Settings.model_validate({"loomdb": {"url": self.url}, "security": {"authz": authz}})
        self.authorizer = open_authorizer(self.settings, watch=False)
        self.store = open_event_store(self.url)
        self.ledger = QuotaLedger(self.authorizer.engine)
        extra = {} if sweep_min_age is None else {"sweep_min_age": sweep_min_age}
        self.impl = AdmissionActivities(self.authorizer, self.ledger, self.store, **extra)

    @property
    def activities(self) -> list[Any]:
        return [self.impl.admit_job, self.impl.record_job_usage, self.impl.release_admission]

    def held(self) -> list[str]:
        return [row["workflow_id"] for row in self.ledger.held_anywhere()]

    def close(self) -> None:
        self.authorizer.close()
        self.store.close()
        self.authorizer.engine.dispose()
