"""Models that cross the wire between the API, workflows and activities.

Pure pydantic: workflow code imports this module, so nothing here may touch the network,
the clock, torch or SQL. Timestamps are passed in by callers (workflow.now() in workflows).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from loomos.marketplace.price_record import PriceRecord
from loomos.spec import JobSpec

CONTROL_TASK_QUEUE = "loomos-control"


def node_task_queue(node_id: str) -> str:
    return f"loomos-node-{node_id}"


def job_workflow_id(job_id: str) -> str:
    return f"job-{job_id}"


def scheduler_workflow_id(pool: str) -> str:
    return f"scheduler-{pool}"


class JobState(StrEnum):
    SUBMITTED = "SUBMITTED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    RECOVERING = "RECOVERING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class FailureKind(StrEnum):
    """Why an attempt failed; decides whether the job workflow retries it."""

    INVALID_JOB = "InvalidJob"  # bad script path, bad working directory: never retried
    INVALID_ARGUMENTS = "InvalidArguments"  # the script rejected its arguments (exit 2): never retried
    TRAINING_CRASHED = "TrainingCrashed"  # a rank exited non-zero or died of a signal
    RESOURCE_EXHAUSTED = "ResourceExhausted"  # out of memory (host or GPU)
    NODE_LOST = "NodeLost"  # the node stopped heartbeating
    TIMED_OUT = "TimedOut"  # max_runtime_hours reached

    @property
    def retryable_by_default(self) -> bool:
        return self not in (FailureKind.INVALID_JOB, FailureKind.INVALID_ARGUMENTS)


# --- submission -----------------------------------------------------------------------------


class SubmitJob(BaseModel):
    """Input of JobWorkflow."""

    job_id: str
    spec: JobSpec
    submitted_at: datetime
    # How long a node may stay silent before its attempt counts as lost (NodeLost), and how
    # long an attempt may wait for its node worker to pick it up. Operators tune these.
    node_heartbeat_timeout_s: float = Field(30, gt=0, le=3600)
    node_pickup_timeout_s: float = Field(120, gt=0, le=86400)


# --- nodes and placement --------------------------------------------------------------------


class NodeInfo(BaseModel):
    """What a node worker tells its pool's scheduler when it registers."""

    node_id: str
    pool: str
    task_queue: str
    host: str = Field(description="address other nodes of a job reach this one at (MASTER_ADDR)")
    accelerator: str = Field(description="'cuda' or 'cpu'")
    gpu_type: str = Field(description="normalised GPU name (H100, A100-80GB, ...) or 'cpu'")
    slots: int = Field(ge=1, description="GPUs, or CPU training slots on a CPU node")
    gpu_memory_gb: float = 0
    price_per_slot_hour: float | None = Field(None, description="amortised cost, for cost records")
    price: PriceRecord | None = Field(
        None, description="the catalog offer this node runs on and its price when the node started"
    )
    registered_at: datetime | None = None


class PlacementRequest(BaseModel):
    job_id: str
    workflow_id: str
    pool: str
    gpu_count: int
    gpu_type: str | None = None
    gpu_memory_gb: float | None = None
    nodes: int = 1
    priority: int = 50
    attempt: int = 1

    @classmethod
    def for_spec(cls, job_id: str, workflow_id: str, spec: JobSpec, attempt: int) -> PlacementRequest:
        r = spec.resources
        return cls(
            job_id=job_id,
            workflow_id=workflow_id,
            pool=spec.pool,
            gpu_count=max(r.gpu_count, 1),
            gpu_type=r.gpu_type,
            gpu_memory_gb=r.gpu_memory_gb,
            nodes=r.nodes,
            priority=spec.priority,
            attempt=attempt,
        )


class NodeAssignment(BaseModel):
    node_id: str
    task_queue: str
    host: str
    slots: int
    gpu_type: str
    price_per_slot_hour: float | None = None
    # The node's offer and price as recorded when it started: cost records use this price,
    # not the catalog of the day they are computed.
    price: PriceRecord | None = None


class Placement(BaseModel):
    job_id: str
    attempt: int
    nodes: list[NodeAssignment]
    placed_at: datetime

    @property
    def master(self) -> NodeAssignment:
        return self.nodes[0]


class PlacementDecision(BaseModel):
    """The scheduler's answer, signalled back to the job workflow."""

    job_id: str
    attempt: int
    placement: Placement | None = None
    rejected_reason: str | None = None


class NodeUsage(BaseModel):
    node: NodeInfo
    used_slots: int
    jobs: list[str]
    available: bool
    last_seen: datetime | None = None


class ClusterSnapshot(BaseModel):
    pool: str
    nodes: list[NodeUsage]
    queue: list[PlacementRequest]
    total_slots: int
    free_slots: int


# --- training attempts ----------------------------------------------------------------------


class CheckpointRef(BaseModel):
    step: int
    uri: str
    saved_at: datetime | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class TrainingRequest(BaseModel):
    """One node's share of one attempt: run torchrun there for these ranks."""

    job_id: str
    workflow_id: str
    attempt: int
    spec: JobSpec
    node_rank: int = 0
    nnodes: int = 1
    nproc_per_node: int
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    checkpoint_uri: str | None = Field(
        None, description="where this job's checkpoints live; None: node default"
    )


class TrainingProgress(BaseModel):
    """Heartbeat details of the training activity, and its result.

    Kept small on purpose (Temporal warns on payloads over 256 KB): checkpoints are URIs.
    """

    attempt: int
    node_id: str | None = None
    step: int | None = None
    total_steps: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    resumed_from_step: int | None = None
    last_checkpoint: CheckpointRef | None = None
    checkpoints: list[CheckpointRef] = Field(default_factory=list, description="saved during this attempt")
    log_path: str | None = None
    exit_code: int | None = None
    updated_at: datetime | None = None


class CheckpointsSaved(BaseModel):
    """Signal `checkpoints_saved` to a job workflow: checkpoints an attempt's rank 0 wrote.

    Sent by the training activity while the attempt runs, so the audit trail and the job's
    status learn of each checkpoint then, not only when the attempt ends.
    """

    attempt: int = Field(ge=1)
    node_id: str | None = None
    checkpoints: list[CheckpointRef]


CHECKPOINTS_SAVED_SIGNAL = "checkpoints_saved"


# --- job status -----------------------------------------------------------------------------


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


class JobResult(BaseModel):
    job_id: str
    state: JobState
    attempts: int
    resumed_from_step: int | None = None
    final_step: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    last_checkpoint: CheckpointRef | None = None
    error: str | None = None


# --- audit ----------------------------------------------------------------------------------


class AuditEvent(BaseModel):
    """A lifecycle event the job workflow asks LoomDB to record.

    `seq` is the event's position in its workflow's own sequence; together with the workflow id
    it derives the event id, so activity retries and workflow replays never duplicate an event.
    """

    seq: int
    event_type: str
    occurred_at: datetime
    data: dict[str, Any] = Field(default_factory=dict)


class AuditBatch(BaseModel):
    workflow_id: str
    job_id: str
    user: str
    team: str
    events: list[AuditEvent]


# --- logs -----------------------------------------------------------------------------------


class LogsRequest(BaseModel):
    """Read the tail of one attempt's training log on the node that ran it."""

    job_id: str
    attempt: int = Field(ge=1)
    node_id: str
    tail_bytes: int = Field(64 * 1024, ge=1, le=1024 * 1024)


class LogsResult(BaseModel):
    job_id: str
    attempt: int
    node_id: str
    path: str
    text: str
    truncated: bool
    size_bytes: int
