"""`loomos dev` (make up): the embedded stack of loomos.devstack on this machine, kept up until
Ctrl-C: the Temporal dev server with its UI, a control worker, a node worker and LoomCtl."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from loomos.cli.errors import console, reported_errors
from loomos.settings import Settings, load_settings

if TYPE_CHECKING:
    from loomos.devstack.stack import LocalStack, StackLayout

dev_app = typer.Typer(add_completion=False)

# Service name -> colour of its prefix in `loomos dev`'s console.
PREFIX_STYLE = {"temporal": "magenta", "control": "cyan", "node": "green", "api": "blue", "stack": "bold"}


@dev_app.command(
    "dev", help="Run the embedded stack until Ctrl-C: Temporal dev server + UI, workers, LoomCtl."
)
def dev() -> None:
    """Temporal dev server (with UI and LoomOS's search attributes), a control worker, a node
    worker and LoomCtl, as configured by temporal-dev.yaml; Ctrl-C stops all of them."""
    from loomos.devstack.stack import LocalStack, StackLayout, check_ports_free, stop_on_signals
    from loomos.workers.node_capacity import node_id_for

    with reported_errors(), stop_on_signals() as stop:
        settings = load_settings()
        check_ports_free(settings)
        state_dir = Path(settings.temporal.db_file or ".loomos/temporal.db").parent
        layout = StackLayout(settings, state_dir=state_dir, node_id=node_id_for(settings), echo=_echo)
        stack = LocalStack(layout, interrupted=stop)
        try:
            stack.start(progress=lambda msg: console.print(f"[bold]loomos dev[/]: {msg}", highlight=False))
            _print_urls(settings, layout)
            _print_login(stack)
            stack.wait(stop)
            console.print("[bold]loomos dev[/]: stopping", highlight=False)
        finally:
            killed = stack.stop()
        if killed:
            console.print(f"[yellow]killed after the grace period:[/] {', '.join(killed)}", highlight=False)
        console.print("[bold]loomos dev[/]: stopped", highlight=False)


def _echo(service: str, line: str) -> None:
    style = PREFIX_STYLE.get(service, "white")
    console.print(f"[{style}]{service:>8} |[/] {escape(line)}", highlight=False, soft_wrap=True)


def _print_login(stack: LocalStack) -> None:
    admin = stack.admin
    if admin is None:
        return
    role = "platform_admin" if admin.role_granted else "no role yet (authorization not installed)"
    lines = [
        f"  login            {escape(admin.username)} ({role}); password in {escape(str(admin.admin_file))}",
        "                   this shell's loomos commands use the stack's API token "
        f"({escape(str(admin.credentials_path))})",
        f"                   or: loomos login -u {escape(admin.username)}",
    ]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def _print_urls(settings: Settings, layout: StackLayout) -> None:
    t = settings.temporal
    query = "'LoomJobStatus=\"RUNNING\"'"
    lines = [
        "[bold green]LoomOS dev stack is up[/]",
        f"  Temporal UI      {settings.ui_url}/namespaces/{t.namespace}/workflows",
        f"  Temporal gRPC    {t.address}   (temporal workflow list --address {t.address} --query {query})",
        f"  LoomCtl API      {settings.api_url}   (OpenAPI: {settings.api_url}/docs)",
        f"  LoomDB           {settings.loomdb.url}",
        f"  node worker      {layout.node_id} in pool {settings.node.pool}",
        "  try              loomos submit examples/ddp-demo.yaml --follow",
        "  Ctrl-C stops everything.",
    ]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
