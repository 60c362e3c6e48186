"""Stopping a training loop on request, on every rank after the same step.

SIGTERM (a cancel, a pause, a preemption; torchrun forwards it to every rank) or
request_stop() only sets a flag. should_checkpoint(), which every rank calls once per step,
ORs the flag over all ranks, so all of them save and leave the loop after the same step: a
rank leaving alone would hang the others in their next all-reduce.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from loomos.train.state import get_state


def _on_sigterm(signum: int, frame: Any) -> None:
    # Only set a flag: the training loop checkpoints and exits at the end of the current step.
    # Work here is unsafe (the signal may land inside a collective or inside torch.save).
    get_state().stop.set()


def install_sigterm_handler() -> None:
    """Make SIGTERM request a stop instead of killing the process (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def request_stop() -> None:
    """Ask the loop to checkpoint and stop, as SIGTERM does."""
    get_state().stop.set()


def stop_requested() -> bool:
    """True once a stop was requested (SIGTERM or request_stop()).

    Once should_checkpoint() has been called, this is the decision all ranks agreed on in its
    last call: every rank leaves the loop after the same step (a rank leaving alone would hang
    the others in their next all-reduce), and a signal landing between should_checkpoint() and
    this call waits for the next step instead of skipping the final save. Scripts that never
    call should_checkpoint() get this process's own flag.
    """
    st = get_state()
    if st.agreed_stop is not None:
        return st.agreed_stop
    return st.stop.is_set()


def _agree(flags: list[bool]) -> list[bool]:
    """OR each flag over all ranks (one tiny all-reduce); local values without a group."""
    st = get_state()
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
    st = get_state()
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
