"""Control activities that talk to a pool's scheduler workflow from outside workflow code.

Asking for a placement goes through an activity, not a workflow-to-workflow signal, because
the scheduler may not exist yet: signal-with-start creates it on first use, from any side
(a node registering or a job asking), and an activity retries through transient errors.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from loomos.models.scheduler import NodeInfo, PlacementRequest, SchedulerState
from loomos.temporal.names import CONTROL_TASK_QUEUE, scheduler_workflow_id
from loomos.workflows.scheduler import SchedulerWorkflow


async def signal_scheduler(client: Client, pool: str, signal: str, arg: object) -> None:
    """Deliver `signal` to the pool's scheduler, starting the scheduler if it is not running."""
    await client.start_workflow(
        SchedulerWorkflow.run,
        SchedulerState(pool=pool),
        id=scheduler_workflow_id(pool),
        task_queue=CONTROL_TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=signal,
        start_signal_args=[arg],
    )


async def announce_node(client: Client, info: NodeInfo) -> None:
    await signal_scheduler(client, info.pool, "register_node", info)


@activity.defn(name="request_placement")
async def request_placement(request: PlacementRequest) -> None:
    await signal_scheduler(activity.client(), request.pool, "request_placement", request)
