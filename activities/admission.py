"""The admission activities: the job workflow's first step (admit_job), and the quota ledger's
bookkeeping while the job runs (record_job_usage) and when it is over (release_admission).

admit_job reads the identity from the workflow's Temporal headers (loomos.temporal.identity),
never from its input. Before deciding (loomos.security.authz.admission) it gathers what the
ledger does not hold: the job's cost estimate from the marketplace catalog, and this month's
recorded spend of the user and the team from LoomDB's `cost.recorded` events. Every access
decision it makes is appended to LoomDB with ids derived from the workflow id (a retry appends
nothing twice).

Reservations normally end through release_admission, which every way out of the job workflow
calls. A workflow that never got there (terminated by an operator, timed out) would hold its
slot forever, so when a team is at its concurrent-job limit admission first asks Temporal
about the workflows holding slots and releases those that are closed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from loomos.loomdb import EventQuery, EventStore, Filter
from loomos.models.admission import AdmissionDecision, AdmissionRelease, AdmissionRequest, UsageMark
from loomos.models.identity import Identity
from loomos.security.authz.admission import Spend, admit
from loomos.security.authz.audit import AccessContext, access_event, access_event_id
from loomos.security.authz.authorizer import Authorizer
from loomos.security.authz.ledger import QuotaLedger, month_start
from loomos.temporal import names
from loomos.temporal.identity import current_identity

log = structlog.get_logger()
# A reservation younger than this is not worth asking Temporal about (its job is starting).
SWEEP_MIN_AGE = timedelta(seconds=30)


def recorded_spend(
    store: EventStore, team: str, subject: str | None, since: datetime, now: datetime
) -> float:
    """USD of LoomDB's cost.recorded events in [since, now) for a team (and one user in it)."""
    filters = [Filter(path="context.cost_center", op="=", value=team)]
    if subject is not None:
        filters.append(Filter(path="context.user_id", op="=", value=subject))
    total, cursor = 0.0, None
    while True:
        query = EventQuery(
            event_types=["cost.recorded"], start=since, end=now, time_field="occurred_at",
            filters=filters, limit=1000, cursor=cursor,
        )  # fmt: skip
        page = store.query(query)
        total += sum(float(e.data.get("amount_usd") or 0) for e in page.events)
        if page.next_cursor is None:
            return total
        cursor = page.next_cursor


def estimate_cost(request: AdmissionRequest) -> tuple[float, str | None]:
    """The marketplace's estimate for the job; 0 with a note when the catalog has no offer for
    it (CPU slots, on-prem nodes): its cost then counts from its placement's price as it runs."""
    from loomos.marketplace.catalog import CatalogError, load_catalog_cached
    from loomos.marketplace.estimate import InfeasibleError, estimate_job_cost
    from loomos.marketplace.optimizer import MarketInputError

    spec = request.spec
    if spec.resources.gpu_count == 0 or spec.resources.gpu_type == "cpu":
        return 0.0, "no GPU offer to price (CPU job): its cost counts from its placement's price"
    try:
        estimate = estimate_job_cost(spec, catalog=load_catalog_cached())
    except (InfeasibleError, MarketInputError, CatalogError) as err:
        return 0.0, f"no marketplace estimate ({err}): its cost counts from its placement's price"
    return float(
        estimate.breakdown.total
    ), f"marketplace estimate ${estimate.breakdown.total:.2f} ({estimate.provider})"


class AdmissionActivities:
    """Construct with the process's authorizer, the ledger and LoomDB; register the three."""

    def __init__(
        self,
        authorizer: Authorizer,
        ledger: QuotaLedger,
        store: EventStore,
        sweep_min_age: timedelta = SWEEP_MIN_AGE,
    ) -> None:
        self.authorizer = authorizer
        self.ledger = ledger
        self.store = store
        self.sweep_min_age = sweep_min_age

    # --- admit ---------------------------------------------------------------------------

    def _spend(self, identity: Identity | None, request: AdmissionRequest, now: datetime) -> Spend:
        if identity is None:
            return Spend()
        cost, note = estimate_cost(request)
        since = month_start(now)
        team = request.spec.team
        return Spend(
            estimated_cost_usd=cost,
            estimate_note=note,
            recorded_user_usd=recorded_spend(self.store, team, identity.subject, since, now),
            recorded_team_usd=recorded_spend(self.store, team, None, since, now),
        )

    async def _sweep(self, identity: Identity, team: str, now: datetime) -> None:
        """Release reservations whose workflows closed without releasing them, when the team
        or the user is at a concurrent-job limit (the only time a stale one matters)."""
        roles = self.authorizer.view.honoured(identity.subject, identity.roles, team)
        limits = [
            c.max_concurrent_jobs
            for c in (self.authorizer.constraints_for(roles), self.authorizer.team_quota(team))
            if c.max_concurrent_jobs is not None
        ]
        held = await asyncio.to_thread(self.ledger.held_anywhere, team)
        if not limits or len(held) < min(limits):
            return
        client = activity.client()
        for row in held:
            decided = row["decided_at"]
            decided = decided if decided.tzinfo else decided.replace(tzinfo=UTC)
            if now - decided < self.sweep_min_age:
                continue
            try:
                desc = await client.get_workflow_handle(row["workflow_id"]).describe()
                closed = desc.status != WorkflowExecutionStatus.RUNNING
                why = f"workflow {desc.status.name.lower() if desc.status else 'closed'} without releasing"
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    continue
                closed, why = True, "workflow not found"
            if closed:
                await asyncio.to_thread(self.ledger.release, row["workflow_id"], why, now)
                log.warning(
                    "released a reservation its workflow left behind", workflow_id=row["workflow_id"], why=why
                )

    def _audit(
        self, request: AdmissionRequest, identity: Identity | None, access: list[Any], now: datetime
    ) -> None:
        if not access:
            return
        ctx = AccessContext(
            source_ip=identity.source_ip if identity else None,
            request_id=identity.request_id if identity else None,
            session_id=identity.session_id if identity else None,
            auth_method=str(identity.auth_method.value) if identity else None,
            workflow_id=request.workflow_id,
            route="admission",
        )
        events = [
            access_event(d, obj, ctx, event_id=access_event_id(request.workflow_id, i), occurred_at=now)
            for i, (d, obj) in enumerate(access)
        ]
        self.store.append_many(events)

    @activity.defn(name=names.ADMIT_JOB)
    async def admit_job(self, request: AdmissionRequest) -> AdmissionDecision:
        """Implements ControlActivities.admit_job."""
        identity = current_identity()
        now = datetime.now(UTC)
        await asyncio.to_thread(self.authorizer.reload_if_changed)
        spend = await asyncio.to_thread(self._spend, identity, request, now)
        if identity is not None:
            await self._sweep(identity, request.spec.team, now)
        decision, access = await asyncio.to_thread(
            admit, self.authorizer, self.ledger, identity, request, spend, now
        )
        await asyncio.to_thread(self._audit, request, identity, access, now)
        log.info(
            "job admission", workflow_id=request.workflow_id, admitted=decision.admitted,
            subject=decision.subject, team=decision.team, reason=decision.reason,
        )  # fmt: skip
        return decision

    # --- while it runs, and after ----------------------------------------------------------

    @activity.defn(name=names.RECORD_JOB_USAGE)
    async def record_job_usage(self, mark: UsageMark) -> None:
        """Implements ControlActivities.record_job_usage."""
        await asyncio.to_thread(
            self.ledger.mark,
            mark.workflow_id,
            mark.attempt,
            mark.event,
            mark.at,
            mark.gpus,
            mark.price_per_gpu_hour,
        )

    @activity.defn(name=names.RELEASE_ADMISSION)
    async def release_admission(self, release: AdmissionRelease) -> bool:
        """Implements ControlActivities.release_admission."""
        return await asyncio.to_thread(self.ledger.release, release.workflow_id, release.reason, release.at)
