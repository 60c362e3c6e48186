"""Helpers a training script imports so LoomOS can resume, checkpoint and watch it.

A plain DDP script gains checkpoint/resume/progress with a handful of lines::

    from loomos import train as loom

    ctx = loom.init()                                    # process group, device, SIGTERM handler
    ckpt = loom.load_latest_checkpoint(map_location=ctx.device)
    start = ckpt["step"] if ckpt else 0                  # ...and load ckpt["model"] etc.
    for step in range(start + 1, total + 1):
        ...                                              # forward, backward, optimizer step
        loom.report(step, total, loss=loss.item())
        if loom.should_checkpoint(step):
            loom.save_checkpoint({"model": model.module.state_dict(), ...}, step)
        if loom.stop_requested():
            break

`step` is the number of optimizer steps completed, so a checkpoint saved at step N resumes at
N + 1 and no step is lost past it.

The node worker (activities/training.py) passes everything through LOOMOS_* environment
variables and reads the progress channel (a JSON-lines file) that rank 0 appends to. Without
those variables (plain `torchrun` or `python`) reporting is a no-op and checkpoints go to
./checkpoints, so the same script runs anywhere.

This module imports only the standard library at import time: the node worker imports its
constants without paying for torch.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import pickle
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- the contract with the node worker: environment variables and progress events ----------

ENV_JOB_ID = "LOOMOS_JOB_ID"
ENV_ATTEMPT = "LOOMOS_ATTEMPT"
ENV_NODE_ID = "LOOMOS_NODE_ID"
ENV_CHECKPOINT_DIR = "LOOMOS_CHECKPOINT_DIR"  # a local path or an s3://bucket/prefix URI
ENV_CHECKPOINT_ENABLED = "LOOMOS_CHECKPOINT_ENABLED"  # "1" or "0"
ENV_CHECKPOINT_INTERVAL_STEPS = "LOOMOS_CHECKPOINT_INTERVAL_STEPS"
ENV_CHECKPOINT_INTERVAL_MINUTES = "LOOMOS_CHECKPOINT_INTERVAL_MINUTES"
ENV_MAX_CHECKPOINTS = "LOOMOS_MAX_CHECKPOINTS"
ENV_PROGRESS_FILE = "LOOMOS_PROGRESS_FILE"

EVENT_PROGRESS = "progress"
EVENT_CHECKPOINT = "checkpoint"
EVENT_RESUMED = "resumed"

DEFAULT_CHECKPOINT_DIR = "checkpoints"
# Without LoomOS (and without an interval in the environment) checkpoint this often, the same
# default a JobSpec gets.
DEFAULT_INTERVAL_MINUTES = 10.0
DEFAULT_MAX_CHECKPOINTS = 3

CHECKPOINT_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")
_TEMP_PREFIX = ".tmp-"

# report() is meant to be called every step; coalescing to one line per interval keeps the
# progress file small and the cost per call to a clock read.
PROGRESS_FLUSH_INTERVAL_S = 0.25


def checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.pt"


# --- context --------------------------------------------------------------------------------


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


def _read_context() -> Context:
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


class _State:
    """Per-process state behind the module-level functions."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.stop = threading.Event()
        # The stop decision all ranks agreed on at the last should_checkpoint(); None until then.
        self.agreed_stop: bool | None = None
        self.last_checkpoint_time = time.monotonic()
        self.last_metrics: dict[str, float] = {}
        self.channel = ProgressChannel(ctx.progress_file) if ctx.progress_file and ctx.is_main else None
        self.store = open_store(ctx.checkpoint_dir)


_state: _State | None = None
_state_lock = threading.Lock()


def _get_state() -> _State:
    global _state
    with _state_lock:
        if _state is None:
            _state = _State(_read_context())
        return _state


def reset() -> None:
    """Forget the cached context and state (tests; a script never needs this)."""
    global _state
    with _state_lock:
        if _state is not None and _state.channel is not None:
            _state.channel.close()
        _state = None


def context() -> Context:
    """This process's Context, read from the environment once; no side effects."""
    return _get_state().ctx


def init(*, init_process_group: bool = True) -> Context:
    """Context, plus: SIGTERM handler, CUDA device selection, and the default process group.

    Under torchrun the group uses the usual env:// rendezvous. Launched with plain `python`,
    a one-process group is created on an in-memory store, so DDP code runs unchanged.
    """
    st = _get_state()
    ctx = st.ctx
    install_sigterm_handler()
    import torch

    if ctx.device.startswith("cuda"):
        if ctx.local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={ctx.local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        torch.cuda.set_device(ctx.local_rank)
    if init_process_group:
        import torch.distributed as dist

        if not dist.is_initialized():
            if ctx.launched_by_torchrun:
                dist.init_process_group(backend=ctx.backend)
            else:
                dist.init_process_group(backend=ctx.backend, store=dist.HashStore(), rank=0, world_size=1)
    return ctx


def finish() -> None:
    """Flush the progress channel and tear down the default process group."""
    st = _get_state()
    if st.channel is not None:
        st.channel.flush()
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() > 1:
            # Tearing down while a peer is still finishing its last collective can abort the
            # process in gloo's teardown (seen as SIGABRT after a finished run): meet first.
            dist.barrier()
        dist.destroy_process_group()


# --- stop requests --------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: Any) -> None:
    # Only set a flag: the training loop checkpoints and exits at the end of the current step.
    # Work here is unsafe (the signal may land inside a collective or inside torch.save).
    _get_state().stop.set()


def install_sigterm_handler() -> None:
    """Make SIGTERM request a stop instead of killing the process (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def request_stop() -> None:
    """Ask the loop to checkpoint and stop, as SIGTERM does."""
    _get_state().stop.set()


def stop_requested() -> bool:
    """True once a stop was requested (SIGTERM or request_stop()).

    Once should_checkpoint() has been called, this is the decision all ranks agreed on in its
    last call: every rank leaves the loop after the same step (a rank leaving alone would hang
    the others in their next all-reduce), and a signal landing between should_checkpoint() and
    this call waits for the next step instead of skipping the final save. Scripts that never
    call should_checkpoint() get this process's own flag.
    """
    st = _get_state()
    if st.agreed_stop is not None:
        return st.agreed_stop
    return st.stop.is_set()


def _agree(flags: list[bool]) -> list[bool]:
    """OR each flag over all ranks (one tiny all-reduce); local values without a group."""
    st = _get_state()
    if st.ctx.world_size <= 1:
        return flags
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return flags
    device = st.ctx.device if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([1 if f else 0 for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def should_checkpoint(step: int) -> bool:
    """Whether to save after `step`: the step/minute interval is due, or a stop was requested.

    Every rank must call it once per step (it is a collective when there are several ranks) and
    gets the same answer, so ranks never disagree about saving or stopping.
    """
    st = _get_state()
    ctx = st.ctx
    due = False
    if ctx.checkpoint_enabled:
        if ctx.checkpoint_interval_steps and step % ctx.checkpoint_interval_steps == 0:
            due = True
        if ctx.checkpoint_interval_minutes is not None:
            if time.monotonic() - st.last_checkpoint_time >= ctx.checkpoint_interval_minutes * 60:
                due = True
    due, stop = _agree([due, st.stop.is_set()])
    st.agreed_stop = stop
    if ctx.checkpoint_enabled and (due or stop):
        st.last_checkpoint_time = time.monotonic()
        return True
    return False


# --- progress channel -----------------------------------------------------------------------


class ProgressChannel:
    """Appends JSON lines to the progress file; coalesces progress, writes other events at once."""

    def __init__(self, path: str, flush_interval_s: float = PROGRESS_FLUSH_INTERVAL_S) -> None:
        self.path = path
        self.flush_interval_s = flush_interval_s
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered binary append: each write() is one O_APPEND write of one whole line, so the
        # reader never sees a torn line from a crash between two buffered chunks.
        self._fh: io.RawIOBase | None = open(path, "ab", buffering=0)  # noqa: SIM115
        self._pending: dict[str, Any] | None = None
        self._last_flush = 0.0
        self._lock = threading.Lock()
        atexit.register(self.close)

    def _write(self, event: dict[str, Any]) -> None:
        if self._fh is None:
            return
        self._fh.write((json.dumps(event, separators=(",", ":")) + "\n").encode())

    def progress(self, event: dict[str, Any]) -> None:
        with self._lock:
            self._pending = event
            now = time.monotonic()
            if now - self._last_flush >= self.flush_interval_s:
                self._flush_locked(now)

    def event(self, event: dict[str, Any]) -> None:
        """Write a progress line still pending, then this one, immediately."""
        with self._lock:
            self._flush_locked(time.monotonic())
            self._write(event)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked(time.monotonic())

    def _flush_locked(self, now: float) -> None:
        if self._pending is not None:
            self._write(self._pending)
            self._pending = None
        self._last_flush = now

    def close(self) -> None:
        with self._lock:
            if self._fh is None:
                return
            self._flush_locked(time.monotonic())
            self._fh.close()
            self._fh = None


def _clean_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        try:
            # float() also takes 0-d tensors (at the cost of a device sync for CUDA tensors).
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}") from None
    return out


def report(step: int, total_steps: int | None = None, **metrics: Any) -> None:
    """Record progress; rank 0 appends it to the progress channel (cheap enough for every step)."""
    st = _get_state()
    clean = _clean_metrics(metrics)
    st.last_metrics = clean
    if st.channel is None:
        return
    event: dict[str, Any] = {"event": EVENT_PROGRESS, "step": int(step), "time": time.time()}
    if total_steps is not None:
        event["total_steps"] = int(total_steps)
    if clean:
        event["metrics"] = clean
    st.channel.progress(event)


# --- checkpoint storage ---------------------------------------------------------------------


class CheckpointStore:
    """Where checkpoint files live: a local directory or an S3 prefix."""

    uri_root: str

    def names(self) -> list[str]:
        raise NotImplementedError

    def write_atomic(self, name: str, data_writer: Any) -> str:
        raise NotImplementedError

    def read(self, name: str) -> bytes | str:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    def uri(self, name: str) -> str:
        return f"{self.uri_root.rstrip('/')}/{name}"

    def checkpoints(self) -> list[tuple[int, str]]:
        """(step, name) of every complete checkpoint, newest first."""
        found = []
        for name in self.names():
            m = CHECKPOINT_NAME.match(name)
            if m:
                found.append((int(m.group(1)), name))
        return sorted(found, reverse=True)


class LocalCheckpointStore(CheckpointStore):
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory).expanduser().absolute()
        self.uri_root = self.directory.as_uri()

    def names(self) -> list[str]:
        try:
            return [p.name for p in self.directory.iterdir()]
        except FileNotFoundError:
            return []

    def write_atomic(self, name: str, data_writer: Any) -> str:
        """Write to a temp file in the same directory, fsync, rename over, fsync the directory.

        A crash at any point leaves either the previous set of checkpoints or the new complete
        file, never a partial file under a checkpoint name.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f"{_TEMP_PREFIX}{os.getpid()}-{name}"
        try:
            with open(tmp, "wb") as fh:
                data_writer(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.directory / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return self.uri(name)

    def read(self, name: str) -> str:
        return str(self.directory / name)

    def delete(self, name: str) -> None:
        (self.directory / name).unlink(missing_ok=True)

    def remove_stale_temp_files(self) -> None:
        for name in self.names():
            if name.startswith(_TEMP_PREFIX):
                (self.directory / name).unlink(missing_ok=True)


class S3CheckpointStore(CheckpointStore):
    """Checkpoints under s3://bucket/prefix. A PUT is atomic: readers see all of it or nothing.

    boto3 finds credentials, region and endpoint (AWS_ENDPOINT_URL) the usual way.
    """

    def __init__(self, uri: str) -> None:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError(f"{uri!r}: no bucket in s3 URI")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri_root = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        import boto3

        self.s3 = boto3.client("s3")

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def names(self) -> list[str]:
        out = []
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key("")):
            for obj in page.get("Contents", []):
                out.append(obj["Key"].rsplit("/", 1)[-1])
        return out

    def write_atomic(self, name: str, data_writer: Any) -> str:
        buf = io.BytesIO()
        data_writer(buf)
        self.s3.put_object(Bucket=self.bucket, Key=self._key(name), Body=buf.getvalue())
        return self.uri(name)

    def read(self, name: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()

    def delete(self, name: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=self._key(name))


def open_store(location: str) -> CheckpointStore:
    """A store for a plain path, a file:// URI or an s3:// URI."""
    if location.startswith("s3://"):
        return S3CheckpointStore(location)
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        parsed = urlparse(location)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{location!r}: file:// URIs must not name a remote host")
        return LocalCheckpointStore(unquote(parsed.path))
    if "://" in location:
        raise ValueError(f"{location!r}: unsupported checkpoint location (use a path, file:// or s3://)")
    return LocalCheckpointStore(location)


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
    store: CheckpointStore, map_location: Any, weights_only: bool
) -> tuple[int, str, dict[str, Any]] | None:
    import torch

    for step, name in store.checkpoints():
        try:
            source = store.read(name)
            obj = torch.load(
                io.BytesIO(source) if isinstance(source, bytes) else source,
                map_location=map_location,
                weights_only=weights_only,
            )
        except FileNotFoundError:
            continue  # pruned between listing and loading
        except Exception as exc:  # torch raises RuntimeError/EOFError/UnpicklingError for bad files
            if _is_weights_only_refusal(exc):
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
    st = _get_state()
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
    st = _get_state()
    found = _load_newest(st.store, map_location, weights_only)
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
    st = _get_state()
    st.last_checkpoint_time = time.monotonic()
    if not st.ctx.is_main:
        return None
    payload = dict(state)
    payload["step"] = int(step)
    name = checkpoint_name(int(step))
    uri = st.store.write_atomic(name, lambda fh: torch.save(payload, fh))
    _prune(st.store, st.ctx.max_checkpoints)
    if st.channel is not None:
        event: dict[str, Any] = {
            "event": EVENT_CHECKPOINT,
            "step": int(step),
            "uri": uri,
            "time": time.time(),
            "metrics": _clean_metrics(metrics) if metrics is not None else st.last_metrics,
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
    st = _get_state()
    return [(step, st.store.uri(name)) for step, name in st.store.checkpoints()]
