"""report(): a training step's progress, as rank 0 records it on the progress channel."""

from __future__ import annotations

import time
from typing import Any

from loomos.train.contract import EVENT_PROGRESS
from loomos.train.state import get_state


def clean_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics as floats; TypeError naming the first one that is not a number."""
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
    st = get_state()
    clean = clean_metrics(metrics)
    st.last_metrics = clean
    if st.channel is None:
        return
    event: dict[str, Any] = {"event": EVENT_PROGRESS, "step": int(step), "time": time.time()}
    if total_steps is not None:
        event["total_steps"] = int(total_steps)
    if clean:
        event["metrics"] = clean
    st.channel.progress(event)
