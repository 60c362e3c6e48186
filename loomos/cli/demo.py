"""`loomos demo` (make demo): the walking skeleton end to end, on an ephemeral stack.

It starts its own Temporal dev server (in memory), control worker, node worker and LoomCtl on
free ports (loomos.devstack.demo), submits examples/ddp-demo.yaml through LoomCtl like any user
would, follows it (rank 1 crashes once, the job resumes from its last checkpoint), prints a
summary and stops the stack. Its files (LoomDB, checkpoints, logs) stay under .loomos/demo/ to
look at afterwards.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from loomos.cli.errors import console, reported_errors
from loomos.cli.follow import follow_job
from loomos.cli.formatting import loss_of, styled_state
from loomos.client import JobDetail, LoomOSClient
from loomos.devstack.demo import DEMO_NODE_ID, demo_settings, find_demo_spec
from loomos.devstack.stack import LocalStack, StackLayout, stop_on_signals
from loomos.models.jobs import JobState
from loomos.models.spec import load_spec
from loomos.settings import Settings, load_settings, project_root

demo_app = typer.Typer(add_completion=False)


@demo_app.command("demo", help="Run a DDP job end to end on an ephemeral stack (crash included).")
def demo(
    spec_file: Annotated[
        Path | None,
        typer.Argument(help="Job spec to run (default: examples/ddp-demo.yaml).", show_default=False),
    ] = None,
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Keep the stack (and its Temporal UI) up after the job, until Ctrl-C."),
    ] = False,
) -> None:
    with reported_errors():
        code = run_demo(spec_file, keep=keep, console=console)
    if code:
        raise typer.Exit(code)


def run_demo(spec_file: Path | None, *, keep: bool, console: Console) -> int:
    """Run the demo; the exit code is 0 only if the job SUCCEEDED."""
    root = project_root()
    spec_path = spec_file or find_demo_spec(root)
    spec = load_spec(spec_path)  # a bad spec is reported before anything starts
    state_dir = (root / ".loomos" / "demo").resolve()
    settings = demo_settings(load_settings(), state_dir)
    # The demo's one node joins the configured pool; the job must ask that pool.
    spec = spec.model_copy(update={"pool": settings.node.pool})

    started = time.monotonic()
    with stop_on_signals() as stop:
        layout = StackLayout(settings, state_dir=state_dir, node_id=DEMO_NODE_ID, persistent=False)
        stack = LocalStack(layout, interrupted=stop)
        try:
            with console.status("starting an ephemeral LoomOS stack") as status:
                stack.start(progress=lambda msg: status.update(msg))
            console.print(
                f"[dim]stack up in {time.monotonic() - started:.1f} s: Temporal {settings.temporal.address}, "
                f"UI {settings.ui_url}, LoomCtl {settings.api_url}[/]",
                highlight=False,
            )
            # The stack's dev admin (LoomCtl refuses anonymous requests, the demo's too).
            token = stack.admin.token if stack.admin else None
            with LoomOSClient(settings.api_url, token=token) as client:
                submitted = client.submit(spec)
                console.print(
                    f"submitted [bold]{escape(spec.name)}[/] as job [bold]{escape(submitted.job_id)}[/]",
                    highlight=False,
                )
                final = _follow(client, submitted.job_id, console)
            _summary(console, final, settings, submitted.ui_url, time.monotonic() - started, keep)
            if keep and final.state.terminal:
                console.print("[dim]stack kept up; Ctrl-C stops it[/]")
                stack.wait(stop)
        finally:
            stack.stop()
    return 0 if final.state == JobState.SUCCEEDED else 1


def _follow(client: LoomOSClient, job_id: str, console: Console) -> JobDetail:
    # Our SIGINT handler turns Ctrl-C into an event; restore KeyboardInterrupt while following.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return follow_job(client, job_id, console, poll_interval=0.25)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: cancelling the job (it checkpoints first)[/]")
        client.cancel(job_id)
        return client.wait(job_id, poll_interval=0.25, timeout=60)
    finally:
        signal.signal(signal.SIGINT, previous)


def _summary(
    console: Console, final: JobDetail, settings: Settings, ui_url: str, elapsed: float, keep: bool
) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    loss = loss_of(final.metrics)
    resumed = next((a.resumed_from_step for a in final.attempts if a.resumed_from_step), None)
    rows = [
        ("Job", final.job_id),
        ("State", styled_state(final.state)),
        ("Attempts", f"{final.attempt} (of at most {final.max_attempts})"),
        ("Resumed from step", str(resumed) if resumed is not None else "- (no resume)"),
        ("Final step", f"{final.step}/{final.total_steps}" if final.step is not None else "-"),
        ("Final loss", f"{loss:.4f}" if loss is not None else "-"),
        ("Checkpoint", final.last_checkpoint.uri if final.last_checkpoint else "-"),
        ("Logs", f"{settings.logs.root}/{final.job_id}/"),
        ("LoomDB", settings.loomdb.url),
        ("Temporal UI", ui_url + ("" if keep else "  (live while the stack runs: loomos demo --keep)")),
        ("Took", f"{elapsed:.1f} s"),
    ]
    if final.error and final.state != JobState.SUCCEEDED:
        rows.insert(2, ("Error", final.error.strip().splitlines()[0]))
    for label, value in rows:
        grid.add_row(label, value if label == "State" else escape(value))
    style = "green" if final.state == JobState.SUCCEEDED else "red"
    console.print(Panel(grid, title="LoomOS demo", border_style=style, expand=False))
