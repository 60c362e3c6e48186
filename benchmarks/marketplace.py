"""Marketplace benchmark: how long ranking a request over a 10,000+ offer catalog takes, and
how long loading such a catalog (parse + integrity rules) takes.

The catalog is the shipped snapshot replicated over synthetic regions and zones with
deterministically perturbed prices, so rows have real shapes and the optimizer sees the mix
of GPU types, spot/no-spot and zone rows a refreshed multi-region catalog has.

Baseline, measured in the same run: one plain Python pass over the offers reading the fields a
filter needs (`scan_baseline_ms`), i.e. what any per-offer Python loop costs at minimum; the
optimizer ranks over the catalog's columnar index (built at load, counted in catalog_load_ms).

Prints one JSON object on its last line. `--quick` runs fewer repetitions.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loomos.marketplace.catalog import (  # noqa: E402
    SHIPPED_CATALOG,
    Catalog,
    load_catalog,
    read_catalog_file,
    write_catalog_atomic,
)
from loomos.marketplace.offers import Offer  # noqa: E402
from loomos.marketplace.optimizer import OfferIndex, OfferRequest, rank_offers  # noqa: E402
from loomos.models.spec import parse_spec  # noqa: E402


def synthetic_offers(n: int, seed: int = 7) -> list[Offer]:
    base = read_catalog_file(SHIPPED_CATALOG).offers
    rng = random.Random(seed)
    out: list[Offer] = []
    i = 0
    while len(out) < n:
        o = base[i % len(base)]
        region = f"{o.region}-x{i // len(base)}"
        factor = rng.uniform(0.8, 1.25)
        od = round(o.price_on_demand * factor, 4)
        spot = None if o.price_spot is None else round(min(o.price_spot * factor, od * 0.95), 4)
        zone = f"{region}{'abc'[i % 3]}" if o.provider == "aws" and spot is not None else None
        out.append(replace(o, region=region, zone=zone, price_on_demand=od, price_spot=spot))
        i += 1
    return out


def timed(fn, reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (CI-sized)")
    ap.add_argument("--offers", type=int, default=10_000, help="catalog size (at least 10,000)")
    args = ap.parse_args()
    if args.offers < 10_000:
        ap.error("--offers must be at least 10000")
    reps = 15 if args.quick else 60
    offers = synthetic_offers(args.offers)
    requests = {
        "8xH100_2nodes_spot": parse_spec(
            {
                "name": "b",
                "entrypoint": "t.py",
                "preemptible": True,
                "resources": {"gpu_type": "H100", "gpu_count": 8, "nodes": 2},
                "marketplace": {"expected_runtime_hours": 12},
            }
        ),
        "any_gpu_1x": parse_spec(
            {"name": "b", "entrypoint": "t.py", "preemptible": True, "resources": {"gpu_count": 1}}
        ),
        "a100_max_price": parse_spec(
            {
                "name": "b",
                "entrypoint": "t.py",
                "resources": {"gpu_type": "A100", "gpu_count": 8},
                "marketplace": {"max_price_per_hour": 35, "providers": ["aws", "azure"]},
            }
        ),
    }
    index = OfferIndex(offers)
    rank_ms: dict[str, float] = {}
    feasible: dict[str, int] = {}
    for name, spec in requests.items():
        req = OfferRequest.from_spec(spec)
        rank_offers(index, req)  # warm-up
        rank_ms[name] = statistics.median(timed(lambda req=req: rank_offers(index, req), reps))
        feasible[name] = rank_offers(index, req, limit=None).feasible_count

    def scan() -> int:
        hits = 0
        for o in offers:
            if o.gpu_type == "H100" and o.gpu_count >= 8 and o.price_on_demand > 0:
                hits += 1
        return hits

    scan_ms = statistics.median(timed(scan, reps))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalog.json"
        write_catalog_atomic(
            Catalog(offers=offers, providers=read_catalog_file(SHIPPED_CATALOG).providers, origin="bench"),
            path,
        )
        # Loading includes parsing, the integrity rules and building the optimizer's index.
        load_times = timed(lambda: load_catalog(path).index(), max(3, reps // 5))
        loaded = load_catalog(path)
    worst = max(rank_ms.values())
    result = {
        "benchmark": "marketplace",
        "quick": args.quick,
        "catalog_offers": len(loaded.offers),
        "rank_10k_offers_ms": round(worst, 3),
        "rank_ms_by_request": {k: round(v, 3) for k, v in rank_ms.items()},
        "feasible_options_by_request": feasible,
        "scan_baseline_ms": round(scan_ms, 3),
        "rank_vs_scan": round(worst / scan_ms, 2) if scan_ms else None,
        "catalog_load_ms": round(statistics.median(load_times), 3),
        "repetitions": reps,
        "target_rank_ms": 20,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
