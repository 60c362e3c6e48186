"""Azure through azure-mgmt-compute (`resource_skus.list`: VM sizes, vCPUs, memory, GPU count,
subscription restrictions) and the public Retail Prices REST API (no credentials; paged with
NextPageLink; spot meters are named "... Spot"). The API is called through azure-core's HTTP
pipeline, the same transport stack the management SDK uses."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loomos.marketplace.offers import Offer, RejectedRow
from loomos.marketplace.providers.base import FetchResult, ProgressHook, ProviderError, no_progress

RETAIL_PRICES_URL = "https://prices.azure.com/api/retail/prices"
DEFAULT_REGIONS = ["eastus", "westus2", "southcentralus"]
SOURCE = "Azure Retail Prices API + azure-mgmt-compute resource_skus.list"
# The Retail Prices API has no GPU attribute; the VM series name says which GPU it carries.
# (pattern over armSkuName, GPU type, memory per GPU in GB)
GPU_SERIES: list[tuple[re.Pattern[str], str, float]] = [
    (re.compile(r"^Standard_ND\d+isr_H200_v5$"), "H200", 141.0),
    (re.compile(r"^Standard_ND\d+isr_H100_v5$"), "H100", 80.0),
    (re.compile(r"^Standard_NC\d+ads_H100_v5$"), "H100", 94.0),
    (re.compile(r"^Standard_ND\d+amsr_A100_v4$"), "A100-80GB", 80.0),
    (re.compile(r"^Standard_ND\d+asr_v4$"), "A100-40GB", 40.0),
    (re.compile(r"^Standard_NC\d+ads_A100_v4$"), "A100-80GB", 80.0),
    (re.compile(r"^Standard_NC\d+as_T4_v3$"), "T4", 16.0),
    (re.compile(r"^Standard_NC\d+s_v3$"), "V100", 16.0),
]
_NAMES_PER_QUERY = 10


def gpu_series(sku_name: str) -> tuple[str, float] | None:
    for pattern, gpu, mem in GPU_SERIES:
        if pattern.match(sku_name):
            return gpu, mem
    return None


@dataclass(frozen=True)
class VmSize:
    name: str
    region: str
    vcpus: float
    memory_gb: float
    gpu_count: int
    gpu_type: str
    gpu_memory_gb: float


def collect_vm_sizes(
    skus: Iterable[Any], regions: set[str]
) -> tuple[dict[tuple[str, str], VmSize], list[RejectedRow]]:
    """GPU VM sizes per (region, size) that the subscription may use."""
    out: dict[tuple[str, str], VmSize] = {}
    rejected: list[RejectedRow] = []
    for sku in skus:
        if getattr(sku, "resource_type", None) != "virtualMachines" or not sku.name:
            continue
        series = gpu_series(sku.name)
        if series is None:
            continue
        caps = {c.name: c.value for c in (sku.capabilities or [])}
        restricted = {
            loc.lower()
            for r in (sku.restrictions or [])
            if r.type == "Location"
            for loc in _restriction_values(r)
        }
        for loc in sku.locations or []:
            region = loc.lower()
            if region not in regions:
                continue
            if region in restricted:
                rejected.append(
                    RejectedRow("azure", f"{region}/{sku.name}", "not available to this subscription")
                )
                continue
            try:
                size = VmSize(
                    sku.name,
                    region,
                    float(caps["vCPUs"]),
                    float(caps["MemoryGB"]),
                    int(caps["GPUs"]),
                    series[0],
                    series[1],
                )
            except (KeyError, TypeError, ValueError) as exc:
                rejected.append(
                    RejectedRow("azure", f"{region}/{sku.name}", f"capabilities incomplete: {exc}")
                )
                continue
            out[(region, sku.name)] = size
    return out, rejected


def _restriction_values(restriction: Any) -> list[str]:
    # azure-mgmt-compute 34+ models are mappings, where `.values` is the dict method and the
    # field is `values_property`; older msrest models expose the list as `.values`.
    values = getattr(restriction, "values_property", None)
    if values is None:
        values = restriction.values
    return list(values or []) if not callable(values) else []


def parse_price_items(items: Iterable[Any]) -> tuple[dict[tuple[str, str, bool], float], list[RejectedRow]]:
    """Hourly Linux pay-as-you-go prices by (region, armSkuName, spot?) from Retail Prices items.

    Windows, Low Priority, reservation and Dev/Test rows are skipped: they are other products.
    """
    prices: dict[tuple[str, str, bool], float] = {}
    rejected: list[RejectedRow] = []
    for item in items:
        if not isinstance(item, dict):
            rejected.append(RejectedRow("azure", "?", "price item is not an object"))
            continue
        name = str(item.get("armSkuName") or "")
        sku_name = str(item.get("skuName") or item.get("meterName") or "")
        if item.get("type") != "Consumption" or "windows" in str(item.get("productName", "")).lower():
            continue
        if "low priority" in sku_name.lower():
            continue
        ident = f"{item.get('armRegionName', '?')}/{name or '?'}"
        if not name or not item.get("armRegionName"):
            rejected.append(RejectedRow("azure", ident, "price item without armSkuName/armRegionName"))
            continue
        if item.get("unitOfMeasure") != "1 Hour" or item.get("currencyCode", "USD") != "USD":
            rejected.append(RejectedRow("azure", ident, f"unexpected unit {item.get('unitOfMeasure')!r}"))
            continue
        try:
            price = float(item["retailPrice"])
        except (KeyError, TypeError, ValueError):
            rejected.append(
                RejectedRow("azure", ident, f"retailPrice {item.get('retailPrice')!r} is not a number")
            )
            continue
        spot = sku_name.endswith(" Spot")
        prices[(str(item["armRegionName"]).lower(), name, spot)] = price
    return prices, rejected


def build_offers(
    sizes: dict[tuple[str, str], VmSize], prices: dict[tuple[str, str, bool], float], now: datetime
) -> tuple[list[Offer], list[RejectedRow]]:
    offers: list[Offer] = []
    rejected: list[RejectedRow] = []
    for (region, name), s in sorted(sizes.items()):
        on_demand = prices.get((region, name, False))
        if on_demand is None:
            rejected.append(RejectedRow("azure", f"{region}/{name}", "no pay-as-you-go Linux price"))
            continue
        offers.append(
            Offer.of_shape(
                s,
                provider="azure",
                region=region,
                zone=None,
                instance_type=name,
                price_on_demand=on_demand,
                price_spot=prices.get((region, name, True)),
                source="azure-api",
                fetched_at=now,
            )
        )
    return offers, rejected


class AzureOfferSource:
    name = "azure"

    def __init__(
        self,
        regions: list[str] | None = None,
        subscription_id: str | None = None,
        credential: Any = None,
        retries: int = 3,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.regions = [r.lower() for r in (regions or DEFAULT_REGIONS)]
        # Regions and size names are interpolated into OData filters: refuse anything else.
        if bad := [r for r in self.regions if not re.fullmatch(r"[a-z0-9]+", r)]:
            from loomos.marketplace.optimizer import MarketInputError

            raise MarketInputError(
                f"not Azure region names: {', '.join(bad)} (Azure writes regions without '-', e.g. eastus)"
            )
        self.subscription_id = subscription_id
        self._credential = credential
        self._retries = retries
        self._clock = clock

    def _list_skus(self, region: str) -> Iterable[Any]:
        from azure.mgmt.compute import ComputeManagementClient

        sub = self.subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID")
        if not sub:
            raise ProviderError("azure: no subscription (set AZURE_SUBSCRIPTION_ID)")
        credential = self._credential
        if credential is None:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        client = ComputeManagementClient(credential, sub, retry_total=self._retries)
        return client.resource_skus.list(filter=f"location eq '{region}'")

    def _retail_prices(self, region: str, names: list[str]) -> list[Any]:
        from azure.core import PipelineClient
        from azure.core.pipeline.policies import RetryPolicy, UserAgentPolicy
        from azure.core.rest import HttpRequest

        client = PipelineClient(
            RETAIL_PRICES_URL,
            policies=[UserAgentPolicy("loomos-marketplace"), RetryPolicy(retry_total=self._retries)],
        )
        items: list[Any] = []
        for i in range(0, len(names), _NAMES_PER_QUERY):
            chunk = names[i : i + _NAMES_PER_QUERY]
            sku_filter = " or ".join(f"armSkuName eq '{n}'" for n in chunk)
            odata = f"serviceName eq 'Virtual Machines' and armRegionName eq '{region}' and ({sku_filter})"
            request = HttpRequest("GET", RETAIL_PRICES_URL, params={"$filter": odata})
            pages = 0
            while request is not None:
                response = client.send_request(request)
                response.raise_for_status()
                try:
                    body = json.loads(response.text())
                except json.JSONDecodeError as exc:
                    raise ProviderError(f"azure: Retail Prices API returned invalid JSON: {exc}") from None
                if not isinstance(body, dict) or not isinstance(body.get("Items"), list):
                    raise ProviderError("azure: Retail Prices API response has no 'Items' list")
                items += body["Items"]
                next_link = body.get("NextPageLink")
                pages += 1
                # A page chain that never ends is a broken response, not a big catalog.
                if pages > 500:
                    raise ProviderError("azure: Retail Prices API paging did not terminate")
                request = HttpRequest("GET", next_link) if next_link else None
        return items

    def fetch(self, progress: ProgressHook = no_progress) -> FetchResult:
        from azure.core.exceptions import AzureError, ClientAuthenticationError

        now = self._clock()
        offers: list[Offer] = []
        rejected: list[RejectedRow] = []
        total = len(self.regions)
        try:
            for i, region in enumerate(self.regions):
                progress(i, total, f"azure {region}")
                sizes, rej = collect_vm_sizes(self._list_skus(region), {region})
                rejected += rej
                names = sorted({name for (_r, name) in sizes})
                price_items = self._retail_prices(region, names) if names else []
                prices, rej = parse_price_items(price_items)
                rejected += rej
                got, rej = build_offers(sizes, prices, now)
                offers += got
                rejected += rej
        except (AzureError, ClientAuthenticationError) as exc:
            raise ProviderError(
                f"azure: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
        progress(total, total, "azure done")
        if not offers:
            raise ProviderError("azure: no GPU offers could be priced from the responses")
        return FetchResult("azure", offers, SOURCE, now.date().isoformat(), now, rejected)
