"""What a node worker is asked to run (one node's share of an attempt) and what it reports:
progress, checkpoints, and the records it keeps on the node (logs, the progress channel)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from loomos.models.spec import JobSpec


class CheckpointRef(BaseModel):
    step: int
    uri: str
    saved_at: datetime | None = None
    metrics: dict[str, float] = Field(default_factory=dict)


class TrainingRequest(BaseModel):
    """Input of `run_training`: one node's share of one attempt, torchrun there for these ranks."""

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


class ProgressRequest(BaseModel):
    """Input of `read_training_progress`: an attempt's progress record on the node that ran it."""

    job_id: str
    attempt: int = Field(ge=1)
    node_id: str


class LogsRequest(ProgressRequest):
    """Input of `read_training_log` and of the log workflow: the tail of one attempt's log."""

    tail_bytes: int = Field(64 * 1024, ge=1, le=1024 * 1024)


class LogsResult(BaseModel):
    job_id: str
    attempt: int
    node_id: str
    path: str
    text: str
    truncated: bool
    size_bytes: int
