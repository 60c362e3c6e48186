"""Offer model, integrity rules, catalog files (shipped snapshot, malformed files, atomic writes)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from loomos.marketplace.catalog import (
    SHIPPED_CATALOG,
    CatalogError,
    load_catalog,
    parse_catalog,
    read_catalog_file,
    write_catalog_atomic,
)
from loomos.marketplace.integrity import apply_rules, check_offer
from loomos.marketplace.offers import normalise_gpu_name
from tests.helpers.marketplace.offers import NOW, make_catalog, make_offer


@pytest.mark.parametrize(
    ("name", "memory", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", None, "H100"),
        ("nvidia-h100-mega-80gb", None, "H100"),
        ("nvidia-tesla-a100", None, "A100-40GB"),
        ("A100", 80.0, "A100-80GB"),
        ("nvidia-a100-80gb", None, "A100-80GB"),
        ("NVIDIA A10G", None, "A10G"),
        ("nvidia-l4", None, "L4"),
        ("L40S", None, "L40S"),
        ("H200", None, "H200"),
        ("Radeon Pro V520", None, None),
    ],
)
def test_gpu_names_normalise(name: str, memory: float | None, expected: str | None) -> None:
    assert normalise_gpu_name(name, memory) == expected


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"price_on_demand": 0.0}, "not a positive number"),
        ({"price_on_demand": -1.0, "price_spot": None}, "not a positive number"),
        ({"price_on_demand": math.nan}, "not a positive number"),
        ({"price_spot": 0.0}, "not a positive number"),
        ({"price_spot": 98.32}, "spot price 98.32 is not below on-demand"),
        ({"price_spot": 120.0}, "not below on-demand"),
        ({"gpu_count": 16}, "16 x H100 in one machine is implausible"),
        ({"gpu_count": 0}, "implausible"),
        ({"gpu_memory_gb": 8.0}, "8.0 GB per GPU is implausible for H100"),
        ({"gpu_type": "RTX-9090"}, "unknown GPU type"),
        ({"provider": "oracle"}, "unknown provider"),
        ({"vcpus": 0.0}, "vCPUs and memory must be positive"),
        ({"price_on_demand": 8000.0, "price_spot": None}, "unit error"),
        ({"fetched_at": NOW + timedelta(days=3)}, "in the future"),
        ({"region": ""}, "missing region"),
        ({"capacity_nodes": 0}, "capacity_nodes"),
    ],
)
def test_integrity_rules_reject_bad_rows(change: dict, reason: str) -> None:
    assert reason in (check_offer(make_offer(**change), NOW) or "")


def test_good_rows_pass_and_duplicates_are_reported() -> None:
    good = make_offer()
    assert check_offer(good, NOW) is None
    assert check_offer(make_offer(gpu_type="A100-40GB", gpu_count=16, gpu_memory_gb=40.0), NOW) is None
    kept, rejected = apply_rules([good, replace(good), make_offer(price_on_demand=0.0, price_spot=None)], NOW)
    assert kept == [good]
    assert [r.reason.split(" ")[0] for r in rejected] == ["duplicate", "on-demand"]


def test_shipped_snapshot_is_clean_dated_and_covers_the_required_families() -> None:
    catalog = read_catalog_file(SHIPPED_CATALOG)
    assert catalog.shipped and catalog.rejected() == []
    types = {(o.provider, o.instance_type) for o in catalog.offers}
    for family in ("p4d.", "p5.", "g5.", "g6."):
        assert any(p == "aws" and t.startswith(family) for p, t in types), family
    for family in ("a2-", "a3-", "g2-"):
        assert any(p == "gcp" and t.startswith(family) for p, t in types), family
    for size in ("Standard_ND96asr_v4", "Standard_ND96isr_H100_v5", "Standard_NC24ads_A100_v4"):
        assert ("azure", size) in types
    for provider in ("aws", "gcp", "azure"):
        assert len({o.region for o in catalog.offers if o.provider == provider}) >= 2
        meta = catalog.providers[provider]
        assert meta.as_of and "public" in meta.source and "not a live API" in meta.source
    assert all(o.stale_prone for o in catalog.offers if o.instance_type.startswith(("p4", "p5")))
    assert not any(o.stale_prone for o in catalog.offers if o.instance_type.startswith(("g5", "g6")))
    p5 = next(o for o in catalog.offers if o.key == "aws/us-east-1/-/p5.48xlarge")
    assert (p5.price_on_demand, p5.price_spot) == (98.32, 30.3)
    # each family the issue names is listed in two or more regions
    for provider, prefix in [
        *(("aws", f) for f in ("p4d.", "p5.", "g5.", "g6.")),
        *(("gcp", f) for f in ("a2-", "a3-", "g2-")),
        *(
            ("azure", f)
            for f in ("Standard_ND96asr_v4", "Standard_ND96isr_H100_v5", "Standard_NC24ads_A100_v4")
        ),
    ]:
        regions = {
            o.region for o in catalog.offers if o.provider == provider and o.instance_type.startswith(prefix)
        }
        assert len(regions) >= 2, (provider, prefix, regions)
    for meta in catalog.providers.values():
        assert meta.fetched_at is not None and meta.fetched_at.date().isoformat() == meta.as_of


# The public figures (USD/h) quoted in the marketplace issue, as (on-demand, spot range or None).
PUBLIC_FIGURES = {
    "aws/us-east-1/-/p4d.24xlarge": (32.77, (5.09, 9.61)),
    "aws/us-east-1/-/p5.48xlarge": (98.32, (21.0, 30.3)),
    "aws/us-east-1/-/g5.xlarge": (1.006, (0.35, 0.45)),
    "aws/us-east-1/-/g6.2xlarge": (0.978, (0.35, 0.45)),
    "gcp/us-central1/-/a2-highgpu-1g": (3.67, None),
    "gcp/us-central1/-/a2-highgpu-8g": (29.39, None),
    "azure/eastus/-/Standard_ND96asr_v4": (27.197, (2.99, 2.99)),
    "azure/eastus/-/Standard_NC24ads_A100_v4": (3.673, (0.444, 0.444)),
    "azure/eastus/-/Standard_ND96isr_H100_v5": (117.98, (29.5, 29.5)),
}


@pytest.mark.parametrize("key", sorted(PUBLIC_FIGURES))
def test_shipped_snapshot_carries_the_public_figures(key: str) -> None:
    offer = read_catalog_file(SHIPPED_CATALOG).offer(key)
    assert offer is not None, key
    on_demand, spot = PUBLIC_FIGURES[key]
    assert offer.price_on_demand == pytest.approx(on_demand, abs=0.01)
    if spot is not None:
        assert offer.price_spot is not None and spot[0] <= offer.price_spot <= spot[1]


def test_shipped_gcp_machines_cost_at_least_their_public_per_gpu_figures() -> None:
    # GCP bills host + GPUs: a machine is never cheaper than its GPUs at the public per-GPU rate
    # (H100 9.797 in us-east4, L4 0.560).
    catalog = read_catalog_file(SHIPPED_CATALOG)
    per_gpu = {"H100": 9.797, "L4": 0.560}
    checked = 0
    for o in catalog.offers:
        if o.provider == "gcp" and o.gpu_type in per_gpu:
            assert o.price_on_demand > o.gpu_count * per_gpu[o.gpu_type], o.key
            checked += 1
    assert checked >= 4


def test_malformed_rows_are_dropped_and_reported(tmp_path: Path) -> None:
    rows = [make_offer().to_dict() for _ in range(1)]
    missing = make_offer(instance_type="g5.xlarge").to_dict()
    del missing["price_on_demand"]
    bad_count = make_offer(instance_type="p4d.24xlarge").to_dict() | {"gpu_count": True}
    bad_price = make_offer(instance_type="p4de.24xlarge").to_dict() | {"price_on_demand": "cheap"}
    zero = make_offer(instance_type="g6.xlarge").to_dict() | {"price_on_demand": 0, "price_spot": None}
    data = {"format": 1, "providers": {}, "offers": rows + [missing, bad_count, bad_price, zero, "junk"]}
    catalog = parse_catalog(data, "test", NOW)
    assert [o.instance_type for o in catalog.offers] == ["p5.48xlarge"]
    reasons = [r.reason for r in catalog.load_rejected]
    assert "malformed row: missing field 'price_on_demand'" in reasons
    assert any("boolean" in r for r in reasons)
    assert any("cheap" in r for r in reasons)
    assert any("row is not a mapping" in r for r in reasons)
    assert any("not a positive number" in r for r in reasons)
    assert catalog.metadata()["rejected_rows"] == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "not a catalog"),
        ('{"format": 2, "offers": []}', "format 2"),
        ('{"format": 1, "offers": [], "providers": []}', "'providers' must be a mapping"),
    ],
)
def test_broken_catalog_files_are_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(CatalogError, match=message):
        load_catalog(path)
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.json")


def test_lookup_prefers_user_file_then_falls_back_to_shipped(isolated_catalog: Path) -> None:
    assert load_catalog().shipped  # LOOMOS_CATALOG_PATH points at a file that does not exist yet
    write_catalog_atomic(make_catalog([make_offer()]), isolated_catalog)
    loaded = load_catalog()
    assert not loaded.shipped and [o.key for o in loaded.offers] == ["aws/us-east-1/-/p5.48xlarge"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    write_catalog_atomic(make_catalog([make_offer()]), path)
    before = path.read_text()
    unserialisable = make_offer(source=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        write_catalog_atomic(make_catalog([unserialisable]), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.json"]  # no temp file left behind
    assert json.loads(before)["offers"][0]["instance_type"] == "p5.48xlarge"


def test_onprem_pool_offers_compete_and_bad_config_is_clear(tmp_path: Path) -> None:
    config = tmp_path / "onprem.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "site": "dc1",
                "node_types": [
                    {
                        "name": "dgx",
                        "gpu_type": "a100-80gb",
                        "gpu_count": 8,
                        "vcpus": 128,
                        "memory_gb": 1024,
                        "nodes": 2,
                        "price_per_gpu_hour": 1.25,
                    }
                ],
            }
        )
    )
    catalog = load_catalog(onprem_config=config)
    dgx = next(o for o in catalog.offers if o.provider == "onprem")
    assert (dgx.key, dgx.gpu_type, dgx.price_on_demand, dgx.capacity_nodes) == (
        "onprem/dc1/-/dgx",
        "A100-80GB",
        10.0,
        2,
    )
    assert catalog.metadata()["providers"]["onprem"]["rows"] == 1
    # on-prem rows never go into the catalog file
    assert all(o["provider"] != "onprem" for o in catalog.to_json()["offers"])
    for bad, message in [
        (
            {
                "node_types": [
                    {
                        "name": "x",
                        "gpu_type": "A100",
                        "gpu_count": 8,
                        "vcpus": 1,
                        "memory_gb": 1,
                        "price_per_gpu_hour": -1,
                    }
                ]
            },
            "node_types.0.price_per_gpu_hour",
        ),
        (
            {
                "node_types": [
                    {
                        "name": "x",
                        "gpu_type": "TPU",
                        "gpu_count": 8,
                        "vcpus": 1,
                        "memory_gb": 1,
                        "price_per_gpu_hour": 1,
                    }
                ]
            },
            "unknown GPU type 'TPU'",
        ),
        ({"node_types": [], "colour": "red"}, "colour: unknown field"),
        (["a list"], "must be a mapping"),
    ]:
        config.write_text(yaml.safe_dump(bad))
        with pytest.raises(CatalogError, match=message):
            load_catalog(onprem_config=config)
    config.write_text("node_types: [unclosed")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(onprem_config=config)
