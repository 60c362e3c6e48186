"""What running a training script through LoomOS costs, against plain torchrun in the same run.

    .venv/bin/python benchmarks/overhead.py --quick
    .venv/bin/python benchmarks/overhead.py --device cuda

Figures (one JSON object on the last stdout line; progress goes to stderr):

- throughput_ratio: training samples/s of examples/ddp_demo.py launched through the
  `run_training` activity (in temporalio's ActivityEnvironment: real torchrun, progress channel,
  heartbeats) divided by samples/s of the same script under plain `torchrun`. Runs alternate
  and each side's median is used; the script measures samples/s itself, after its warm-up
  steps, so start-up is excluded. Checkpointing is off on both sides (it is work the user asks
  for, not LoomOS overhead).
- torch_import_s: median seconds of `python -c "import torch"` (the floor of every attempt's
  start-up and of recovery time).

Figures through the full Temporal stack (dev server, control and node workers, job workflow)
belong in FULL_STACK_FIGURES below as functions returning their keys; until one is written, its
keys are simply absent from the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file from a checkout
    sys.path.insert(0, str(REPO))

DEMO = REPO / "examples" / "ddp_demo.py"
DEMO_SPEC = REPO / "examples" / "ddp-demo.yaml"


@dataclass(frozen=True)
class Options:
    quick: bool
    device: str  # "cpu" or "cuda"
    world_size: int
    steps: int
    pairs: int
    import_repeats: int
    workdir: Path


def log(message: str) -> None:
    print(f"[overhead] {message}", file=sys.stderr, flush=True)


def demo_args(opts: Options) -> list[str]:
    return ["--steps", str(opts.steps), "--warmup-steps", "10", "--print-every", str(opts.steps)]


def device_env(opts: Options) -> dict[str, str]:
    # On a CUDA machine, "cpu" must really mean CPU: the demo picks CUDA whenever it sees one.
    return {"CUDA_VISIBLE_DEVICES": ""} if opts.device == "cpu" else {}


def demo_result(text: str) -> dict[str, Any]:
    lines = [line for line in text.splitlines() if line.startswith("DEMO_RESULT ")]
    if not lines:
        raise RuntimeError(f"the demo printed no DEMO_RESULT line; output ends with:\n{text[-3000:]}")
    result = json.loads(lines[-1].removeprefix("DEMO_RESULT "))
    if not result.get("samples_per_s"):
        raise RuntimeError(f"the demo measured no throughput: {result}")
    return result


# --- figures --------------------------------------------------------------------------------


def measure_torch_import(opts: Options) -> dict[str, Any]:
    times = []
    for _ in range(opts.import_repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        times.append(time.perf_counter() - started)
    log(f"import torch: {', '.join(f'{t:.2f}' for t in times)} s")
    return {"torch_import_s": round(statistics.median(times), 3)}


def run_plain_torchrun(opts: Options) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMOS_")}
    env.update(device_env(opts))
    cwd = opts.workdir / f"plain-{uuid.uuid4().hex[:6]}"
    cwd.mkdir()
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         "--nproc-per-node", str(opts.world_size), "--max-restarts", "0", str(DEMO), *demo_args(opts)],
        cwd=cwd, env=env, capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(
            f"plain torchrun failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-3000:]}"
        )
    return float(demo_result(out.stdout)["samples_per_s"])


def run_through_activity(opts: Options) -> float:
    from temporalio.testing import ActivityEnvironment

    from activities.training import TrainingActivities
    from loomos.config import Settings
    from loomos.models import TrainingRequest
    from loomos.spec import load_spec

    settings = Settings()
    settings.checkpoints.root = str(opts.workdir / "checkpoints")
    settings.logs.root = str(opts.workdir / "logs")
    spec = load_spec(DEMO_SPEC)
    spec.args = demo_args(opts)
    spec.checkpoint_config.enabled = False
    spec.environment_variables = device_env(opts)
    job_id = f"bench-{uuid.uuid4().hex[:8]}"
    req = TrainingRequest(job_id=job_id, workflow_id=f"job-{job_id}", attempt=1, spec=spec,
                          nproc_per_node=opts.world_size)
    env = ActivityEnvironment()
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    progress = asyncio.run(env.run(TrainingActivities(settings, "bench-node").run_training, req))
    if not beats:
        raise RuntimeError("run_training sent no heartbeat")
    assert progress.log_path is not None
    return float(demo_result(Path(progress.log_path).read_text())["samples_per_s"])


def measure_throughput_ratio(opts: Options) -> dict[str, Any]:
    loomos_runs: list[float] = []
    plain_runs: list[float] = []
    for pair in range(opts.pairs):
        # Alternate which side goes first, so drift on a shared machine hits both alike.
        order = [("torchrun", run_plain_torchrun), ("loomos", run_through_activity)]
        if pair % 2:
            order.reverse()
        for name, run in order:
            value = run(opts)
            (loomos_runs if name == "loomos" else plain_runs).append(value)
            log(f"pair {pair + 1}/{opts.pairs} {name}: {value:.0f} samples/s")
    loomos = statistics.median(loomos_runs)
    plain = statistics.median(plain_runs)
    return {
        "throughput_ratio": round(loomos / plain, 4),
        "loomos_samples_per_s": round(loomos, 1),
        "torchrun_samples_per_s": round(plain, 1),
        "throughput_runs_per_side": opts.pairs,
        # The single runs, so a reader can see how noisy the machine was.
        "loomos_samples_per_s_runs": [round(v) for v in loomos_runs],
        "torchrun_samples_per_s_runs": [round(v) for v in plain_runs],
    }


FIGURES: list[Callable[[Options], dict[str, Any]]] = [measure_torch_import, measure_throughput_ratio]

# Figures that need the whole stack (Temporal dev server, control worker, node worker, the job
# workflow) are to be added here, each a function Options -> {key: value}, e.g.
#   submit_to_first_step_p50_s   submit -> first progress heartbeat, median over jobs
#   recovery_s                   rank failure -> resumed training's first step
#   steps_lost_past_checkpoint   steps redone after recovery beyond the last checkpoint
FULL_STACK_FIGURES: list[Callable[[Options], dict[str, Any]]] = []


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer, shorter runs (CI-sized: about a minute)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: cuda when torch sees a GPU, else cpu")
    p.add_argument("--pairs", type=int, default=None, help="alternating torchrun/LoomOS run pairs")
    p.add_argument("--steps", type=int, default=None, help="demo steps per run")
    args = p.parse_args(argv)
    if args.pairs is not None and args.pairs < 1:
        p.error("--pairs must be >= 1")
    if args.steps is not None and args.steps < 20:
        p.error("--steps must be >= 20 (10 warm-up steps are not timed)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import structlog

    # The activity logs through structlog; keep stdout for the JSON line.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    world = min(2, torch.cuda.device_count()) if device == "cuda" else 2
    with tempfile.TemporaryDirectory(prefix="loomos-bench-") as tmp:
        opts = Options(
            quick=args.quick,
            device=device,
            world_size=world,
            steps=args.steps or (150 if args.quick else 400),
            pairs=args.pairs or (3 if args.quick else 5),
            import_repeats=3 if args.quick else 5,
            workdir=Path(tmp),
        )
        result: dict[str, Any] = {
            "benchmark": "training_overhead",
            "quick": opts.quick,
            "device": opts.device,
            "world_size": opts.world_size,
            "steps_per_run": opts.steps,
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
        }
        started = time.perf_counter()
        for figure in [*FIGURES, *FULL_STACK_FIGURES]:
            result.update(figure(opts))
        result["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
