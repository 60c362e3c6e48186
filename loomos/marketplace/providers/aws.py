"""AWS through boto3: the Price List API for on-demand prices, EC2 for spot prices per zone
and for GPU specs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loomos.marketplace.offers import Offer, RejectedRow, nominal_gpu_memory, normalise_gpu_name
from loomos.marketplace.providers.base import FetchResult, ProgressHook, ProviderError, no_progress

DEFAULT_REGIONS = ["us-east-1", "us-west-2"]
# The Price List API is served from a few regions only; its data covers all of them.
PRICING_REGION = "us-east-1"
SOURCE = "AWS Price List API (pricing.get_products) + EC2 describe_spot_price_history/describe_instance_types"
# P4/P5 prices were cut by up to 45% in June 2025; their public figures move and go stale.
STALE_PRONE_PREFIXES = ("p4", "p5")

# One hourly Linux on-demand price per instance type: shared tenancy, no pre-installed
# software, capacity status "Used" (the others are reservation bookkeeping rows), market
# option OnDemand (P4/P5 also list Capacity Block rows, a different product and price).
ON_DEMAND_FILTERS = [
    {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
    {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
    {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
    {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
    {"Type": "TERM_MATCH", "Field": "marketoption", "Value": "OnDemand"},
    {"Type": "TERM_MATCH", "Field": "licenseModel", "Value": "No License required"},
    {"Type": "TERM_MATCH", "Field": "instanceFamily", "Value": "GPU instance"},
]


@dataclass(frozen=True)
class InstanceSpec:
    gpu_type: str
    gpu_count: int
    gpu_memory_gb: float
    vcpus: float
    memory_gb: float


def parse_price_list_item(item: str | dict[str, Any]) -> tuple[str, float]:
    """(instance type, on-demand USD/hour) from one PriceList entry. Raises ValueError."""
    try:
        doc = json.loads(item) if isinstance(item, str) else item
        instance_type = doc["product"]["attributes"]["instanceType"]
        terms = doc["terms"]["OnDemand"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"PriceList entry without instanceType/OnDemand terms ({type(exc).__name__}: {exc})"
        ) from None
    for term in terms.values():
        for dim in term.get("priceDimensions", {}).values():
            if dim.get("unit") == "Hrs" and "USD" in dim.get("pricePerUnit", {}):
                try:
                    return str(instance_type), float(dim["pricePerUnit"]["USD"])
                except (TypeError, ValueError):
                    raise ValueError(
                        f"{instance_type}: price {dim['pricePerUnit']['USD']!r} is not a number"
                    ) from None
    raise ValueError(f"{instance_type}: no hourly USD price dimension")


def fetch_on_demand(pricing: Any, region: str) -> tuple[dict[str, float], list[RejectedRow]]:
    prices: dict[str, float] = {}
    rejected: list[RejectedRow] = []
    filters = [*ON_DEMAND_FILTERS, {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region}]
    for page in pricing.get_paginator("get_products").paginate(
        ServiceCode="AmazonEC2", Filters=filters, FormatVersion="aws_v1"
    ):
        for item in page.get("PriceList", []):
            try:
                itype, price = parse_price_list_item(item)
            except ValueError as exc:
                rejected.append(RejectedRow("aws", region, str(exc)))
                continue
            if itype in prices:
                rejected.append(
                    RejectedRow("aws", f"{region}/{itype}", "more than one on-demand price listed")
                )
                continue
            prices[itype] = price
    return prices, rejected


def parse_instance_type(doc: dict[str, Any]) -> InstanceSpec:
    """GPU specs from one describe_instance_types entry. Raises ValueError."""
    name = doc.get("InstanceType", "?")
    gpus = (doc.get("GpuInfo") or {}).get("Gpus") or []
    if not gpus:
        raise ValueError(f"{name}: no GpuInfo (not a GPU instance)")
    gpu = gpus[0]
    try:
        mem_gb = float(gpu["MemoryInfo"]["SizeInMiB"]) / 1024
        count = int(gpu["Count"])
        gpu_type = normalise_gpu_name(f"{gpu.get('Manufacturer', '')} {gpu['Name']}", mem_gb)
        vcpus = float(doc["VCpuInfo"]["DefaultVCpus"])
        memory_gb = float(doc["MemoryInfo"]["SizeInMiB"]) / 1024
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{name}: incomplete instance description ({type(exc).__name__}: {exc})") from None
    if gpu_type is None:
        raise ValueError(f"{name}: GPU {gpu.get('Name')!r} is not in the catalog's GPU table")
    return InstanceSpec(gpu_type, count, nominal_gpu_memory(gpu_type, mem_gb) or mem_gb, vcpus, memory_gb)


def _chunks(items: list[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def fetch_instance_specs(
    ec2: Any, instance_types: list[str]
) -> tuple[dict[str, InstanceSpec], list[RejectedRow]]:
    specs: dict[str, InstanceSpec] = {}
    rejected: list[RejectedRow] = []
    paginator = ec2.get_paginator("describe_instance_types")
    for chunk in _chunks(sorted(instance_types), 100):
        for page in paginator.paginate(InstanceTypes=chunk):
            for doc in page.get("InstanceTypes", []):
                try:
                    specs[doc["InstanceType"]] = parse_instance_type(doc)
                except (KeyError, ValueError) as exc:
                    rejected.append(RejectedRow("aws", str(doc.get("InstanceType", "?")), str(exc)))
    return specs, rejected


def fetch_spot_prices(
    ec2: Any, instance_types: list[str], now: datetime
) -> tuple[dict[str, dict[str, float]], list[RejectedRow]]:
    """Current Linux spot price per instance type and availability zone."""
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    rejected: list[RejectedRow] = []
    paginator = ec2.get_paginator("describe_spot_price_history")
    for chunk in _chunks(sorted(instance_types), 100):
        # StartTime=now asks for the price in force now in each zone.
        for page in paginator.paginate(
            InstanceTypes=chunk, ProductDescriptions=["Linux/UNIX"], StartTime=now
        ):
            for row in page.get("SpotPriceHistory", []):
                try:
                    key = (row["InstanceType"], row["AvailabilityZone"])
                    price = float(row["SpotPrice"])
                    ts = row.get("Timestamp") or now
                except (KeyError, TypeError, ValueError) as exc:
                    rejected.append(
                        RejectedRow("aws", str(row.get("InstanceType", "?")), f"bad spot row: {exc}")
                    )
                    continue
                if key not in latest or ts > latest[key][0]:
                    latest[key] = (ts, price)
    out: dict[str, dict[str, float]] = {}
    for (itype, zone), (_, price) in latest.items():
        out.setdefault(itype, {})[zone] = price
    return out, rejected


class AwsOfferSource:
    name = "aws"

    def __init__(
        self,
        regions: list[str] | None = None,
        client_factory: Callable[[str, str], Any] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.regions = list(regions or DEFAULT_REGIONS)
        self._client_factory = client_factory
        self._clock = clock

    def _client(self, service: str, region: str) -> Any:
        if self._client_factory is not None:
            return self._client_factory(service, region)
        import boto3  # lazily: importing boto3 costs a few hundred ms

        return boto3.session.Session().client(service, region_name=region)

    def fetch(self, progress: ProgressHook = no_progress) -> FetchResult:
        from botocore.exceptions import BotoCoreError, ClientError

        now = self._clock()
        offers: list[Offer] = []
        rejected: list[RejectedRow] = []
        total = len(self.regions)
        try:
            pricing = self._client("pricing", PRICING_REGION)
            for i, region in enumerate(self.regions):
                progress(i, total, f"aws {region}")
                prices, rej = fetch_on_demand(pricing, region)
                rejected += rej
                ec2 = self._client("ec2", region)
                specs, rej = fetch_instance_specs(ec2, list(prices))
                rejected += rej
                spot, rej = fetch_spot_prices(ec2, list(specs), now)
                rejected += rej
                offers += build_offers(region, prices, specs, spot, now, rejected)
        except (BotoCoreError, ClientError) as exc:
            raise ProviderError(f"aws: {exc}") from exc
        progress(total, total, "aws done")
        if not offers:
            raise ProviderError("aws: no GPU offers in the responses (nothing usable came back)")
        return FetchResult("aws", offers, SOURCE, now.date().isoformat(), now, rejected)


def build_offers(
    region: str,
    prices: dict[str, float],
    specs: dict[str, InstanceSpec],
    spot: dict[str, dict[str, float]],
    now: datetime,
    rejected: list[RejectedRow],
) -> list[Offer]:
    """One row per zone where a spot price exists (spot differs per zone), else one per region."""
    offers = []
    for itype, price in sorted(prices.items()):
        spec = specs.get(itype)
        if spec is None:
            rejected.append(
                RejectedRow("aws", f"{region}/{itype}", "priced but not described by EC2 in this region")
            )
            continue
        zones = spot.get(itype) or {None: None}
        for zone, spot_price in sorted(zones.items(), key=lambda kv: kv[0] or ""):
            offers.append(
                Offer.of_shape(
                    spec,
                    provider="aws",
                    region=region,
                    zone=zone,
                    instance_type=itype,
                    price_on_demand=price,
                    price_spot=spot_price,
                    source="aws-api",
                    fetched_at=now,
                    stale_prone=itype.startswith(STALE_PRONE_PREFIXES),
                )
            )
    return offers
