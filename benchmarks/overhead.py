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

Through the whole stack (an ephemeral Temporal dev server, control and node workers, LoomCtl,
as `loomos demo` runs it):

- submit_to_first_step_p50_s: LoomCtl submit -> the first training step as executed (the
  progress channel's timestamp), median over jobs; `_seen_` is when a client polling LoomCtl
  every 50 ms first sees a step. torchrun_to_first_step_s is plain torchrun's own launch ->
  first step, so orchestration_to_first_step_s is what LoomOS adds.
- recovery_s: SIGKILL of rank 1 mid-run -> the first step of the resumed attempt (retry delay
  0), and steps_lost_past_checkpoint: checkpoints written before the kill that the resume did
  not use (must be 0).
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

    from loomos.activities.training import TrainingActivities
    from loomos.models.spec import load_spec
    from loomos.models.training import TrainingRequest
    from loomos.settings import Settings

    settings = Settings()
    settings.checkpoints.root = str(opts.workdir / "checkpoints")
    settings.logs.root = str(opts.workdir / "logs")
    settings.node.allowed_roots = [str(opts.workdir), str(DEMO_SPEC.parent)]
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

# --- figures through the whole stack ---------------------------------------------------------


def progress_events(path: Path) -> list[dict[str, Any]]:
    """The progress channel rank 0 wrote (loomos/train.py), one JSON object a line."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def first_step_time(path: Path) -> float | None:
    return next((e["time"] for e in progress_events(path) if e.get("event") == "progress"), None)


def measure_torchrun_to_first_step(opts: Options) -> float:
    """Plain torchrun: launch -> the script's first step (its start-up floor), median of 3."""
    times = []
    for _ in range(3):
        cwd = opts.workdir / f"first-{uuid.uuid4().hex[:6]}"
        cwd.mkdir()
        channel = cwd / "progress.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOMOS_")}
        env.update(device_env(opts), LOOMOS_PROGRESS_FILE=str(channel), LOOMOS_CHECKPOINT_ENABLED="0")
        started = time.time()
        subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone",
             "--nproc-per-node", str(opts.world_size), "--max-restarts", "0", str(DEMO),
             "--steps", "3", "--print-every", "3", "--warmup-steps", "0"],
            cwd=cwd, env=env, capture_output=True, check=True,
        )  # fmt: skip
        first = first_step_time(channel)
        if first is None:
            raise RuntimeError("plain torchrun run reported no step")
        times.append(first - started)
    return statistics.median(times)


def _spec(opts: Options, args: list[str], **changes: Any) -> Any:
    from loomos.models.spec import load_spec

    spec = load_spec(DEMO_SPEC)
    spec.args = args
    spec.environment_variables = device_env(opts)
    spec.resources.gpu_count = opts.world_size
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec


def measure_submit_to_first_step(client: Any, settings: Any, opts: Options) -> dict[str, Any]:
    """Submit through LoomCtl -> first training step, per job: as executed (the progress
    channel's timestamp) and as a user polling LoomCtl every 50 ms first sees it."""
    from loomos.models.jobs import JobState

    executed, seen = [], []
    for i in range(3 if opts.quick else 7):
        spec = _spec(opts, ["--steps", "20", "--print-every", "20", "--warmup-steps", "0"])
        submitted_at = time.time()
        job_id = client.submit(spec).job_id
        while True:
            status = client.get(job_id)
            if status.step is not None or status.state.terminal:
                seen.append(time.time() - submitted_at)
                break
            time.sleep(0.05)
        final = client.wait(job_id, poll_interval=0.2, timeout=300)
        if final.state != JobState.SUCCEEDED:
            raise RuntimeError(f"benchmark job {job_id} ended {final.state.value}: {final.error}")
        first = first_step_time(Path(settings.logs.root) / job_id / "attempt-1-node-0.progress.jsonl")
        if first is None:
            raise RuntimeError(f"job {job_id} wrote no progress")
        executed.append(first - submitted_at)
        log(f"job {i + 1}: first step {executed[-1]:.2f} s after submit, seen after {seen[-1]:.2f} s")
    torchrun_first = measure_torchrun_to_first_step(opts)
    p50 = statistics.median(executed)
    return {
        "submit_to_first_step_p50_s": round(p50, 3),
        "submit_to_first_step_seen_p50_s": round(statistics.median(seen), 3),
        "submit_to_first_step_runs_s": [round(v, 2) for v in executed],
        # Plain torchrun's own launch -> first step (torch imported by the launcher and each
        # rank, process group set up): what LoomOS adds is the difference.
        "torchrun_to_first_step_s": round(torchrun_first, 3),
        "orchestration_to_first_step_s": round(p50 - torchrun_first, 3),
    }


def _rank_pid(job_id: str, rank: int) -> int | None:
    """The pid of the training process of (job, rank), found by its environment."""
    want = {f"LOOMOS_JOB_ID={job_id}".encode(), f"RANK={rank}".encode(), b"LOOMOS_ATTEMPT=1"}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if want <= environ:
            return int(entry.name)
    return None


def measure_recovery(client: Any, settings: Any, opts: Options) -> dict[str, Any]:
    """SIGKILL one rank mid-run -> the resumed attempt's first step; and whether the resume
    lost any step past the last checkpoint written before the kill."""
    import signal

    from loomos.models.jobs import JobState

    interval = 10
    spec = _spec(
        opts, ["--steps", "400", "--print-every", "50", "--step-sleep", "0.05"],
        checkpoint_config=_spec(opts, []).checkpoint_config.model_copy(update={"interval_steps": interval}),
        retry_policy=_spec(opts, []).retry_policy.model_copy(update={"retry_delay_seconds": 0}),
    )  # fmt: skip
    job_id = client.submit(spec).job_id
    logs = Path(settings.logs.root) / job_id
    first_channel = logs / "attempt-1-node-0.progress.jsonl"
    deadline = time.monotonic() + 120
    while True:  # run past a few checkpoints, stop between two of them
        steps = [e["step"] for e in progress_events(first_channel) if e.get("event") == "progress"]
        if steps and steps[-1] >= 3 * interval + interval // 2:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not get going: {client.get(job_id).state}")
        time.sleep(0.05)
    victim = _rank_pid(job_id, rank=1)
    if victim is None:
        raise RuntimeError("rank 1's process not found")
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    events = progress_events(first_channel)
    saved = [e["step"] for e in events if e.get("event") == "checkpoint" and e["time"] <= killed_at]
    step_at_kill = max(e["step"] for e in events if e.get("event") == "progress")
    second_channel = logs / "attempt-2-node-0.progress.jsonl"
    while (first := first_step_time(second_channel)) is None:
        if time.monotonic() > deadline + 120:
            raise RuntimeError(f"no resumed attempt: {client.get(job_id).error}")
        time.sleep(0.05)
    resumed = next((e["step"] for e in progress_events(second_channel) if e.get("event") == "resumed"), 0)
    client.cancel(job_id)
    final = client.wait(job_id, poll_interval=0.2, timeout=120)
    if final.state != JobState.CANCELLED:
        raise RuntimeError(f"recovery job ended {final.state.value}: {final.error}")
    last_saved = max(saved, default=0)
    log(f"killed rank 1 at step {step_at_kill} (last checkpoint {last_saved}); resumed from {resumed}; "
        f"first resumed step {first - killed_at:.2f} s after the kill")
    return {
        "recovery_s": round(first - killed_at, 3),
        "steps_lost_past_checkpoint": max(0, last_saved - resumed),
        "recovery_resumed_from_step": resumed,
        "recovery_step_at_kill": step_at_kill,
        "recovery_retry_delay_s": 0,
    }


def measure_full_stack(opts: Options) -> dict[str, Any]:
    """An ephemeral stack like `loomos demo`'s: dev server, control and node workers, LoomCtl."""
    from loomos.client import LoomOSClient
    from loomos.devstack.demo import DEMO_NODE_ID, demo_settings
    from loomos.devstack.stack import LocalStack, StackLayout
    from loomos.settings import load_settings

    state = opts.workdir / "stack"
    settings = demo_settings(load_settings(REPO / "temporal-dev.yaml"), state)
    layout = StackLayout(settings, state_dir=state, node_id=DEMO_NODE_ID, persistent=False)
    log("starting an ephemeral stack")
    with LocalStack(layout), LoomOSClient(settings.api_url) as client:
        result = measure_submit_to_first_step(client, settings, opts)
        result.update(measure_recovery(client, settings, opts))
    return result


FULL_STACK_FIGURES: list[Callable[[Options], dict[str, Any]]] = [measure_full_stack]


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
