"""Saving, finding and loading checkpoints, the same way on every rank.

`step` is the number of optimizer steps completed, so a checkpoint saved at step N resumes at
N + 1 and no step is lost past it. Rank 0 writes (the state is the same on every rank, as DDP
keeps it), keeps the max_checkpoints newest files and records each on the progress channel;
every rank loads the newest file that loads, and the ranks check they loaded the same step.

With encryption (checkpoint_config.encryption_enabled; loomos.train.encryption) rank 0 seals the
file as torch.save writes it, and a file that does not authenticate, or is in plaintext, is
skipped like a corrupt one; a key that is missing is an error, not a reason to start over.
"""

from __future__ import annotations

import io
import pickle
import sys
import time
from typing import Any

from loomos.train.contract import EVENT_CHECKPOINT, EVENT_RESUMED
from loomos.train.encryption import CheckpointCipher
from loomos.train.progress import clean_metrics
from loomos.train.state import get_state
from loomos.train.stores import CheckpointStore, LocalCheckpointStore, checkpoint_name


def _is_weights_only_refusal(exc: BaseException) -> bool:
    # torch.load(weights_only=True) refusing a type is a usage problem, not a corrupt file:
    # skipping the file would silently restart training from scratch. Garbage bytes also fail
    # in the weights-only unpickler ("Unsupported operand"), so look at what it refused.
    if not isinstance(exc, pickle.UnpicklingError):
        return False
    text = str(exc)
    return "Weights only load failed" in text and any(
        marker in text for marker in ("GLOBAL", "allowlist", "must be imported")
    )


def _load_newest(
    store: CheckpointStore, map_location: Any, weights_only: bool, cipher: CheckpointCipher | None = None
) -> tuple[int, str, dict[str, Any]] | None:
    import torch

    from loomos.security.crypto.errors import KeyUnavailable

    for step, name in store.checkpoints():
        try:
            source = store.read(name)
            if cipher is None:
                obj = torch.load(
                    io.BytesIO(source) if isinstance(source, bytes) else source,
                    map_location=map_location,
                    weights_only=weights_only,
                )
            else:
                with cipher.opened(source, name) as readable:
                    obj = torch.load(readable, map_location=map_location, weights_only=weights_only)
        except FileNotFoundError:
            continue  # pruned between listing and loading
        except Exception as exc:  # torch raises RuntimeError/EOFError/UnpicklingError for bad files
            if _is_weights_only_refusal(exc) or isinstance(exc, KeyUnavailable):
                raise
            print(f"loomos: skipping unreadable checkpoint {store.uri(name)}: {exc}", file=sys.stderr)
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("step"), int):
            print(f"loomos: skipping {store.uri(name)}: not a LoomOS checkpoint dict", file=sys.stderr)
            continue
        if obj["step"] != step:
            print(f"loomos: skipping {store.uri(name)}: holds step {obj['step']}", file=sys.stderr)
            continue
        return step, name, obj
    return None


def _step_range_over_ranks(step: int) -> tuple[int, int]:
    """(min, max) of `step` over all ranks; (step, step) without a process group."""
    st = get_state()
    import torch.distributed as dist

    if st.ctx.world_size <= 1 or not dist.is_initialized():
        return step, step
    import torch

    device = st.ctx.device if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([step, -step], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    high, neg_low = t.tolist()
    return -neg_low, high


def load_latest_checkpoint(map_location: Any = None, *, weights_only: bool = True) -> dict[str, Any] | None:
    """The newest checkpoint that loads, or None. Corrupt or partial files are skipped.

    Every rank loads the same file, so the location must be shared by all nodes (a shared
    filesystem or s3://). With a process group initialised (init() does it) the ranks check
    that they found the same step, and raise instead of training from different states.
    Rank 0 records {"event": "resumed", "step": N} on the progress channel.
    """
    st = get_state()
    found = _load_newest(st.store, map_location, weights_only, st.cipher)
    step = found[0] if found else -1
    low, high = _step_range_over_ranks(step)
    if low != high:
        raise RuntimeError(
            f"ranks found different checkpoints (steps {low} to {high}; -1 is none; this rank: {step} in "
            f"{st.store.uri_root}): the checkpoint location is not shared by every node. Use a shared "
            "directory or an s3:// checkpoint URI."
        )
    if found is None:
        return None
    _, name, obj = found
    if st.channel is not None:
        event = {"event": EVENT_RESUMED, "step": step, "uri": st.store.uri(name), "time": time.time()}
        st.channel.event(event)
    st.last_checkpoint_time = time.monotonic()
    return obj


def save_checkpoint(
    state: dict[str, Any], step: int, metrics: dict[str, Any] | None = None
) -> str | None:
    """Rank 0 saves `state` (plus "step") as ckpt-<step>.pt atomically; other ranks do nothing.

    Keeps the max_checkpoints newest files and records the checkpoint on the progress channel.
    Returns the checkpoint's URI on rank 0, None elsewhere. State must be the same on every
    rank (as DDP keeps it), since only rank 0's copy is written.
    """
    import torch

    if not isinstance(state, dict):
        raise TypeError("state must be a dict (e.g. {'model': ..., 'optimizer': ...})")
    if int(step) < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    st = get_state()
    st.last_checkpoint_time = time.monotonic()
    if not st.ctx.is_main:
        return None
    payload = dict(state)
    payload["step"] = int(step)
    name = checkpoint_name(int(step))
    cipher = st.cipher

    def write(fh: Any) -> None:
        if cipher.required:
            cipher.seal(fh, name, lambda out: torch.save(payload, out))
        else:
            torch.save(payload, fh)

    uri = st.store.write_atomic(name, write)
    _prune(st.store, st.ctx.max_checkpoints)
    if st.channel is not None:
        event: dict[str, Any] = {
            "event": EVENT_CHECKPOINT,
            "step": int(step),
            "uri": uri,
            "time": time.time(),
            "metrics": clean_metrics(metrics) if metrics is not None else st.last_metrics,
        }
        st.channel.event(event)
    return uri


def _prune(store: CheckpointStore, keep: int) -> None:
    for _, name in store.checkpoints()[keep:]:
        store.delete(name)
    if isinstance(store, LocalCheckpointStore):
        store.remove_stale_temp_files()


def list_checkpoints() -> list[tuple[int, str]]:
    """(step, uri) of the checkpoints present, newest first."""
    st = get_state()
    return [(step, st.store.uri(name)) for step, name in st.store.checkpoints()]
