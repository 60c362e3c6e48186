"""Builders for offers and catalogs in tests (plain data, no behaviour)."""

from __future__ import annotations

from datetime import UTC, datetime

from loomos.marketplace.catalog import Catalog, ProviderMeta
from loomos.marketplace.offers import Offer

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def make_offer(**kw: object) -> Offer:
    base: dict[str, object] = dict(
        provider="aws",
        region="us-east-1",
        zone=None,
        instance_type="p5.48xlarge",
        gpu_type="H100",
        gpu_count=8,
        gpu_memory_gb=80.0,
        vcpus=192.0,
        memory_gb=2048.0,
        price_on_demand=98.32,
        price_spot=30.3,
        source="test",
        fetched_at=NOW,
    )
    base.update(kw)
    return Offer(**base)  # type: ignore[arg-type]


def make_catalog(offers: list[Offer], as_of: str = "2026-01-15") -> Catalog:
    providers = {
        p: ProviderMeta(as_of=as_of, source="test", fetched_at=NOW) for p in {o.provider for o in offers}
    }
    return Catalog(offers=offers, providers=providers, origin="test")
