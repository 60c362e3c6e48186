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

The node worker (loomos.activities.training) passes everything through LOOMOS_* environment
variables and reads the progress channel (a JSON-lines file) that rank 0 appends to. Without
those variables (plain `torchrun` or `python`) reporting is a no-op and checkpoints go to
./checkpoints, so the same script runs anywhere.

The modules, one concern each: contract (the LOOMOS_* variables and progress events both sides
agree on), context (who this process is), state (the per-process state behind the functions
here), lifecycle (init, finish), stop (SIGTERM and the stop all ranks agree on), progress
(report) and channel (the progress file), checkpoints (save, load, list) and stores (local and
S3 storage).

This package imports only the standard library at import time (torch and boto3 when first
needed): the node worker imports its constants without paying for torch.
"""

from __future__ import annotations

from loomos.train.channel import PROGRESS_FLUSH_INTERVAL_S, ProgressChannel
from loomos.train.checkpoints import list_checkpoints, load_latest_checkpoint, save_checkpoint
from loomos.train.context import (
    DEFAULT_CHECKPOINT_DIR,
    DEFAULT_INTERVAL_MINUTES,
    DEFAULT_MAX_CHECKPOINTS,
    Context,
)
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
    EVENT_CHECKPOINT,
    EVENT_PROGRESS,
    EVENT_RESUMED,
)
from loomos.train.lifecycle import finish, init
from loomos.train.progress import report
from loomos.train.state import context, reset
from loomos.train.stop import install_sigterm_handler, request_stop, should_checkpoint, stop_requested
from loomos.train.stores import (
    CHECKPOINT_NAME,
    CheckpointStore,
    LocalCheckpointStore,
    S3CheckpointStore,
    checkpoint_name,
    open_store,
)

__all__ = [
    # the contract with the node worker
    "ENV_JOB_ID",
    "ENV_ATTEMPT",
    "ENV_NODE_ID",
    "ENV_CHECKPOINT_DIR",
    "ENV_CHECKPOINT_ENABLED",
    "ENV_CHECKPOINT_INTERVAL_STEPS",
    "ENV_CHECKPOINT_INTERVAL_MINUTES",
    "ENV_MAX_CHECKPOINTS",
    "ENV_PROGRESS_FILE",
    "EVENT_PROGRESS",
    "EVENT_CHECKPOINT",
    "EVENT_RESUMED",
    # context and lifecycle
    "Context",
    "DEFAULT_CHECKPOINT_DIR",
    "DEFAULT_INTERVAL_MINUTES",
    "DEFAULT_MAX_CHECKPOINTS",
    "context",
    "init",
    "finish",
    "reset",
    # stop requests
    "install_sigterm_handler",
    "request_stop",
    "stop_requested",
    "should_checkpoint",
    # progress
    "PROGRESS_FLUSH_INTERVAL_S",
    "ProgressChannel",
    "report",
    # checkpoints
    "CHECKPOINT_NAME",
    "checkpoint_name",
    "CheckpointStore",
    "LocalCheckpointStore",
    "S3CheckpointStore",
    "open_store",
    "load_latest_checkpoint",
    "save_checkpoint",
    "list_checkpoints",
]
