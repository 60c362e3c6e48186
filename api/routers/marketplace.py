"""Marketplace routes: offers, estimates for a JobSpec, catalog metadata.

Bad query values get 400 with a `detail` naming the filter; a malformed JobSpec gets
FastAPI's 422 with field paths. An infeasible request is not an error: 200 with
`feasible: false`, no options and the reasons.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from loomos.marketplace.catalog import Catalog, CatalogError, load_catalog_cached
from loomos.marketplace.estimate import CostEstimate, estimate_option
from loomos.marketplace.offer_filters import filter_offers, offer_row
from loomos.marketplace.optimizer import MarketInputError, Request, Weights, rank_offers
from loomos.models.spec import JobSpec

router = APIRouter(prefix="/marketplace", tags=["marketplace"])


def _catalog() -> Catalog:
    try:
        return load_catalog_cached()
    except CatalogError as exc:
        raise HTTPException(status_code=503, detail=f"price catalog unavailable: {exc}") from None


class OffersResponse(BaseModel):
    count: int
    offers: list[dict[str, Any]]
    as_of: dict[str, str]


@router.get("/offers", response_model=OffersResponse)
def list_offers(
    gpu: str | None = Query(None, description="H100, A100 (both sizes), A100-80GB, L4, ..."),
    count: int | None = Query(None, ge=1, le=64, description="at least this many GPUs per machine"),
    provider: list[str] = Query([], description="aws, gcp, azure, onprem (repeatable)"),
    region: list[str] = Query([], description="repeatable"),
    spot: bool = Query(False, description="only rows with a spot price; max_price applies to it"),
    max_price: float | None = Query(None, gt=0, description="USD per machine-hour"),
    limit: int = Query(100, ge=1, le=10000),
) -> OffersResponse:
    catalog = _catalog()
    try:
        rows = filter_offers(catalog.offers, gpu, count, provider, region, spot, max_price)
    except MarketInputError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    now = datetime.now(UTC)
    return OffersResponse(
        count=len(rows),
        offers=[offer_row(o, now) for o in rows[:limit]],
        as_of={name: meta.as_of for name, meta in sorted(catalog.providers.items())},
    )


class EstimateResponse(BaseModel):
    feasible: bool
    reasons: list[str]
    options: list[dict[str, Any]]
    estimate: CostEstimate | None = Field(None, description="breakdown and price record of option #1")
    assumptions: list[str]


@router.post("/estimate", response_model=EstimateResponse)
def estimate(
    spec: JobSpec,
    top: int = Query(10, ge=1, le=200),
    pricing: Literal["auto", "on_demand", "spot"] = Query("auto", description="auto: spot if preemptible"),
    cost_weight: float = Query(0.4, ge=0),
    performance_weight: float = Query(0.3, ge=0),
    availability_weight: float = Query(0.3, ge=0),
) -> EstimateResponse:
    catalog = _catalog()
    if pricing == "spot" and not spec.preemptible:
        raise HTTPException(status_code=400, detail="pricing=spot needs a preemptible job (set preemptible)")
    try:
        weights = Weights(cost_weight, performance_weight, availability_weight)
        request = Request.from_spec(spec)
        models = ("on_demand", "spot") if pricing == "auto" else (pricing,)
        ranking = rank_offers(catalog.index(), request, weights, limit=top, pricing_models=models)
        est = estimate_option(ranking.options[0], spec, catalog) if ranking.options else None
    except MarketInputError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None
    return EstimateResponse(
        feasible=ranking.feasible,
        reasons=ranking.reasons,
        options=[o.to_dict() for o in ranking.options],
        estimate=est,
        assumptions=list(request.assumptions),
    )


@router.get("/catalog")
def catalog_metadata() -> dict[str, Any]:
    return _catalog().metadata()
