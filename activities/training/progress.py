"""What run_training follows while an attempt runs.

- ProgressReader folds the progress channel (the JSON-lines file rank 0 appends to, written by
  loomos.train) into the TrainingProgress that is heartbeated and returned;
- CheckpointNotifier tells the job workflow about new checkpoints while the attempt runs;
- LauncherFailureWatcher notices in the log that torchrun is closing the ranks after one failed.

The channel is written by user code: malformed lines are counted and skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import activity

from loomos.models.training import CheckpointRef, CheckpointsSaved, TrainingProgress, TrainingRequest
from loomos.temporal.names import CHECKPOINTS_SAVED
from loomos.train import contract

# Heartbeats and results must stay small (Temporal warns at 256 KB): keep the newest entries.
MAX_CHECKPOINTS_REPORTED = 32
MAX_METRICS = 32
MAX_METRIC_NAME = 64
# The job workflow hears of new checkpoints at once, then at most this often (each notice is a
# signal in its history, and a days-long job must stay far below Temporal's history limits).
CHECKPOINT_NOTICE_EVERY_S = 60.0


@dataclass
class ProgressReader:
    """Follows the JSON-lines progress file and folds it into a TrainingProgress."""

    path: Path
    progress: TrainingProgress
    _offset: int = 0
    _partial: bytes = b""
    bad_lines: int = 0
    _all_checkpoints: list[CheckpointRef] = field(default_factory=list)

    def poll(self) -> bool:
        """Read lines appended since the last call; True when something changed."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return False
        if not chunk:
            return False
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for its newline
        changed = False
        for line in lines:
            if line.strip():
                changed |= self._apply(line)
        if changed:
            self.progress.updated_at = datetime.now(UTC)
        return changed

    def _apply(self, line: bytes) -> bool:
        try:
            event = json.loads(line)
            kind = event["event"]
            step = int(event["step"])
        except (ValueError, KeyError, TypeError):
            self.bad_lines += 1
            return False
        p = self.progress
        if kind == contract.EVENT_PROGRESS:
            p.step = step
            if event.get("total_steps") is not None:
                p.total_steps = int(event["total_steps"])
            if isinstance(event.get("metrics"), dict):
                p.metrics = _small_metrics(event["metrics"])
        elif kind == contract.EVENT_CHECKPOINT:
            ref = CheckpointRef(
                step=step,
                uri=str(event.get("uri", "")),
                saved_at=_timestamp(event.get("time")),
                metrics=_small_metrics(event.get("metrics") or {}),
            )
            self._all_checkpoints.append(ref)
            p.checkpoints = self._all_checkpoints[-MAX_CHECKPOINTS_REPORTED:]
            p.last_checkpoint = ref
            p.step = max(p.step or 0, step)
        elif kind == contract.EVENT_RESUMED:
            p.resumed_from_step = step
            if p.last_checkpoint is None and event.get("uri"):
                p.last_checkpoint = CheckpointRef(step=step, uri=str(event["uri"]))
            if p.step is None:
                p.step = step
        else:
            self.bad_lines += 1
            return False
        return True


def _small_metrics(raw: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    if not isinstance(raw, dict):
        return out
    for key, value in list(raw.items())[:MAX_METRICS]:
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[str(key)[:MAX_METRIC_NAME]] = float(value)
    return out


def _timestamp(raw: Any) -> datetime | None:
    if isinstance(raw, int | float):
        return datetime.fromtimestamp(raw, UTC)
    return None


class CheckpointNotifier:
    """Tells the job workflow about checkpoints as rank 0 writes them (signal `checkpoints_saved`).

    Best effort: a notice that cannot be delivered is logged and training goes on; what the
    workflow missed still reaches it with the attempt's result.
    """

    def __init__(self, req: TrainingRequest, node_id: str, log: Any) -> None:
        self.req = req
        self.node_id = node_id
        self.log = log
        self.sent: set[int] = set()
        self._last_sent = -math.inf
        self._tasks: set[asyncio.Task[None]] = set()
        try:
            self._handle: Any = activity.client().get_workflow_handle(req.workflow_id)
        except RuntimeError:  # run outside a worker (a test's ActivityEnvironment without a client)
            self._handle = None

    def poll(self, progress: TrainingProgress, force: bool = False) -> None:
        if self._handle is None or self.req.node_rank != 0:  # only rank 0's node writes them
            return
        now = time.monotonic()
        if not force and now - self._last_sent < CHECKPOINT_NOTICE_EVERY_S:
            return
        new = [c for c in progress.checkpoints if c.step not in self.sent]
        if not new:
            return
        self.sent.update(c.step for c in new)
        self._last_sent = now
        notice = CheckpointsSaved(attempt=self.req.attempt, node_id=self.node_id, checkpoints=new)
        task = asyncio.create_task(self._send(notice))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, notice: CheckpointsSaved) -> None:
        try:
            await self._handle.signal(CHECKPOINTS_SAVED, notice)
        except Exception as err:
            self.log.warning("checkpoint notice not delivered", error=str(err))

    def close(self) -> None:
        """Drop notices still in flight: the attempt's result carries every checkpoint anyway."""
        for task in self._tasks:
            task.cancel()


class LauncherFailureWatcher:
    """Notices torchrun starting to close the other ranks after one failed: its own log record
    "Sending process N closing signal SIGTERM". Reads only what was appended since the last call.
    Best effort: if torchrun words it differently, its own 30 s wait applies."""

    def __init__(self, path: Path, offset: int, launcher_pid: int) -> None:
        self.path = path
        self.offset = offset
        self.pattern = re.compile(
            rf"^[WI]\d{{4}} [\d:.]+ +{launcher_pid} .*\] Sending process \d+ closing signal"
        )
        self._partial = b""

    def poll(self) -> bool:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read(4 * 1024 * 1024)
        except OSError:
            return False
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()[-4096:]  # a record line is short; never buffer a huge line
        return any(self.pattern.match(line.decode("utf-8", errors="replace")) for line in lines)
