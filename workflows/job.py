"""JobWorkflow: one training job's whole life (`job-<job_id>`).

    SUBMITTED -> QUEUED -> RUNNING -> (RECOVERING -> QUEUED -> RUNNING)* -> SUCCEEDED | FAILED | CANCELLED
    SUBMITTED -> REJECTED                  (admission refused it: it never runs)

The first step is admission (the `admit_job` activity): the identity LoomCtl put in the
workflow's headers is checked again for `jobs:create`, the datasets' classifications, and its
roles' and team's quotas, and the job's share is reserved in the quota ledger. Each attempt's
start and end are marked in the ledger (GPU-hours and cost accrue in between), and every way
out (success, failure, cancellation, the runtime limit, rejection) releases the reservation.

Each attempt asks the pool's scheduler for nodes, runs the training activity on each placed
node's task queue, and releases the nodes when it ends. A failed attempt is retried per the
job's retry_policy; the next attempt resumes from the latest checkpoint because the training
helpers load it on start. Activity-level retries are off: retrying here, with a new placement,
is what lets a job move off a dead node.
"""

from __future__ import annotations

import asyncio
import zlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    TimeoutError,
    TimeoutType,
)

with workflow.unsafe.imports_passed_through():
    from loomos.models.admission import AdmissionDecision, AdmissionRequest
    from loomos.models.audit import AuditBatch, AuditEvent
    from loomos.models.jobs import (
        AttemptSummary,
        FailureKind,
        JobResult,
        JobState,
        JobStatus,
        JobWorkflowInput,
        StateChange,
    )
    from loomos.models.scheduler import Placement, PlacementDecision, PlacementRequest
    from loomos.models.spec import TimeoutBehavior
    from loomos.models.training import (
        CheckpointRef,
        CheckpointsSaved,
        ProgressRequest,
        TrainingProgress,
        TrainingRequest,
    )
    from loomos.temporal import names
    from loomos.temporal import search_attributes as sa
    from loomos.temporal.activities import ControlActivities, NodeActivities

from loomos.workflows.admission import AdmissionSteps
from loomos.workflows.scheduler_client import CONTROL_ACTIVITY_OPTIONS, SchedulerClient

MULTINODE_BASE_PORT = 29500
# Behaviour added after histories were recorded: old histories replay without it.
LIVE_CHECKPOINT_AUDIT = "live-checkpoint-audit"
ADMISSION = "admission"


class AttemptFailed(Exception):
    def __init__(self, kind: FailureKind, message: str, progress: TrainingProgress | None):
        super().__init__(message)
        self.kind = kind
        self.progress = progress


class RuntimeExceeded(Exception):
    pass


@workflow.defn(name=names.JOB_WORKFLOW)
class JobWorkflow:
    @workflow.init
    def __init__(self, job: JobWorkflowInput) -> None:
        self.job = job
        self.spec = job.spec
        self.workflow_id = workflow.info().workflow_id
        self.status = JobStatus(
            job_id=job.job_id,
            workflow_id=self.workflow_id,
            name=self.spec.name,
            user=self.spec.user,
            team=self.spec.team,
            pool=self.spec.pool,
            state=JobState.SUBMITTED,
            attempt=0,
            max_attempts=self.spec.retry_policy.max_retries + 1,
            submitted_at=job.submitted_at,
            history=[StateChange(state=JobState.SUBMITTED, at=job.submitted_at)],
        )
        self.scheduler = SchedulerClient(self.spec.pool)
        self._decision: PlacementDecision | None = None
        self._audit_seq = 0
        self._audit_pending: list[AuditEvent] = []
        self._runtime_used = timedelta()
        self._placement: Placement | None = None
        # What the master node recorded when this attempt's training was stopped (cancel, the
        # runtime limit, a failed peer); None while it runs or when it ended by itself.
        self._stop_progress: TrainingProgress | None = None
        # (attempt, step) of the checkpoints already in the audit trail: a checkpoint is heard of
        # while the attempt runs and again in its result, and must be recorded once.
        self._checkpoints_audited: set[tuple[int, int]] = set()
        # Admission, usage marks and the release (set up in run: workflow.patched(ADMISSION)).
        self.ledger = AdmissionSteps(self.workflow_id, enabled=False)

    # --- the lifecycle -----------------------------------------------------------------------

    @workflow.run
    async def run(self, job: JobWorkflowInput) -> JobResult:
        self.ledger.enabled = workflow.patched(ADMISSION)
        if not self.ledger.enabled:
            self._audit_submitted()
            await self._flush_audit()
        try:
            if self.ledger.enabled:
                decision = await self._admit()
                if not decision.admitted:
                    return await self._finish(JobState.REJECTED, f"rejected: {decision.reason}")
            while True:
                self.status.attempt += 1
                placement = await self._acquire_placement()
                if placement is None:
                    return await self._finish(JobState.FAILED, self.status.error)
                try:
                    final = await self._run_attempt(placement)
                except AttemptFailed as failure:
                    # A peer's failure stopped the master node: its stop record is the fuller one.
                    progress = self._stop_progress or failure.progress
                    await self._end_attempt(placement, progress, "failed", failure)
                    if not self._should_retry(failure):
                        return await self._finish(JobState.FAILED, f"{failure.kind.value}: {failure}")
                    await self._wait_before_retry(failure)
                    continue
                except RuntimeExceeded:
                    await self._end_attempt(placement, self._stop_progress, "stopped", None)
                    hours = self.spec.max_runtime_hours
                    if self.spec.timeout_behavior == TimeoutBehavior.CHECKPOINT_AND_SUCCEED:
                        return await self._finish(JobState.SUCCEEDED, None)
                    return await self._finish(
                        JobState.FAILED, f"TimedOut: max_runtime_hours={hours:g} reached"
                    )
                await self._end_attempt(placement, final, "succeeded", None)
                return await self._finish(JobState.SUCCEEDED, None)
        except asyncio.CancelledError:
            # Cancellation reached the training activities first (they checkpoint on SIGTERM
            # and we waited for them); what is left is bookkeeping, then report CANCELLED.
            if self._placement is not None:
                await self._end_attempt(self._placement, self._stop_progress, "cancelled", None)
            await self._finish(JobState.CANCELLED, "cancelled by request")
            raise

    def _audit_submitted(self) -> None:
        self._audit(
            "job.submitted",
            spec=self.spec.model_dump(
                mode="json", exclude={"environment_variables", "secret_environment_variables"}
            ),
        )

    async def _admit(self) -> AdmissionDecision:
        """Admission, before anything else happens (the identity is in this workflow's headers;
        the activity reads it there). Recorded with the submission in one audit batch."""
        job = self.job
        request = AdmissionRequest(
            job_id=job.job_id, workflow_id=self.workflow_id, spec=self.spec, submitted_at=job.submitted_at
        )
        decision = await self.ledger.admit(request)
        self.status.admission = decision
        # The decision itself is in LoomDB already (security.access.* events, written by the
        # activity); a rejected job's job.submitted goes out with its job.rejected.
        self._audit_submitted()
        if decision.admitted:
            await self._flush_audit()
        return decision

    async def _acquire_placement(self) -> Placement | None:
        self._set_state(JobState.QUEUED)
        request = PlacementRequest.for_spec(self.job.job_id, self.workflow_id, self.spec, self.status.attempt)
        self._audit("job.queued", attempt=self.status.attempt, pool=self.spec.pool)
        await self._flush_audit()
        self._decision = None
        await self.scheduler.request_placement(request)
        try:
            await workflow.wait_condition(
                lambda: self._decision is not None and self._decision.attempt == self.status.attempt
            )
        except asyncio.CancelledError:
            await self.scheduler.release(self.job.job_id, self.status.attempt)
            raise
        decision = self._decision
        assert decision is not None
        if decision.placement is None:
            self.status.error = f"Unschedulable: {decision.rejected_reason}"
            return None
        placement = decision.placement
        self._placement = placement
        self.status.nodes = [a.node_id for a in placement.nodes]
        self.status.attempts.append(
            AttemptSummary(
                attempt=self.status.attempt,
                nodes=self.status.nodes,
                started_at=workflow.now(),
                outcome="running",
            )
        )
        if self.status.started_at is None:
            self.status.started_at = workflow.now()
        self._set_state(JobState.RUNNING)
        self._audit(
            "job.placed",
            attempt=self.status.attempt,
            nodes=[a.model_dump(mode="json") for a in placement.nodes],
            price_per_slot_hour=placement.master.price_per_slot_hour,
        )
        self._audit("job.started", attempt=self.status.attempt, nodes=self.status.nodes)
        await self._flush_audit()
        await self.ledger.attempt("started", self.status.attempt, placement)
        return placement

    async def _run_attempt(self, placement: Placement) -> TrainingProgress:
        """Run every node's share of the attempt; the first failure stops the others."""
        spec = self.spec
        nnodes = len(placement.nodes)
        port = MULTINODE_BASE_PORT + (zlib.crc32(self.job.job_id.encode()) + self.status.attempt) % 1000
        checkpoint_uri = None
        if spec.checkpoint_config.storage_uri:
            checkpoint_uri = spec.checkpoint_config.storage_uri.rstrip("/") + f"/{self.job.job_id}"
        remaining = timedelta(hours=spec.max_runtime_hours) - self._runtime_used
        started = workflow.now()
        self._stop_progress = None
        tasks = [
            workflow.start_activity_method(
                NodeActivities.run_training,
                TrainingRequest(
                    job_id=self.job.job_id,
                    workflow_id=self.workflow_id,
                    attempt=self.status.attempt,
                    spec=spec,
                    node_rank=rank,
                    nnodes=nnodes,
                    nproc_per_node=node.slots,
                    master_addr=placement.master.host,
                    master_port=port,
                    checkpoint_uri=checkpoint_uri,
                ),
                task_queue=node.task_queue,
                schedule_to_start_timeout=timedelta(seconds=self.job.node_pickup_timeout_s),
                start_to_close_timeout=remaining + timedelta(minutes=5),
                heartbeat_timeout=timedelta(seconds=self.job.node_heartbeat_timeout_s),
                retry_policy=RetryPolicy(maximum_attempts=1),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            for rank, node in enumerate(placement.nodes)
        ]
        auditor = None
        if workflow.patched(LIVE_CHECKPOINT_AUDIT):
            auditor = asyncio.create_task(self._audit_while_running(lambda: all(t.done() for t in tasks)))
        try:
            done, pending = await workflow.wait(
                tasks, timeout=remaining.total_seconds(), return_when=asyncio.FIRST_EXCEPTION
            )
            if not done:
                raise RuntimeExceeded()
            failed = [t for t in done if t.exception() is not None]
            if failed:
                raise self._classify(failed[0].exception(), placement)
            if pending:
                done_rest, _ = await workflow.wait(pending)
                failed = [t for t in done_rest if t.exception() is not None]
                if failed:
                    raise self._classify(failed[0].exception(), placement)
            return tasks[0].result()
        finally:
            # Stop whatever still runs (a failed peer, cancellation, the runtime limit):
            # the activities get SIGTERM-then-checkpoint semantics through cancellation.
            for t in tasks:
                if not t.done():
                    t.cancel()
            if any(not t.done() for t in tasks):
                await workflow.wait(tasks)
            if auditor is not None:
                await auditor
            self._runtime_used += workflow.now() - started
            if _stopped_by_cancel(tasks[0]):
                await self._read_stop_progress(placement)

    async def _audit_while_running(self, attempt_over: Any) -> None:
        """Record what arrives during an attempt (checkpoint notices) as it arrives."""
        while True:
            await workflow.wait_condition(lambda: bool(self._audit_pending) or attempt_over())
            if attempt_over():
                return  # _end_attempt flushes the rest
            await self._flush_audit()

    async def _read_stop_progress(self, placement: Placement) -> None:
        """Learn the checkpoint a stopped attempt wrote on SIGTERM.

        A cancelled activity's details do not reach the workflow (temporalio drops them), so
        ask the master node, whose rank 0 wrote the progress channel, for its record. A node
        that is gone or never started the attempt is not worth waiting for: the last
        heartbeat's checkpoint stays the job's.
        """
        master = placement.nodes[0]
        try:
            progress = await workflow.execute_activity_method(
                NodeActivities.read_training_progress,
                ProgressRequest(job_id=self.job.job_id, attempt=self.status.attempt, node_id=master.node_id),
                task_queue=master.task_queue,
                schedule_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(
                    maximum_attempts=3, non_retryable_error_types=[names.ErrorType.PROGRESS_NOT_FOUND]
                ),
            )
        except ActivityError as err:
            workflow.logger.warning("no stop progress from node %s: %s", master.node_id, err)
            return
        self.status.absorb(progress)
        self._stop_progress = progress

    def _classify(self, err: BaseException | None, placement: Placement) -> AttemptFailed:
        cause = err.cause if isinstance(err, ActivityError) else err
        if isinstance(cause, ApplicationError):
            progress = _progress_from(cause.details)
            try:
                kind = FailureKind(cause.type or "")
            except ValueError:
                kind = FailureKind.TRAINING_CRASHED
            return AttemptFailed(kind, cause.message, progress)
        if isinstance(cause, TimeoutError):
            progress = _progress_from(cause.last_heartbeat_details)
            if cause.type == TimeoutType.START_TO_CLOSE:
                return AttemptFailed(FailureKind.TIMED_OUT, "attempt ran past its time limit", progress)
            what = (
                "did not pick up the attempt"
                if cause.type == TimeoutType.SCHEDULE_TO_START
                else ("stopped heartbeating")
            )
            return AttemptFailed(FailureKind.NODE_LOST, f"node {what}", progress)
        return AttemptFailed(FailureKind.TRAINING_CRASHED, str(err), None)

    def _should_retry(self, failure: AttemptFailed) -> bool:
        policy = self.spec.retry_policy
        if self.status.attempt >= self.status.max_attempts or not failure.kind.retryable_by_default:
            return False
        if failure.kind == FailureKind.NODE_LOST and not policy.retry_on_node_failure:
            return False
        if failure.kind == FailureKind.RESOURCE_EXHAUSTED and not policy.retry_on_resource_exhaustion:
            return False
        return failure.kind != FailureKind.TIMED_OUT

    async def _wait_before_retry(self, failure: AttemptFailed) -> None:
        delay = self.spec.retry_policy.delay_before_retry(self.status.attempt)
        self._set_state(JobState.RECOVERING, f"{failure.kind.value}: {_first_line(str(failure))}")
        self._audit(
            "job.retrying",
            attempt=self.status.attempt,
            next_attempt=self.status.attempt + 1,
            failure_kind=failure.kind.value,
            error=_tail(str(failure)),
            delay_seconds=delay,
            resume_from_step=self.status.last_checkpoint.step if self.status.last_checkpoint else None,
        )
        await self._flush_audit()
        if delay > 0:
            await workflow.sleep(delay, summary=f"retry backoff before attempt {self.status.attempt + 1}")

    async def _end_attempt(
        self,
        placement: Placement,
        progress: TrainingProgress | None,
        outcome: str,
        failure: AttemptFailed | None,
    ) -> None:
        summary = self.status.attempts[-1]
        summary.ended_at = workflow.now()
        summary.outcome = outcome
        if failure is not None:
            summary.failure_kind = failure.kind
            summary.error = _tail(str(failure))
            self.status.error = f"{failure.kind.value}: {_first_line(str(failure))}"
            if failure.kind == FailureKind.NODE_LOST:
                for node in placement.nodes:
                    await self.scheduler.node_lost(node.node_id, str(failure))
        if progress is not None:
            self.status.absorb(progress)
            summary.resumed_from_step = progress.resumed_from_step
            summary.last_step = progress.step
            for ckpt in progress.checkpoints:
                self._audit_checkpoint(self.status.attempt, ckpt)
        await self.scheduler.release(self.job.job_id, self.status.attempt)
        self._placement = None
        await self._flush_audit()
        await self.ledger.attempt("ended", self.status.attempt, placement)

    async def _finish(self, state: JobState, error: str | None) -> JobResult:
        self.status.finished_at = workflow.now()
        if error:
            self.status.error = error
        elif state == JobState.SUCCEEDED:
            self.status.error = None
        self._set_state(state, error)
        event = {
            JobState.SUCCEEDED: "job.succeeded",
            JobState.FAILED: "job.failed",
            JobState.CANCELLED: "job.cancelled",
            JobState.REJECTED: "job.rejected",
        }[state]
        self._audit(
            event,
            attempts=self.status.attempt,
            final_step=self.status.step,
            metrics=self.status.metrics,
            error=_tail(error) if error else None,
            last_checkpoint=self.status.last_checkpoint.uri if self.status.last_checkpoint else None,
        )
        await self._flush_audit()
        # Every way out ends here: the job's reservation goes (a rejected job held none).
        await self.ledger.release(state.value.lower())
        return self.result()

    # --- signals and queries -----------------------------------------------------------------

    @workflow.signal(name=names.PLACEMENT_DECIDED)
    def placement_decided(self, decision: PlacementDecision) -> None:
        if decision.attempt == self.status.attempt:
            self._decision = decision

    @workflow.signal(name=names.CHECKPOINTS_SAVED)
    def checkpoints_saved(self, saved: CheckpointsSaved) -> None:
        """The running attempt's rank 0 wrote checkpoints (sent by the training activity)."""
        if saved.attempt != self.status.attempt or not saved.checkpoints:
            return
        for ckpt in saved.checkpoints:
            self._audit_checkpoint(saved.attempt, ckpt)
        newest = max(saved.checkpoints, key=lambda c: c.step)
        if self.status.last_checkpoint is None or newest.step >= self.status.last_checkpoint.step:
            self.status.last_checkpoint = newest

    @workflow.query(name=names.JOB_STATUS_QUERY)
    def get_status(self) -> JobStatus:
        return self.status

    def result(self) -> JobResult:
        s = self.status
        first_resume = next((a.resumed_from_step for a in s.attempts if a.resumed_from_step), None)
        return JobResult(
            job_id=s.job_id,
            state=s.state,
            attempts=s.attempt,
            resumed_from_step=first_resume,
            final_step=s.step,
            metrics=s.metrics,
            last_checkpoint=s.last_checkpoint,
            error=s.error,
        )

    # --- bookkeeping -------------------------------------------------------------------------

    def _set_state(self, state: JobState, reason: str | None = None) -> None:
        if self.status.state == state:
            return
        self.status.state = state
        self.status.history.append(StateChange(state=state, at=workflow.now(), reason=reason))
        workflow.upsert_search_attributes([sa.STATUS.value_set(state.value)])

    def _audit_checkpoint(self, attempt: int, ckpt: CheckpointRef) -> None:
        if (attempt, ckpt.step) in self._checkpoints_audited:
            return
        self._checkpoints_audited.add((attempt, ckpt.step))
        self._audit("model.training.checkpoint", attempt=attempt, **ckpt.model_dump(mode="json"))

    def _audit(self, event_type: str, **data: Any) -> None:
        self._audit_seq += 1
        self._audit_pending.append(
            AuditEvent(
                seq=self._audit_seq,
                event_type=event_type,
                occurred_at=workflow.now(),
                data={"job_id": self.job.job_id, **data},
            )
        )

    async def _flush_audit(self) -> None:
        if not self._audit_pending:
            return
        batch = AuditBatch(
            workflow_id=self.workflow_id,
            job_id=self.job.job_id,
            user=self.spec.user,
            team=self.spec.team,
            events=self._audit_pending,
        )
        self._audit_pending = []
        await workflow.execute_activity_method(
            ControlActivities.record_audit_events, batch, **CONTROL_ACTIVITY_OPTIONS
        )


def _stopped_by_cancel(task: asyncio.Task[Any]) -> bool:
    """Whether a training activity ended because it was cancelled (and so stopped cleanly)."""
    if task.cancelled():
        return True
    exc = task.exception()
    return isinstance(exc, ActivityError) and isinstance(exc.cause, CancelledError)


def _progress_from(details: Any) -> TrainingProgress | None:
    """Heartbeat/failure details arrive as plain dicts (they are untyped on the wire)."""
    if not details:
        return None
    raw = details[0]
    if isinstance(raw, TrainingProgress):
        return raw
    try:
        return TrainingProgress.model_validate(raw)
    except Exception:
        return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _tail(text: str | None, limit: int = 4000) -> str | None:
    if text is None:
        return None
    return text if len(text) <= limit else "…" + text[-limit:]
