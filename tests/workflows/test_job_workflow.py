"""JobWorkflow + SchedulerWorkflow on Temporal's time-skipping test server.

The workflows, the scheduler, the placement and admission activities are the real ones; only
the node's training activity and LoomDB's audit sink are replaced by scripted activities, so that
retry backoff, cancellation and failure classification can be checked in seconds. Jobs are
started as LoomCtl starts them: with an administrator's identity in their headers.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from loomos.activities.scheduling import announce_node, request_placement
from loomos.models.audit import AuditBatch
from loomos.models.jobs import FailureKind, JobResult, JobState, JobStatus, JobWorkflowInput
from loomos.models.scheduler import NodeInfo, SchedulerState
from loomos.models.spec import parse_spec
from loomos.models.training import (
    CheckpointRef,
    CheckpointsSaved,
    ProgressRequest,
    TrainingProgress,
    TrainingRequest,
)
from loomos.temporal import names
from loomos.temporal import search_attributes as sa
from loomos.temporal.identity import IdentityInterceptor
from loomos.temporal.names import (
    CHECKPOINTS_SAVED,
    CONTROL_TASK_QUEUE,
    node_task_queue,
    scheduler_workflow_id,
)
from loomos.workflows.job import JobWorkflow
from loomos.workflows.logs import FetchLogsWorkflow
from loomos.workflows.scheduler import SchedulerWorkflow
from tests.helpers import HISTORIES
from tests.helpers.authz import TEST_ADMIN, AdmissionHarness, start_as


@pytest.fixture
def env(time_skipping_env: WorkflowEnvironment) -> WorkflowEnvironment:
    return time_skipping_env


class Node:
    """A scripted node: `script(request)` decides what each training attempt does."""

    def __init__(self, node_id: str, slots: int = 2) -> None:
        self.info = NodeInfo(
            node_id=node_id,
            pool="",
            task_queue=node_task_queue(node_id),
            host="127.0.0.1",
            accelerator="cpu",
            gpu_type="cpu",
            slots=slots,
        )
        self.requests: list[TrainingRequest] = []
        self.cancelled: list[int] = []
        # attempt -> what the attempt "wrote" when stopped (read back by read_training_progress)
        self.stop_progress: dict[int, TrainingProgress] = {}
        self.script: Callable[[TrainingRequest], object] = lambda req: None


class Harness:
    def __init__(self, client: Client, pool: str) -> None:
        self.client = client
        self.pool = pool
        self.audit: list[AuditBatch] = []

    def events(self) -> list[str]:
        return [e.event_type for b in self.audit for e in b.events]


def make_spec(pool: str, **overrides: object):
    data = {
        "name": "wf-test",
        "entrypoint": "train.py",
        "pool": pool,
        "resources": {"gpu_count": 2},
        "retry_policy": {"max_retries": 2, "retry_delay_seconds": 10, "exponential_backoff": True},
    }
    data.update(overrides)
    return parse_spec(data)


@pytest.fixture
async def harness(env: WorkflowEnvironment, tmp_path) -> AsyncIterator[tuple[Harness, list[Node]]]:
    pool = f"p{uuid.uuid4().hex[:8]}"
    admission = AdmissionHarness(tmp_path)
    h = Harness(env.client, pool)
    nodes = [Node(f"{pool}-a"), Node(f"{pool}-b")]
    for n in nodes:
        n.info.pool = pool

    @activity.defn(name=names.RECORD_AUDIT_EVENTS)
    async def record_audit_events(batch: AuditBatch) -> None:
        h.audit.append(batch)

    def training_for(node: Node):
        @activity.defn(name=names.RUN_TRAINING)
        async def run_training(req: TrainingRequest) -> TrainingProgress:
            node.requests.append(req)
            outcome = node.script(req)
            if asyncio.iscoroutine(outcome):
                outcome = await outcome
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome or TrainingProgress(
                attempt=req.attempt,
                node_id=node.info.node_id,
                step=100,
                total_steps=100,
                metrics={"loss": 0.5},
            )

        return run_training

    def progress_for(node: Node):
        @activity.defn(name=names.READ_TRAINING_PROGRESS)
        async def read_training_progress(req: ProgressRequest) -> TrainingProgress:
            if req.attempt not in node.stop_progress:
                raise ApplicationError(
                    "no progress record", type=names.ErrorType.PROGRESS_NOT_FOUND, non_retryable=True
                )
            return node.stop_progress[req.attempt]

        return read_training_progress

    # Nodes renew their lease in real time; with time skipping, a long lease keeps them alive.
    await env.client.start_workflow(
        SchedulerWorkflow.run,
        SchedulerState(pool=pool, node_lease_s=10**7),
        id=scheduler_workflow_id(pool),
        task_queue=CONTROL_TASK_QUEUE,
    )
    workers = [
        Worker(
            env.client,
            task_queue=CONTROL_TASK_QUEUE,
            workflows=[JobWorkflow, SchedulerWorkflow, FetchLogsWorkflow],
            activities=[request_placement, record_audit_events, *admission.activities],
            interceptors=[IdentityInterceptor()],
        ),
        *[
            Worker(
                env.client,
                task_queue=n.info.task_queue,
                activities=[training_for(n), progress_for(n)],
                # Cancellation reaches an activity with a heartbeat's answer: do not throttle for 24 s.
                max_heartbeat_throttle_interval=timedelta(milliseconds=200),
            )
            for n in nodes
        ],
    ]
    async with contextlib_nested(workers):
        for n in nodes:
            await announce_node(env.client, n.info)
        yield h, nodes
    await env.client.get_workflow_handle(scheduler_workflow_id(pool)).terminate()
    admission.close()


class contextlib_nested:
    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    async def __aenter__(self) -> None:
        for w in self.workers:
            await w.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        for w in reversed(self.workers):
            await w.__aexit__(None, None, None)


async def submit(h: Harness, spec, heartbeat_timeout_s: float = 30) -> tuple[str, object]:
    job_id = f"{spec.name}-{uuid.uuid4().hex[:8]}"
    handle = await start_as(
        h.client,
        TEST_ADMIN,
        JobWorkflow.run,
        JobWorkflowInput(
            job_id=job_id,
            spec=spec,
            submitted_at=datetime.now(UTC),
            node_heartbeat_timeout_s=heartbeat_timeout_s,
        ),
        id=f"job-{job_id}",
        task_queue=CONTROL_TASK_QUEUE,
    )
    return job_id, handle




async def keep_history(handle, name: str) -> None:
    """With LOOMOS_RECORD_HISTORIES=1, save the workflow's history for test_replay.py.

    Re-record after a deliberate, patched change to a workflow; the saved files are what
    guards the workflows against unpatched changes that would break running jobs.
    """
    if os.environ.get("LOOMOS_RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())


async def backoff_timers(handle) -> list[float]:
    """Durations of the retry-backoff timers (not the runtime-limit ones), in order."""
    out = []
    async for event in handle.fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_TIMER_STARTED:
            continue
        summary = event.user_metadata.summary.data.decode() if event.HasField("user_metadata") else ""
        if "retry backoff" in summary:
            out.append(
                event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta().total_seconds()
            )
    return out


async def test_success_records_lifecycle(harness) -> None:
    h, nodes = harness
    job_id, handle = await submit(h, make_spec(h.pool))
    result: JobResult = await handle.result()
    assert result.state == JobState.SUCCEEDED
    assert result.attempts == 1 and result.final_step == 100
    status: JobStatus = await handle.query("status", result_type=JobStatus)
    assert [c.state for c in status.history] == [
        JobState.SUBMITTED,
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.SUCCEEDED,
    ]
    assert status.nodes == [nodes[0].info.node_id]  # first fit
    assert nodes[0].requests[0].nproc_per_node == 2
    assert h.events() == ["job.submitted", "job.queued", "job.placed", "job.started", "job.succeeded"]
    seqs = [e.seq for b in h.audit for e in b.events]
    assert seqs == list(range(1, len(seqs) + 1))
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(sa.STATUS) == "SUCCEEDED"
    snap = await h.client.get_workflow_handle(scheduler_workflow_id(h.pool)).query("snapshot")
    assert all(not n["jobs"] for n in snap["nodes"]), "allocation must be released"
    await keep_history(handle, "job-succeeded")


async def test_retry_backoff_then_success(harness) -> None:
    h, nodes = harness
    fail_first = {1, 2}

    def script(req: TrainingRequest):
        if req.attempt in fail_first:
            progress = TrainingProgress(
                attempt=req.attempt,
                step=10 * req.attempt,
                last_checkpoint=CheckpointRef(step=10 * req.attempt, uri=f"file:///c/{req.attempt}"),
                checkpoints=[CheckpointRef(step=10 * req.attempt, uri=f"file:///c/{req.attempt}")],
            )
            return ApplicationError(
                "rank 1 exited with code 1\nTraceback...", progress, type=FailureKind.TRAINING_CRASHED.value
            )
        return TrainingProgress(attempt=req.attempt, step=100, resumed_from_step=20)

    for n in nodes:
        n.script = script
    _, handle = await submit(h, make_spec(h.pool))
    result: JobResult = await handle.result()
    assert result.state == JobState.SUCCEEDED
    assert result.attempts == 3
    assert result.resumed_from_step == 20
    # retry_delay_seconds=10 with exponential backoff: 10 s, then 20 s.
    assert await backoff_timers(handle) == [10.0, 20.0]
    status = await handle.query("status", result_type=JobStatus)
    states = [c.state for c in status.history]
    assert states.count(JobState.RECOVERING) == 2
    assert [a.outcome for a in status.attempts] == ["failed", "failed", "succeeded"]
    assert status.attempts[0].failure_kind == FailureKind.TRAINING_CRASHED
    assert "model.training.checkpoint" in h.events() and h.events().count("job.retrying") == 2
    await keep_history(handle, "job-retried-twice")


async def test_non_retryable_fails_at_once(harness) -> None:
    h, nodes = harness
    for n in nodes:
        n.script = lambda req: ApplicationError(
            "entrypoint not found: /nowhere/train.py",
            None,
            type=FailureKind.INVALID_JOB.value,
            non_retryable=True,
        )
    _, handle = await submit(h, make_spec(h.pool))
    result: JobResult = await handle.result()
    assert result.state == JobState.FAILED
    assert result.attempts == 1
    assert "InvalidJob" in result.error and "/nowhere/train.py" in result.error
    assert await backoff_timers(handle) == []
    await keep_history(handle, "job-invalid")


async def test_retries_exhausted(harness) -> None:
    h, nodes = harness
    for n in nodes:
        n.script = lambda req: ApplicationError("boom", None, type=FailureKind.TRAINING_CRASHED.value)
    _, handle = await submit(h, make_spec(h.pool, retry_policy={"max_retries": 1, "retry_delay_seconds": 5}))
    result: JobResult = await handle.result()
    assert result.state == JobState.FAILED and result.attempts == 2
    assert h.events()[-1] == "job.failed"


async def test_resource_exhaustion_respects_policy(harness) -> None:
    h, nodes = harness
    for n in nodes:
        n.script = lambda req: ApplicationError(
            "CUDA out of memory", None, type=FailureKind.RESOURCE_EXHAUSTED.value
        )
    _, handle = await submit(
        h, make_spec(h.pool, retry_policy={"max_retries": 3, "retry_on_resource_exhaustion": False})
    )
    result: JobResult = await handle.result()
    assert result.state == JobState.FAILED and result.attempts == 1


async def test_unsatisfiable_request_is_reported(harness) -> None:
    h, _ = harness
    _, handle = await submit(h, make_spec(h.pool, resources={"gpu_count": 16}))
    result: JobResult = await handle.result()
    assert result.state == JobState.FAILED
    assert "Unschedulable" in result.error and "16 slots" in result.error
    _, handle = await submit(h, make_spec(h.pool, resources={"gpu_count": 1, "gpu_type": "H100"}))
    result = await handle.result()
    assert result.state == JobState.FAILED and "H100" in result.error


async def test_queued_job_waits_for_capacity_in_fifo_order(harness) -> None:
    h, nodes = harness
    release = asyncio.Event()

    async def hold(req: TrainingRequest):
        while not release.is_set():
            activity.heartbeat()
            await asyncio.sleep(0.05)
        return TrainingProgress(attempt=req.attempt, step=1)

    for n in nodes:
        n.script = hold
    submitted = [await submit(h, make_spec(h.pool)) for _ in range(3)]
    handles = [hd for _, hd in submitted]
    # Two nodes of two slots: two jobs run, the third queues.
    for _ in range(200):
        snap = await h.client.get_workflow_handle(scheduler_workflow_id(h.pool)).query("snapshot")
        if len(snap["queue"]) == 1 and sum(len(n["jobs"]) for n in snap["nodes"]) == 2:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"expected 2 running and 1 queued, got {snap}")
    # Which job waits depends on which placement request reached the scheduler last.
    waiting = dict(submitted)[snap["queue"][0]["job_id"]]
    status = await waiting.query("status", result_type=JobStatus)
    assert status.state == JobState.QUEUED and status.nodes == []
    release.set()
    results = [await hd.result() for hd in handles]
    assert all(r.state == JobState.SUCCEEDED for r in results)


async def test_cancel_checkpoints_and_releases(harness) -> None:
    h, nodes = harness
    started = asyncio.Event()

    async def run_until_cancelled(req: TrainingRequest):
        started.set()
        try:
            while True:
                activity.heartbeat(TrainingProgress(attempt=req.attempt, step=7))
                await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            nodes[0].cancelled.append(req.attempt)
            nodes[0].stop_progress[req.attempt] = TrainingProgress(
                attempt=req.attempt,
                step=7,
                last_checkpoint=CheckpointRef(step=7, uri="file:///c/7"),
                checkpoints=[CheckpointRef(step=7, uri="file:///c/7")],
            )
            raise

    for n in nodes:
        n.script = run_until_cancelled
    _, handle = await submit(h, make_spec(h.pool))
    await asyncio.wait_for(started.wait(), 30)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    assert nodes[0].cancelled == [1], "the training activity must see the cancellation"
    status = await handle.query("status", result_type=JobStatus)
    assert status.state == JobState.CANCELLED
    assert status.last_checkpoint is not None and status.last_checkpoint.step == 7
    assert h.events()[-1] == "job.cancelled"
    assert "model.training.checkpoint" in h.events(), "the stop checkpoint is audited"
    assert status.attempts[0].outcome == "cancelled" and status.attempts[0].last_step == 7
    await keep_history(handle, "job-cancelled")
    snap = await h.client.get_workflow_handle(scheduler_workflow_id(h.pool)).query("snapshot")
    assert all(not n["jobs"] for n in snap["nodes"])


async def test_node_lost_moves_to_another_node(harness) -> None:
    h, nodes = harness

    async def go_silent(req: TrainingRequest):
        await asyncio.sleep(3600)  # never heartbeats: the heartbeat timeout fires

    nodes[0].script = go_silent
    nodes[1].script = lambda req: TrainingProgress(attempt=req.attempt, step=100)
    # Heartbeat timeouts run on the server's clock while an activity runs: keep this one short.
    spec = make_spec(h.pool, retry_policy={"max_retries": 2, "retry_delay_seconds": 1})
    job_id, handle = await submit(h, spec, heartbeat_timeout_s=2)
    result: JobResult = await asyncio.wait_for(handle.result(), 60)
    assert result.state == JobState.SUCCEEDED and result.attempts == 2
    status = await handle.query("status", result_type=JobStatus)
    assert status.attempts[0].failure_kind == FailureKind.NODE_LOST
    assert status.attempts[1].nodes == [nodes[1].info.node_id]
    snap = await h.client.get_workflow_handle(scheduler_workflow_id(h.pool)).query("snapshot")
    lost = {n["node"]["node_id"]: n["available"] for n in snap["nodes"]}
    assert lost[nodes[0].info.node_id] is False
    await keep_history(handle, "job-node-lost")
    await keep_history(h.client.get_workflow_handle(scheduler_workflow_id(h.pool)), "scheduler")


async def test_checkpoints_are_audited_while_the_attempt_runs(harness) -> None:
    """Checkpoint notices from the node reach the audit trail and the status during the attempt,
    and the attempt's result does not record them a second time."""
    h, nodes = harness
    ckpts = [CheckpointRef(step=s, uri=f"file:///c/{s}") for s in (10, 20)]
    seen_live: list[JobStatus] = []
    audited_live: list[int] = []

    async def train_and_notify(req: TrainingRequest):
        handle = activity.client().get_workflow_handle(req.workflow_id)
        await handle.signal(
            CHECKPOINTS_SAVED, CheckpointsSaved(attempt=req.attempt, checkpoints=ckpts)
        )
        for _ in range(200):  # the audit trail has them before the attempt is over
            if h.events().count("model.training.checkpoint") == 2:
                break
            activity.heartbeat()
            await asyncio.sleep(0.05)
        audited_live.append(h.events().count("model.training.checkpoint"))
        seen_live.append(await handle.query("status", result_type=JobStatus))
        # A notice for another attempt is stale and ignored.
        await handle.signal(
            CHECKPOINTS_SAVED,
            CheckpointsSaved(attempt=req.attempt + 5, checkpoints=[CheckpointRef(step=99, uri="file:///x")]),
        )
        return TrainingProgress(attempt=req.attempt, step=25, last_checkpoint=ckpts[-1], checkpoints=ckpts)

    for n in nodes:
        n.script = train_and_notify
    _, handle = await submit(h, make_spec(h.pool))
    result: JobResult = await handle.result()
    assert result.state == JobState.SUCCEEDED
    assert audited_live == [2], "checkpoints must be audited while the attempt runs"
    assert seen_live and seen_live[0].state == JobState.RUNNING
    assert seen_live[0].last_checkpoint is not None and seen_live[0].last_checkpoint.step == 20
    events = h.events()
    assert events.count("model.training.checkpoint") == 2, events
    assert events[-1] == "job.succeeded"
    steps = [e.data["step"] for b in h.audit for e in b.events if e.event_type == "model.training.checkpoint"]
    assert steps == [10, 20]
