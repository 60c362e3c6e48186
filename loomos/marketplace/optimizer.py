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
Ranking runs on a columnar numpy view of the catalog (`OfferIndex`, built once per catalog),
so a request over 10,000+ offers stays in milliseconds (SkyPilot's optimizer was reported at
seconds per launch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from loomos.marketplace.offers import GPU_SPECS, PROVIDERS, Offer, normalise_gpu_name
from loomos.marketplace.performance import gpu_performance
from loomos.models.spec import JobSpec

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
class OfferRequest:
    """What a job asks of the market, derived from its JobSpec: the shape of machine, where it
    may run, the price cap, and how long it runs (for the whole-job cost)."""

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
    def from_spec(cls, spec: JobSpec, risk: SpotRisk | None = None) -> OfferRequest:
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
        if gpu_types is None or len(gpu_types) > 1:
            notes.append(
                "runtime is taken as given on every GPU type offered; faster GPUs score through performance"
            )
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
    request: OfferRequest
    options: list[RankedOption]
    feasible_count: int
    reasons: list[str]  # why nothing (or less than asked) is feasible

    @property
    def feasible(self) -> bool:
        return bool(self.options)


class OfferIndex:
    """Columnar view of a catalog's offers (numpy arrays), built once per catalog, so ranking
    a request is a handful of vectorised passes instead of a Python loop per offer."""

    def __init__(self, offers: Iterable[Offer]) -> None:
        self.offers: list[Offer] = list(offers)
        offers_ = self.offers
        n = len(offers_)
        self.provider_code = {p: i for i, p in enumerate(sorted({o.provider for o in offers_}))}
        self.region_code = {r: i for i, r in enumerate(sorted({o.region for o in offers_}))}
        self.gpu_code = {g: i for i, g in enumerate(sorted({o.gpu_type for o in offers_}))}
        self.provider = np.fromiter((self.provider_code[o.provider] for o in offers_), np.int32, n)
        self.region = np.fromiter((self.region_code[o.region] for o in offers_), np.int32, n)
        self.gpu = np.fromiter((self.gpu_code[o.gpu_type] for o in offers_), np.int32, n)
        self.gpu_count = np.fromiter((o.gpu_count for o in offers_), np.int64, n)
        self.gpu_memory = np.fromiter((o.gpu_memory_gb for o in offers_), np.float64, n)
        self.vcpus = np.fromiter((o.vcpus for o in offers_), np.float64, n)
        self.memory = np.fromiter((o.memory_gb for o in offers_), np.float64, n)
        self.capacity = np.fromiter(
            (np.inf if o.capacity_nodes is None else o.capacity_nodes for o in offers_), np.float64, n
        )
        self.on_demand = np.fromiter((o.price_on_demand for o in offers_), np.float64, n)
        self.spot = np.fromiter(
            (np.nan if o.price_spot is None else o.price_spot for o in offers_), np.float64, n
        )
        # Ties are broken by offer key; its sort position stands in for the string.
        key_order = sorted(range(n), key=lambda i: offers_[i].key)
        self.key_rank = np.empty(n, np.int64)
        self.key_rank[key_order] = np.arange(n)
        # An instance type priced per zone (AWS spot rows) has one on-demand price per region:
        # only the first such row yields an on-demand option.
        seen: set[tuple[str, str, str]] = set()
        first = np.zeros(n, bool)
        for i, o in enumerate(offers_):
            k = (o.provider, o.region, o.instance_type)
            if k not in seen:
                seen.add(k)
                first[i] = True
        self.on_demand_row = first

    def __len__(self) -> int:
        return len(self.offers)

    def codes(self, table: dict[str, int], names: Iterable[str]) -> np.ndarray:
        return np.array([table[n] for n in names if n in table], np.int32)


def rank_offers(
    offers: OfferIndex | Iterable[Offer],
    request: OfferRequest,
    weights: Weights | None = None,
    risk: SpotRisk | None = None,
    limit: int | None = 20,
    pricing_models: Iterable[str] = PRICING_MODELS,
    performance_overrides: Mapping[str, float] | None = None,
) -> Ranking:
    """Feasible options for `request`, best first, at most `limit` (None: all). Pass an
    `OfferIndex` (e.g. `Catalog.index()`) when ranking many requests over one catalog."""
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
    ix = offers if isinstance(offers, OfferIndex) else OfferIndex(offers)
    want_on_demand = "on_demand" in models
    want_spot = "spot" in models and request.allow_spot
    T = request.runtime_hours
    nodes = request.nodes
    lost_hours = request.checkpoint_hours / 2 if request.checkpoint_hours is not None else T / 2
    overhead = lost_hours + risk.restart_hours

    # Constraints are applied one after another; the count left after each tells an
    # infeasible request which one emptied the list.
    mask = np.ones(len(ix), bool)
    counts: dict[str, int] = {}
    if request.providers is not None:
        mask &= np.isin(ix.provider, ix.codes(ix.provider_code, request.providers))
    counts["provider"] = int(np.count_nonzero(mask))
    if request.regions is not None:
        mask &= np.isin(ix.region, ix.codes(ix.region_code, request.regions))
    counts["region"] = int(np.count_nonzero(mask))
    located = mask.copy()
    if request.gpu_types is not None:
        mask &= np.isin(ix.gpu, ix.codes(ix.gpu_code, request.gpu_types))
    counts["type"] = int(np.count_nonzero(mask))
    typed = mask.copy()
    mask &= ix.gpu_count >= request.gpu_count
    counts["count"] = int(np.count_nonzero(mask))
    if request.gpu_memory_gb is not None:
        mask &= ix.gpu_memory >= request.gpu_memory_gb
    counts["memory"] = int(np.count_nonzero(mask))
    mask &= (ix.vcpus >= request.vcpus) & (ix.memory >= request.memory_gb)
    counts["host"] = int(np.count_nonzero(mask))
    mask &= ix.capacity >= nodes
    counts["capacity"] = int(np.count_nonzero(mask))

    max_price = request.max_price_per_hour
    over_budget: list[float] = []
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]] = []
    if want_on_demand:
        rows = np.flatnonzero(mask & ix.on_demand_row)
        hourly = ix.on_demand[rows] * nodes
        if max_price is not None:
            over = hourly > max_price
            if over.any():
                over_budget.append(float(hourly[over].min()))
            rows, hourly = rows[~over], hourly[~over]
        hours = np.full(len(rows), float(T))
        parts.append((rows, hourly * T, np.ones(len(rows)), hours, np.zeros(len(rows)), 0))
    if want_spot:
        rows = np.flatnonzero(mask & ~np.isnan(ix.spot))
        hourly = ix.spot[rows] * nodes
        if max_price is not None:
            over = hourly > max_price
            if over.any():
                over_budget.append(float(hourly[over].min()))
            rows, hourly = rows[~over], hourly[~over]
        rate_by_code = np.array([risk.rate(p) for p in sorted(ix.provider_code, key=ix.provider_code.get)])
        interruptions = rate_by_code[ix.provider[rows]] * nodes * T if len(rows) else np.zeros(0)
        hours = T + interruptions * overhead
        parts.append((rows, hourly * hours, 1.0 / (1.0 + interruptions), hours, interruptions, 1))

    rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    if len(rows) == 0:
        reason = _why_empty(
            request,
            dict(
                counts=counts,
                over_budget_min=min(over_budget) if over_budget else None,
                types_seen=sorted({ix.offers[i].gpu_type for i in np.flatnonzero(located)}),
                max_count_seen=int(ix.gpu_count[typed].max()) if typed.any() else 0,
                want_on_demand=want_on_demand,
                want_spot=want_spot,
            ),
        )
        return Ranking(request, [], 0, [reason])
    cost = np.concatenate([p[1] for p in parts])
    avail = np.concatenate([p[2] for p in parts])
    hours = np.concatenate([p[3] for p in parts])
    interruptions = np.concatenate([p[4] for p in parts])
    model = np.concatenate([np.full(len(p[0]), p[5]) for p in parts])
    perf_by_code = np.array(
        [gpu_performance(g, performance_overrides) for g in sorted(ix.gpu_code, key=ix.gpu_code.get)]
    )
    perf = perf_by_code[ix.gpu[rows]] * (request.gpu_count * nodes)
    min_cost = cost.min()
    cost_s = min_cost / cost
    perf_s = perf / perf.max()
    wc, wp, wa = weights.normalised()
    score = wc * cost_s + wp * perf_s + wa * avail
    # Best score first; ties: cheaper, then offer key, then on-demand before spot.
    order = np.lexsort((model, ix.key_rank[rows], cost, -score))
    if limit is not None:
        order = order[:limit]
    options = []
    for rank, j in enumerate(order.tolist(), start=1):
        offer = ix.offers[int(rows[j])]
        pricing_model = PRICING_MODELS[int(model[j])]
        price = offer.price_on_demand if pricing_model == "on_demand" else offer.price_spot
        assert price is not None
        c, h, e = float(cost[j]), float(hours[j]), float(interruptions[j])
        s_, cs, ps, av = float(score[j]), float(cost_s[j]), float(perf_s[j]), float(avail[j])
        options.append(
            RankedOption(
                rank=rank,
                offer=offer,
                pricing_model=pricing_model,
                nodes=nodes,
                price_per_node_hour=price,
                price_per_hour=price * nodes,
                expected_hours=h,
                expected_interruptions=e,
                expected_cost=c,
                performance=float(perf[j]),
                cost_score=cs,
                performance_score=ps,
                availability_score=av,
                score=s_,
                reason=_reason(
                    rank,
                    s_,
                    (wc, wp, wa),
                    cs,
                    ps,
                    av,
                    pricing_model,
                    offer,
                    price,
                    nodes,
                    h,
                    e,
                    T,
                    c,
                    c == min_cost,
                ),
            )
        )
    reasons = []
    if request.allow_spot is False and "spot" in models:
        reasons.append("spot not considered: the job is not preemptible")
    return Ranking(request, options, len(rows), reasons)


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


def _why_empty(request: OfferRequest, v: dict[str, Any]) -> str:
    counts = v["counts"]
    want = ", ".join(sorted(request.gpu_types)) if request.gpu_types else "any GPU"
    if counts["provider"] == 0:
        return f"no offers from provider(s) {', '.join(sorted(request.providers or []))} in the catalog"
    if counts["region"] == 0:
        return f"no offers in region(s) {', '.join(sorted(request.regions or []))} from the allowed providers"
    if counts["type"] == 0:
        return f"no offer has {want} GPUs (available: {', '.join(v['types_seen']) or 'none'})"
    if counts["count"] == 0:
        return (
            f"no offer has {request.gpu_count} x {want} in one node "
            f"(largest: {v['max_count_seen']} per machine); use more nodes with fewer GPUs each"
        )
    if counts["memory"] == 0:
        return f"no {want} offer has at least {request.gpu_memory_gb:g} GB per GPU"
    if counts["host"] == 0:
        return (
            f"no offer with {request.gpu_count} x {want} also has {request.vcpus:g} vCPUs and "
            f"{request.memory_gb:g} GB memory per node"
        )
    if counts["capacity"] == 0:
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
