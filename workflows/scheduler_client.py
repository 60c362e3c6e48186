"""SchedulerClient: how a job workflow talks to its pool's scheduler, from workflow code.

The scheduler may not exist yet when a job first asks for nodes, so a placement request goes
through the `request_placement` activity (signal-with-start, retried through transient errors);
the answer comes back as the job's `placement_decided` signal. Releases and lost-node reports
are plain signals to the running scheduler: if it is unreachable, it reclaims the allocation
when it next fails to answer the job.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from loomos.models.scheduler import NodeLost, PlacementRequest, ReleaseRequest
    from loomos.temporal.activities import ControlActivities
    from loomos.temporal.names import CONTROL_TASK_QUEUE, scheduler_workflow_id

from loomos.workflows.scheduler import SchedulerWorkflow

# Control activities are quick; retry them until they succeed (LoomDB or the scheduler being
# briefly unreachable must not fail a training job).
CONTROL_ACTIVITY_OPTIONS: dict[str, Any] = dict(
    task_queue=CONTROL_TASK_QUEUE,
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)),
)


class SchedulerClient:
    """The scheduler of one pool, as seen from a job workflow."""

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self._handle = workflow.get_external_workflow_handle_for(
            SchedulerWorkflow.run, scheduler_workflow_id(pool)
        )

    async def request_placement(self, request: PlacementRequest) -> None:
        """Queue the request; the decision arrives as the job's `placement_decided` signal."""
        await workflow.execute_activity_method(
            ControlActivities.request_placement, request, **CONTROL_ACTIVITY_OPTIONS
        )

    async def release(self, job_id: str, attempt: int) -> None:
        """The attempt ended (or left the queue): free its slots."""
        await self._signal(SchedulerWorkflow.release, ReleaseRequest(job_id=job_id, attempt=attempt))

    async def node_lost(self, node_id: str, reason: str) -> None:
        """The attempt saw this node stop heartbeating: no new work for it until it re-registers."""
        await self._signal(SchedulerWorkflow.node_lost, NodeLost(node_id=node_id, reason=reason))

    async def _signal(self, signal: Any, arg: Any) -> None:
        try:
            await self._handle.signal(signal, arg)
        except Exception as err:
            # The scheduler only holds capacity for live jobs; if it is unreachable the
            # allocation is reclaimed when it next sees this job's placement answer fail.
            workflow.logger.warning("signal to scheduler of pool %s failed: %s", self.pool, err)
