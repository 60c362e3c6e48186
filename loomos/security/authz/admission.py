"""Admission: may this identity run this job now? The job workflow's first step asks (through
the `admit_job` activity), after LoomCtl's route already checked `jobs:create`: policies change
and quotas fill between the request and the job's start, so the decision of record is this one.

What is checked, in order (the first failure decides, every check is listed in the decision):
1. an identity came with the workflow (in its Temporal headers), and it holds `jobs:create` in
   the job's team; submitting for another user needs `jobs:admin` there as well;
2. `data:read:<classification>` for every dataset the spec declares;
3. the constraints of the identity's roles in the team (the most permissive of them,
   loomos.security.authz.authorizer.most_permissive) and the team's quota from the settings:
   max_gpus_per_job, allowed_datasets, allowed_environments, max_concurrent_jobs,
   max_gpu_hours_per_month (GPU-hours run this month, running attempts up to now: reached
   means no more), cost_limit_per_month (LoomDB's cost.recorded this month + what running
   attempts have cost so far + this job's marketplace estimate must stay within it).

The limits that count jobs and hours are decided and the reservation written in one ledger
transaction that serialises the team's deciders; the decision is stored under the workflow id,
so asking again (an activity retry) returns it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from loomos.models.admission import AdmissionCheck, AdmissionDecision, AdmissionRequest
from loomos.models.identity import Identity
from loomos.models.permissions import Permission
from loomos.security.authz.authorizer import Authorizer
from loomos.security.authz.engine import Decision
from loomos.security.authz.ledger import QuotaLedger, month_start
from loomos.security.authz.settings import Constraints

NO_IDENTITY = "no identity came with the job (it was not submitted through LoomCtl)"


@dataclass(frozen=True)
class Spend:
    """What admission cannot read from the ledger: LoomDB's recorded costs this month and the
    marketplace's estimate for the job (both gathered by the activity before deciding)."""

    estimated_cost_usd: float = 0.0
    estimate_note: str | None = None
    recorded_user_usd: float = 0.0
    recorded_team_usd: float = 0.0


@dataclass
class _Evaluation:
    checks: list[AdmissionCheck] = field(default_factory=list)
    access: list[tuple[Decision, str]] = field(default_factory=list)
    refused: str | None = None

    def check(
        self, name: str, passed: bool, detail: str, limit: float | None = None, value: float | None = None
    ) -> bool:
        self.checks.append(AdmissionCheck(name=name, passed=passed, detail=detail, limit=limit, value=value))
        if not passed and self.refused is None:
            self.refused = detail
        return passed


def gpus_of(request: AdmissionRequest) -> int:
    r = request.spec.resources
    return r.gpu_count * r.nodes


def estimated_hours(request: AdmissionRequest) -> float:
    spec = request.spec
    return spec.marketplace.expected_runtime_hours or spec.max_runtime_hours


def _permissions(
    ev: _Evaluation, authorizer: Authorizer, identity: Identity, request: AdmissionRequest
) -> list[str]:
    spec = request.spec
    team = spec.team
    job = f"job:{request.job_id}"

    def ask(permission: str, obj: str) -> Decision:
        decision = authorizer.decide(identity.subject, team, permission, identity.roles, identity.permissions)
        ev.access.append((decision, obj))
        ev.check(
            permission,
            decision.allowed,
            decision.reason if not decision.allowed else f"{permission} in team {team}",
        )
        return decision

    first = ask(Permission.JOBS_CREATE, job)
    if first.allowed and spec.user != identity.subject:
        ask(Permission.JOBS_ADMIN, f"{job} for user {spec.user}")
    for dataset in spec.datasets:
        ask(f"data:read:{dataset.classification.value}", f"dataset:{dataset.name}")
    return list(first.roles)


def _static_limits(ev: _Evaluation, scope: str, limits: Constraints, request: AdmissionRequest) -> None:
    spec = request.spec
    gpus = gpus_of(request)
    if limits.max_gpus_per_job is not None:
        ev.check(
            "max_gpus_per_job", gpus <= limits.max_gpus_per_job,
            f"the job asks for {gpus} GPUs; {scope} allows {limits.max_gpus_per_job} per job",
            limits.max_gpus_per_job, gpus,
        )  # fmt: skip
    if limits.allowed_datasets is not None:
        allowed = set(limits.allowed_datasets)
        for d in spec.datasets:
            ok = d.classification.value in allowed or d.name in allowed
            ev.check(
                "allowed_datasets",
                ok,
                f"dataset {d.name} ({d.classification.value}) is not allowed for {scope}",
            )
    if limits.allowed_environments is not None and spec.environment is not None:
        ok = spec.environment in limits.allowed_environments
        allowed = ", ".join(limits.allowed_environments)
        ev.check(
            "allowed_environments", ok,
            f"environment {spec.environment} is not allowed for {scope} ({allowed})",
        )  # fmt: skip


def _counted_limits(
    ev: _Evaluation, scope: str, limits: Constraints, held: int, gpu_hours: float, cost: float
) -> None:
    if limits.max_concurrent_jobs is not None:
        ev.check(
            "max_concurrent_jobs", held < limits.max_concurrent_jobs,
            f"{held} jobs admitted and not finished; {scope} allows {limits.max_concurrent_jobs} at once",
            limits.max_concurrent_jobs, held,
        )  # fmt: skip
    if limits.max_gpu_hours_per_month is not None:
        ev.check(
            "max_gpu_hours_per_month", gpu_hours < limits.max_gpu_hours_per_month,
            f"{gpu_hours:.2f} GPU-hours used this month; {scope} allows {limits.max_gpu_hours_per_month:g}",
            limits.max_gpu_hours_per_month, gpu_hours,
        )  # fmt: skip
    if limits.cost_limit_per_month is not None:
        ev.check(
            "cost_limit_per_month", cost <= limits.cost_limit_per_month,
            f"${cost:.2f} this month with this job's estimate; "
            f"{scope} allows ${limits.cost_limit_per_month:g}",
            limits.cost_limit_per_month, cost,
        )  # fmt: skip


def admit(
    authorizer: Authorizer,
    ledger: QuotaLedger,
    identity: Identity | None,
    request: AdmissionRequest,
    spend: Spend,
    now: datetime,
) -> tuple[AdmissionDecision, list[tuple[Decision, str]]]:
    """Decide and, when admitted, reserve; (the decision, the access decisions made for the
    audit trail: none when the workflow had already been decided)."""
    spec = request.spec
    team = spec.team
    with ledger.transaction(team) as conn:
        known = ledger.find(conn, request.workflow_id)
        if known is not None:
            if known["detail"]:
                return AdmissionDecision.model_validate(known["detail"]), []
            return AdmissionDecision(
                admitted=known["decision"] == "admitted", reason=known["reason"], team=team
            ), []
        ev = _Evaluation()
        roles: list[str] = []
        subject = identity.subject if identity is not None else None
        if identity is None:
            ev.check("identity", False, NO_IDENTITY)
        else:
            roles = _permissions(ev, authorizer, identity, request)
        if ev.refused is None and identity is not None:
            role_limits = authorizer.constraints_for(roles)
            team_limits = authorizer.team_quota(team)
            who = f"role {'/'.join(roles)}" if roles else "no role"
            _static_limits(ev, who, role_limits, request)
            _static_limits(ev, f"team {team}", team_limits, request)
            if spend.estimate_note:
                ev.checks.append(
                    AdmissionCheck(name="cost_estimate", passed=True, detail=spend.estimate_note)
                )
            since = month_start(now)
            mine = ledger.usage(conn, team, since, now, identity.subject)
            ours = ledger.usage(conn, team, since, now)
            _counted_limits(
                ev, who, role_limits, len(ledger.held(conn, team, identity.subject)), mine.gpu_hours,
                spend.recorded_user_usd + mine.open_cost_usd + spend.estimated_cost_usd,
            )  # fmt: skip
            _counted_limits(
                ev, f"team {team}", team_limits, len(ledger.held(conn, team)), ours.gpu_hours,
                spend.recorded_team_usd + ours.open_cost_usd + spend.estimated_cost_usd,
            )  # fmt: skip
        gpus = gpus_of(request)
        decision = AdmissionDecision(
            admitted=ev.refused is None,
            reason=ev.refused,
            subject=subject,
            team=team,
            roles=roles,
            policy_version=authorizer.version,
            estimated_gpu_hours=round(gpus * estimated_hours(request), 6),
            estimated_cost_usd=round(spend.estimated_cost_usd, 6),
            checks=ev.checks,
        )
        ledger.record(
            conn,
            workflow_id=request.workflow_id,
            job_id=request.job_id,
            subject=subject or "",
            owner=spec.user,
            team=team,
            decision="admitted" if decision.admitted else "rejected",
            reason=decision.reason,
            detail=decision.model_dump(mode="json"),
            gpus=gpus,
            est_gpu_hours=decision.estimated_gpu_hours,
            est_cost_usd=decision.estimated_cost_usd,
            policy_version=decision.policy_version,
            decided_at=now,
            # A rejected job holds nothing: its row is released as it is written.
            released_at=None if decision.admitted else now,
            release_reason=None if decision.admitted else "rejected",
        )
    return decision, ev.access
