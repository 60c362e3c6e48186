"""Marketplace: GPU offers, estimates for a JobSpec, catalog metadata.

Bad filter values are InvalidInput naming the filter. An infeasible request is not an error:
`feasible: false`, no options and the reasons.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loomos.api.errors import InvalidInput, ServiceUnavailable
from loomos.marketplace.catalog import Catalog, CatalogError, load_catalog_cached
from loomos.marketplace.estimate import estimate_option
from loomos.marketplace.offer_filters import filter_offers, offer_row
from loomos.marketplace.optimizer import MarketInputError, OfferRequest, Weights, rank_offers
from loomos.models.api import EstimateResponse, OffersResponse
from loomos.models.pricing import PricingModel
from loomos.models.spec import JobSpec


def catalog() -> Catalog:
    try:
        return load_catalog_cached()
    except CatalogError as exc:
        raise ServiceUnavailable(f"price catalog unavailable: {exc}") from None


def list_offers(
    gpu: str | None,
    count: int | None,
    providers: list[str],
    regions: list[str],
    spot: bool,
    max_price: float | None,
    limit: int,
) -> OffersResponse:
    cat = catalog()
    try:
        rows = filter_offers(cat.offers, gpu, count, providers, regions, spot, max_price)
    except MarketInputError as exc:
        raise InvalidInput(str(exc)) from None
    now = datetime.now(UTC)
    return OffersResponse(
        count=len(rows),
        offers=[offer_row(o, now) for o in rows[:limit]],
        as_of={name: meta.as_of for name, meta in sorted(cat.providers.items())},
    )


def estimate(spec: JobSpec, top: int, pricing: str, weights: tuple[float, float, float]) -> EstimateResponse:
    """Ranked placements for the spec; pricing "auto" means spot when the job is preemptible."""
    cat = catalog()
    if pricing == "spot" and not spec.preemptible:
        raise InvalidInput("pricing=spot needs a preemptible job (set preemptible)")
    try:
        request = OfferRequest.from_spec(spec)
        models: tuple[PricingModel, ...] = ("on_demand", "spot") if pricing == "auto" else (pricing,)  # type: ignore[assignment]
        ranking = rank_offers(cat.index(), request, Weights(*weights), limit=top, pricing_models=models)
        est = estimate_option(ranking.options[0], spec, cat) if ranking.options else None
    except MarketInputError as exc:
        raise InvalidInput(str(exc)) from None
    return EstimateResponse(
        feasible=ranking.feasible,
        reasons=ranking.reasons,
        options=[o.to_dict() for o in ranking.options],
        estimate=est,
        assumptions=list(request.assumptions),
    )


def catalog_metadata() -> dict[str, Any]:
    return catalog().metadata()
