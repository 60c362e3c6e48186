"""Real boto3 clients whose HTTP layer is botocore's Stubber, loaded with a region's price list,
instance types and spot history (tests/marketplace)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.stub import ANY, Stubber

from loomos.marketplace.providers.aws import ON_DEMAND_FILTERS


class StubbedAws:
    """Real boto3 clients whose HTTP layer is botocore's Stubber."""

    def __init__(self) -> None:
        session = boto3.session.Session(
            aws_access_key_id="k", aws_secret_access_key="s", region_name="us-east-1"
        )
        self.clients: dict[tuple[str, str], Any] = {}
        self.stubbers: dict[tuple[str, str], Stubber] = {}
        for service, region in [("pricing", "us-east-1"), ("ec2", "us-east-1"), ("ec2", "us-west-2")]:
            client = session.client(service, region_name=region)
            self.clients[(service, region)] = client
            self.stubbers[(service, region)] = Stubber(client)

    def factory(self, service: str, region: str) -> Any:
        return self.clients[(service, region)]

    def __enter__(self) -> StubbedAws:
        for s in self.stubbers.values():
            s.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        for s in self.stubbers.values():
            s.deactivate()

    def assert_done(self) -> None:
        for s in self.stubbers.values():
            s.assert_no_pending_responses()


def add_region(
    aws: StubbedAws,
    region: str,
    items: list[str],
    specs: list[dict[str, Any]],
    spots: list[dict[str, Any]],
    check_filters: bool = False,
) -> None:
    filters = [*ON_DEMAND_FILTERS, {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region}]
    expected = (
        {"ServiceCode": "AmazonEC2", "Filters": filters, "FormatVersion": "aws_v1"} if check_filters else None
    )
    aws.stubbers[("pricing", "us-east-1")].add_response(
        "get_products", {"PriceList": items, "FormatVersion": "aws_v1"}, expected
    )
    ec2 = aws.stubbers[("ec2", region)]
    ec2.add_response("describe_instance_types", {"InstanceTypes": specs}, {"InstanceTypes": ANY})
    ec2.add_response(
        "describe_spot_price_history",
        {"SpotPriceHistory": spots},
        {"InstanceTypes": ANY, "ProductDescriptions": ["Linux/UNIX"], "StartTime": ANY},
    )
