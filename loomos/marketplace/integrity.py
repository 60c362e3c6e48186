"""Integrity rules every catalog goes through, shipped or fetched.

The complaints this answers: an H100 priced at $0, spot shown cheaper than on-demand the
other way round, an "8-GPU" row with 1 GB GPUs. A row that breaks a rule is dropped and
reported with the rule it broke; it is never ranked or priced.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta

from loomos.marketplace.offers import GPU_SPECS, MEMORY_TOLERANCE, PROVIDERS, Offer, RejectedRow

# Above this a per-GPU hourly price is a unit error (per-month or per-cluster figures), not a price.
MAX_PRICE_PER_GPU_HOUR = 100.0
# Fetch clocks may be a little ahead of ours; more than this is a broken timestamp.
FUTURE_SLACK = timedelta(days=1)


def check_offer(offer: Offer, now: datetime) -> str | None:
    """The first rule `offer` breaks, or None when it may be used."""
    if offer.provider not in PROVIDERS:
        return f"unknown provider {offer.provider!r}"
    if not offer.region or not offer.instance_type:
        return "missing region or instance type"
    for name, price in (("on-demand", offer.price_on_demand), ("spot", offer.price_spot)):
        if price is None:
            continue
        if not math.isfinite(price) or price <= 0:
            return f"{name} price {price} is not a positive number"
    if offer.price_spot is not None and offer.price_spot >= offer.price_on_demand:
        return f"spot price {offer.price_spot} is not below on-demand {offer.price_on_demand}"
    spec = GPU_SPECS.get(offer.gpu_type)
    if spec is None:
        return f"unknown GPU type {offer.gpu_type!r}"
    if not 1 <= offer.gpu_count <= spec.max_per_node:
        return f"{offer.gpu_count} x {offer.gpu_type} in one machine is implausible (max {spec.max_per_node})"
    if not any(abs(offer.gpu_memory_gb - m) <= MEMORY_TOLERANCE * m for m in spec.memory_gb):
        return (
            f"{offer.gpu_memory_gb} GB per GPU is implausible for {offer.gpu_type} "
            f"(expected {spec.memory_gb})"
        )
    if not (offer.vcpus > 0 and offer.memory_gb > 0):
        return "vCPUs and memory must be positive"
    if offer.price_on_demand / offer.gpu_count > MAX_PRICE_PER_GPU_HOUR:
        return f"on-demand {offer.price_on_demand}/h is over {MAX_PRICE_PER_GPU_HOUR}/GPU-hour: a unit error"
    if offer.capacity_nodes is not None and offer.capacity_nodes < 1:
        return "capacity_nodes must be at least 1"
    if offer.fetched_at > now + FUTURE_SLACK:
        return f"fetched_at {offer.fetched_at.isoformat()} is in the future"
    return None


def apply_rules(offers: Iterable[Offer], now: datetime) -> tuple[list[Offer], list[RejectedRow]]:
    """Split offers into usable ones and rejected ones; duplicate keys keep the first row."""
    good: list[Offer] = []
    rejected: list[RejectedRow] = []
    seen: set[str] = set()
    for offer in offers:
        reason = check_offer(offer, now)
        if reason is None and offer.key in seen:
            reason = "duplicate row for the same provider/region/zone/instance type"
        if reason is not None:
            rejected.append(RejectedRow(offer.provider, offer.key, reason))
            continue
        seen.add(offer.key)
        good.append(offer)
    return good, rejected
