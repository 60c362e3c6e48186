"""Cost estimates (compute, storage, network) and the price record that pins an estimate or
a placement to the price that was in force, so later cost reports never reprice history
with today's catalog.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from loomos.marketplace.catalog import Catalog, load_catalog
from loomos.marketplace.offers import PROVIDERS, Offer
from loomos.marketplace.optimizer import (
    MarketInputError,
    OfferRequest,
    RankedOption,
    SpotRisk,
    Weights,
    rank_offers,
)
from loomos.marketplace.performance import gpu_performance
from loomos.models.pricing import CostBreakdown, CostEstimate, PriceRecord, PricingModel
from loomos.models.spec import JobSpec

HOURS_PER_MONTH = 730.0


def price_record(
    offer: Offer, pricing_model: PricingModel, catalog_as_of: str, recorded_at: datetime
) -> PriceRecord:
    """The price record for using `offer` under `pricing_model`. Pure (the caller supplies
    `recorded_at`, e.g. `workflow.now()` inside a workflow), so schedulers can call it
    deterministically when they place a job."""
    price = offer.price(pricing_model)
    if price is None:
        raise MarketInputError(f"{offer.key} has no {pricing_model} price")
    return PriceRecord(
        offer_key=offer.key,
        provider=offer.provider,
        region=offer.region,
        zone=offer.zone,
        instance_type=offer.instance_type,
        gpu_type=offer.gpu_type,
        gpus_per_node=offer.gpu_count,
        pricing_model=pricing_model,
        price_per_hour=price,
        catalog_as_of=catalog_as_of,
        fetched_at=offer.fetched_at,
        recorded_at=recorded_at,
        source=offer.source,
    )


def cost_for_usage(record: PriceRecord, machine_hours: float) -> float:
    """What `machine_hours` cost at the recorded price (cost reports use this, not the catalog)."""
    if machine_hours < 0:
        raise ValueError("machine_hours must not be negative")
    return record.price_per_hour * machine_hours


@dataclass(frozen=True)
class CostAssumptions:
    """What an estimate cannot know from a JobSpec. Storage is object storage for the dataset
    and the kept checkpoints during the run; network is egress of the final checkpoint
    (ingress and traffic inside one zone are free on all three clouds). List prices:
    S3 Standard, GCS Standard, Azure Blob hot LRS; internet egress first tier."""

    dataset_gb: float = 100.0
    checkpoint_gb: float = 20.0
    egress_gb: float | None = None  # None: one copy of a checkpoint leaves the cloud
    storage_usd_per_gb_month: Mapping[str, float] = field(
        default_factory=lambda: {"aws": 0.023, "gcp": 0.020, "azure": 0.018, "onprem": 0.0}
    )
    egress_usd_per_gb: Mapping[str, float] = field(
        default_factory=lambda: {"aws": 0.09, "gcp": 0.12, "azure": 0.087, "onprem": 0.0}
    )

    def __post_init__(self) -> None:
        for name in ("dataset_gb", "checkpoint_gb"):
            if getattr(self, name) < 0:
                raise MarketInputError(f"{name} must not be negative")
        if self.egress_gb is not None and self.egress_gb < 0:
            raise MarketInputError("egress_gb must not be negative")


class InfeasibleError(Exception):
    """No offer satisfies the spec; `reasons` says which constraint ruled everything out."""

    def __init__(self, reasons: list[str]):
        self.reasons = reasons
        super().__init__("; ".join(reasons) or "no feasible offer")


def breakdown_for(
    option: RankedOption, spec: JobSpec, assumptions: CostAssumptions
) -> tuple[CostBreakdown, dict[str, Any]]:
    provider = option.offer.provider
    hours = option.expected_hours
    compute = option.price_per_hour * hours
    stored_gb = assumptions.dataset_gb + assumptions.checkpoint_gb * spec.checkpoint_config.max_checkpoints
    storage_rate = assumptions.storage_usd_per_gb_month.get(provider, 0.0)
    storage = stored_gb * storage_rate * hours / HOURS_PER_MONTH
    egress_gb = assumptions.checkpoint_gb if assumptions.egress_gb is None else assumptions.egress_gb
    egress_rate = assumptions.egress_usd_per_gb.get(provider, 0.0)
    network = egress_gb * egress_rate
    used = {
        "runtime_hours": option.expected_hours,
        "nodes": option.nodes,
        "stored_gb": stored_gb,
        "storage_usd_per_gb_month": storage_rate,
        "egress_gb": egress_gb,
        "egress_usd_per_gb": egress_rate,
        "hours_per_month": HOURS_PER_MONTH,
    }
    return CostBreakdown(
        compute=round(compute, 4),
        storage=round(storage, 4),
        network=round(network, 4),
        total=round(compute + storage + network, 4),
    ), used


def estimate_job_cost(
    spec: JobSpec,
    provider: str | None = None,
    pricing_model: PricingModel = "on_demand",
    catalog: Catalog | None = None,
    assumptions: CostAssumptions | None = None,
    risk: SpotRisk | None = None,
    now: datetime | None = None,
) -> CostEstimate:
    """The cheapest feasible way to run `spec` on `provider` (None: any allowed by the spec)
    under `pricing_model`, with compute/storage/network parts and the assumptions used."""
    if pricing_model not in ("on_demand", "spot"):
        raise MarketInputError(f"pricing_model must be on_demand or spot, got {pricing_model!r}")
    if pricing_model == "spot" and not spec.preemptible:
        raise MarketInputError("spot pricing needs a job that tolerates preemption (set preemptible: true)")
    if provider is not None and provider not in PROVIDERS:
        raise MarketInputError(f"unknown provider {provider!r}; expected {', '.join(PROVIDERS)}")
    catalog = catalog or load_catalog()
    assumptions = assumptions or CostAssumptions()
    risk = risk or SpotRisk()
    request = OfferRequest.from_spec(spec, risk)
    if provider is not None:
        if request.providers is not None and provider not in request.providers:
            raise InfeasibleError([f"the spec allows providers {sorted(request.providers)}, not {provider}"])
        request = _with_providers(request, frozenset({provider}))
    ranking = rank_offers(
        catalog.index(), request, Weights(1, 0, 0), risk, limit=1, pricing_models=(pricing_model,)
    )
    if not ranking.options:
        raise InfeasibleError(ranking.reasons)
    option = ranking.options[0]
    return estimate_option(option, spec, catalog, assumptions, risk, now)


def _with_providers(request: OfferRequest, providers: frozenset[str]) -> OfferRequest:
    return replace(request, providers=providers)


def estimate_option(
    option: RankedOption,
    spec: JobSpec,
    catalog: Catalog,
    assumptions: CostAssumptions | None = None,
    risk: SpotRisk | None = None,
    now: datetime | None = None,
) -> CostEstimate:
    """The cost breakdown and price record of one ranked option (e.g. the weighted winner)."""
    assumptions = assumptions or CostAssumptions()
    risk = risk or SpotRisk()
    request = OfferRequest.from_spec(spec, risk)
    breakdown, used = breakdown_for(option, spec, assumptions)
    meta = catalog.providers.get(option.offer.provider)
    as_of = meta.as_of if meta else option.offer.fetched_at.date().isoformat()
    if option.pricing_model == "spot":
        used.update(
            interruptions_per_node_hour=risk.rate(option.offer.provider),
            expected_interruptions=option.expected_interruptions,
            restart_hours=risk.restart_hours,
            checkpoint_interval_hours=request.checkpoint_hours,
        )
    used["notes"] = list(request.assumptions)
    model: PricingModel = "spot" if option.pricing_model == "spot" else "on_demand"
    return CostEstimate(
        provider=option.offer.provider,
        pricing_model=model,
        option=option.to_dict(),
        breakdown=breakdown,
        assumptions=used,
        price_record=price_record(option.offer, model, as_of, now or datetime.now(UTC)),
    )


class ProviderComparison(BaseModel):
    provider: str
    feasible: bool
    estimate: CostEstimate | None = None
    cost_per_performance: float | None = Field(
        None, description="expected total cost / relative throughput of the GPUs used (A100-40GB = 1)"
    )
    reasons: list[str] = Field(default_factory=list)


def compare_providers(
    spec: JobSpec,
    providers: Iterable[str] = PROVIDERS,
    catalog: Catalog | None = None,
    assumptions: CostAssumptions | None = None,
    risk: SpotRisk | None = None,
    now: datetime | None = None,
) -> list[ProviderComparison]:
    """Best estimate per provider (spot too when the job tolerates it), ranked by cost per
    performance; providers with nothing feasible come last with their reasons."""
    catalog = catalog or load_catalog()
    out: list[ProviderComparison] = []
    models: tuple[PricingModel, ...] = ("on_demand", "spot") if spec.preemptible else ("on_demand",)
    for provider in providers:
        best: CostEstimate | None = None
        by_model: dict[str, list[str]] = {}
        for model in models:
            try:
                est = estimate_job_cost(spec, provider, model, catalog, assumptions, risk, now)
            except InfeasibleError as exc:
                by_model[model] = exc.reasons
                continue
            if best is None or est.breakdown.total < best.breakdown.total:
                best = est
        # One reason that rules out every pricing model is said once; differing ones name their model.
        distinct = {tuple(r) for r in by_model.values()}
        if len(distinct) == 1 and len(by_model) == len(models):
            reasons = list(next(iter(distinct)))
        else:
            reasons = [f"{m.replace('_', '-')}: {r}" for m, rs in by_model.items() for r in rs]
        if best is None:
            out.append(ProviderComparison(provider=provider, feasible=False, reasons=reasons))
            continue
        perf = gpu_performance(best.option["gpu_type"]) * spec.resources.gpu_count * spec.resources.nodes
        out.append(
            ProviderComparison(
                provider=provider,
                feasible=True,
                estimate=best,
                cost_per_performance=round(best.breakdown.total / perf, 4),
            )
        )
    out.sort(key=lambda c: (not c.feasible, c.cost_per_performance or 0.0, c.provider))
    return out
