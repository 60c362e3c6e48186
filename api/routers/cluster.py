"""Cluster: a pool's nodes, their slot usage and its placement queue (cluster:read)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from loomos.api.deps import QueryTimeoutDep, TemporalDep
from loomos.api.patterns import POOL_PATTERN
from loomos.api.permissions import requires
from loomos.api.services import cluster
from loomos.models.permissions import Permission
from loomos.models.scheduler import ClusterSnapshot

router = APIRouter(prefix="/cluster", tags=["cluster"])


@router.get(
    "/status",
    response_model=ClusterSnapshot,
    summary="Nodes, slot usage and queue of one pool",
    responses={404: {"description": "no such pool (no node of it has registered)"}},
    **requires(Permission.CLUSTER_READ),
)
async def cluster_status(
    temporal: TemporalDep,
    query_timeout: QueryTimeoutDep,
    pool: Annotated[str, Query(pattern=POOL_PATTERN)] = "default",
) -> ClusterSnapshot:
    return await cluster.cluster_status(await temporal.client(), pool, query_timeout)
