"""AWS responses in the shapes the APIs return (PriceList entries are JSON strings)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def price_list_item(instance_type: str, usd: str, region: str = "us-east-1", **attrs: str) -> str:
    sku = f"SKU{abs(hash((instance_type, region))) % 10**8:08d}"
    return json.dumps(
        {
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {
                    "instanceType": instance_type,
                    "regionCode": region,
                    "operatingSystem": "Linux",
                    "tenancy": "Shared",
                    "preInstalledSw": "NA",
                    "capacitystatus": "Used",
                    "marketoption": "OnDemand",
                    "instanceFamily": "GPU instance",
                    **attrs,
                },
                "sku": sku,
            },
            "serviceCode": "AmazonEC2",
            "terms": {
                "OnDemand": {
                    f"{sku}.JRTCKXETXF": {
                        "priceDimensions": {
                            f"{sku}.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "pricePerUnit": {"USD": usd},
                                "description": f"${usd} per On Demand Linux {instance_type} Instance Hour",
                            }
                        },
                        "sku": sku,
                        "effectiveDate": "2025-06-01T00:00:00Z",
                    }
                }
            },
            "version": "20250601000000",
            "publicationDate": "2025-06-01T00:00:00Z",
        }
    )


def instance_type_doc(
    name: str, gpu: str, count: int, gpu_mib: int, vcpus: int, mem_mib: int
) -> dict[str, Any]:
    return {
        "InstanceType": name,
        "CurrentGeneration": True,
        "VCpuInfo": {"DefaultVCpus": vcpus},
        "MemoryInfo": {"SizeInMiB": mem_mib},
        "GpuInfo": {
            "Gpus": [
                {"Name": gpu, "Manufacturer": "NVIDIA", "Count": count, "MemoryInfo": {"SizeInMiB": gpu_mib}}
            ],
            "TotalGpuMemoryInMiB": gpu_mib * count,
        },
    }


SPECS = {
    "p4d.24xlarge": instance_type_doc("p4d.24xlarge", "A100", 8, 40960, 96, 1179648),
    "p5.48xlarge": instance_type_doc("p5.48xlarge", "H100", 8, 81920, 192, 2097152),
    "g5.xlarge": instance_type_doc("g5.xlarge", "A10G", 1, 24576, 4, 16384),
    "g6.2xlarge": instance_type_doc("g6.2xlarge", "L4", 1, 22888, 8, 32768),
}


def spot_row(itype: str, zone: str, price: str, ts: datetime | None = None) -> dict[str, Any]:
    return {
        "AvailabilityZone": zone,
        "InstanceType": itype,
        "ProductDescription": "Linux/UNIX",
        "SpotPrice": price,
        "Timestamp": ts or datetime(2026, 1, 15, 11, 0, tzinfo=UTC),
    }
