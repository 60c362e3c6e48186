"""GCP source: the real billing and compute clients over REST, anonymous credentials, HTTP
answered by `responses` with bodies in the APIs' shapes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import responses
from google.auth.credentials import AnonymousCredentials

from loomos.marketplace.providers.base import ProviderError
from loomos.marketplace.providers.gcp import GcpOfferSource, accelerator_key
from tests.helpers.marketplace.gcp_responses import GOOD_SKUS, SKUS_URL, machine_types, serve, sku

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def source(regions: list[str] | None = None) -> GcpOfferSource:
    return GcpOfferSource(
        regions or ["us-central1", "us-east4"],
        project="test-project",
        credentials=AnonymousCredentials(),
        transport="rest",
        clock=lambda: NOW,
    )


@responses.activate
def test_machine_prices_are_host_plus_gpu_skus() -> None:
    serve(responses.mock, GOOD_SKUS)
    progress: list[str] = []
    result = source().fetch(lambda done, total, what: progress.append(what))
    by_key = {o.key: o for o in result.offers}
    assert set(by_key) == {
        "gcp/us-central1/-/a2-highgpu-1g",
        "gcp/us-central1/-/a2-highgpu-8g",
        "gcp/us-central1/-/g2-standard-4",
        "gcp/us-east4/-/g2-standard-4",
    }
    a2 = by_key["gcp/us-central1/-/a2-highgpu-1g"]
    # 12 vCPU x 0.031611 + 85 GiB x 0.004237 + 1 x 2.933908 (the public a2-highgpu-1g figure, ~3.673)
    assert a2.price_on_demand == pytest.approx(12 * 0.031611 + 85 * 0.004237 + 2.933908, abs=1e-6)
    assert a2.price_spot == pytest.approx(12 * 0.009483 + 85 * 0.001271 + 1.1, abs=1e-6)
    assert (a2.gpu_type, a2.gpu_count, a2.gpu_memory_gb) == ("A100-40GB", 1, 40.0)
    assert by_key["gcp/us-central1/-/a2-highgpu-8g"].price_on_demand == pytest.approx(29.38708, abs=1e-4)
    g2 = by_key["gcp/us-central1/-/g2-standard-4"]
    assert g2.price_spot is None  # no spot SKUs for G2 in the responses: absent, not invented
    assert g2.price_on_demand == pytest.approx(4 * 0.024988 + 16 * 0.002927 + 0.56, abs=1e-6)
    assert progress[-1] == "gcp done"
    # the SKU list came in several pages; the machine-type request carried the family filter
    sku_calls = [c for c in responses.calls if "cloudbilling" in c.request.url]
    assert len(sku_calls) == 3
    mt_call = next(c for c in responses.calls if "machineTypes" in c.request.url)
    assert "filter=name" in mt_call.request.url


@responses.activate
def test_malformed_and_partial_skus_are_rejected() -> None:
    bad_unit = sku(
        "BADU", "G2 Instance Ram running in Americas", "RAM", "OnDemand", ["us-east4"], 0.0029, "h"
    )
    no_pricing = sku("NOPR", "Nvidia L4 GPU running in Americas", "GPU", "OnDemand", ["us-east4"], 0.56)
    no_pricing["pricingInfo"] = []
    skus = [s for s in GOOD_SKUS if s["skuId"] not in ("L4",)]
    skus += [
        sku("L4C", "Nvidia L4 GPU running in Americas", "GPU", "OnDemand", ["us-central1"], 0.56),
        bad_unit,
        no_pricing,
    ]
    serve(responses.mock, skus)
    result = source().fetch()
    keys = {o.key for o in result.offers}
    assert "gcp/us-east4/-/g2-standard-4" not in keys  # its GPU SKU was malformed for us-east4
    reasons = " | ".join(f"{r.ident}: {r.reason}" for r in result.rejected)
    assert "usage unit 'h', expected 'GiBy.h'" in reasons
    assert "NOPR: Nvidia L4 GPU running in Americas: no pricing_info" in reasons
    assert "us-east4/g2-standard-4: no on-demand SKU" in reasons


@responses.activate
def test_machine_type_without_accelerators_and_unknown_gpu() -> None:
    extra = [
        {"name": "a2-weird-1g", "zone": "us-central1-a", "guestCpus": 12, "memoryMb": 87040},
        {
            "name": "g2-odd-1g",
            "zone": "us-central1-a",
            "guestCpus": 4,
            "memoryMb": 16384,
            "accelerators": [{"guestAcceleratorType": "acme-tpu-x", "guestAcceleratorCount": 1}],
        },
    ]
    serve(responses.mock, GOOD_SKUS, machine_types(extra))
    result = source(["us-central1"]).fetch()
    reasons = {r.ident: r.reason for r in result.rejected}
    assert reasons["us-central1/a2-weird-1g"] == "machine type lists no accelerators"
    assert "not in the GPU table" in reasons["us-central1/g2-odd-1g"]


@responses.activate
def test_http_errors_and_broken_bodies_raise_provider_error() -> None:
    responses.add(
        responses.GET,
        SKUS_URL,
        json={"error": {"code": 403, "message": "Billing API disabled", "status": "PERMISSION_DENIED"}},
        status=403,
    )
    with pytest.raises(ProviderError, match="Billing API disabled"):
        source().fetch()


@responses.activate
def test_no_priceable_machines_is_a_failure() -> None:
    serve(responses.mock, [], {"items": {}})
    with pytest.raises(ProviderError, match="no GPU offers"):
        source().fetch()


def test_accelerator_keys_match_sku_names_regardless_of_word_order() -> None:
    assert accelerator_key("nvidia-h100-mega-80gb") == accelerator_key("H100 80GB Mega")
    assert accelerator_key("nvidia-tesla-a100") == accelerator_key("Tesla A100")
    assert accelerator_key("nvidia-a100-80gb") != accelerator_key("Tesla A100")


@responses.activate
def test_a3_mega_hosts_are_priced_from_a3plus_skus_not_a3_high() -> None:
    mega = {
        "name": "a3-megagpu-8g",
        "zone": "us-central1-a",
        "guestCpus": 208,
        "memoryMb": 1916928,
        "accelerators": [{"guestAcceleratorType": "nvidia-h100-mega-80gb", "guestAcceleratorCount": 8}],
    }
    high = {
        **mega,
        "name": "a3-highgpu-8g",
        "accelerators": [{"guestAcceleratorType": "nvidia-h100-80gb", "guestAcceleratorCount": 8}],
    }
    ultra = {**mega, "name": "a3-ultragpu-8g"}  # no A3Ultra host SKUs served: rejected, not guessed
    region = ["us-central1"]
    skus = [
        *GOOD_SKUS,
        sku("A3C", "A3 Instance Core running in Americas", "CPU", "OnDemand", region, 0.02),
        sku("A3R", "A3 Instance Ram running in Americas", "RAM", "OnDemand", region, 0.002, "GiBy.h"),
        sku("A3PC", "A3Plus Instance Core running in Americas", "CPU", "OnDemand", region, 0.03),
        sku("A3PR", "A3Plus Instance Ram running in Americas", "RAM", "OnDemand", region, 0.004, "GiBy.h"),
        sku("H100", "Nvidia H100 80GB GPU running in Americas", "GPU", "OnDemand", region, 9.797),
        sku("H100M", "Nvidia H100 80GB Mega GPU running in Americas", "GPU", "OnDemand", region, 10.0),
    ]
    serve(responses.mock, skus, machine_types([mega, high, ultra]))
    result = source(region).fetch()
    by_name = {o.instance_type: o for o in result.offers}
    mem_gib = 1916928 / 1024
    assert by_name["a3-megagpu-8g"].price_on_demand == pytest.approx(208 * 0.03 + mem_gib * 0.004 + 80.0)
    assert by_name["a3-highgpu-8g"].price_on_demand == pytest.approx(208 * 0.02 + mem_gib * 0.002 + 8 * 9.797)
    assert "a3-ultragpu-8g" not in by_name
    assert any(r.ident == "us-central1/a3-ultragpu-8g" for r in result.rejected)
