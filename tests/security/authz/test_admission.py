"""Admission and the quota ledger: permissions, datasets, role and team constraints, accrual of
GPU-hours and cost from runtime, one decision per workflow, and no squeezing two jobs into one
free slot when submits race (real threads, on SQLite and on Postgres)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loomos.models.admission import AdmissionDecision, AdmissionRequest
from loomos.models.identity import Identity
from loomos.models.spec import parse_spec
from loomos.security.authz.admission import NO_IDENTITY, Spend, admit
from loomos.security.authz.authorizer import Authorizer
from loomos.security.authz.ledger import QuotaLedger, month_start
from tests.security.authz.conftest import identity

NOW = datetime(2026, 7, 15, 12, 0, tzinfo=UTC)
SCIENTIST = identity("sci", "vision", {"vision": ["data_scientist"]})
ENGINEER = identity("eng", "vision", {"vision": ["ml_engineer"]})
ADMIN = identity("root", "vision", {"*": ["platform_admin"]})


def request(**spec: Any) -> AdmissionRequest:
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    body = {
        "name": "train",
        "entrypoint": "train.py",
        "team": "vision",
        "user": spec.pop("user", "sci"),
        **spec,
    }
    return AdmissionRequest(
        workflow_id=f"job-{job_id}", job_id=job_id, spec=parse_spec(body), submitted_at=NOW
    )


class Admitter:
    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer
        self.ledger = QuotaLedger(authorizer.engine)

    def __call__(
        self,
        who: Identity | None,
        req: AdmissionRequest | None = None,
        spend: Spend | None = None,
        now: datetime = NOW,
    ) -> AdmissionDecision:
        req = req or request(user=who.subject if who else "nobody")
        decision, _ = admit(self.authorizer, self.ledger, who, req, spend or Spend(), now)
        return decision

    def held(self, team: str = "vision", subject: str | None = None) -> int:
        with self.ledger.engine.connect() as conn:
            return len(self.ledger.held(conn, team, subject))


@pytest.fixture
def admitter(authorizer: Authorizer) -> Admitter:
    return Admitter(authorizer)


def failed(decision: AdmissionDecision) -> str:
    assert not decision.admitted, decision
    return next(c.name for c in decision.checks if not c.passed)


def test_an_allowed_job_is_admitted_and_holds_a_slot(admitter: Admitter) -> None:
    decision = admitter(SCIENTIST)
    assert decision.admitted and decision.subject == "sci" and decision.roles == ["data_scientist"]
    assert [c.name for c in decision.checks if c.name.startswith("jobs:")] == ["jobs:create"]
    assert admitter.held(subject="sci") == 1


def test_no_identity_no_role_or_no_permission_is_rejected(admitter: Admitter) -> None:
    decision = admitter(None)
    assert decision.reason == NO_IDENTITY
    assert "missing permission jobs:create in team vision (no role)" in admitter(identity("x")).reason
    reader = identity("ann", "vision", {"vision": ["auditor_that_does_not_exist"]})
    assert not admitter(reader).admitted
    assert admitter.held() == 0  # rejected jobs hold nothing


def test_submitting_for_someone_else_needs_jobs_admin(admitter: Admitter) -> None:
    decision = admitter(ENGINEER, request(user="somebody-else"))
    assert failed(decision) == "jobs:admin"
    assert admitter(ADMIN, request(user="somebody-else")).admitted


def test_datasets_need_their_classifications_read_permission(admitter: Admitter) -> None:
    public = [{"name": "mnist", "classification": "public"}, {"name": "wiki", "classification": "internal"}]
    assert admitter(SCIENTIST, request(datasets=public)).admitted
    secret = [*public, {"name": "patients", "classification": "confidential"}]
    decision = admitter(SCIENTIST, request(datasets=secret))
    assert failed(decision) == "data:read:confidential"
    assert "missing permission data:read:confidential" in decision.reason
    assert admitter(ADMIN, request(datasets=secret)).admitted


def test_allowed_datasets_and_environments(admitter: Admitter) -> None:
    # A custom role that may read anything, but whose constraint allows public data only.
    from loomos.security.authz.administration import PolicyAdmin
    from loomos.security.authz.settings import Constraints

    limits = Constraints(allowed_datasets=["public", "cifar"])
    admin = PolicyAdmin(admitter.authorizer)
    admin.put_role("contractor", ["jobs:create", "data:read:*"], constraints=limits, by=None)
    contractor = identity("con", "vision", {"vision": ["contractor"]})
    assert admitter(
        contractor, request(user="con", datasets=[{"name": "cifar", "classification": "internal"}])
    ).admitted
    decision = admitter(
        contractor, request(user="con", datasets=[{"name": "x", "classification": "internal"}])
    )
    assert failed(decision) == "allowed_datasets" and "dataset x (internal) is not allowed" in decision.reason
    assert admitter(ENGINEER, request(user="eng", environment="staging")).admitted
    decision = admitter(ENGINEER, request(user="eng", environment="research"))
    assert failed(decision) == "allowed_environments"


def test_max_gpus_per_job(make_authorizer: Callable[..., Authorizer], sqlite_url: str) -> None:
    admitter = Admitter(
        make_authorizer(sqlite_url, role_constraints={"data_scientist": {"max_gpus_per_job": 8}})
    )
    assert admitter(SCIENTIST, request(resources={"gpu_count": 4, "nodes": 2})).admitted
    decision = admitter(SCIENTIST, request(resources={"gpu_count": 8, "nodes": 2}))
    assert failed(decision) == "max_gpus_per_job" and "16 GPUs" in decision.reason


def test_max_concurrent_jobs_and_release(make_authorizer: Callable[..., Authorizer], sqlite_url: str) -> None:
    admitter = Admitter(
        make_authorizer(sqlite_url, role_constraints={"data_scientist": {"max_concurrent_jobs": 2}})
    )
    first, second = request(), request()
    assert admitter(SCIENTIST, first).admitted and admitter(SCIENTIST, second).admitted
    third = admitter(SCIENTIST)
    assert failed(third) == "max_concurrent_jobs" and "2 jobs admitted and not finished" in third.reason
    # Someone else in the team is not affected by this user's count.
    assert admitter(identity("other", "vision", {"vision": ["data_scientist"]})).admitted
    assert admitter.ledger.release(first.workflow_id, "succeeded", NOW) is True
    assert admitter.ledger.release(first.workflow_id, "succeeded", NOW) is False  # once
    assert admitter(SCIENTIST).admitted


def test_team_quotas_count_everyone_in_the_team(
    make_authorizer: Callable[..., Authorizer], sqlite_url: str
) -> None:
    admitter = Admitter(make_authorizer(sqlite_url, team_quotas={"vision": {"max_concurrent_jobs": 2}}))
    assert admitter(SCIENTIST).admitted and admitter(ENGINEER, request(user="eng")).admitted
    decision = admitter(ADMIN, request(user="root"))  # a platform_admin has no role limits, the team does
    assert failed(decision) == "max_concurrent_jobs" and "team vision allows 2" in decision.reason
    other_team = request(user="root", team="nlp")
    assert admitter(identity("root", "nlp", {"*": ["platform_admin"]}), other_team).admitted


def test_a_decision_is_made_once_per_workflow(
    make_authorizer: Callable[..., Authorizer], sqlite_url: str
) -> None:
    admitter = Admitter(
        make_authorizer(sqlite_url, role_constraints={"data_scientist": {"max_concurrent_jobs": 1}})
    )
    req = request()
    first = admitter(SCIENTIST, req)
    again = admitter(SCIENTIST, req)  # an activity retry: its own reservation must not count against it
    assert first.admitted and again == first and admitter.held() == 1
    rejected_req = request()
    rejected = admitter(SCIENTIST, rejected_req)
    admitter.ledger.release(req.workflow_id, "done", NOW)
    assert admitter(SCIENTIST, rejected_req) == rejected  # a rejection does not flip on retry


def test_gpu_hours_accrue_from_runtime(make_authorizer: Callable[..., Authorizer], sqlite_url: str) -> None:
    admitter = Admitter(
        make_authorizer(sqlite_url, role_constraints={"data_scientist": {"max_gpu_hours_per_month": 10}})
    )
    running = request(resources={"gpu_count": 4})
    assert admitter(SCIENTIST, running).admitted
    ledger = admitter.ledger
    ledger.mark(running.workflow_id, 1, "started", NOW - timedelta(hours=2), gpus=4, price_per_gpu_hour=2.0)
    # Two hours on four GPUs so far: 8 GPU-hours, under 10.
    assert admitter(SCIENTIST, now=NOW).admitted
    # Half an hour later it has run 10 GPU-hours: the month's limit is reached, nothing more.
    later = admitter(SCIENTIST, now=NOW + timedelta(minutes=30))
    assert failed(later) == "max_gpu_hours_per_month" and "10.00 GPU-hours used" in later.reason
    # The attempt ended at 2.5 h; what ran last month does not count this month.
    ledger.mark(running.workflow_id, 1, "ended", NOW + timedelta(minutes=30))
    with ledger.engine.connect() as conn:
        use = ledger.usage(conn, "vision", month_start(NOW), NOW + timedelta(days=1), "sci")
        assert use.gpu_hours == pytest.approx(10.0) and use.open_cost_usd == 0
        next_month = NOW.replace(month=8, day=1)
        assert ledger.usage(conn, "vision", month_start(next_month), next_month, "sci").gpu_hours == 0
    # A mark repeated (an activity retry) changes nothing.
    ledger.mark(running.workflow_id, 1, "started", NOW, gpus=99)
    ledger.mark(running.workflow_id, 1, "ended", NOW + timedelta(hours=9))
    with ledger.engine.connect() as conn:
        assert ledger.usage(
            conn, "vision", month_start(NOW), NOW + timedelta(days=1), "sci"
        ).gpu_hours == pytest.approx(10)


def test_cost_limit_counts_recorded_running_and_estimated_cost(admitter: Admitter) -> None:
    # data_scientist: cost_limit_per_month 5000.
    assert admitter(SCIENTIST, spend=Spend(estimated_cost_usd=100, recorded_user_usd=4900)).admitted
    decision = admitter(SCIENTIST, spend=Spend(estimated_cost_usd=100.01, recorded_user_usd=4900))
    assert failed(decision) == "cost_limit_per_month" and "$5000.01 this month" in decision.reason
    # A running attempt's cost so far counts too (4 GPUs x $10 x 10 h = $400).
    running = request()
    assert admitter(SCIENTIST, running).admitted
    admitter.ledger.mark(
        running.workflow_id, 1, "started", NOW - timedelta(hours=10), gpus=4, price_per_gpu_hour=10
    )
    decision = admitter(SCIENTIST, spend=Spend(estimated_cost_usd=100, recorded_user_usd=4600))
    assert failed(decision) == "cost_limit_per_month"
    assert admitter(
        ENGINEER, request(user="eng"), spend=Spend(estimated_cost_usd=10**6)
    ).admitted  # no cost limit


def test_release_closes_open_usage(admitter: Admitter) -> None:
    req = request(resources={"gpu_count": 2})
    assert admitter(SCIENTIST, req).admitted
    admitter.ledger.mark(req.workflow_id, 1, "started", NOW, gpus=2)
    admitter.ledger.release(req.workflow_id, "cancelled", NOW + timedelta(hours=1))
    with admitter.ledger.engine.connect() as conn:
        use = admitter.ledger.usage(conn, "vision", month_start(NOW), NOW + timedelta(days=3))
    assert use.gpu_hours == pytest.approx(2.0)  # stopped accruing at the release


def test_concurrent_submits_at_the_limit_admit_exactly_the_limit(
    make_authorizer: Callable[..., Authorizer], db_url: str
) -> None:
    """Twelve submits race for three slots, each on its own thread and connection."""
    limit, racers = 3, 12
    authorizer = make_authorizer(
        db_url, role_constraints={"data_scientist": {"max_concurrent_jobs": limit}},
        team_quotas={"vision": {"max_concurrent_jobs": 100}},
    )  # fmt: skip
    admitter = Admitter(authorizer)
    requests = [request() for _ in range(racers)]
    start = threading.Barrier(racers)
    decisions: list[AdmissionDecision] = []
    errors: list[BaseException] = []

    def submit(req: AdmissionRequest) -> None:
        start.wait()
        try:
            decisions.append(admitter(SCIENTIST, req))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=submit, args=(r,)) for r in requests]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert sum(d.admitted for d in decisions) == limit
    assert admitter.held(subject="sci") == limit
    assert {failed(d) for d in decisions if not d.admitted} == {"max_concurrent_jobs"}
