"""A job's life as the job workflow records it: states (SUBMITTED, then REJECTED by admission
or QUEUED, RUNNING, ...), why attempts fail, the workflow's input, its status (the `status`
query) and its result."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from loomos.models.admission import AdmissionDecision
from loomos.models.spec import JobSpec
from loomos.models.training import CheckpointRef, TrainingProgress


class JobState(StrEnum):
    SUBMITTED = "SUBMITTED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    RECOVERING = "RECOVERING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    # Admission refused it (permission, quota, cost limit): it never ran; `error` says why.
    REJECTED = "REJECTED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED)


class FailureKind(StrEnum):
    """Why an attempt failed; decides whether the job workflow retries it. The values are the
    `type` of the ApplicationError the training activity raises."""

    INVALID_JOB = "InvalidJob"  # bad script path, bad working directory: never retried
    INVALID_ARGUMENTS = "InvalidArguments"  # the script rejected its arguments (exit 2): never retried
    TRAINING_CRASHED = "TrainingCrashed"  # a rank exited non-zero or died of a signal
    RESOURCE_EXHAUSTED = "ResourceExhausted"  # out of memory (host or GPU)
    NODE_LOST = "NodeLost"  # the node stopped heartbeating
    TIMED_OUT = "TimedOut"  # max_runtime_hours reached

    @property
    def retryable_by_default(self) -> bool:
        return self not in (FailureKind.INVALID_JOB, FailureKind.INVALID_ARGUMENTS)


class JobWorkflowInput(BaseModel):
    """A submitted job as the job workflow starts with it: the spec, its id, and the node
    timeouts the operators chose."""

    job_id: str
    spec: JobSpec
    submitted_at: datetime
    # How long a node may stay silent before its attempt counts as lost (NodeLost), and how
    # long an attempt may wait for its node worker to pick it up. Operators tune these.
    node_heartbeat_timeout_s: float = Field(30, gt=0, le=3600)
    node_pickup_timeout_s: float = Field(120, gt=0, le=86400)


class AttemptSummary(BaseModel):
    attempt: int
    nodes: list[str] = Field(default_factory=list)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str | None = None  # succeeded | failed | cancelled | running
    failure_kind: FailureKind | None = None
    error: str | None = None
    resumed_from_step: int | None = None
    last_step: int | None = None


class StateChange(BaseModel):
    state: JobState
    at: datetime
    reason: str | None = None


class JobStatus(BaseModel):
    """What the job workflow's `status` query returns."""

    job_id: str
    workflow_id: str
    name: str
    user: str
    team: str
    pool: str
    state: JobState
    attempt: int
    max_attempts: int
    step: int | None = None
    total_steps: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    resumed_from_step: int | None = None
    last_checkpoint: CheckpointRef | None = None
    nodes: list[str] = Field(default_factory=list)
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    attempts: list[AttemptSummary] = Field(default_factory=list)
    history: list[StateChange] = Field(default_factory=list)
    # What admission decided (None: not decided yet, or a job from before admission existed).
    admission: AdmissionDecision | None = None

    def absorb(self, progress: TrainingProgress, *, only_forward: bool = False) -> None:
        """Fold what an attempt reported into the status.

        The job workflow folds in an attempt's own record as it ends (only_forward=False: that
        record is the newest truth, even of a step lower than the last attempt's). LoomCtl folds
        a running attempt's live heartbeat into the workflow's status (only_forward=True): the
        step and checkpoint never move back, and metrics are merged, so a heartbeat older than
        what the workflow already recorded cannot hide it.
        """
        if progress.step is not None and not (only_forward and progress.step < (self.step or -1)):
            self.step = progress.step
        if progress.total_steps is not None:
            self.total_steps = progress.total_steps
        if progress.metrics:
            self.metrics = {**self.metrics, **progress.metrics} if only_forward else progress.metrics
        if progress.resumed_from_step is not None:
            self.resumed_from_step = progress.resumed_from_step
        ckpt = progress.last_checkpoint
        if ckpt is not None and not (
            only_forward and self.last_checkpoint is not None and ckpt.step < self.last_checkpoint.step
        ):
            self.last_checkpoint = ckpt


class JobResult(BaseModel):
    job_id: str
    state: JobState
    attempts: int
    resumed_from_step: int | None = None
    final_step: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    last_checkpoint: CheckpointRef | None = None
    error: str | None = None
