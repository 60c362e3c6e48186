"""Refresh end to end through all three providers' SDKs against offline fakes at their
transport layers, and the failure rules (keep previous rows, never a half-written file)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import responses
from google.auth.credentials import AnonymousCredentials

from loomos.marketplace.catalog import SHIPPED_CATALOG, load_catalog
from loomos.marketplace.offers import Offer
from loomos.marketplace.providers.aws import AwsOfferSource
from loomos.marketplace.providers.azure import AzureOfferSource
from loomos.marketplace.providers.base import FetchResult, ProgressHook, no_progress
from loomos.marketplace.providers.gcp import GcpOfferSource
from loomos.marketplace.refresh import refresh_catalog
from tests.helpers.marketplace import gcp_responses
from tests.helpers.marketplace.aws_responses import SPECS, price_list_item, spot_row
from tests.helpers.marketplace.aws_stub import StubbedAws, add_region
from tests.helpers.marketplace.azure_responses import (
    PAGE_1,
    PAGE_2,
    PRICES_URL,
    SKUS,
    SKUS_URL,
    StaticTokenCredential,
)

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def sources(aws: StubbedAws) -> list:
    return [
        AwsOfferSource(["us-east-1"], client_factory=aws.factory, clock=lambda: NOW),
        GcpOfferSource(
            ["us-central1", "us-east4"],
            project="test-project",
            credentials=AnonymousCredentials(),
            transport="rest",
            clock=lambda: NOW,
        ),
        AzureOfferSource(
            ["eastus"],
            subscription_id="sub-1",
            credential=StaticTokenCredential(),
            retries=0,
            clock=lambda: NOW,
        ),
    ]


@responses.activate
def test_refresh_all_three_providers_end_to_end(tmp_path: Path) -> None:
    target = tmp_path / "catalog.json"
    gcp_responses.serve(responses.mock, gcp_responses.GOOD_SKUS)
    responses.add(responses.GET, SKUS_URL, json=SKUS)
    responses.add(responses.GET, PRICES_URL, json=PAGE_1)
    responses.add(responses.GET, PRICES_URL, json=PAGE_2)
    progress: dict[str, list[tuple[int, int]]] = {}

    def hook_for(name: str) -> ProgressHook:
        return lambda done, total, what: progress.setdefault(name, []).append((done, total))

    with StubbedAws() as aws:
        add_region(
            aws,
            "us-east-1",
            [
                price_list_item("p5.48xlarge", "55.04"),
                price_list_item("g6.2xlarge", "0.9776"),
                price_list_item("g5.xlarge", "0"),
            ],  # a $0 row must be dropped and reported
            [SPECS["p5.48xlarge"], SPECS["g6.2xlarge"], SPECS["g5.xlarge"]],
            [spot_row("p5.48xlarge", "us-east-1a", "21.0")],
        )
        report = refresh_catalog(sources(aws), target, progress_for=hook_for, now=lambda: NOW)
    assert report.ok, [o.error for o in report.outcomes]
    assert {o.provider: o.rows for o in report.outcomes} == {"aws": 2, "gcp": 4, "azure": 2}
    assert set(progress) == {"aws", "gcp", "azure"} and all(p[-1][0] == p[-1][1] for p in progress.values())
    catalog = load_catalog(target, now=NOW)
    assert {o.provider for o in catalog.offers} == {"aws", "gcp", "azure"}
    assert len(catalog.offers) == 8  # fetched rows replace the snapshot's rows of each provider
    p5 = next(o for o in catalog.offers if o.instance_type == "p5.48xlarge")
    assert (p5.price_on_demand, p5.price_spot, p5.zone, p5.fetched_at) == (55.04, 21.0, "us-east-1a", NOW)
    meta = catalog.metadata()
    assert meta["providers"]["aws"]["as_of"] == "2026-01-15"
    assert any("0.0 is not a positive number" in r["reason"] for r in meta["providers"]["aws"]["rejected"])
    assert "Retail Prices" in meta["providers"]["azure"]["source"]


@responses.activate
def test_failed_provider_keeps_previous_rows_and_reports(tmp_path: Path) -> None:
    target = tmp_path / "catalog.json"
    responses.add(
        responses.GET,
        gcp_responses.SKUS_URL,
        status=500,
        json={"error": {"code": 500, "message": "backend error"}},
    )
    responses.add(
        responses.GET,
        SKUS_URL,
        status=401,
        json={"error": {"code": "InvalidAuthenticationToken", "message": "token expired"}},
    )
    with StubbedAws() as aws:
        aws.stubbers[("pricing", "us-east-1")].add_client_error(
            "get_products", "ThrottlingException", "slow down"
        )
        srcs = sources(aws)
        srcs[1] = GcpOfferSource(
            ["us-central1"],
            project="test-project",
            credentials=AnonymousCredentials(),
            transport="rest",
            clock=lambda: NOW,
        )
        report = refresh_catalog(srcs, target, now=lambda: NOW)
    assert not report.ok
    assert [(o.provider, o.ok) for o in report.outcomes] == [("aws", False), ("gcp", False), ("azure", False)]
    assert "slow down" in (report.outcomes[0].error or "")
    written = load_catalog(target)
    shipped = load_catalog(SHIPPED_CATALOG)
    assert [o.key for o in written.offers] == [o.key for o in shipped.offers]
    assert written.providers["aws"].as_of == shipped.providers["aws"].as_of
    assert "slow down" in (written.providers["aws"].last_error or "")


class BrokenRowsSource:
    """An OfferSource (the protocol) whose provider returns only rows that break the rules."""

    name = "aws"

    def fetch(self, progress: ProgressHook = no_progress) -> FetchResult:
        bad = Offer(
            provider="aws",
            region="us-east-1",
            zone=None,
            instance_type="p5.48xlarge",
            gpu_type="H100",
            gpu_count=8,
            gpu_memory_gb=80.0,
            vcpus=192,
            memory_gb=2048,
            price_on_demand=0.0,
            price_spot=None,
            source="x",
            fetched_at=NOW,
        )
        return FetchResult("aws", [bad], "x", "2026-01-15", NOW)


def test_a_provider_whose_rows_are_all_rejected_does_not_wipe_its_previous_rows(tmp_path: Path) -> None:
    target = tmp_path / "catalog.json"
    report = refresh_catalog([BrokenRowsSource()], target, now=lambda: NOW)
    assert not report.ok and "every row was rejected" in (report.outcomes[0].error or "")
    assert sum(o.provider == "aws" for o in load_catalog(target).offers) == 24


def test_refresh_onto_a_corrupt_file_is_an_error_and_leaves_it(tmp_path: Path) -> None:
    from loomos.marketplace.catalog import CatalogError

    target = tmp_path / "catalog.json"
    target.write_text("{broken")
    with pytest.raises(CatalogError):
        refresh_catalog([BrokenRowsSource()], target)
    assert target.read_text() == "{broken"
    assert json.loads(SHIPPED_CATALOG.read_text())["format"] == 1
