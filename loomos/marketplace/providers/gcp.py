"""GCP through google-cloud-billing (Cloud Billing Catalog SKUs: host vCPU and RAM per
machine family plus per-GPU SKUs, on-demand and spot) and google-cloud-compute (machine and
accelerator types for specs). A machine's price is vCPUs x core SKU + GiB x RAM SKU + GPUs x
GPU SKU, which is how Compute Engine bills accelerator-optimised machines."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loomos.marketplace.offers import Offer, RejectedRow, nominal_gpu_memory, normalise_gpu_name
from loomos.marketplace.providers.base import FetchResult, ProgressHook, ProviderError, no_progress

COMPUTE_ENGINE_SERVICE = "services/6F81-5844-456A"
DEFAULT_REGIONS = ["us-central1", "us-east4", "europe-west4"]
DEFAULT_FAMILIES = ("a2", "a3", "g2")
SOURCE = "GCP Cloud Billing Catalog (list_skus) + Compute Engine machine/accelerator types"

_HOST_RE = re.compile(r"^(?:spot preemptible )?([a-z][0-9]+[a-z]*) instance (core|ram)\b", re.I)
# Series whose host vCPU/RAM SKUs are named apart from their family's ("A3Plus Instance Core"
# prices A3 Mega hosts). An unknown series falls back to the family; a series whose SKU name
# is not known here gets no host price and is rejected, never priced at a sibling's rate.
HOST_SKU_FAMILY = {"a3-megagpu": "a3plus", "a3-ultragpu": "a3ultra", "a3-edgegpu": "a3edge"}
_GPU_RE = re.compile(r"nvidia (.+?) gpu\b", re.I)
# SKUs for other purchase options share descriptions; their prices are not hourly list prices.
_EXCLUDED_WORDS = ("commitment", "reserved", "sole tenancy", "dws", "calendar", "flex", "custom")
_IGNORED_TOKENS = {"nvidia", "tesla", "gpu"}


def accelerator_key(name: str) -> frozenset[str]:
    """Token set that matches a GPU SKU name ("Tesla A100 80GB", "H100 80GB Mega") to an
    accelerator type ("nvidia-a100-80gb", "nvidia-h100-mega-80gb") regardless of word order."""
    return frozenset(t for t in re.split(r"[^a-z0-9]+", name.lower()) if t and t not in _IGNORED_TOKENS)


@dataclass
class SkuPrices:
    """Hourly list prices by (region, component, spot?) where component is ("core", family),
    ("ram", family) or ("gpu", accelerator key)."""

    prices: dict[tuple[str, tuple[str, Any], bool], float]

    def get(self, region: str, component: tuple[str, Any], spot: bool) -> float | None:
        return self.prices.get((region, component, spot))


def _money(unit_price: Any) -> float:
    units = getattr(unit_price, "units", None)
    nanos = getattr(unit_price, "nanos", None)
    if units is None and isinstance(unit_price, dict):
        units, nanos = unit_price.get("units", 0), unit_price.get("nanos", 0)
    return float(units or 0) + float(nanos or 0) / 1e9


def parse_sku(sku: Any) -> tuple[tuple[str, Any], bool, str, float, list[str]] | None:
    """(component, spot?, usage unit, hourly price, regions) for a SKU we use, None for SKUs
    we do not use. Raises ValueError on a SKU we use that is malformed."""
    desc = str(sku.description or "")
    category = sku.category
    if category is None or category.resource_family != "Compute":
        return None
    if category.usage_type not in ("OnDemand", "Preemptible"):
        return None
    low = desc.lower()
    if any(w in low for w in _EXCLUDED_WORDS):
        return None
    spot = category.usage_type == "Preemptible"
    if (m := _HOST_RE.match(desc)) is not None:
        component: tuple[str, Any] = (m.group(2).lower(), m.group(1).lower())
    elif (g := _GPU_RE.search(desc)) is not None and category.resource_group == "GPU":
        component = ("gpu", accelerator_key(g.group(1).replace("attached to", "")))
    else:
        return None
    if not sku.pricing_info:
        raise ValueError(f"{desc}: no pricing_info")
    expr = sku.pricing_info[0].pricing_expression
    if expr is None or not expr.tiered_rates:
        raise ValueError(f"{desc}: no tiered rates")
    unit = str(expr.usage_unit)
    expected = "GiBy.h" if component[0] == "ram" else "h"
    if unit != expected:
        raise ValueError(f"{desc}: usage unit {unit!r}, expected {expected!r}")
    price = _money(expr.tiered_rates[-1].unit_price)
    regions = [str(r) for r in sku.service_regions]
    if not regions:
        raise ValueError(f"{desc}: no service regions")
    return component, spot, unit, price, regions


def collect_sku_prices(skus: Iterable[Any], regions: set[str]) -> tuple[SkuPrices, list[RejectedRow]]:
    prices: dict[tuple[str, tuple[str, Any], bool], float] = {}
    rejected: list[RejectedRow] = []
    for sku in skus:
        try:
            parsed = parse_sku(sku)
        except (ValueError, AttributeError, TypeError) as exc:
            rejected.append(RejectedRow("gcp", str(getattr(sku, "sku_id", "?")), str(exc)))
            continue
        if parsed is None:
            continue
        component, spot, _unit, price, sku_regions = parsed
        for region in sku_regions:
            if region in regions:
                prices[(region, component, spot)] = price
    return SkuPrices(prices), rejected


@dataclass(frozen=True)
class MachineSpec:
    name: str
    region: str
    vcpus: int
    memory_gib: float
    accelerator: str
    gpu_count: int


def collect_machine_types(
    pages: Iterable[tuple[str, Any]], regions: set[str], families: tuple[str, ...]
) -> tuple[dict[tuple[str, str], MachineSpec], list[RejectedRow]]:
    """Machine shapes with GPUs, one per (region, name): zones of a region share a price."""
    out: dict[tuple[str, str], MachineSpec] = {}
    rejected: list[RejectedRow] = []
    for scope, scoped in pages:
        zone = scope.rsplit("/", 1)[-1]
        region = zone.rsplit("-", 1)[0]
        if region not in regions:
            continue
        for mt in scoped.machine_types:
            if not mt.name.startswith(tuple(f"{f}-" for f in families)):
                continue
            if not mt.accelerators:
                rejected.append(
                    RejectedRow("gcp", f"{region}/{mt.name}", "machine type lists no accelerators")
                )
                continue
            acc = mt.accelerators[0]
            if mt.guest_cpus <= 0 or mt.memory_mb <= 0 or acc.guest_accelerator_count <= 0:
                rejected.append(
                    RejectedRow("gcp", f"{region}/{mt.name}", "machine type without CPUs, memory or GPUs")
                )
                continue
            out[(region, mt.name)] = MachineSpec(
                mt.name,
                region,
                mt.guest_cpus,
                mt.memory_mb / 1024,
                acc.guest_accelerator_type,
                acc.guest_accelerator_count,
            )
    return out, rejected


def collect_accelerator_names(pages: Iterable[tuple[str, Any]]) -> dict[str, str]:
    """accelerator type name -> its description ("nvidia-tesla-a100" -> "NVIDIA A100 40GB")."""
    names: dict[str, str] = {}
    for _scope, scoped in pages:
        for at in scoped.accelerator_types:
            names.setdefault(at.name, at.description or at.name)
    return names


def build_offers(
    machines: dict[tuple[str, str], MachineSpec],
    accelerators: dict[str, str],
    prices: SkuPrices,
    now: datetime,
) -> tuple[list[Offer], list[RejectedRow]]:
    offers: list[Offer] = []
    rejected: list[RejectedRow] = []
    for (region, name), m in sorted(machines.items()):
        ident = f"{region}/{name}"
        label = accelerators.get(m.accelerator, m.accelerator)
        memory_hint = _memory_from_label(label)
        gpu = normalise_gpu_name(label, memory_hint) or normalise_gpu_name(m.accelerator, memory_hint)
        if gpu is None:
            rejected.append(
                RejectedRow("gcp", ident, f"accelerator {m.accelerator!r} is not in the GPU table")
            )
            continue
        family = host_sku_family(name)
        gkey = ("gpu", accelerator_key(m.accelerator))
        totals = []
        for spot in (False, True):
            core = prices.get(region, ("core", family), spot)
            ram = prices.get(region, ("ram", family), spot)
            gpu_price = prices.get(region, gkey, spot)
            if core is None or ram is None or gpu_price is None:
                totals.append(None)
                continue
            totals.append(round(m.vcpus * core + m.memory_gib * ram + m.gpu_count * gpu_price, 6))
        on_demand, spot_price = totals
        if on_demand is None:
            rejected.append(
                RejectedRow("gcp", ident, "no on-demand SKU for its cores, RAM or GPU in this region")
            )
            continue
        offers.append(
            Offer(
                provider="gcp",
                region=region,
                zone=None,
                instance_type=name,
                gpu_type=gpu,
                gpu_count=m.gpu_count,
                gpu_memory_gb=nominal_gpu_memory(gpu, memory_hint) or 0.0,
                vcpus=float(m.vcpus),
                memory_gb=round(m.memory_gib, 3),
                price_on_demand=on_demand,
                price_spot=spot_price,
                source="gcp-api",
                fetched_at=now,
            )
        )
    return offers, rejected


def host_sku_family(machine_type: str) -> str:
    """The family in the host SKU names that price `machine_type` ("a2-highgpu-8g" -> "a2")."""
    series = "-".join(machine_type.split("-")[:2])
    return HOST_SKU_FAMILY.get(series, machine_type.split("-", 1)[0])


def _memory_from_label(label: str) -> float | None:
    m = re.search(r"(\d+)\s*gb", label.lower())
    return float(m.group(1)) if m else None


class GcpOfferSource:
    name = "gcp"

    def __init__(
        self,
        regions: list[str] | None = None,
        project: str | None = None,
        families: tuple[str, ...] = DEFAULT_FAMILIES,
        credentials: Any = None,
        transport: str = "rest",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.regions = list(regions or DEFAULT_REGIONS)
        self.project = project
        self.families = families
        self._credentials = credentials
        # REST for both clients: Compute Engine's API is REST-only, so one HTTP stack (proxies,
        # TLS settings, no grpc channel) serves the whole refresh.
        self._transport = transport
        self._clock = clock

    def _project(self) -> str:
        if self.project:
            return self.project
        env = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("CLOUDSDK_CORE_PROJECT")
        if env:
            return env
        import google.auth

        _creds, project = google.auth.default()
        if not project:
            raise ProviderError("gcp: no project (set GOOGLE_CLOUD_PROJECT or gcloud's default project)")
        return project

    def fetch(self, progress: ProgressHook = no_progress) -> FetchResult:
        from google.api_core.exceptions import GoogleAPIError
        from google.auth.exceptions import GoogleAuthError
        from google.cloud import billing_v1, compute_v1

        now = self._clock()
        kwargs: dict[str, Any] = {"transport": self._transport}
        if self._credentials is not None:
            kwargs["credentials"] = self._credentials
        regions = set(self.regions)
        try:
            project = self._project()
            progress(0, 3, "gcp SKUs")
            skus = billing_v1.CloudCatalogClient(**kwargs).list_skus(parent=COMPUTE_ENGINE_SERVICE)
            prices, rejected = collect_sku_prices(skus, regions)
            progress(1, 3, "gcp machine types")
            name_filter = "name eq '({})-.*'".format("|".join(self.families))
            mts = compute_v1.MachineTypesClient(**kwargs).aggregated_list(
                request={"project": project, "filter": name_filter}
            )
            machines, rej = collect_machine_types(mts, regions, self.families)
            rejected += rej
            progress(2, 3, "gcp accelerator types")
            ats = compute_v1.AcceleratorTypesClient(**kwargs).aggregated_list(request={"project": project})
            accelerators = collect_accelerator_names(ats)
        except (GoogleAPIError, GoogleAuthError) as exc:
            raise ProviderError(f"gcp: {exc}") from exc
        offers, rej = build_offers(machines, accelerators, prices, now)
        rejected += rej
        progress(3, 3, "gcp done")
        if not offers:
            raise ProviderError("gcp: no GPU offers could be priced from the responses")
        return FetchResult("gcp", offers, SOURCE, now.date().isoformat(), now, rejected)
