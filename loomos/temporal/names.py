"""Every name LoomOS gives Temporal, defined once: task queues, workflow ids, and the type names
of workflows, activities, signals, queries and failures.

These names are the wire contract with running workflows and saved histories: renaming one is
a breaking change for every workflow in flight (replay fails, signals go unanswered). Change a
value only together with a `workflow.patched(...)` branch and a saved history in
tests/histories/. Pure: workflow code imports this module.
"""

from __future__ import annotations

from enum import StrEnum

# --- task queues and workflow ids --------------------------------------------------------------

CONTROL_TASK_QUEUE = "loomos-control"


def node_task_queue(node_id: str) -> str:
    """The task queue of one node worker: a placement decision is a list of these."""
    return f"loomos-node-{node_id}"


def job_workflow_id(job_id: str) -> str:
    return f"job-{job_id}"


def job_id_of(workflow_id: str) -> str:
    """The job id of a job workflow's id (the inverse of job_workflow_id)."""
    return workflow_id.removeprefix("job-")


def scheduler_workflow_id(pool: str) -> str:
    return f"scheduler-{pool}"


def logs_workflow_id(job_id: str, attempt: int, node_id: str, nonce: str) -> str:
    return f"logs-{job_id}-{attempt}-{node_id}-{nonce}"


# --- workflow types ------------------------------------------------------------------------------

JOB_WORKFLOW = "JobWorkflow"
SCHEDULER_WORKFLOW = "SchedulerWorkflow"
FETCH_LOGS_WORKFLOW = "FetchLogsWorkflow"

# --- activity types ------------------------------------------------------------------------------

REQUEST_PLACEMENT = "request_placement"
RECORD_AUDIT_EVENTS = "record_audit_events"
RUN_TRAINING = "run_training"
READ_TRAINING_LOG = "read_training_log"
READ_TRAINING_PROGRESS = "read_training_progress"
# admission and the quota ledger (loomos.activities.admission)
ADMIT_JOB = "admit_job"
RECORD_JOB_USAGE = "record_job_usage"
RELEASE_ADMISSION = "release_admission"

# --- signals and queries -------------------------------------------------------------------------

# to a job workflow
PLACEMENT_DECIDED = "placement_decided"
CHECKPOINTS_SAVED = "checkpoints_saved"
JOB_STATUS_QUERY = "status"

# to a pool's scheduler workflow
REGISTER_NODE = "register_node"
DEREGISTER_NODE = "deregister_node"
REQUEST_PLACEMENT_SIGNAL = "request_placement"
RELEASE = "release"
NODE_LOST = "node_lost"
SNAPSHOT_QUERY = "snapshot"


# --- failure types (ApplicationError.type) -------------------------------------------------------


class ErrorType(StrEnum):
    """The `type` of the ApplicationErrors LoomOS raises that callers branch on.

    Attempt failures are FailureKind (loomos.models.jobs); these are the others.
    """

    LOG_NOT_FOUND = "LogNotFound"
    PROGRESS_NOT_FOUND = "ProgressNotFound"
    NODE_UNREACHABLE = "NodeUnreachable"
    INVALID_EVENT = "InvalidEvent"
