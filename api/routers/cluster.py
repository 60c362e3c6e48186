"""Cluster: a pool's nodes, their slot usage and the placement queue, from its scheduler."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from loomos.api.deps import TemporalDep
from loomos.api.routers.jobs import POOL_PATTERN
from loomos.api.workflow_calls import (
    DEFAULT_QUERY_TIMEOUT,
    QueryTimedOut,
    WorkflowGone,
    no_worker,
    query_workflow,
)
from loomos.models.scheduler import ClusterSnapshot
from loomos.temporal.names import scheduler_workflow_id

router = APIRouter(tags=["cluster"])


@router.get(
    "/cluster/status",
    response_model=ClusterSnapshot,
    summary="Nodes, slot usage and queue of one pool",
    responses={404: {"description": "no such pool (no node of it has registered)"}},
)
async def cluster_status(
    request: Request,
    temporal: TemporalDep,
    pool: Annotated[str, Query(pattern=POOL_PATTERN)] = "default",
) -> ClusterSnapshot:
    client = await temporal.client()
    workflow_id = scheduler_workflow_id(pool)
    handle = client.get_workflow_handle(workflow_id)
    timeout = getattr(request.app.state, "query_timeout", DEFAULT_QUERY_TIMEOUT)
    try:
        return await query_workflow(handle, "snapshot", ClusterSnapshot, timeout)
    except WorkflowGone as err:
        raise HTTPException(
            404,
            f"no pool {pool!r}: its scheduler ({workflow_id}) does not exist; it starts when the "
            "pool's first node worker registers or its first job is queued",
        ) from err
    except QueryTimedOut as err:
        raise no_worker(f"the scheduler of pool {pool!r}", timeout) from err
