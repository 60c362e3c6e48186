"""How the CLI shows things: job states in colour, the loss among a job's metrics, times, and
the `--endpoint` option every command that talks to LoomCtl takes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from loomos.client import ENDPOINT_ENV
from loomos.models.jobs import JobState

EndpointOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        envvar=ENDPOINT_ENV,
        help="LoomCtl URL (default: api.host/api.port from temporal-dev.yaml).",
        show_default=False,
    ),
]

STATE_STYLE: dict[JobState, str] = {
    JobState.SUBMITTED: "cyan",
    JobState.QUEUED: "cyan",
    JobState.RUNNING: "blue",
    JobState.RECOVERING: "yellow",
    JobState.SUCCEEDED: "green",
    JobState.FAILED: "red",
    JobState.CANCELLED: "magenta",
    JobState.REJECTED: "bold red",
}


def styled_state(state: JobState) -> str:
    return f"[{STATE_STYLE.get(state, 'white')}]{state.value}[/]"


def loss_metric(metrics: dict[str, float]) -> str | None:
    """The metric to show as "loss": `loss` itself, else the first metric named like one."""
    if "loss" in metrics:
        return "loss"
    return next((name for name in sorted(metrics) if "loss" in name.lower()), None)


def loss_of(metrics: dict[str, float]) -> float | None:
    name = loss_metric(metrics)
    return metrics[name] if name is not None else None


def when(value: datetime | None, short: bool = False) -> str:
    """Local time; tables use the short form so they fit 80 columns."""
    if value is None:
        return "-"
    return value.astimezone().strftime("%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S %Z")
