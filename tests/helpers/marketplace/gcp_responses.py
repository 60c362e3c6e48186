"""GCP REST responses in the shapes the Cloud Billing Catalog and Compute APIs return, served
through `responses` to the real clients (REST transport, anonymous credentials)."""

from __future__ import annotations

import json
import re
from typing import Any

import responses

SKUS_URL = re.compile(r"https://cloudbilling\.googleapis\.com/v1/services/6F81-5844-456A/skus.*")
MACHINE_TYPES_URL = re.compile(
    r"https://compute\.googleapis\.com/compute/v1/projects/test-project/aggregated/machineTypes.*"
)
ACCELERATORS_URL = re.compile(
    r"https://compute\.googleapis\.com/compute/v1/projects/test-project/aggregated/acceleratorTypes.*"
)


def sku(
    sku_id: str, description: str, group: str, usage: str, regions: list[str], usd: float, unit: str = "h"
) -> dict[str, Any]:
    units, nanos = int(usd), round((usd - int(usd)) * 1e9)
    return {
        "name": f"services/6F81-5844-456A/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": "Compute",
            "resourceGroup": group,
            "usageType": usage,
        },
        "serviceRegions": regions,
        "pricingInfo": [
            {
                "effectiveTime": "2026-01-15T00:00:00Z",
                "pricingExpression": {
                    "usageUnit": unit,
                    "displayQuantity": 1,
                    "usageUnitDescription": "hour",
                    "tieredRates": [
                        {
                            "startUsageAmount": 0,
                            "unitPrice": {"currencyCode": "USD", "units": str(units), "nanos": nanos},
                        }
                    ],
                },
                "currencyConversionRate": 1,
            }
        ],
        "serviceProviderName": "Google",
    }


US = ["us-central1", "us-east4"]
GOOD_SKUS = [
    sku("A2C1", "A2 Instance Core running in Americas", "CPU", "OnDemand", US, 0.031611),
    sku("A2R1", "A2 Instance Ram running in Americas", "RAM", "OnDemand", US, 0.004237, "GiBy.h"),
    sku("A100", "Nvidia Tesla A100 GPU running in Americas", "GPU", "OnDemand", US, 2.933908),
    sku("A2C2", "Spot Preemptible A2 Instance Core running in Americas", "CPU", "Preemptible", US, 0.009483),
    sku(
        "A2R2",
        "Spot Preemptible A2 Instance Ram running in Americas",
        "RAM",
        "Preemptible",
        US,
        0.001271,
        "GiBy.h",
    ),
    sku(
        "A1S",
        "Nvidia Tesla A100 GPU attached to Spot Preemptible VMs running in Americas",
        "GPU",
        "Preemptible",
        US,
        1.1,
    ),
    sku("G2C", "G2 Instance Core running in Americas", "CPU", "OnDemand", US, 0.024988),
    sku("G2R", "G2 Instance Ram running in Americas", "RAM", "OnDemand", US, 0.002927, "GiBy.h"),
    sku("L4", "Nvidia L4 GPU running in Americas", "GPU", "OnDemand", US, 0.56),
    # commitments share descriptions and must not override list prices
    sku("CUD", "Commitment v1: A2 Cpu in Americas for 1 Year", "CPU", "Commit1Yr", US, 0.0199),
    sku("N1", "N1 Predefined Instance Core running in Americas", "CPU", "OnDemand", US, 0.031611),
]


def machine_types(extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    def mt(name: str, zone: str, cpus: int, mem_mb: int, acc: str, count: int) -> dict[str, Any]:
        return {
            "kind": "compute#machineType",
            "name": name,
            "zone": zone,
            "guestCpus": cpus,
            "memoryMb": mem_mb,
            "accelerators": [{"guestAcceleratorType": acc, "guestAcceleratorCount": count}],
        }

    central = [
        mt("a2-highgpu-1g", "us-central1-a", 12, 87040, "nvidia-tesla-a100", 1),
        mt("a2-highgpu-8g", "us-central1-a", 96, 696320, "nvidia-tesla-a100", 8),
        mt("g2-standard-4", "us-central1-a", 4, 16384, "nvidia-l4", 1),
    ]
    return {
        "kind": "compute#machineTypeAggregatedList",
        "items": {
            "zones/us-central1-a": {"machineTypes": central + (extra or [])},
            # same shapes in a second zone of the region: one row per region
            "zones/us-central1-b": {"machineTypes": central[:1]},
            "zones/us-east4-a": {
                "machineTypes": [mt("g2-standard-4", "us-east4-a", 4, 16384, "nvidia-l4", 1)]
            },
            "zones/asia-east1-a": {"machineTypes": central[:1]},
            "zones/me-west1-a": {"warning": {"code": "NO_RESULTS_ON_PAGE", "message": "no results"}},
        },
    }


ACCELERATORS = {
    "kind": "compute#acceleratorTypeAggregatedList",
    "items": {
        "zones/us-central1-a": {
            "acceleratorTypes": [
                {
                    "name": "nvidia-tesla-a100",
                    "description": "NVIDIA A100 40GB",
                    "maximumCardsPerInstance": 16,
                },
                {"name": "nvidia-l4", "description": "NVIDIA L4", "maximumCardsPerInstance": 8},
            ]
        },
    },
}


def serve(
    rs: responses.RequestsMock,
    skus: list[dict[str, Any]],
    machines: dict[str, Any] | None = None,
    page_size: int = 4,
) -> None:
    """SKUs are served in pages linked by nextPageToken, as the API does."""

    def sku_page(request: Any) -> tuple[int, dict[str, str], str]:
        match = re.search(r"pageToken=(\d+)", request.url)
        start = int(match.group(1)) if match else 0
        body: dict[str, Any] = {"skus": skus[start : start + page_size]}
        if start + page_size < len(skus):
            body["nextPageToken"] = str(start + page_size)
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    rs.add_callback(responses.GET, SKUS_URL, callback=sku_page)
    rs.add(responses.GET, MACHINE_TYPES_URL, json=machines if machines is not None else machine_types())
    rs.add(responses.GET, ACCELERATORS_URL, json=ACCELERATORS)
