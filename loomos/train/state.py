"""The per-process state behind the module-level functions of loomos.train.

Created from the environment on first use and kept for the life of the process (a training
script is one job's rank): its Context, the stop flag the SIGTERM handler sets, the clock of
the checkpoint interval, and the progress channel (rank 0 under LoomOS only) and checkpoint
store it writes to.
"""

from __future__ import annotations

import threading
import time

from loomos.train.channel import ProgressChannel
from loomos.train.context import Context, read_context
from loomos.train.encryption import CheckpointCipher, CheckpointEncryption
from loomos.train.stores import open_store


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
        # Seals and opens checkpoints when the node asked for encryption (LOOMOS_CHECKPOINT_ENCRYPTION).
        self.cipher = CheckpointCipher(CheckpointEncryption.from_env(), ctx.job_id)


_state: _State | None = None
_state_lock = threading.Lock()


def get_state() -> _State:
    global _state
    with _state_lock:
        if _state is None:
            _state = _State(read_context())
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
    return get_state().ctx
