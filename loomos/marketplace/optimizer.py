"""Rank catalog offers for a job.

Every option is a whole placement: `nodes` machines of one offer, so a multi-node job stays
in one region, and a spot option in one zone (an offer row is one zone, or one zone picked at
launch where the source prices the region). Spot is offered only for jobs that tolerate
preemption, priced with its interruption risk:

    expected interruptions  E = rate(provider) x nodes x runtime
    expected hours          = runtime + E x (work lost since the last checkpoint + restart)

where the work lost is on average half a checkpoint interval (half the run without
checkpoints). Options are ranked by a weighted score of cost, performance and availability,
each scaled to [0, 1] against the best candidate; ties go to the cheaper, then the key.
The scan is a single pass over plain tuples so a request over 10,000+ offers stays in
milliseconds (SkyPilot's optimizer was reported at seconds per launch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loomos.marketplace.offers import GPU_SPECS, PROVIDERS, Offer, normalise_gpu_name
from loomos.marketplace.performance import gpu_performance
from loomos.spec import JobSpec

PRICING_MODELS = ("on_demand", "spot")


class MarketInputError(ValueError):
    """A request the marketplace cannot interpret (unknown GPU type or provider, bad weights)."""


@dataclass(frozen=True)
class Weights:
    """Relative importance of cost, performance and availability (the LoomOS documents use
    0.4 / 0.3 / 0.3). Scaled to sum to 1."""

    cost: float = 0.4
    performance: float = 0.3
    availability: float = 0.3

    def __post_init__(self) -> None:
        values = (self.cost, self.performance, self.availability)
        if any(v < 0 for v in values) or sum(values) <= 0:
            raise MarketInputError("weights must be non-negative and not all zero")

    def normalised(self) -> tuple[float, float, float]:
        total = self.cost + self.performance + self.availability
        return self.cost / total, self.performance / total, self.availability / total

    @classmethod
    def parse(cls, text: str) -> Weights:
        """From "cost=1,performance=0,availability=0" (the CLI form)."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, raw = part.partition("=")
            name = {"perf": "performance", "avail": "availability"}.get(name.strip(), name.strip())
            if not sep or name not in ("cost", "performance", "availability"):
                raise MarketInputError(f"weights: expected cost=,performance=,availability=, got {part!r}")
            try:
                values[name] = float(raw)
            except ValueError:
                raise MarketInputError(f"weights: {raw!r} is not a number") from None
        return cls(**{k: values.get(k, 0.0) for k in ("cost", "performance", "availability")})


@dataclass(frozen=True)
class SpotRisk:
    """Interruption model. Rates are interruptions per machine-hour: public spot advisors put
    large GPU machines in the 5-20%-per-month-or-worse bands, and gang jobs restart when any
    machine goes, so these defaults are deliberately pessimistic. Configurable per provider."""

    interruptions_per_hour: Mapping[str, float] = field(
        default_factory=lambda: {"aws": 0.05, "gcp": 0.07, "azure": 0.06}
    )
    default_rate: float = 0.06
    restart_hours: float = 0.25
    # When a job checkpoints by steps only, the wall-clock interval is unknown; assume this.
    assumed_checkpoint_minutes: float = 30.0

    def rate(self, provider: str) -> float:
        return self.interruptions_per_hour.get(provider, self.default_rate)


@dataclass(frozen=True)
class Request:
    gpu_types: frozenset[str] | None  # None: any GPU type
    gpu_count: int  # per node
    gpu_memory_gb: float | None  # per GPU, minimum
    vcpus: float  # per node
    memory_gb: float  # per node
    nodes: int
    providers: frozenset[str] | None
    regions: frozenset[str] | None
    max_price_per_hour: float | None  # whole job
    allow_spot: bool
    checkpoint_hours: float | None  # None: no checkpoints
    runtime_hours: float
    assumptions: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: JobSpec, risk: SpotRisk | None = None) -> Request:
        risk = risk or SpotRisk()
        res = spec.resources
        notes: list[str] = []
        gpu_types = parse_gpu_filter(res.gpu_type, res.gpu_memory_gb)
        providers = parse_providers(spec.marketplace.providers)
        if spec.marketplace.expected_runtime_hours is not None:
            runtime = spec.marketplace.expected_runtime_hours
        else:
            runtime = spec.max_runtime_hours
            notes.append(f"runtime: no marketplace.expected_runtime_hours, using max_runtime_hours={runtime}")
        cp = spec.checkpoint_config
        checkpoint_hours: float | None = None
        if cp.enabled:
            if cp.interval_minutes is not None:
                checkpoint_hours = cp.interval_minutes / 60
            else:
                checkpoint_hours = risk.assumed_checkpoint_minutes / 60
                notes.append(
                    f"checkpoints every {cp.interval_steps} steps: assumed "
                    f"{risk.assumed_checkpoint_minutes:g} min apart"
                )
        return cls(
            gpu_types=gpu_types,
            gpu_count=res.gpu_count,
            gpu_memory_gb=res.gpu_memory_gb,
            vcpus=res.cpu_cores,
            memory_gb=res.memory_gb,
            nodes=res.nodes,
            providers=providers,
            regions=frozenset(spec.marketplace.regions) or None,
            max_price_per_hour=spec.marketplace.max_price_per_hour,
            allow_spot=spec.preemptible,
            checkpoint_hours=checkpoint_hours,
            runtime_hours=runtime,
            assumptions=tuple(notes),
        )


def parse_gpu_filter(gpu_type: str | None, gpu_memory_gb: float | None = None) -> frozenset[str] | None:
    """ "H100" -> {H100}; "A100" -> both A100 variants (memory decides later); None/"any" -> None."""
    if gpu_type is None or gpu_type.strip().lower() in ("", "any"):
        return None
    if gpu_type.strip().lower() == "cpu":
        return frozenset({"cpu"})
    upper = gpu_type.strip().upper()
    if upper in GPU_SPECS:
        return frozenset({upper})
    if upper == "A100":
        return frozenset({"A100-40GB", "A100-80GB"})
    normalised = normalise_gpu_name(gpu_type, gpu_memory_gb)
    if normalised is None:
        raise MarketInputError(f"unknown GPU type {gpu_type!r}; known: {', '.join(sorted(GPU_SPECS))}")
    return frozenset({normalised})


def parse_providers(names: Iterable[str]) -> frozenset[str] | None:
    out = frozenset(n.strip().lower() for n in names if n.strip())
    unknown = sorted(out - set(PROVIDERS))
    if unknown:
        raise MarketInputError(f"unknown provider(s) {', '.join(unknown)}; expected {', '.join(PROVIDERS)}")
    return out or None


@dataclass(frozen=True)
class RankedOption:
    rank: int
    offer: Offer
    pricing_model: str
    nodes: int
    price_per_node_hour: float
    price_per_hour: float  # all nodes
    expected_hours: float
    expected_interruptions: float
    expected_cost: float
    performance: float  # relative throughput of the GPUs the job uses
    cost_score: float
    performance_score: float
    availability_score: float
    score: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        o = self.offer
        return {
            "rank": self.rank,
            "offer_key": o.key,
            "provider": o.provider,
            "region": o.region,
            "zone": o.zone,
            "instance_type": o.instance_type,
            "gpu_type": o.gpu_type,
            "gpus_per_node": o.gpu_count,
            "nodes": self.nodes,
            "pricing_model": self.pricing_model,
            "price_per_node_hour": round(self.price_per_node_hour, 6),
            "price_per_hour": round(self.price_per_hour, 6),
            "expected_hours": round(self.expected_hours, 4),
            "expected_interruptions": round(self.expected_interruptions, 4),
            "expected_cost": round(self.expected_cost, 4),
            "scores": {
                "cost": round(self.cost_score, 4),
                "performance": round(self.performance_score, 4),
                "availability": round(self.availability_score, 4),
                "total": round(self.score, 4),
            },
            "fetched_at": o.fetched_at.isoformat(),
            "stale_prone": o.stale_prone,
            "reason": self.reason,
        }


@dataclass
class Ranking:
    request: Request
    options: list[RankedOption]
    feasible_count: int
    reasons: list[str]  # why nothing (or less than asked) is feasible

    @property
    def feasible(self) -> bool:
        return bool(self.options)


def rank_offers(
    offers: Iterable[Offer],
    request: Request,
    weights: Weights | None = None,
    risk: SpotRisk | None = None,
    limit: int | None = 20,
    pricing_models: Iterable[str] = PRICING_MODELS,
    performance_overrides: Mapping[str, float] | None = None,
) -> Ranking:
    """Feasible options for `request`, best first, at most `limit` (None: all)."""
    weights = weights or Weights()
    risk = risk or SpotRisk()
    models = tuple(pricing_models)
    if unknown := [m for m in models if m not in PRICING_MODELS]:
        raise MarketInputError(f"unknown pricing model(s) {unknown}; expected {', '.join(PRICING_MODELS)}")
    if request.gpu_types == frozenset({"cpu"}) or request.gpu_count == 0:
        return Ranking(
            request,
            [],
            0,
            [
                "the catalog lists GPU machines only; a CPU-only job (gpu_type cpu or gpu_count 0) "
                "runs on a pool's CPU workers, not on marketplace offers"
            ],
        )
    want_on_demand = "on_demand" in models
    want_spot = "spot" in models and request.allow_spot
    T = request.runtime_hours
    nodes = request.nodes
    lost_hours = request.checkpoint_hours / 2 if request.checkpoint_hours is not None else T / 2
    overhead = lost_hours + risk.restart_hours

    # Stage counters tell an infeasible request which constraint emptied the list.
    n_provider = n_region = n_type = n_count = n_mem = n_host = n_capacity = 0
    max_count_seen = 0
    types_seen: set[str] = set()
    perf_cache: dict[tuple[str, int], float] = {}
    seen_on_demand: set[tuple[str, str, str]] = set()
    # (expected_cost, availability, performance, key, model, offer, price, hours, interruptions)
    cands: list[tuple[float, float, float, str, str, Offer, float, float, float]] = []
    over_budget_min: float | None = None
    providers, regions, gpu_types = request.providers, request.regions, request.gpu_types
    gpu_count, gpu_mem, max_price = request.gpu_count, request.gpu_memory_gb, request.max_price_per_hour
    for o in offers:
        if providers is not None and o.provider not in providers:
            continue
        n_provider += 1
        if regions is not None and o.region not in regions:
            continue
        n_region += 1
        types_seen.add(o.gpu_type)
        if gpu_types is not None and o.gpu_type not in gpu_types:
            continue
        n_type += 1
        if o.gpu_count > max_count_seen:
            max_count_seen = o.gpu_count
        if o.gpu_count < gpu_count:
            continue
        n_count += 1
        if gpu_mem is not None and o.gpu_memory_gb < gpu_mem:
            continue
        n_mem += 1
        if o.vcpus < request.vcpus or o.memory_gb < request.memory_gb:
            continue
        n_host += 1
        if o.capacity_nodes is not None and o.capacity_nodes < nodes:
            continue
        n_capacity += 1
        pkey = (o.gpu_type, gpu_count)
        perf = perf_cache.get(pkey)
        if perf is None:
            perf = perf_cache[pkey] = gpu_performance(o.gpu_type, performance_overrides) * gpu_count * nodes
        if want_on_demand:
            dkey = (o.provider, o.region, o.instance_type)
            if dkey not in seen_on_demand:
                seen_on_demand.add(dkey)
                hourly = o.price_on_demand * nodes
                if max_price is not None and hourly > max_price:
                    if over_budget_min is None or hourly < over_budget_min:
                        over_budget_min = hourly
                else:
                    cands.append((hourly * T, 1.0, perf, o.key, "on_demand", o, o.price_on_demand, T, 0.0))
        if want_spot and o.price_spot is not None:
            hourly = o.price_spot * nodes
            if max_price is not None and hourly > max_price:
                if over_budget_min is None or hourly < over_budget_min:
                    over_budget_min = hourly
                continue
            interruptions = risk.rate(o.provider) * nodes * T
            hours = T + interruptions * overhead
            cands.append(
                (
                    hourly * hours,
                    1.0 / (1.0 + interruptions),
                    perf,
                    o.key,
                    "spot",
                    o,
                    o.price_spot,
                    hours,
                    interruptions,
                )
            )

    reasons: list[str] = []
    if not cands:
        reasons.append(
            _why_empty(
                request,
                locals_=dict(
                    n_provider=n_provider,
                    n_region=n_region,
                    n_type=n_type,
                    n_count=n_count,
                    n_mem=n_mem,
                    n_host=n_host,
                    n_capacity=n_capacity,
                    max_count_seen=max_count_seen,
                    types_seen=types_seen,
                    over_budget_min=over_budget_min,
                    want_on_demand=want_on_demand,
                    want_spot=want_spot,
                ),
            )
        )
        return Ranking(request, [], 0, reasons)

    min_cost = min(c[0] for c in cands)
    max_perf = max(c[2] for c in cands)
    wc, wp, wa = weights.normalised()
    scored = []
    for c in cands:
        cost_s = min_cost / c[0]
        perf_s = c[2] / max_perf
        score = wc * cost_s + wp * perf_s + wa * c[1]
        scored.append((-score, c[0], c[3], c[4], cost_s, perf_s, c))
    scored.sort(key=lambda s: (s[0], s[1], s[2], s[3]))
    top = scored if limit is None else scored[:limit]
    options = []
    for i, (neg, _cost, _k, _m, cost_s, perf_s, c) in enumerate(top, start=1):
        expected_cost, avail, perf, _key, model, offer, price, hours, interruptions = c
        reason = _reason(
            i,
            -neg,
            (wc, wp, wa),
            cost_s,
            perf_s,
            avail,
            model,
            offer,
            price,
            nodes,
            hours,
            interruptions,
            T,
            expected_cost,
            expected_cost == min_cost,
        )
        options.append(
            RankedOption(
                rank=i,
                offer=offer,
                pricing_model=model,
                nodes=nodes,
                price_per_node_hour=price,
                price_per_hour=price * nodes,
                expected_hours=hours,
                expected_interruptions=interruptions,
                expected_cost=expected_cost,
                performance=perf,
                cost_score=cost_s,
                performance_score=perf_s,
                availability_score=avail,
                score=-neg,
                reason=reason,
            )
        )
    if request.allow_spot is False and "spot" in models:
        reasons.append("spot not considered: the job is not preemptible")
    return Ranking(request, options, len(cands), reasons)


def _reason(
    rank: int,
    score: float,
    w: tuple[float, float, float],
    cost_s: float,
    perf_s: float,
    avail: float,
    model: str,
    o: Offer,
    price: float,
    nodes: int,
    hours: float,
    interruptions: float,
    T: float,
    cost: float,
    cheapest: bool,
) -> str:
    where = o.region + (f"/{o.zone}" if o.zone else "")
    parts = [
        f"#{rank} score {score:.3f} = {w[0]:.2f}*cost {cost_s:.2f} + {w[1]:.2f}*perf {perf_s:.2f}"
        f" + {w[2]:.2f}*avail {avail:.2f}",
        f"{model.replace('_', '-')} ${price:.4g}/h x {nodes} node(s) in {o.provider} {where}",
    ]
    if model == "spot":
        parts.append(f"~{interruptions:.2f} interruptions add {hours - T:.2f} h -> {hours:.2f} h")
    parts.append(f"expected ${cost:,.2f}" + (" (cheapest)" if cheapest else ""))
    if o.stale_prone:
        parts.append("price stale-prone (provider cut list prices recently)")
    return "; ".join(parts)


def _why_empty(request: Request, locals_: dict[str, Any]) -> str:
    v = locals_
    want = ", ".join(sorted(request.gpu_types)) if request.gpu_types else "any GPU"
    if v["n_provider"] == 0:
        return f"no offers from provider(s) {', '.join(sorted(request.providers or []))} in the catalog"
    if v["n_region"] == 0:
        return f"no offers in region(s) {', '.join(sorted(request.regions or []))} from the allowed providers"
    if v["n_type"] == 0:
        return f"no offer has {want} GPUs (available: {', '.join(sorted(v['types_seen'])) or 'none'})"
    if v["n_count"] == 0:
        return (
            f"no offer has {request.gpu_count} x {want} in one node "
            f"(largest: {v['max_count_seen']} per machine); use more nodes with fewer GPUs each"
        )
    if v["n_mem"] == 0:
        return f"no {want} offer has at least {request.gpu_memory_gb:g} GB per GPU"
    if v["n_host"] == 0:
        return (
            f"no offer with {request.gpu_count} x {want} also has {request.vcpus:g} vCPUs and "
            f"{request.memory_gb:g} GB memory per node"
        )
    if v["n_capacity"] == 0:
        return f"the matching owned pools have fewer than {request.nodes} nodes"
    if v["over_budget_min"] is not None:
        return (
            f"max price ${request.max_price_per_hour:,.2f}/h is too low: the cheapest matching option "
            f"costs ${v['over_budget_min']:,.2f}/h for {request.nodes} node(s)"
        )
    if not v["want_on_demand"] and not v["want_spot"]:
        return "spot was the only pricing model asked for, and the job is not preemptible"
    return (
        "matching offers have no spot price" if v["want_spot"] else "no offer has the pricing model asked for"
    )
