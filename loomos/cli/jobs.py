"""`loomos submit` and `loomos jobs list|status|cancel|logs`: talk to LoomCtl through the SDK.

Errors follow the CLI's rule (loomos.cli.errors): one red line, exit code 2 for bad input (an
invalid spec or argument, a 4xx validation answer), 1 for everything the server or the job
reports (unknown job, job failed, LoomCtl or Temporal unreachable).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from loomos.cli.errors import EXIT_INTERRUPTED, console, err_console, fail, reported_errors
from loomos.cli.follow import follow_job
from loomos.cli.formatting import EndpointOption, loss_metric, loss_of, styled_state, when
from loomos.client import JobDetail, LoomOSClient
from loomos.models.jobs import JobState
from loomos.models.spec import load_spec

jobs_app = typer.Typer(no_args_is_help=True, add_completion=False)
submit_app = typer.Typer(add_completion=False)

JobIdArgument = Annotated[str, typer.Argument(help="Job id, as printed by `loomos submit`.")]


# --- submit ----------------------------------------------------------------------------------


@submit_app.command("submit", help="Submit a job spec (YAML or JSON) to LoomCtl.")
def submit(
    file: Annotated[Path, typer.Argument(help="Job spec file (.yaml, .yml or .json).", show_default=False)],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show progress until the job ends.")] = False,
    endpoint: EndpointOption = None,
) -> None:
    with reported_errors():
        # Validate locally first: a typo is reported with its field path, no server needed.
        spec = load_spec(file)
        with LoomOSClient(endpoint) as client:
            submitted = client.submit(spec)
            console.print(f"submitted job [bold]{escape(submitted.job_id)}[/]", highlight=False)
            console.print(f"  Temporal UI: {submitted.ui_url}", soft_wrap=True, highlight=False)
            if not follow:
                console.print(f"  follow it:   loomos jobs status {submitted.job_id}", highlight=False)
                return
            try:
                final = follow_job(client, submitted.job_id, console)
            except KeyboardInterrupt:
                fail(
                    f"stopped following; job {submitted.job_id} keeps running "
                    f"(`loomos jobs cancel {submitted.job_id}` stops it)",
                    EXIT_INTERRUPTED,
                )
        _finish_line(final)


def _finish_line(final: JobDetail) -> None:
    if final.state == JobState.SUCCEEDED:
        loss = loss_of(final.metrics)
        extra = f", loss {loss:.4f}" if loss is not None else ""
        console.print(
            f"job {escape(final.job_id)} {styled_state(final.state)} at step {final.step}{extra} "
            f"after {final.attempt} attempt(s)",
            highlight=False,
        )
        return
    # The error may carry the log's last lines; the first line says what happened, the rest is
    # one command away.
    reason = (final.error or "no error recorded").strip().splitlines()[0]
    hint = f" (details: loomos jobs status {final.job_id}; loomos jobs logs {final.job_id})"
    fail(
        f"job {final.job_id} {final.state.value}: {reason}" + (hint if final.state == JobState.FAILED else "")
    )


# --- jobs ------------------------------------------------------------------------------------


@jobs_app.command("list")
def list_jobs(
    status: Annotated[
        list[JobState] | None,
        typer.Option("--status", "-s", case_sensitive=False, help="Only jobs in this state (repeatable)."),
    ] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's jobs.")] = None,
    team: Annotated[str | None, typer.Option("--team", help="Only this team's jobs.")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Only jobs of this pool.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many jobs.")] = 100,
    endpoint: EndpointOption = None,
) -> None:
    """List jobs, newest first."""
    with reported_errors(), LoomOSClient(endpoint) as client:
        jobs = client.list(status=status, user=user, team=team, pool=pool, limit=limit)
    if not jobs:
        console.print("no jobs match", style="dim")
        return
    table = Table(show_edge=False, header_style="bold")
    # Ids and states are never cut (people copy them); on a narrow terminal the rest gives way.
    table.add_column("JOB ID", no_wrap=True, min_width=max(len(j.job_id) for j in jobs))
    table.add_column("STATE", no_wrap=True, min_width=max(len(j.state.value) for j in jobs))
    for column in ("USER", "TEAM", "POOL", "GPUS", "SUBMITTED", "FINISHED"):
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    for job in jobs:
        gpus = str(job.gpu_count if job.gpu_count is not None else "-")
        if job.gpu_type and job.gpu_type != "any":
            gpus += f" {job.gpu_type}"
        table.add_row(
            escape(job.job_id),
            styled_state(job.state),
            escape(job.user or "-"),
            escape(job.team or "-"),
            escape(job.pool or "-"),
            gpus,
            when(job.started_at, short=True),
            when(job.closed_at, short=True),
        )
    console.print(table)


def status_panel(status: JobDetail) -> Panel:
    """The `loomos jobs status` view of one job."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")  # ids, URIs and links are read whole or not at all

    def row(label: str, value: str | None) -> None:
        if value:
            grid.add_row(label, value)

    row("State", styled_state(status.state))
    row("User / team", f"{escape(status.user)} / {escape(status.team)}")
    row("Pool", escape(status.pool))
    row("Attempt", f"{status.attempt}/{status.max_attempts}")
    if status.step is not None:
        total = status.total_steps
        pct = f" ({100 * status.step / total:.0f}%)" if total else ""
        row("Step", f"{status.step}/{total or '?'}{pct}")
    loss = loss_of(status.metrics)
    row("Loss", f"{loss:.4f}" if loss is not None else None)
    others = {k: v for k, v in status.metrics.items() if k != loss_metric(status.metrics)}
    row("Metrics", ", ".join(f"{escape(k)}={v:.4g}" for k, v in sorted(others.items())) or None)
    row("Resumed from", f"step {status.resumed_from_step}" if status.resumed_from_step is not None else None)
    if status.last_checkpoint is not None:
        row("Checkpoint", f"step {status.last_checkpoint.step}  {escape(status.last_checkpoint.uri)}")
    row("Nodes", escape(", ".join(status.nodes)) or None)
    row("Submitted", when(status.submitted_at))
    row("Started", when(status.started_at) if status.started_at else None)
    row("Finished", when(status.finished_at) if status.finished_at else None)
    row("Live progress", when(status.progress_updated_at) if status.progress_updated_at else None)
    row("Error", f"[red]{escape(status.error)}[/]" if status.error else None)
    row("Temporal UI", status.ui_url)
    parts: list[Table] = [grid]
    if len(status.attempts) > 1 or any(a.error for a in status.attempts):
        attempts = Table(show_edge=False, header_style="bold", title="attempts", title_justify="left")
        for column in ("#", "NODES", "OUTCOME", "STEPS", "ERROR"):
            attempts.add_column(column)
        for a in status.attempts:
            steps = f"{a.resumed_from_step if a.resumed_from_step is not None else 0} -> {a.last_step}"
            attempts.add_row(
                str(a.attempt),
                escape(", ".join(a.nodes)),
                escape(a.outcome or "-"),
                steps if a.last_step is not None else "-",
                escape(f"{a.failure_kind.value}: " if a.failure_kind else "")
                + escape((a.error or "").strip().splitlines()[-1] if a.error else ""),
            )
        parts.append(attempts)
    return Panel(Group(*parts), title=f"job {escape(status.job_id)}", title_align="left", expand=False)


@jobs_app.command("status")
def job_status(job_id: JobIdArgument, endpoint: EndpointOption = None) -> None:
    """Show one job: state, attempt, step, loss, checkpoint, nodes, timestamps, error."""
    with reported_errors(), LoomOSClient(endpoint) as client:
        status = client.get(job_id)
    console.print(status_panel(status))


@jobs_app.command("cancel")
def cancel_job(job_id: JobIdArgument, endpoint: EndpointOption = None) -> None:
    """Cancel a job: it saves a checkpoint, stops, and ends CANCELLED."""
    with reported_errors(), LoomOSClient(endpoint) as client:
        answer = client.cancel(job_id)
    console.print(
        f"cancel requested for [bold]{escape(answer.job_id)}[/] (was {styled_state(answer.state)}); "
        "it checkpoints and stops",
        highlight=False,
    )


@jobs_app.command("logs")
def job_logs(
    job_id: JobIdArgument,
    attempt: Annotated[int | None, typer.Option("--attempt", min=1, help="Default: the latest.")] = None,
    node: Annotated[str | None, typer.Option("--node", help="Default: the attempt's first node.")] = None,
    tail: Annotated[
        int, typer.Option("--tail", min=1, max=1024 * 1024, help="Bytes from the end of the log.")
    ] = 64 * 1024,
    endpoint: EndpointOption = None,
) -> None:
    """Print the tail of a job attempt's training log (read from the node that ran it)."""
    with reported_errors(), LoomOSClient(endpoint) as client:
        result = client.logs(job_id, attempt=attempt, node=node, tail_bytes=tail)
    cut = f", last {len(result.text.encode())} bytes" if result.truncated else ""
    err_console.print(
        f"[dim]# job {escape(result.job_id)} attempt {result.attempt} on {escape(result.node_id)}: "
        f"{escape(result.path)} ({result.size_bytes} bytes{cut})[/]",
        soft_wrap=True,
        highlight=False,
    )
    # Raw text: a log is not Rich markup.
    console.out(result.text, end="" if result.text.endswith("\n") else "\n", highlight=False)
