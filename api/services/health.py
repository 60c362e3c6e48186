"""Liveness and whether Temporal answers now (not only whether it did when LoomCtl connected)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.service import RPCError

from loomos.api.services.temporal import TemporalConnection, TemporalUnavailable
from loomos.models.api import Health, TemporalHealth

HEALTH_RPC_TIMEOUT = timedelta(seconds=3)


async def health(temporal: TemporalConnection, version: str) -> Health:
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
        version=version,
        temporal=TemporalHealth(
            address=t.address, namespace=t.namespace, reachable=error is None, error=error
        ),
    )
