"""Follow a job live in the terminal: a progress bar of steps, loss and attempt, with each state
change (QUEUED, RUNNING, RECOVERING after a crash, ...) printed as its own line above it.

Used by `loomos submit --follow` and `loomos demo`. It polls LoomCtl (default every 0.5 s);
the state changes come from the workflow's own history, so a change shorter than the poll
interval is still printed.
"""

from __future__ import annotations

import time
from datetime import datetime

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from loomos.cli.formatting import loss_of, styled_state
from loomos.client import JobDetail, LoomOSClient, LoomOSError
from loomos.models.jobs import JobState, StateChange

# While following, LoomCtl or Temporal may restart (or a worker be briefly missing); keep
# polling through that for this long before giving up.
UNREACHABLE_GRACE_S = 30.0


def _change_line(change: StateChange, attempt: int, max_attempts: int) -> str:
    at = change.at.astimezone().strftime("%H:%M:%S") if isinstance(change.at, datetime) else ""
    line = f"[dim]{at}[/] {styled_state(change.state)}"
    if change.state in (JobState.QUEUED, JobState.RUNNING) and attempt:
        line += f" [dim](attempt {attempt}/{max_attempts})[/]"
    if change.reason:
        line += f"  {escape(change.reason)}"
    return line


def follow_job(
    client: LoomOSClient,
    job_id: str,
    console: Console,
    poll_interval: float = 0.5,
    unreachable_grace_s: float = UNREACHABLE_GRACE_S,
) -> JobDetail:
    """Show the job's progress until it ends; return its final status.

    Raises LoomOSError when the job is unknown or LoomCtl stays unreachable for longer than
    `unreachable_grace_s`. Ctrl-C stops following (KeyboardInterrupt), not the job.
    """
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[steps]}"),
        TextColumn("{task.fields[loss]}"),
        TextColumn("{task.fields[attempt]}"),
        TimeElapsedColumn(),
        console=console,
    )
    printed = 0
    resumed_reported: set[int] = set()
    failing_since: float | None = None
    with progress:
        task = progress.add_task(job_id, total=None, steps="", loss="", attempt="")
        while True:
            try:
                status = client.get(job_id)
                failing_since = None
            except LoomOSError as err:
                # Unknown job, bad id: give up at once. Unreachable or no worker: wait a while.
                if err.status_code is not None and err.status_code not in (502, 503, 504):
                    raise
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > unreachable_grace_s:
                    raise
                progress.update(
                    task, description=f"{escape(job_id)} [yellow](waiting: {escape(err.message)})[/]"
                )
                time.sleep(poll_interval)
                continue

            for index in range(printed, len(status.history)):
                # Every attempt starts by queueing, so the attempt a change belongs to is the
                # number of QUEUED changes so far (status.attempt is only the current one).
                attempt = sum(1 for c in status.history[: index + 1] if c.state == JobState.QUEUED)
                line = _change_line(status.history[index], attempt, status.max_attempts)
                progress.console.print(line, soft_wrap=True)
            printed = len(status.history)
            if status.resumed_from_step is not None and status.attempt not in resumed_reported:
                resumed_reported.add(status.attempt)
                step = status.resumed_from_step
                progress.console.print(f"[dim]attempt {status.attempt}[/] resumed from step {step}")

            loss = loss_of(status.metrics)
            progress.update(
                task,
                description=f"{escape(job_id)} {styled_state(status.state)}",
                total=status.total_steps,
                completed=status.step or 0,
                steps=f"step {status.step if status.step is not None else '-'}/{status.total_steps or '?'}",
                loss=f"loss {loss:.4f}" if loss is not None else "",
                attempt=f"attempt {status.attempt}/{status.max_attempts}" if status.attempt else "",
            )
            if status.state.terminal:
                return status
            time.sleep(poll_interval)
