"""Cluster: a pool's nodes, their slot usage and its placement queue, from its scheduler."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client

from loomos.api.errors import NotFound
from loomos.api.services.temporal import QueryTimedOut, WorkflowGone, no_worker, query_workflow
from loomos.models.scheduler import ClusterSnapshot
from loomos.temporal.names import scheduler_workflow_id
from loomos.workflows.scheduler import SchedulerWorkflow


async def cluster_status(client: Client, pool: str, query_timeout: timedelta) -> ClusterSnapshot:
    workflow_id = scheduler_workflow_id(pool)
    handle = client.get_workflow_handle(workflow_id)
    try:
        return await query_workflow(handle, SchedulerWorkflow.snapshot, query_timeout)
    except WorkflowGone as err:
        raise NotFound(
            f"no pool {pool!r}: its scheduler ({workflow_id}) does not exist; it starts when the "
            "pool's first node worker registers or its first job is queued"
        ) from err
    except QueryTimedOut as err:
        raise no_worker(f"the scheduler of pool {pool!r}", query_timeout) from err
