"""Offer listing with filters, shared by `loomos market offers` and the API."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from loomos.marketplace.offers import Offer
from loomos.marketplace.optimizer import MarketInputError, parse_gpu_filter, parse_providers


def filter_offers(
    offers: Iterable[Offer],
    gpu: str | None = None,
    count: int | None = None,
    providers: Iterable[str] = (),
    regions: Iterable[str] = (),
    spot: bool = False,
    max_price: float | None = None,
) -> list[Offer]:
    """Offers with `gpu` GPUs, at least `count` per machine, from the given providers/regions.
    With `spot`, only rows with a spot price, and `max_price` applies to the spot price;
    otherwise to on-demand. Sorted by price per GPU-hour, then key."""
    if count is not None and count < 1:
        raise MarketInputError(f"count must be at least 1, got {count}")
    if max_price is not None and not max_price > 0:
        raise MarketInputError(f"max_price must be positive, got {max_price}")
    gpu_types = parse_gpu_filter(gpu)
    if gpu_types == frozenset({"cpu"}):
        raise MarketInputError("the catalog lists GPU machines only; 'cpu' is not a GPU type")
    provider_set = parse_providers(providers)
    region_set = frozenset(r for r in regions if r) or None
    out = []
    for o in offers:
        if gpu_types is not None and o.gpu_type not in gpu_types:
            continue
        if count is not None and o.gpu_count < count:
            continue
        if provider_set is not None and o.provider not in provider_set:
            continue
        if region_set is not None and o.region not in region_set:
            continue
        price = o.price_spot if spot else o.price_on_demand
        if price is None or (max_price is not None and price > max_price):
            continue
        out.append(o)
    out.sort(key=lambda o: ((o.price_spot if spot else o.price_on_demand) / o.gpu_count, o.key))  # type: ignore[operator]
    return out


def offer_row(o: Offer, now: datetime) -> dict[str, object]:
    """An offer as the API and `--json` show it: the stored fields plus age and $/GPU-hour."""
    d = o.to_dict()
    d["key"] = o.key
    d["age_days"] = round(o.age_days(now), 2)
    d["price_per_gpu_hour"] = round(o.price_on_demand / o.gpu_count, 6)
    d["spot_price_per_gpu_hour"] = None if o.price_spot is None else round(o.price_spot / o.gpu_count, 6)
    return d
