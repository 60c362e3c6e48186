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
from loomos.temporal import names


async def signal_scheduler(client: Client, pool: str, signal: str, arg: object) -> None:
    """Deliver `signal` to the pool's scheduler, starting the scheduler if it is not running."""
    await client.start_workflow(
        names.SCHEDULER_WORKFLOW,
        SchedulerState(pool=pool),
        id=names.scheduler_workflow_id(pool),
        task_queue=names.CONTROL_TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=signal,
        start_signal_args=[arg],
    )


async def announce_node(client: Client, info: NodeInfo) -> None:
    """Register the node with its pool's scheduler, or renew its lease."""
    await signal_scheduler(client, info.pool, names.REGISTER_NODE, info)


async def withdraw_node(client: Client, node_id: str, pool: str) -> None:
    """Tell a running scheduler the node is leaving (a stopping node worker)."""
    handle = client.get_workflow_handle(names.scheduler_workflow_id(pool))
    await handle.signal(names.DEREGISTER_NODE, node_id)


@activity.defn(name=names.REQUEST_PLACEMENT)
async def request_placement(request: PlacementRequest) -> None:
    """Implements ControlActivities.request_placement."""
    await signal_scheduler(activity.client(), request.pool, names.REQUEST_PLACEMENT_SIGNAL, request)
