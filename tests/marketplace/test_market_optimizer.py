"""Optimizer: feasibility, ranking properties, spot risk arithmetic, reasons for infeasibility."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from loomos.marketplace.offers import Offer
from loomos.marketplace.optimizer import (
    MarketInputError,
    OfferRequest,
    SpotRisk,
    Weights,
    rank_offers,
)
from loomos.models.spec import JobSpec, parse_spec
from tests.helpers.marketplace.offers import make_offer

SHAPES = [
    ("H100", 8, 80.0, 192, 2048),
    ("A100-40GB", 8, 40.0, 96, 1152),
    ("A100-80GB", 1, 80.0, 24, 220),
    ("L4", 1, 24.0, 8, 32),
    ("L4", 4, 24.0, 48, 192),
    ("A10G", 1, 24.0, 4, 16),
]


def random_offers(n: int, seed: int) -> list[Offer]:
    rng = random.Random(seed)
    offers = []
    for i in range(n):
        gpu, count, mem, vcpus, ram = rng.choice(SHAPES)
        od = round(rng.uniform(0.5, 15.0) * count, 4)
        spot = round(od * rng.uniform(0.2, 0.9), 4) if rng.random() < 0.6 else None
        offers.append(
            make_offer(
                provider=rng.choice(["aws", "gcp", "azure", "onprem"]),
                region=rng.choice(["r1", "r2", "r3"]),
                zone=rng.choice([None, "z1", "z2"]),
                instance_type=f"t{i}",
                gpu_type=gpu,
                gpu_count=count,
                gpu_memory_gb=mem,
                vcpus=float(vcpus),
                memory_gb=float(ram),
                price_on_demand=od,
                price_spot=spot,
                capacity_nodes=rng.choice([None, 1, 2, 4]),
            )
        )
    return offers


def spec(**kw: Any) -> JobSpec:
    data: dict[str, Any] = {"name": "job", "entrypoint": "train.py"}
    data.update(kw)
    return parse_spec(data)


def satisfies(o: Offer, r: OfferRequest, model: str) -> bool:
    price = o.price(model)
    return (
        (r.gpu_types is None or o.gpu_type in r.gpu_types)
        and o.gpu_count >= r.gpu_count
        and (r.gpu_memory_gb is None or o.gpu_memory_gb >= r.gpu_memory_gb)
        and o.vcpus >= r.vcpus
        and o.memory_gb >= r.memory_gb
        and (o.capacity_nodes is None or o.capacity_nodes >= r.nodes)
        and (r.providers is None or o.provider in r.providers)
        and (r.regions is None or o.region in r.regions)
        and price is not None
        and (r.max_price_per_hour is None or price * r.nodes <= r.max_price_per_hour)
        and (model == "on_demand" or r.allow_spot)
    )


REQUESTS = [
    dict(resources={"gpu_type": "L4", "gpu_count": 1}, preemptible=True),
    dict(resources={"gpu_type": "A100", "gpu_count": 1, "gpu_memory_gb": 60}),
    dict(
        resources={"gpu_count": 4, "nodes": 2, "cpu_cores": 40},
        preemptible=True,
        marketplace={"max_price_per_hour": 60, "regions": ["r1", "r2"]},
    ),
    dict(
        resources={"gpu_type": "H100", "gpu_count": 8, "nodes": 3},
        marketplace={"providers": ["aws", "onprem"]},
    ),
]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("req", REQUESTS)
def test_properties_over_random_catalogs(seed: int, req: dict[str, Any]) -> None:
    offers = random_offers(300, seed)
    s = spec(**req)
    request = OfferRequest.from_spec(s)
    ranking = rank_offers(offers, request, limit=None)
    # never an infeasible option; spot only for preemptible jobs
    for opt in ranking.options:
        assert satisfies(opt.offer, request, opt.pricing_model), opt.reason
        assert opt.pricing_model == "on_demand" or s.preemptible
    scores = [o.score for o in ranking.options]
    assert scores == sorted(scores, reverse=True)
    # cost-only weights: the cheapest feasible option (brute force) comes first
    cost_only = rank_offers(offers, request, Weights(1, 0, 0), limit=None)
    assert len(cost_only.options) == len(ranking.options)
    feasible_costs = []
    for o in offers:
        for model in ("on_demand", "spot"):
            if satisfies(o, request, model):
                price = o.price(model) * request.nodes  # type: ignore[operator]
                hours = request.runtime_hours
                if model == "spot":
                    e = SpotRisk().rate(o.provider) * request.nodes * request.runtime_hours
                    hours += e * ((request.checkpoint_hours or 0) / 2 + SpotRisk().restart_hours)
                feasible_costs.append(price * hours)
    if feasible_costs:
        assert cost_only.options[0].expected_cost == pytest.approx(min(feasible_costs))
    else:
        assert cost_only.options == [] and cost_only.reasons


def test_spot_never_chosen_for_a_non_preemptible_job_even_when_much_cheaper() -> None:
    offers = [make_offer(price_on_demand=98.32, price_spot=1.0)]
    ranking = rank_offers(
        offers, OfferRequest.from_spec(spec(resources={"gpu_type": "H100", "gpu_count": 8})), Weights(1, 0, 0)
    )
    assert [o.pricing_model for o in ranking.options] == ["on_demand"]
    assert "spot not considered: the job is not preemptible" in ranking.reasons


def test_spot_expected_cost_includes_interruption_risk() -> None:
    # price 10/h per node, 2 nodes, 10 h, rate 0.05 per node-hour, checkpoints every 20 min,
    # restart 15 min: E = 0.05 * 2 * 10 = 1; lost per interruption = 10 min; hours = 10 + 1 * (1/6 + 1/4)
    offers = [make_offer(price_on_demand=40.0, price_spot=10.0)]
    s = spec(
        resources={"gpu_type": "H100", "gpu_count": 8, "nodes": 2},
        preemptible=True,
        checkpoint_config={"interval_minutes": 20},
        marketplace={"expected_runtime_hours": 10},
    )
    ranking = rank_offers(offers, OfferRequest.from_spec(s), risk=SpotRisk({"aws": 0.05}, restart_hours=0.25))
    spot = next(o for o in ranking.options if o.pricing_model == "spot")
    assert spot.expected_interruptions == pytest.approx(1.0)
    assert spot.expected_hours == pytest.approx(10 + 1 / 6 + 0.25)
    assert spot.expected_cost == pytest.approx(20 * (10 + 1 / 6 + 0.25))
    assert spot.availability_score == pytest.approx(0.5)
    assert "interruptions" in spot.reason


def test_without_checkpoints_spot_loses_half_the_run_per_interruption() -> None:
    offers = [make_offer(price_on_demand=40.0, price_spot=10.0)]
    s = spec(
        resources={"gpu_type": "H100", "gpu_count": 8},
        preemptible=True,
        checkpoint_config={"enabled": False},
        marketplace={"expected_runtime_hours": 10},
    )
    ranking = rank_offers(
        offers, OfferRequest.from_spec(s), Weights(1, 0, 0), SpotRisk({"aws": 0.1}, restart_hours=0)
    )
    spot = next(o for o in ranking.options if o.pricing_model == "spot")
    assert spot.expected_hours == pytest.approx(10 + 1.0 * 5)


def test_multi_node_options_stay_in_one_offer_and_respect_owned_capacity() -> None:
    offers = [
        make_offer(
            provider="onprem",
            region="dc1",
            instance_type="dgx",
            price_spot=None,
            price_on_demand=8.0,
            capacity_nodes=2,
        ),
        make_offer(zone="us-east-1a"),
    ]
    ranking = rank_offers(
        offers, OfferRequest.from_spec(spec(resources={"gpu_type": "H100", "gpu_count": 8, "nodes": 3}))
    )
    assert [o.offer.key for o in ranking.options] == ["aws/us-east-1/us-east-1a/p5.48xlarge"]
    assert ranking.options[0].nodes == 3 and ranking.options[0].price_per_hour == pytest.approx(3 * 98.32)


def test_on_demand_rows_of_several_zones_are_one_option() -> None:
    offers = [make_offer(zone="us-east-1a", price_spot=20.0), make_offer(zone="us-east-1b", price_spot=25.0)]
    ranking = rank_offers(
        offers, OfferRequest.from_spec(spec(resources={"gpu_type": "H100", "gpu_count": 8}, preemptible=True))
    )
    models = sorted(o.pricing_model for o in ranking.options)
    assert models == ["on_demand", "spot", "spot"]


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        (
            {"resources": {"gpu_type": "H100", "gpu_count": 16}},
            "no offer has 16 x H100 in one node (largest: 8",
        ),
        (
            {"resources": {"gpu_type": "H100", "gpu_count": 8}, "marketplace": {"max_price_per_hour": 50}},
            "max price $50.00/h is too low: the cheapest matching option costs $98.32/h",
        ),
        ({"resources": {"gpu_type": "L4"}}, "no offer has L4 GPUs (available: H100)"),
        ({"resources": {"gpu_type": "H100", "gpu_memory_gb": 141}}, "at least 141 GB per GPU"),
        ({"resources": {"gpu_type": "H100", "cpu_cores": 500}}, "also has 500 vCPUs"),
        ({"marketplace": {"providers": ["gcp"]}}, "no offers from provider(s) gcp"),
        ({"marketplace": {"regions": ["mars-1"]}}, "no offers in region(s) mars-1"),
        ({"resources": {"gpu_type": "cpu", "gpu_count": 0}}, "CPU-only job"),
    ],
)
def test_infeasible_requests_say_why(kw: dict[str, Any], reason: str) -> None:
    ranking = rank_offers([make_offer()], OfferRequest.from_spec(spec(**kw)))
    assert ranking.options == [] and not ranking.feasible
    assert reason in ranking.reasons[0]


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(MarketInputError, match="unknown GPU type 'TPUV5'"):
        OfferRequest.from_spec(spec(resources={"gpu_type": "TPUv5"}))
    with pytest.raises(MarketInputError, match="unknown provider"):
        OfferRequest.from_spec(spec(marketplace={"providers": ["oracle"]}))
    with pytest.raises(MarketInputError, match="not all zero"):
        Weights(0, 0, 0)
    with pytest.raises(MarketInputError, match="non-negative"):
        Weights(-1, 1, 1)
    with pytest.raises(MarketInputError, match="got 'speed=1'"):
        Weights.parse("speed=1")
    with pytest.raises(MarketInputError, match="'x' is not a number"):
        Weights.parse("cost=x")
    with pytest.raises(MarketInputError, match="unknown pricing model"):
        rank_offers([make_offer()], OfferRequest.from_spec(spec()), pricing_models=("reserved",))
    assert Weights.parse("cost=1, perf=0,avail=0") == Weights(1, 0, 0)


def test_a100_matches_both_sizes_unless_memory_narrows_it() -> None:
    offers = [
        make_offer(instance_type="a", gpu_type="A100-40GB", gpu_memory_gb=40.0, gpu_count=8),
        make_offer(instance_type="b", gpu_type="A100-80GB", gpu_memory_gb=80.0, gpu_count=8),
    ]
    both = rank_offers(offers, OfferRequest.from_spec(spec(resources={"gpu_type": "A100", "gpu_count": 8})))
    assert {o.offer.instance_type for o in both.options} == {"a", "b"}
    big = rank_offers(
        offers,
        OfferRequest.from_spec(spec(resources={"gpu_type": "A100", "gpu_count": 8, "gpu_memory_gb": 80})),
    )
    assert [o.offer.instance_type for o in big.options] == ["b"]


def test_performance_weight_prefers_faster_gpus() -> None:
    offers = [
        make_offer(instance_type="h", price_spot=None),
        make_offer(
            instance_type="l", gpu_type="L4", gpu_memory_gb=24.0, price_on_demand=13.35, price_spot=None
        ),
    ]
    request = OfferRequest.from_spec(spec(resources={"gpu_count": 8}))
    assert rank_offers(offers, request, Weights(0, 1, 0)).options[0].offer.instance_type == "h"
    assert rank_offers(offers, request, Weights(1, 0, 0)).options[0].offer.instance_type == "l"


def test_runtime_falls_back_to_max_runtime_and_says_so() -> None:
    request = OfferRequest.from_spec(spec(max_runtime_hours=5))
    assert request.runtime_hours == 5 and "max_runtime_hours=5" in request.assumptions[0]
    steps = OfferRequest.from_spec(spec(checkpoint_config={"interval_steps": 100}))
    assert steps.checkpoint_hours == pytest.approx(0.5) and any("100 steps" in a for a in steps.assumptions)
    assert replace(steps, nodes=2).nodes == 2
