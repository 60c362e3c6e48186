"""LoomCtl marketplace routes: filters, validation errors, infeasible requests, metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from loomos.api.app import create_app
from tests.helpers.authz import authenticated


@pytest.fixture
def client() -> TestClient:
    return TestClient(authenticated(create_app()))


def job(**kw: Any) -> dict[str, Any]:
    return {"name": "job", "entrypoint": "train.py", **kw}


def test_offers_filters(client: TestClient) -> None:
    r = client.get("/api/v1/marketplace/offers", params={"gpu": "H100", "count": 8})
    assert r.status_code == 200
    body = r.json()
    assert body["count"] == 6 and {o["gpu_type"] for o in body["offers"]} == {"H100"}
    assert body["as_of"]["aws"] and all(o["age_days"] > 0 for o in body["offers"])
    r = client.get(
        "/api/v1/marketplace/offers",
        params=[
            ("provider", "aws"),
            ("provider", "gcp"),
            ("region", "us-east-1"),
            ("spot", "true"),
            ("max_price", "1"),
        ],
    )
    offers = r.json()["offers"]
    assert {o["instance_type"] for o in offers} == {"g5.xlarge", "g6.2xlarge"}
    assert all(o["price_spot"] <= 1 for o in offers)


@pytest.mark.parametrize(
    ("params", "status", "needle"),
    [
        ({"gpu": "TPU"}, 400, "unknown GPU type"),
        ({"provider": "oracle"}, 400, "unknown provider"),
        ({"count": 0}, 422, "count"),
        ({"max_price": -1}, 422, "max_price"),
        ({"spot": "maybe"}, 422, "spot"),
        ({"limit": 0}, 422, "limit"),
    ],
)
def test_offers_bad_filters(client: TestClient, params: dict[str, Any], status: int, needle: str) -> None:
    r = client.get("/api/v1/marketplace/offers", params=params)
    assert r.status_code == status
    assert needle in str(r.json()["detail"])


def test_estimate_ranks_and_breaks_down(client: TestClient) -> None:
    spec = job(
        resources={"gpu_type": "H100", "gpu_count": 8, "nodes": 2},
        preemptible=True,
        marketplace={"expected_runtime_hours": 12},
    )
    r = client.post("/api/v1/marketplace/estimate", json=spec, params={"top": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["feasible"] and [o["rank"] for o in body["options"]] == [1, 2, 3]
    assert body["options"][0]["reason"].startswith("#1 score")
    est = body["estimate"]
    assert set(est["breakdown"]) == {"compute", "storage", "network", "total"}
    assert est["price_record"]["offer_key"] == body["options"][0]["offer_key"]
    r = client.post(
        "/api/v1/marketplace/estimate",
        json=spec,
        params={"cost_weight": 1, "performance_weight": 0, "availability_weight": 0},
    )
    costs = [o["expected_cost"] for o in r.json()["options"]]
    assert costs == sorted(costs)


def test_estimate_infeasible_is_200_with_reasons(client: TestClient) -> None:
    r = client.post("/api/v1/marketplace/estimate", json=job(resources={"gpu_type": "H100", "gpu_count": 16}))
    assert r.status_code == 200
    body = r.json()
    assert not body["feasible"] and body["options"] == [] and body["estimate"] is None
    assert "16 x H100 in one node" in body["reasons"][0]
    r = client.post(
        "/api/v1/marketplace/estimate",
        json=job(resources={"gpu_type": "H100", "gpu_count": 8}, marketplace={"max_price_per_hour": 10}),
    )
    assert "max price $10.00/h is too low" in r.json()["reasons"][0]


@pytest.mark.parametrize(
    ("body", "params", "status", "needle"),
    [
        (job(resources={"gpu_count": "many"}), {}, 422, "'resources', 'gpu_count'"),
        (job(colour="red"), {}, 422, "'colour'"),
        ({"entrypoint": "t.py"}, {}, 422, "'name'"),
        (job(resources={"gpu_type": "TPU"}), {}, 400, "unknown GPU type"),
        (job(), {"pricing": "spot"}, 400, "preemptible"),
        (job(), {"pricing": "cheap"}, 422, "pricing"),
        (job(), {"cost_weight": 0, "performance_weight": 0, "availability_weight": 0}, 400, "weights"),
        (job(), {"top": 0}, 422, "top"),
    ],
)
def test_estimate_bad_input(client: TestClient, body: Any, params: dict, status: int, needle: str) -> None:
    r = client.post("/api/v1/marketplace/estimate", json=body, params=params)
    assert r.status_code == status, r.text
    assert needle in str(r.json()["detail"])


def test_catalog_metadata_and_unreadable_catalog(client: TestClient, isolated_catalog: Path) -> None:
    meta = client.get("/api/v1/marketplace/catalog").json()
    assert meta["shipped"] and meta["total_rows"] == 60 and meta["rejected_rows"] == 0
    assert set(meta["providers"]) == {"aws", "gcp", "azure"}
    assert all(p["as_of"] and p["rows"] for p in meta["providers"].values())
    isolated_catalog.write_text("{corrupt")
    r = client.get("/api/v1/marketplace/offers")
    assert r.status_code == 503 and "not valid JSON" in r.json()["detail"]
