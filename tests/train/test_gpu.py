"""The demo on CUDA through run_training: NCCL ranks, checkpoints of CUDA tensors, resume.

Skipped where torch sees no CUDA device. Needs no Temporal server (ActivityEnvironment), so on a
GPU machine it runs on its own:

    .venv/bin/python -m pytest -v -m gpu tests/test_gpu.py
    .venv/bin/python tests/test_gpu.py
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path

import pytest
import torch
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from loomos import train as loom
from loomos.activities.training import TrainingActivities
from loomos.models.jobs import FailureKind
from loomos.models.spec import load_spec
from loomos.models.training import TrainingProgress, TrainingRequest
from loomos.settings import Settings
from tests.helpers import REPO

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)"
    ),
]



async def _run(acts: TrainingActivities, req: TrainingRequest):
    env = ActivityEnvironment()
    beats: list[TrainingProgress] = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    try:
        return await env.run(acts.run_training, req), beats
    except ApplicationError as exc:
        return exc, beats


async def test_demo_on_cuda_with_nccl_crashes_and_resumes(tmp_path: Path) -> None:
    world = min(2, torch.cuda.device_count())
    settings = Settings()
    settings.checkpoints.root = str(tmp_path / "checkpoints")
    settings.logs.root = str(tmp_path / "logs")
    settings.node.cancel_grace_s = 30
    settings.node.allowed_roots = [str(tmp_path), str(REPO)]
    acts = TrainingActivities(settings, "gpu-node")
    spec = load_spec(REPO / "examples" / "ddp-demo.yaml")
    spec.args = ["--steps", "80", "--crash-at-step", "25", "--crash-rank", str(world - 1)]
    job_id = f"gpu-{uuid.uuid4().hex[:8]}"

    def req(attempt: int) -> TrainingRequest:
        return TrainingRequest(job_id=job_id, workflow_id=f"job-{job_id}", attempt=attempt, spec=spec,
                               nproc_per_node=world)

    # Attempt 1: one rank fails at step 25. With NCCL the surviving rank may sit in a collective
    # until run_training kills it (10 s after torchrun starts closing ranks); the attempt still
    # ends as a retryable crash whose root cause is the failing rank.
    err, _ = await _run(acts, req(1))
    assert isinstance(err, ApplicationError), err
    assert err.type == FailureKind.TRAINING_CRASHED.value and not err.non_retryable, err.message
    assert f"rank {world - 1} (local rank {world - 1}) exited with code 1" in err.message
    assert err.details[0].last_checkpoint.step == 20
    log1 = (tmp_path / "logs" / job_id / "attempt-1-node-0.log").read_text()
    assert f"rank 0/{world} on cuda:0 (nccl)" in log1

    # The checkpoint holds CUDA tensors; it loads back onto the GPU and onto the CPU.
    ckpt = tmp_path / "checkpoints" / job_id / "ckpt-00000020.pt"
    on_saved_device = torch.load(ckpt)
    first = next(iter(on_saved_device["model"].values()))
    assert first.is_cuda and on_saved_device["step"] == 20
    on_cpu = torch.load(ckpt, map_location="cpu")
    assert all(not t.is_cuda for t in on_cpu["model"].values())

    # Attempt 2 resumes from step 20 on the GPUs and finishes.
    result, beats = await _run(acts, req(2))
    assert isinstance(result, TrainingProgress), result
    assert result.exit_code == 0 and result.resumed_from_step == 20 and result.step == 80
    assert result.last_checkpoint.step == 80 and any(b.step for b in beats)
    log2 = Path(result.log_path).read_text()
    assert "starting at step 21 of 80" in log2
    demo = json.loads(log2.split("DEMO_RESULT ", 1)[1].splitlines()[0])
    assert demo["device"] == "cuda:0" and demo["world_size"] == world and demo["start_step"] == 20


def test_helpers_save_and_resume_cuda_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(loom.ENV_CHECKPOINT_DIR, str(tmp_path / "ck"))
    monkeypatch.setenv(loom.ENV_JOB_ID, "gpu-helpers")
    monkeypatch.setenv(loom.ENV_PROGRESS_FILE, str(tmp_path / "progress.jsonl"))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    loom.reset()
    try:
        ctx = loom.context()
        assert ctx.device == "cuda:0" and ctx.backend == "nccl"
        weights = torch.randn(64, 64, device=ctx.device)
        loom.save_checkpoint({"w": weights}, 3)
        back = loom.load_latest_checkpoint(map_location=ctx.device)
        assert back["step"] == 3 and back["w"].is_cuda and torch.equal(back["w"], weights)
    finally:
        loom.reset()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-p", "no:cacheprovider"]))
