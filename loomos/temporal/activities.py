"""The activities workflows call, as typed references: their names, inputs and results.

Workflows must not import the implementations (they do I/O: torch, SQL, processes), so each
worker's activities are declared here as stubs with the same `@activity.defn` name and
signature as the implementation its worker registers:

    await workflow.execute_activity_method(NodeActivities.run_training, request, task_queue=...)

The implementations live in loomos.activities (ControlActivities: scheduling.py, audit.py,
admission.py; NodeActivities: the training package). tests/activities/test_activity_contracts.py
checks that every stub here has an implementation registered under the same name, with the
same input and result types. Pure: workflow code imports this module.
"""

from __future__ import annotations

from temporalio import activity

from loomos.models.admission import AdmissionDecision, AdmissionRelease, AdmissionRequest, UsageMark
from loomos.models.audit import AuditBatch
from loomos.models.scheduler import PlacementRequest
from loomos.models.training import LogsRequest, LogsResult, ProgressRequest, TrainingProgress, TrainingRequest
from loomos.temporal import names


class ControlActivities:
    """Served by every control worker on the `loomos-control` task queue."""

    @activity.defn(name=names.REQUEST_PLACEMENT)
    async def request_placement(self, request: PlacementRequest) -> None:
        """Queue the request at its pool's scheduler (starting the scheduler if needed)."""
        raise NotImplementedError

    @activity.defn(name=names.RECORD_AUDIT_EVENTS)
    async def record_audit_events(self, batch: AuditBatch) -> list[int]:
        """Append the batch to LoomDB; the events' positions (the original ones on a retry)."""
        raise NotImplementedError

    @activity.defn(name=names.ADMIT_JOB)
    async def admit_job(self, request: AdmissionRequest) -> AdmissionDecision:
        """Authorize the workflow's identity (from its headers) for the job and, if admitted,
        reserve its share of the quotas; the same decision again on a retry."""
        raise NotImplementedError

    @activity.defn(name=names.RECORD_JOB_USAGE)
    async def record_job_usage(self, mark: UsageMark) -> None:
        """An attempt started or stopped running: GPU-hours and cost accrue in between."""
        raise NotImplementedError

    @activity.defn(name=names.RELEASE_ADMISSION)
    async def release_admission(self, release: AdmissionRelease) -> bool:
        """The job is over: free its reservation; whether one was still held."""
        raise NotImplementedError


class NodeActivities:
    """Served by each node worker on its own task queue, `loomos-node-<node_id>`."""

    @activity.defn(name=names.RUN_TRAINING)
    async def run_training(self, request: TrainingRequest) -> TrainingProgress:
        """Run this node's share of an attempt with torchrun; heartbeats TrainingProgress."""
        raise NotImplementedError

    @activity.defn(name=names.READ_TRAINING_LOG)
    async def read_training_log(self, request: LogsRequest) -> LogsResult:
        """The tail of an attempt's log on this node."""
        raise NotImplementedError

    @activity.defn(name=names.READ_TRAINING_PROGRESS)
    async def read_training_progress(self, request: ProgressRequest) -> TrainingProgress:
        """An attempt's progress as its progress channel on this node recorded it."""
        raise NotImplementedError
