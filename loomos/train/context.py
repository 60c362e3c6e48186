"""Who this process is in the job, and how LoomOS asked it to checkpoint: the Context, read
from torchrun's variables (RANK, WORLD_SIZE, ...) and the LOOMOS_* contract.

Without LoomOS (plain `torchrun` or `python`) the same script gets defaults: a single rank,
checkpoints in ./checkpoints every DEFAULT_INTERVAL_MINUTES, no progress channel.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from loomos.train.contract import (
    ENV_ATTEMPT,
    ENV_CHECKPOINT_DIR,
    ENV_CHECKPOINT_ENABLED,
    ENV_CHECKPOINT_INTERVAL_MINUTES,
    ENV_CHECKPOINT_INTERVAL_STEPS,
    ENV_JOB_ID,
    ENV_MAX_CHECKPOINTS,
    ENV_NODE_ID,
    ENV_PROGRESS_FILE,
)

DEFAULT_CHECKPOINT_DIR = "checkpoints"
# Without LoomOS (and without an interval in the environment) checkpoint this often, the same
# default a JobSpec gets.
DEFAULT_INTERVAL_MINUTES = 10.0
DEFAULT_MAX_CHECKPOINTS = 3


@dataclass(frozen=True)
class Context:
    """Who this process is in the job, and how LoomOS asked it to checkpoint."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: str
    backend: str
    job_id: str | None
    attempt: int
    node_id: str | None
    checkpoint_dir: str
    checkpoint_enabled: bool
    checkpoint_interval_steps: int | None
    checkpoint_interval_minutes: float | None
    max_checkpoints: int
    progress_file: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def under_loomos(self) -> bool:
        return self.job_id is not None

    @property
    def launched_by_torchrun(self) -> bool:
        return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _env_int(name: str, default: int | None, minimum: int) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def _env_float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{name}={value} must be positive")
    return value


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def read_context() -> Context:
    """The Context of this process, from its environment; ValueError for a malformed variable."""
    rank = _env_int("RANK", 0, 0)
    world_size = _env_int("WORLD_SIZE", 1, 1)
    local_rank = _env_int("LOCAL_RANK", 0, 0)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", 1, 1)
    assert rank is not None and world_size is not None and local_rank is not None
    assert local_world_size is not None
    if rank >= world_size:
        raise ValueError(f"RANK={rank} is not below WORLD_SIZE={world_size}")
    cuda = _cuda_available()
    job_id = os.environ.get(ENV_JOB_ID) or None
    steps = _env_int(ENV_CHECKPOINT_INTERVAL_STEPS, None, 1)
    minutes = _env_float(ENV_CHECKPOINT_INTERVAL_MINUTES, None)
    if steps is None and minutes is None:
        minutes = DEFAULT_INTERVAL_MINUTES
    enabled_raw = os.environ.get(ENV_CHECKPOINT_ENABLED, "1").strip().lower()
    if enabled_raw not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(f"{ENV_CHECKPOINT_ENABLED}={enabled_raw!r} is not a boolean")
    max_ckpts = _env_int(ENV_MAX_CHECKPOINTS, DEFAULT_MAX_CHECKPOINTS, 1)
    assert max_ckpts is not None
    return Context(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        local_world_size=local_world_size,
        device=f"cuda:{local_rank}" if cuda else "cpu",
        backend="nccl" if cuda else "gloo",
        job_id=job_id,
        attempt=_env_int(ENV_ATTEMPT, 1, 1) or 1,
        node_id=os.environ.get(ENV_NODE_ID) or None,
        checkpoint_dir=os.environ.get(ENV_CHECKPOINT_DIR) or DEFAULT_CHECKPOINT_DIR,
        checkpoint_enabled=enabled_raw in ("1", "true", "yes"),
        checkpoint_interval_steps=steps,
        checkpoint_interval_minutes=minutes,
        max_checkpoints=max_ckpts,
        progress_file=os.environ.get(ENV_PROGRESS_FILE) or None,
    )
