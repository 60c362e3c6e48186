"""Cost estimates against hand-computed figures; price records and provider comparison."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from loomos.marketplace.estimate import (
    CostAssumptions,
    InfeasibleError,
    PriceRecord,
    compare_providers,
    cost_for_usage,
    estimate_job_cost,
    price_record,
)
from loomos.marketplace.optimizer import MarketInputError, SpotRisk
from loomos.models.spec import JobSpec, parse_spec
from tests.helpers.marketplace.offers import NOW, make_catalog, make_offer

RECORDED = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)


def spec(**kw: Any) -> JobSpec:
    data: dict[str, Any] = {
        "name": "job",
        "entrypoint": "train.py",
        "resources": {"gpu_type": "L4", "gpu_count": 1, "nodes": 2},
        "marketplace": {"expected_runtime_hours": 5},
    }
    data.update(kw)
    return parse_spec(data)


def l4(provider: str, price: float, spot: float | None = None, **kw: Any):
    return make_offer(
        provider=provider,
        region="r1",
        instance_type=f"{provider}-l4",
        gpu_type="L4",
        gpu_count=1,
        gpu_memory_gb=24.0,
        vcpus=8.0,
        memory_gb=32.0,
        price_on_demand=price,
        price_spot=spot,
        **kw,
    )


def test_on_demand_breakdown_matches_hand_computation() -> None:
    catalog = make_catalog([l4("aws", 4.0, 1.0), l4("gcp", 5.0)])
    est = estimate_job_cost(spec(), "aws", "on_demand", catalog, now=RECORDED)
    # compute: 4.0 $/h x 2 nodes x 5 h = 40
    # storage: (100 GB dataset + 20 GB x 3 checkpoints) x 0.023 $/GB-month x 5 h / 730 h
    # network: one 20 GB checkpoint out at 0.09 $/GB = 1.8
    storage = 160 * 0.023 * 5 / 730
    assert est.breakdown.compute == pytest.approx(40.0)
    assert est.breakdown.storage == pytest.approx(storage, abs=1e-4)
    assert est.breakdown.network == pytest.approx(1.8)
    assert est.breakdown.total == pytest.approx(40 + storage + 1.8, abs=1e-4)
    assert est.assumptions["stored_gb"] == 160 and est.assumptions["egress_usd_per_gb"] == 0.09
    rec = est.price_record
    assert (rec.offer_key, rec.pricing_model, rec.price_per_hour, rec.catalog_as_of, rec.recorded_at) == (
        "aws/r1/-/aws-l4",
        "on_demand",
        4.0,
        "2026-01-15",
        RECORDED,
    )


def test_spot_breakdown_includes_interruptions_and_custom_assumptions() -> None:
    catalog = make_catalog([l4("aws", 4.0, 1.0)])
    s = spec(preemptible=True, checkpoint_config={"interval_minutes": 30})
    est = estimate_job_cost(
        s,
        "aws",
        "spot",
        catalog,
        CostAssumptions(dataset_gb=0, checkpoint_gb=10, egress_gb=0),
        SpotRisk({"aws": 0.1}, restart_hours=0.5),
    )
    # E = 0.1 x 2 nodes x 5 h = 1; hours = 5 + 1 x (0.25 + 0.5) = 5.75; compute = 1.0 x 2 x 5.75
    assert est.breakdown.compute == pytest.approx(11.5)
    assert est.breakdown.storage == pytest.approx(30 * 0.023 * 5.75 / 730, abs=1e-4)
    assert est.breakdown.network == 0
    assert est.assumptions["expected_interruptions"] == pytest.approx(1.0)
    assert est.price_record.pricing_model == "spot" and est.price_record.price_per_hour == 1.0


def test_onprem_has_no_storage_or_egress_charges() -> None:
    catalog = make_catalog([l4("onprem", 0.5, capacity_nodes=4)])
    est = estimate_job_cost(spec(), "onprem", catalog=catalog)
    assert (est.breakdown.compute, est.breakdown.storage, est.breakdown.network) == (5.0, 0.0, 0.0)


def test_estimate_bad_inputs_and_infeasible() -> None:
    catalog = make_catalog([l4("aws", 4.0, 1.0)])
    with pytest.raises(MarketInputError, match="preemptible"):
        estimate_job_cost(spec(), "aws", "spot", catalog)
    with pytest.raises(MarketInputError, match="pricing_model"):
        estimate_job_cost(spec(), "aws", "reserved", catalog)  # type: ignore[arg-type]
    with pytest.raises(MarketInputError, match="unknown provider"):
        estimate_job_cost(spec(), "ibm", catalog=catalog)
    with pytest.raises(InfeasibleError, match="no offers from provider"):
        estimate_job_cost(spec(), "gcp", catalog=catalog)
    with pytest.raises(InfeasibleError, match="allows providers"):
        estimate_job_cost(spec(marketplace={"providers": ["aws"]}), "gcp", catalog=catalog)
    with pytest.raises(MarketInputError, match="must not be negative"):
        CostAssumptions(dataset_gb=-1)


def test_price_record_is_pure_and_cost_reports_use_the_recorded_price() -> None:
    offer = l4("aws", 4.0, 1.0)
    a = price_record(offer, "on_demand", "2026-01-15", RECORDED)
    assert a == price_record(offer, "on_demand", "2026-01-15", RECORDED)
    assert a.fetched_at == NOW and a.source == "test"
    # prices move later; the report for the job that ran stays at the recorded price
    today = make_catalog([l4("aws", 2.0, 0.5)])
    current = today.offer(a.offer_key)
    assert current is not None and current.price_on_demand == 2.0
    assert today.offer("aws/r9/-/gone") is None
    assert cost_for_usage(a, machine_hours=10) == pytest.approx(40.0)
    eight = price_record(make_offer(), "spot", "2026-01-15", RECORDED)
    assert eight.price_per_gpu_hour == pytest.approx(30.3 / 8)
    assert PriceRecord.model_validate_json(a.model_dump_json()) == a  # survives a Temporal payload round trip
    with pytest.raises(MarketInputError, match="no spot price"):
        price_record(l4("aws", 4.0), "spot", "2026-01-15", RECORDED)
    with pytest.raises(ValueError, match="negative"):
        cost_for_usage(a, -1)


def test_compare_ranks_by_cost_per_performance_and_lists_infeasible_providers() -> None:
    h100 = make_offer(
        provider="azure",
        region="r1",
        instance_type="azure-h100",
        gpu_count=1,
        vcpus=24,
        memory_gb=220,
        price_on_demand=6.0,
        price_spot=None,
    )
    catalog = make_catalog([l4("aws", 1.0), l4("onprem", 0.5), h100])
    rows = compare_providers(spec(resources={"gpu_count": 1, "nodes": 2}), catalog=catalog)
    assert [r.provider for r in rows] == ["onprem", "azure", "aws", "gcp"]
    # azure's H100 is 6x the price of aws's L4 but ~7x faster per GPU: better cost per performance
    assert rows[1].cost_per_performance < rows[2].cost_per_performance  # type: ignore[operator]
    assert not rows[3].feasible and "no offers from provider(s) gcp" in rows[3].reasons[0]


def test_compare_says_a_shared_reason_once_and_names_the_model_when_reasons_differ() -> None:
    catalog = make_catalog([l4("aws", 9.0), l4("azure", 1.0, 0.3)])
    s = spec(preemptible=True, marketplace={"expected_runtime_hours": 5, "max_price_per_hour": 4})
    rows = {r.provider: r for r in compare_providers(s, ["aws", "azure", "gcp"], catalog=catalog)}
    assert rows["azure"].feasible and rows["azure"].estimate.pricing_model == "spot"  # type: ignore[union-attr]
    assert rows["gcp"].reasons == ["no offers from provider(s) gcp in the catalog"]
    aws = rows["aws"].reasons
    assert len(aws) == 2
    assert aws[0].startswith("on-demand: max price $4.00/h is too low: the cheapest matching option")
    assert aws[1] == "spot: matching offers have no spot price"
