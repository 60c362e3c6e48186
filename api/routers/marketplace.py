"""Marketplace: GPU offers, estimates for a JobSpec, catalog metadata.

Bad query values get 400 with a `detail` naming the filter; a malformed JobSpec gets FastAPI's
422 with field paths. An infeasible request is not an error: 200 with `feasible: false`.

Every route needs cluster:read: prices and capacity are facts about where jobs can run (what a
data scientist reads before submitting), and an estimate starts nothing, so jobs:create would
be too much and jobs:read (other people's jobs) beside the point.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from loomos.api.permissions import requires
from loomos.api.services import marketplace
from loomos.models.api import EstimateResponse, OffersResponse
from loomos.models.permissions import Permission
from loomos.models.spec import JobSpec

router = APIRouter(prefix="/marketplace", tags=["marketplace"])


@router.get(
    "/offers",
    response_model=OffersResponse,
    summary="GPU offers matching the filters",
    **requires(Permission.CLUSTER_READ),
)
def list_offers(
    gpu: Annotated[str | None, Query(description="H100, A100 (both sizes), A100-80GB, L4, ...")] = None,
    count: Annotated[
        int | None, Query(ge=1, le=64, description="at least this many GPUs per machine")
    ] = None,
    provider: Annotated[list[str], Query(description="aws, gcp, azure, onprem (repeatable)")] = [],  # noqa: B006
    region: Annotated[list[str], Query(description="repeatable")] = [],  # noqa: B006
    spot: Annotated[bool, Query(description="only rows with a spot price; max_price applies to it")] = False,
    max_price: Annotated[float | None, Query(gt=0, description="USD per machine-hour")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> OffersResponse:
    return marketplace.list_offers(gpu, count, provider, region, spot, max_price, limit)


@router.post(
    "/estimate",
    response_model=EstimateResponse,
    summary="Ranked placements and costs for a JobSpec",
    **requires(Permission.CLUSTER_READ),
)
def estimate(
    spec: JobSpec,
    top: Annotated[int, Query(ge=1, le=200)] = 10,
    pricing: Annotated[
        Literal["auto", "on_demand", "spot"], Query(description="auto: spot if preemptible")
    ] = "auto",
    cost_weight: Annotated[float, Query(ge=0)] = 0.4,
    performance_weight: Annotated[float, Query(ge=0)] = 0.3,
    availability_weight: Annotated[float, Query(ge=0)] = 0.3,
) -> EstimateResponse:
    weights = (cost_weight, performance_weight, availability_weight)
    return marketplace.estimate(spec, top, pricing, weights)


@router.get(
    "/catalog",
    summary="Where prices come from: providers, as-of dates, sources",
    **requires(Permission.CLUSTER_READ),
)
def catalog_metadata() -> dict[str, Any]:
    return marketplace.catalog_metadata()
