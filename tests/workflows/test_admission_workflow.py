"""The job workflow's admission step on Temporal's time-skipping test server, with the real
workflows, scheduler, placement and admission activities (Casbin, the quota ledger, LoomDB on a
SQLite file); only the node's training is scripted.

The identity comes in the workflow's headers, as LoomCtl sends it. A refused job ends REJECTED
and never queues; every way out of the job (success, failure, cancellation, the runtime limit,
an unschedulable request, rejection) releases its reservation, and one left behind by a
terminated workflow is released by the next admission that needs the slot.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from loomos.activities.scheduling import announce_node, request_placement
from loomos.loomdb import EventQuery
from loomos.models.audit import AuditBatch
from loomos.models.identity import AuthMethod, Identity
from loomos.models.jobs import FailureKind, JobResult, JobState, JobStatus, JobWorkflowInput
from loomos.models.scheduler import NodeInfo, SchedulerState
from loomos.models.spec import JobSpec, parse_spec
from loomos.models.training import ProgressRequest, TrainingProgress, TrainingRequest
from loomos.security.authz import tables as t
from loomos.security.authz.admission import NO_IDENTITY
from loomos.temporal import names
from loomos.temporal import search_attributes as sa
from loomos.temporal.identity import IdentityInterceptor
from loomos.temporal.names import CONTROL_TASK_QUEUE, node_task_queue, scheduler_workflow_id
from loomos.workflows.job import JobWorkflow
from loomos.workflows.logs import FetchLogsWorkflow
from loomos.workflows.scheduler import SchedulerWorkflow
from tests.helpers import HISTORIES
from tests.helpers.authz import TEST_ADMIN, AdmissionHarness, start_as

SCIENTIST = Identity(
    subject="sci", team="vision", roles={"vision": ["data_scientist"]}, auth_method=AuthMethod.LOCAL
)


@dataclass
class Stack:
    client: Client
    pool: str
    admission: AdmissionHarness
    audit: list[AuditBatch] = field(default_factory=list)
    # job name -> what its training attempt does
    scripts: dict[str, Callable[[TrainingRequest], Any]] = field(default_factory=dict)
    trained: list[str] = field(default_factory=list)

    def events(self, workflow_id: str) -> list[str]:
        return [e.event_type for b in self.audit if b.workflow_id == workflow_id for e in b.events]

    def reservation(self, workflow_id: str) -> dict[str, Any]:
        with self.admission.authorizer.engine.connect() as conn:
            row = conn.execute(select(t.reservations).where(t.reservations.c.workflow_id == workflow_id))
            return dict(row.mappings().one())

    def usage(self, workflow_id: str) -> list[dict[str, Any]]:
        with self.admission.authorizer.engine.connect() as conn:
            rows = conn.execute(select(t.usage).where(t.usage.c.workflow_id == workflow_id))
            return [dict(r) for r in rows.mappings()]


@pytest.fixture
async def stack(time_skipping_env: WorkflowEnvironment, tmp_path) -> AsyncIterator[Stack]:
    env = time_skipping_env
    pool = f"adm{uuid.uuid4().hex[:8]}"
    admission = AdmissionHarness(
        tmp_path, sweep_min_age=timedelta(0), team_quotas={"small": {"max_concurrent_jobs": 1}}
    )
    s = Stack(env.client, pool, admission)
    node = NodeInfo(
        node_id=f"{pool}-n", pool=pool, task_queue=node_task_queue(f"{pool}-n"), host="127.0.0.1",
        accelerator="cpu", gpu_type="cpu", slots=4, price_per_slot_hour=1.5,
    )  # fmt: skip

    @activity.defn(name=names.RECORD_AUDIT_EVENTS)
    async def record_audit_events(batch: AuditBatch) -> None:
        s.audit.append(batch)

    @activity.defn(name=names.RUN_TRAINING)
    async def run_training(req: TrainingRequest) -> TrainingProgress:
        s.trained.append(req.workflow_id)
        outcome = s.scripts.get(req.spec.name, lambda r: None)(req)
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome or TrainingProgress(attempt=req.attempt, step=10, total_steps=10)

    @activity.defn(name=names.READ_TRAINING_PROGRESS)
    async def read_training_progress(req: ProgressRequest) -> TrainingProgress:
        raise ApplicationError("none", type=names.ErrorType.PROGRESS_NOT_FOUND, non_retryable=True)

    await env.client.start_workflow(
        SchedulerWorkflow.run, SchedulerState(pool=pool, node_lease_s=10**7),
        id=scheduler_workflow_id(pool), task_queue=CONTROL_TASK_QUEUE,
    )  # fmt: skip
    control = Worker(
        env.client,
        task_queue=CONTROL_TASK_QUEUE,
        workflows=[JobWorkflow, SchedulerWorkflow, FetchLogsWorkflow],
        activities=[request_placement, record_audit_events, *admission.activities],
        interceptors=[IdentityInterceptor()],
    )
    training = Worker(
        env.client, task_queue=node.task_queue, activities=[run_training, read_training_progress],
        max_heartbeat_throttle_interval=timedelta(milliseconds=200),
    )  # fmt: skip
    async with control, training:
        await announce_node(env.client, node)
        yield s
    await env.client.get_workflow_handle(scheduler_workflow_id(pool)).terminate()
    admission.close()


def spec(stack: Stack, name: str = "adm", **extra: Any) -> JobSpec:
    body = {"name": name, "entrypoint": "train.py", "pool": stack.pool, "resources": {"gpu_count": 2}}
    return parse_spec({**body, "retry_policy": {"max_retries": 0}, **extra})


async def start(
    stack: Stack, job_spec: JobSpec, who: Identity | None = TEST_ADMIN
) -> WorkflowHandle[Any, Any]:
    job_id = f"{job_spec.name}-{uuid.uuid4().hex[:8]}"
    args: dict[str, Any] = dict(
        id=names.job_workflow_id(job_id),
        task_queue=CONTROL_TASK_QUEUE,
        search_attributes=sa.for_job(job_spec),
    )
    job = JobWorkflowInput(job_id=job_id, spec=job_spec, submitted_at=datetime.now(UTC))
    if who is None:
        return await stack.client.start_workflow(JobWorkflow.run, job, **args)
    return await start_as(stack.client, who, JobWorkflow.run, job, **args)


async def keep_history(handle: WorkflowHandle[Any, Any], name: str) -> None:
    """With LOOMOS_RECORD_HISTORIES=1, save the workflow's history for test_replay.py."""
    if os.environ.get("LOOMOS_RECORD_HISTORIES") != "1":
        return
    (HISTORIES / f"{name}.json").write_text((await handle.fetch_history()).to_json())


async def wait_state(handle: WorkflowHandle[Any, Any], state: JobState, timeout: float = 30) -> JobStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await handle.query(JobWorkflow.get_status)
        if status.state == state:
            return status
        assert asyncio.get_running_loop().time() < deadline, f"still {status.state}"
        await asyncio.sleep(0.05)


def released(stack: Stack, handle: WorkflowHandle[Any, Any], reason: str) -> None:
    row = stack.reservation(handle.id)
    assert row["released_at"] is not None and row["release_reason"] == reason, row
    assert handle.id not in stack.admission.held()
    assert all(u["ended_at"] is not None for u in stack.usage(handle.id))


# --- admitted and rejected -----------------------------------------------------------------------


async def test_an_admitted_job_runs_accrues_and_releases(stack: Stack) -> None:
    handle = await start(stack, spec(stack))
    result: JobResult = await handle.result()
    assert result.state == JobState.SUCCEEDED
    status = await handle.query(JobWorkflow.get_status)
    assert status.admission is not None and status.admission.admitted
    assert status.admission.subject == "test-admin" and status.admission.roles == ["platform_admin"]
    assert [c.state for c in status.history] == [JobState.SUBMITTED, JobState.QUEUED, JobState.RUNNING,
                                                 JobState.SUCCEEDED]  # fmt: skip
    assert stack.events(handle.id) == [
        "job.submitted",
        "job.queued",
        "job.placed",
        "job.started",
        "job.succeeded",
    ]
    (use,) = stack.usage(handle.id)
    assert (use["gpus"], use["price_per_gpu_hour"], use["subject"]) == (2, 1.5, "test-admin")
    released(stack, handle, "succeeded")
    # Admission's decisions are in LoomDB: jobs:create, and jobs:admin (the spec's user is not
    # the identity's subject: "anonymous").
    page = stack.admission.store.query(EventQuery(event_types=["security.access.*"], limit=100))
    mine = [e for e in page.events if e.data.get("workflow_id") == handle.id]
    assert [(e.event_type, e.data["action"]) for e in mine] == [
        ("security.access.granted", "jobs:create"),
        ("security.access.granted", "jobs:admin"),
    ]
    assert mine[0].data["matched_rule"] == "p, role:platform_admin, *"
    await keep_history(handle, "job-admitted")


async def test_a_refused_job_ends_rejected_and_never_queues(stack: Stack) -> None:
    secret = spec(stack, "secret", user="sci", team="vision",
                  datasets=[{"name": "patients", "classification": "confidential"}])  # fmt: skip
    handle = await start(stack, secret, SCIENTIST)
    result: JobResult = await handle.result()
    assert result.state == JobState.REJECTED and result.attempts == 0
    assert result.error == (
        "rejected: missing permission data:read:confidential in team vision (roles data_scientist)"
    )
    status = await handle.query(JobWorkflow.get_status)
    assert [c.state for c in status.history] == [JobState.SUBMITTED, JobState.REJECTED]
    assert status.admission is not None and not status.admission.admitted
    assert handle.id not in stack.trained
    assert stack.events(handle.id) == ["job.submitted", "job.rejected"]
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(sa.STATUS) == "REJECTED"
    row = stack.reservation(handle.id)
    assert row["decision"] == "rejected" and row["released_at"] is not None
    assert handle.id not in stack.admission.held()
    denied = stack.admission.store.query(EventQuery(event_types=["security.access.denied"], limit=100)).events
    assert any(
        e.data.get("workflow_id") == handle.id and e.data["object"] == "dataset:patients" for e in denied
    )
    await keep_history(handle, "job-rejected")


async def test_a_job_started_without_an_identity_is_rejected(stack: Stack) -> None:
    handle = await start(stack, spec(stack, "anon"), who=None)
    result: JobResult = await handle.result()
    assert result.state == JobState.REJECTED and result.error == f"rejected: {NO_IDENTITY}"


# --- every way out releases ----------------------------------------------------------------------


async def test_failures_release(stack: Stack) -> None:
    stack.scripts["crash"] = lambda req: ApplicationError(
        "boom", None, type=FailureKind.TRAINING_CRASHED.value
    )
    stack.scripts["invalid"] = lambda req: ApplicationError(
        "no script", None, type=FailureKind.INVALID_JOB.value, non_retryable=True
    )
    crash = await start(
        stack, spec(stack, "crash", retry_policy={"max_retries": 1, "retry_delay_seconds": 1})
    )
    invalid = await start(stack, spec(stack, "invalid"))
    unschedulable = await start(stack, spec(stack, "huge", resources={"gpu_count": 64}))
    for handle, attempts in ((crash, 2), (invalid, 1), (unschedulable, 1)):
        result: JobResult = await handle.result()
        assert result.state == JobState.FAILED and result.attempts == attempts
        released(stack, handle, "failed")
    assert len(stack.usage(crash.id)) == 2  # each attempt accrued on its own


async def test_cancel_while_running_and_while_queued_release(stack: Stack) -> None:
    async def hold(req: TrainingRequest) -> TrainingProgress:
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.05)

    stack.scripts["hold"] = hold
    running = await start(stack, spec(stack, "hold", resources={"gpu_count": 4}))
    await wait_state(running, JobState.RUNNING)
    queued = await start(stack, spec(stack, "hold", resources={"gpu_count": 4}))  # the node is full
    await wait_state(queued, JobState.QUEUED)
    for handle in (queued, running):
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        released(stack, handle, "cancelled")
    assert stack.usage(queued.id) == []  # it never ran
    assert len(stack.usage(running.id)) == 1


async def test_the_runtime_limit_releases(stack: Stack) -> None:
    async def forever(req: TrainingRequest) -> TrainingProgress:
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.05)

    stack.scripts["slow"] = forever
    handle = await start(stack, spec(stack, "slow", max_runtime_hours=0.0005))  # 1.8 s
    result: JobResult = await asyncio.wait_for(handle.result(), 60)
    assert result.state == JobState.FAILED and "max_runtime_hours" in (result.error or "")
    released(stack, handle, "failed")


async def test_a_terminated_workflows_slot_is_swept_by_the_next_admission(stack: Stack) -> None:
    """Team `small` allows one job at a time. A terminated job never ran its release; the next
    admission finds the team at its limit, asks Temporal, and frees the slot."""

    async def hold(req: TrainingRequest) -> TrainingProgress:
        while True:
            activity.heartbeat()
            await asyncio.sleep(0.05)

    stack.scripts["small"] = hold
    admin = TEST_ADMIN.model_copy(update={"team": "small"})
    first = await start(stack, spec(stack, "small", team="small", user="test-admin"), admin)
    await wait_state(first, JobState.RUNNING)
    await first.terminate("operator")
    assert first.id in stack.admission.held()
    stack.scripts["small"] = lambda req: None
    second = await start(stack, spec(stack, "small", team="small", user="test-admin"), admin)
    result: JobResult = await second.result()
    assert result.state == JobState.SUCCEEDED
    row = stack.reservation(first.id)
    assert row["release_reason"] == "workflow terminated without releasing"
    assert stack.admission.held() == []
