"""Azure responses in the shapes ARM (resource SKUs) and the Retail Prices API return."""

from __future__ import annotations

import re
import time
from typing import Any

from azure.core.credentials import AccessToken

SKUS_URL = re.compile(
    r"https://management\.azure\.com/subscriptions/sub-1/providers/Microsoft\.Compute/skus.*"
)
PRICES_URL = re.compile(r"https://prices\.azure\.com(:443)?/api/retail/prices.*")


class StaticTokenCredential:
    """A TokenCredential (the protocol azure-core's bearer policy calls) holding a fixed token:
    the Azure AD endpoint is not reachable offline, and token acquisition is not under test."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("test-token", int(time.time()) + 3600)


def resource_sku(
    name: str,
    vcpus: str,
    mem: str,
    gpus: str | None,
    locations: list[str],
    restricted: list[str] | None = None,
) -> dict[str, Any]:
    caps = [{"name": "vCPUs", "value": vcpus}, {"name": "MemoryGB", "value": mem}]
    if gpus is not None:
        caps.append({"name": "GPUs", "value": gpus})
    return {
        "resourceType": "virtualMachines",
        "name": name,
        "tier": "Standard",
        "size": name.removeprefix("Standard_"),
        "locations": locations,
        "locationInfo": [{"location": loc, "zones": ["1", "2", "3"]} for loc in locations],
        "capabilities": caps,
        "restrictions": [
            {
                "type": "Location",
                "values": restricted,
                "reasonCode": "NotAvailableForSubscription",
                "restrictionInfo": {"locations": restricted},
            }
        ]
        if restricted
        else [],
    }


SKUS = {
    "value": [
        resource_sku("Standard_ND96asr_v4", "96", "900", "8", ["eastus"]),
        resource_sku("Standard_NC24ads_A100_v4", "24", "220", "1", ["eastus"]),
        resource_sku("Standard_ND96isr_H100_v5", "96", "1900", "8", ["eastus"], restricted=["eastus"]),
        resource_sku("Standard_D4s_v5", "4", "16", None, ["eastus"]),
        {"resourceType": "disks", "name": "Premium_LRS", "locations": ["eastus"]},
    ]
}


def price_item(
    arm_sku: str,
    sku_name: str,
    price: float,
    product: str,
    region: str = "eastus",
    kind: str = "Consumption",
    unit: str = "1 Hour",
) -> dict[str, Any]:
    return {
        "currencyCode": "USD",
        "tierMinimumUnits": 0.0,
        "retailPrice": price,
        "unitPrice": price,
        "armRegionName": region,
        "location": "US East",
        "effectiveStartDate": "2025-01-01T00:00:00Z",
        "meterId": f"meter-{arm_sku}-{sku_name}",
        "meterName": sku_name,
        "productId": "DZH318Z0BQ4B",
        "skuId": "DZH318Z0BQ4B/00G1",
        "productName": product,
        "skuName": sku_name,
        "serviceName": "Virtual Machines",
        "serviceId": "DZH313Z7MMC8",
        "serviceFamily": "Compute",
        "unitOfMeasure": unit,
        "type": kind,
        "isPrimaryMeterRegion": True,
        "armSkuName": arm_sku,
    }


PAGE_1 = {
    "BillingCurrency": "USD",
    "CustomerEntityId": "Default",
    "CustomerEntityType": "Retail",
    "Items": [
        price_item("Standard_ND96asr_v4", "ND96asr v4", 27.197, "Virtual Machines NDasrA100_v4 Series"),
        price_item("Standard_ND96asr_v4", "ND96asr v4 Spot", 2.99, "Virtual Machines NDasrA100_v4 Series"),
        price_item("Standard_ND96asr_v4", "ND96asr v4", 31.5, "Virtual Machines NDasrA100_v4 Series Windows"),
        price_item(
            "Standard_ND96asr_v4", "ND96asr v4 Low Priority", 5.4, "Virtual Machines NDasrA100_v4 Series"
        ),
    ],
    "NextPageLink": "https://prices.azure.com:443/api/retail/prices?$filter=page2&$skip=4",
    "Count": 4,
}
PAGE_2 = {
    "BillingCurrency": "USD",
    "CustomerEntityId": "Default",
    "CustomerEntityType": "Retail",
    "Items": [
        price_item(
            "Standard_NC24ads_A100_v4", "NC24ads A100 v4", 3.673, "Virtual Machines NCadsA100v4 Series"
        ),
        price_item(
            "Standard_NC24ads_A100_v4", "NC24ads A100 v4 Spot", 0.444, "Virtual Machines NCadsA100v4 Series"
        ),
        price_item(
            "Standard_NC24ads_A100_v4",
            "NC24ads A100 v4",
            2.2,
            "Virtual Machines NCadsA100v4 Series",
            kind="Reservation",
            unit="1 Year",
        ),
    ],
    "NextPageLink": None,
    "Count": 3,
}
