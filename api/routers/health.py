"""`GET /healthz`: is LoomCtl up, and can it reach Temporal?

Always 200 while the API process serves requests (load balancers should keep routing to it);
`status` is "degraded" and `temporal.reachable` false when Temporal cannot be reached.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.service import RPCError

from loomos.api.deps import TemporalDep, TemporalUnavailable
from loomos.client import Health, TemporalHealth

router = APIRouter(tags=["health"])

HEALTH_RPC_TIMEOUT = timedelta(seconds=3)


@router.get("/healthz", response_model=Health, summary="Liveness and Temporal reachability")
async def healthz(request: Request, temporal: TemporalDep) -> Health:
    t = temporal.settings.temporal
    error: str | None = None
    try:
        client = await temporal.client()
        # A cheap round trip proves the frontend answers now, not only when we connected.
        await client.workflow_service.get_system_info(
            GetSystemInfoRequest(), retry=False, timeout=HEALTH_RPC_TIMEOUT
        )
    except TemporalUnavailable as err:
        error = str(err)
    except RPCError as err:
        error = f"Temporal at {t.address} did not answer: {err.message}"
    return Health(
        status="ok" if error is None else "degraded",
        version=request.app.version,
        temporal=TemporalHealth(
            address=t.address, namespace=t.namespace, reachable=error is None, error=error
        ),
    )
