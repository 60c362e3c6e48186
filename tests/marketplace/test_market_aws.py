"""AWS source against botocore's Stubber (pricing, spot) and moto (instance types)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest

from loomos.marketplace.providers.aws import (
    AwsOfferSource,
    fetch_instance_specs,
    parse_instance_type,
    parse_price_list_item,
)
from loomos.marketplace.providers.base import ProviderError
from tests.helpers.marketplace.aws_responses import SPECS, instance_type_doc, price_list_item, spot_row
from tests.helpers.marketplace.aws_stub import StubbedAws, add_region

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def stubbed() -> Iterator[StubbedAws]:
    with StubbedAws() as aws:
        yield aws


def test_fetch_builds_zone_rows_from_realistic_responses(stubbed: StubbedAws) -> None:
    add_region(
        stubbed,
        "us-east-1",
        [price_list_item("p4d.24xlarge", "32.7726000000"), price_list_item("g5.xlarge", "1.0060000000")],
        [SPECS["p4d.24xlarge"], SPECS["g5.xlarge"]],
        [
            spot_row("p4d.24xlarge", "us-east-1a", "9.610000"),
            spot_row("p4d.24xlarge", "us-east-1b", "5.090000"),
            # an older price for the same zone must not win over the newer one
            spot_row("p4d.24xlarge", "us-east-1a", "12.000000", datetime(2026, 1, 1, tzinfo=UTC)),
        ],
        check_filters=True,
    )
    add_region(
        stubbed,
        "us-west-2",
        [price_list_item("g6.2xlarge", "0.9776", "us-west-2")],
        [SPECS["g6.2xlarge"]],
        [],
    )
    result = AwsOfferSource(
        ["us-east-1", "us-west-2"], client_factory=stubbed.factory, clock=lambda: NOW
    ).fetch()
    stubbed.assert_done()
    by_key = {o.key: o for o in result.offers}
    assert set(by_key) == {
        "aws/us-east-1/us-east-1a/p4d.24xlarge",
        "aws/us-east-1/us-east-1b/p4d.24xlarge",
        "aws/us-east-1/-/g5.xlarge",
        "aws/us-west-2/-/g6.2xlarge",
    }
    a = by_key["aws/us-east-1/us-east-1a/p4d.24xlarge"]
    assert (a.gpu_type, a.gpu_count, a.gpu_memory_gb, a.vcpus, a.memory_gb) == (
        "A100-40GB",
        8,
        40.0,
        96.0,
        1152.0,
    )
    assert (a.price_on_demand, a.price_spot, a.stale_prone) == (32.7726, 9.61, True)
    assert by_key["aws/us-east-1/us-east-1b/p4d.24xlarge"].price_spot == 5.09
    g6 = by_key["aws/us-west-2/-/g6.2xlarge"]
    assert (g6.gpu_type, g6.gpu_memory_gb, g6.price_spot, g6.stale_prone) == ("L4", 24.0, None, False)
    assert result.fetched_at == NOW and result.rejected == []


def test_partial_and_malformed_rows_are_reported_not_used(stubbed: StubbedAws) -> None:
    no_terms = '{"product": {"attributes": {"instanceType": "g5.2xlarge"}}, "terms": {}}'
    add_region(
        stubbed,
        "us-east-1",
        [
            "{not json",
            no_terms,
            price_list_item("g5.xlarge", "abc"),
            price_list_item("g6.2xlarge", "0.9776"),
            price_list_item("p5.48xlarge", "98.32"),
        ],
        # p5 is priced but EC2 does not describe it; a non-GPU description is rejected too
        [
            SPECS["g6.2xlarge"],
            {"InstanceType": "m5.large", "VCpuInfo": {"DefaultVCpus": 2}, "MemoryInfo": {"SizeInMiB": 8192}},
        ],
        [spot_row("g6.2xlarge", "us-east-1a", "not-a-number")],
    )
    result = AwsOfferSource(["us-east-1"], client_factory=stubbed.factory, clock=lambda: NOW).fetch()
    assert [o.instance_type for o in result.offers] == ["g6.2xlarge"]
    reasons = " | ".join(r.reason for r in result.rejected)
    assert "JSONDecodeError" in reasons
    assert "OnDemand" in reasons
    assert "'abc' is not a number" in reasons
    assert "not described by EC2" in reasons
    assert "not a GPU instance" in reasons
    assert "bad spot row" in reasons


def test_api_error_and_empty_responses_raise_provider_error(stubbed: StubbedAws) -> None:
    stubbed.stubbers[("pricing", "us-east-1")].add_client_error(
        "get_products",
        service_error_code="AccessDeniedException",
        service_message="no pricing:GetProducts",
        http_status_code=400,
    )
    with pytest.raises(ProviderError, match="AccessDenied"):
        AwsOfferSource(["us-east-1"], client_factory=stubbed.factory).fetch()
    add_region(stubbed, "us-east-1", [], [], [])
    with pytest.raises(ProviderError, match="no GPU offers"):
        AwsOfferSource(["us-east-1"], client_factory=stubbed.factory).fetch()


def test_price_list_parser_cases() -> None:
    assert parse_price_list_item(price_list_item("p5.48xlarge", "98.3200000000")) == ("p5.48xlarge", 98.32)
    with pytest.raises(ValueError, match="instanceType"):
        parse_price_list_item("[]")
    doc = {
        "product": {"attributes": {"instanceType": "x"}},
        "terms": {
            "OnDemand": {"t": {"priceDimensions": {"d": {"unit": "Quantity", "pricePerUnit": {"USD": "1"}}}}}
        },
    }
    with pytest.raises(ValueError, match="no hourly USD"):
        parse_price_list_item(doc)


def test_instance_type_parser_cases() -> None:
    assert (
        parse_instance_type(instance_type_doc("p4de.24xlarge", "A100", 8, 81920, 96, 1179648)).gpu_type
        == "A100-80GB"
    )
    with pytest.raises(ValueError, match="not in the catalog's GPU table"):
        parse_instance_type(instance_type_doc("x.large", "Radeon Pro V520", 1, 8192, 4, 16384))
    broken = instance_type_doc("g5.xlarge", "A10G", 1, 24576, 4, 16384)
    del broken["VCpuInfo"]
    with pytest.raises(ValueError, match="incomplete"):
        parse_instance_type(broken)


def test_instance_specs_from_moto(aws_env: None) -> None:
    """moto's describe_instance_types carries AWS's real instance data: the parser must read it."""
    from moto import mock_aws

    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        specs, rejected = fetch_instance_specs(
            ec2, ["p4d.24xlarge", "p5.48xlarge", "g5.xlarge", "g6.2xlarge"]
        )
    assert rejected == []
    assert (specs["p4d.24xlarge"].gpu_type, specs["p4d.24xlarge"].gpu_count) == ("A100-40GB", 8)
    assert (specs["p5.48xlarge"].gpu_type, specs["p5.48xlarge"].vcpus) == ("H100", 192.0)
    assert (specs["g5.xlarge"].gpu_type, specs["g5.xlarge"].gpu_memory_gb) == ("A10G", 24.0)
    assert specs["g6.2xlarge"].gpu_type == "L4"
