"""`GET /healthz`: is LoomCtl up, and can it reach Temporal?

Always 200 while the API process serves requests (load balancers should keep routing to it);
`status` is "degraded" and `temporal.reachable` false when Temporal cannot be reached.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from loomos.api.deps import TemporalDep
from loomos.api.services import health as service
from loomos.models.api import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness and Temporal reachability")
async def healthz(request: Request, temporal: TemporalDep) -> Health:
    return await service.health(temporal, request.app.version)
