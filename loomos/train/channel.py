"""The progress channel, write side: the JSON-lines file rank 0 appends to and the node worker
follows (loomos.activities.training.progress). Event names are in contract.py."""

from __future__ import annotations

import atexit
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

# report() is meant to be called every step; coalescing to one line per interval keeps the
# progress file small and the cost per call to a clock read.
PROGRESS_FLUSH_INTERVAL_S = 0.25


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

