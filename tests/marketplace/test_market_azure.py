"""Azure source: azure-mgmt-compute and azure-core's pipeline over `requests`, answered by
`responses` with recorded-shape JSON."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import responses

from loomos.marketplace.providers.azure import AzureOfferSource, gpu_series, parse_price_items
from loomos.marketplace.providers.base import ProviderError
from tests.helpers.marketplace.azure_responses import (
    PAGE_1,
    PAGE_2,
    PRICES_URL,
    SKUS,
    SKUS_URL,
    StaticTokenCredential,
    price_item,
)

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def source() -> AzureOfferSource:
    return AzureOfferSource(
        ["eastus"], subscription_id="sub-1", credential=StaticTokenCredential(), retries=0, clock=lambda: NOW
    )


def serve_prices(pages: list[dict]) -> None:
    for page in pages:
        responses.add(responses.GET, PRICES_URL, json=page)


@responses.activate
def test_sizes_and_paged_prices_become_offers() -> None:
    responses.add(responses.GET, SKUS_URL, json=SKUS)
    serve_prices([PAGE_1, PAGE_2])
    result = source().fetch()
    by_key = {o.key: o for o in result.offers}
    assert set(by_key) == {"azure/eastus/-/Standard_ND96asr_v4", "azure/eastus/-/Standard_NC24ads_A100_v4"}
    nd = by_key["azure/eastus/-/Standard_ND96asr_v4"]
    assert (nd.price_on_demand, nd.price_spot, nd.gpu_type, nd.gpu_count) == (27.197, 2.99, "A100-40GB", 8)
    nc = by_key["azure/eastus/-/Standard_NC24ads_A100_v4"]
    assert (nc.price_on_demand, nc.price_spot, nc.gpu_type, nc.memory_gb) == (
        3.673,
        0.444,
        "A100-80GB",
        220.0,
    )
    assert any("not available to this subscription" in r.reason for r in result.rejected)
    # the ARM call went out with the bearer token and the location filter; the second price
    # page was fetched from NextPageLink
    arm = responses.calls[0].request
    assert arm.headers["Authorization"] == "Bearer test-token"
    assert "location+eq+%27eastus%27" in arm.url or "location%20eq%20%27eastus%27" in arm.url
    assert "skip=4" in responses.calls[2].request.url


def test_price_item_parser_skips_other_products_and_reports_broken_items() -> None:
    prices, rejected = parse_price_items(
        [
            *PAGE_1["Items"],
            price_item("Standard_NC24ads_A100_v4", "NC24ads A100 v4", "n/a", "Virtual Machines"),  # type: ignore[arg-type]
            price_item("", "X", 1.0, "Virtual Machines"),
            price_item(
                "Standard_NC24ads_A100_v4", "NC24ads A100 v4", 3.6, "Virtual Machines", unit="1/Month"
            ),
            "not an object",
        ]
    )
    assert prices == {
        ("eastus", "Standard_ND96asr_v4", False): 27.197,
        ("eastus", "Standard_ND96asr_v4", True): 2.99,
    }
    reasons = [r.reason for r in rejected]
    assert "retailPrice 'n/a' is not a number" in reasons
    assert "price item without armSkuName/armRegionName" in reasons
    assert "unexpected unit '1/Month'" in reasons
    assert "price item is not an object" in reasons


@responses.activate
def test_invalid_json_and_missing_items_fail_the_provider() -> None:
    responses.add(responses.GET, SKUS_URL, json=SKUS)
    responses.add(responses.GET, PRICES_URL, body="<html>gateway</html>", status=200)
    with pytest.raises(ProviderError, match="invalid JSON"):
        source().fetch()
    responses.replace(responses.GET, PRICES_URL, json={"value": []})
    with pytest.raises(ProviderError, match="no 'Items' list"):
        source().fetch()


@responses.activate
def test_arm_auth_failure_is_reported() -> None:
    responses.add(
        responses.GET,
        SKUS_URL,
        status=403,
        json={"error": {"code": "AuthorizationFailed", "message": "The client does not have authorization"}},
    )
    with pytest.raises(ProviderError, match="authorization"):
        source().fetch()


@responses.activate
def test_price_without_on_demand_row_is_rejected_and_empty_result_fails() -> None:
    responses.add(responses.GET, SKUS_URL, json=SKUS)
    serve_prices(
        [
            {
                "Items": [price_item("Standard_ND96asr_v4", "ND96asr v4 Spot", 2.99, "Virtual Machines")],
                "NextPageLink": None,
            }
        ]
    )
    with pytest.raises(ProviderError, match="no GPU offers"):
        source().fetch()


def test_missing_subscription_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    with pytest.raises(ProviderError, match="AZURE_SUBSCRIPTION_ID"):
        AzureOfferSource(["eastus"], credential=StaticTokenCredential()).fetch()


def test_series_table() -> None:
    assert gpu_series("Standard_ND96isr_H100_v5") == ("H100", 80.0)
    assert gpu_series("Standard_NC40ads_H100_v5") == ("H100", 94.0)
    assert gpu_series("Standard_ND96amsr_A100_v4") == ("A100-80GB", 80.0)
    assert gpu_series("Standard_D4s_v5") is None
