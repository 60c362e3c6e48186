"""`loomos dev`, `loomos demo`, `loomos api`, `loomos worker control|node`: run the processes.

`dev` and `demo` run the embedded stack of loomos/stack.py on this machine. `api` and
`worker ...` are the production entry points: run any number of them, on any hosts, against
one Temporal cluster (TEMPORAL_ADDRESS) and one LoomDB (LOOMOS_DB_URL).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from loomos.cli.jobs import EXIT_BAD_INPUT, EXIT_FAILED, fail
from loomos.models.spec import SpecError
from loomos.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from loomos.devstack.stack import StackLayout

worker_app = typer.Typer(no_args_is_help=True)
console = Console()

# Service name -> colour of its prefix in `loomos dev`'s console.
PREFIX_STYLE = {"temporal": "magenta", "control": "cyan", "node": "green", "api": "blue", "stack": "bold"}


@contextlib.contextmanager
def reported_stack_errors() -> Iterator[None]:
    from loomos.devstack.binaries import BinaryNotFound
    from loomos.devstack.stack import StackError, StartInterrupted
    from loomos.temporal.client import SearchAttributeConflict
    from loomos.workers.node_capacity import NodeConfigError

    try:
        yield
    except (ConfigError, SpecError, SearchAttributeConflict, NodeConfigError) as err:
        fail(str(err), EXIT_BAD_INPUT)
    except StartInterrupted as err:
        fail(str(err), 130)
    except (StackError, BinaryNotFound) as err:
        # Multi-line (a service's log tail): the first line as the error, the rest below it.
        first, _, rest = str(err).partition("\n")
        if rest:
            Console(stderr=True).print(escape(rest), style="dim", highlight=False)
        fail(first, EXIT_FAILED)


def settings_with(**overrides: object) -> Settings:
    """temporal-dev.yaml + environment, then the command line's options (dotted keys)."""
    settings = load_settings()
    data = settings.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split("__", 1)
        data[section][key] = value
    try:
        return Settings.model_validate(data)
    except Exception as err:  # pydantic's message names the option's key
        raise ConfigError(str(err).replace("\n", " ")) from None


# --- production entry points -------------------------------------------------------------------


@worker_app.command("control")
def worker_control() -> None:
    """Run a control worker: job, scheduler and log workflows, placement and audit activities."""
    from loomos.workers.control import run_control_worker
    from loomos.workers.entry import run_until_signalled

    with reported_stack_errors():
        settings = load_settings()
        run_until_signalled(lambda stop: run_control_worker(settings, stop))


@worker_app.command("node")
def worker_node(
    pool: Annotated[str | None, typer.Option(help="Resource pool to join (node.pool).")] = None,
    node_id: Annotated[str | None, typer.Option(help="Node id (node.node_id; default: host name).")] = None,
    host: Annotated[
        str | None, typer.Option(help="Address other nodes reach this one at (node.host, MASTER_ADDR).")
    ] = None,
    cpu_slots: Annotated[
        int | None, typer.Option(help="Training slots without GPUs (node.cpu_slots).")
    ] = None,
) -> None:
    """Run a node worker: register this host's GPUs (or CPU slots) and run training placed here."""
    from loomos.workers.entry import run_until_signalled
    from loomos.workers.node import run_node_worker

    with reported_stack_errors():
        settings = settings_with(
            node__pool=pool, node__node_id=node_id, node__host=host, node__cpu_slots=cpu_slots
        )
        run_until_signalled(lambda stop: run_node_worker(settings, stop))


def register_stack_commands(app: typer.Typer) -> None:
    app.command("api", help="Serve LoomCtl, the REST API (OpenAPI at /docs).")(api)
    app.command(
        "dev", help="Run the embedded stack until Ctrl-C: Temporal dev server + UI, workers, LoomCtl."
    )(dev)
    app.command("demo", help="Run a DDP job end to end on an ephemeral stack (crash included).")(demo)


def api(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (api.port).")] = None,
) -> None:
    import uvicorn

    from loomos.api.app import create_app
    from loomos.devstack.stack import StackError, port_is_free
    from loomos.structured_logging import configure_logging

    with reported_stack_errors():
        settings = settings_with(api__host=host, api__port=port)
        if not port_is_free(settings.api.host, settings.api.port):
            raise StackError(
                f"api.port: port {settings.api.port} on {settings.api.host} is already in use "
                "(choose another with --port or LOOMOS_API_PORT)"
            )
        configure_logging(settings.logs.format)
        uvicorn.run(
            create_app(settings), host=settings.api.host, port=settings.api.port,
            log_level="warning", log_config=None,
        )  # fmt: skip


# --- the embedded stack ------------------------------------------------------------------------


def dev() -> None:
    """Temporal dev server (with UI and LoomOS's search attributes), a control worker, a node
    worker and LoomCtl, as configured by temporal-dev.yaml; Ctrl-C stops all of them."""
    from loomos.devstack.stack import LocalStack, StackLayout, check_ports_free, stop_on_signals
    from loomos.workers.node_capacity import node_id_for

    with reported_stack_errors(), stop_on_signals() as stop:
        settings = load_settings()
        check_ports_free(settings)
        state_dir = Path(settings.temporal.db_file or ".loomos/temporal.db").parent
        layout = StackLayout(settings, state_dir=state_dir, node_id=node_id_for(settings), echo=_echo)
        stack = LocalStack(layout, interrupted=stop)
        try:
            stack.start(progress=lambda msg: console.print(f"[bold]loomos dev[/]: {msg}", highlight=False))
            _print_urls(settings, layout)
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
    from loomos.devstack.demo import run_demo

    with reported_stack_errors():
        code = run_demo(spec_file, keep=keep, console=console)
    if code:
        raise typer.Exit(code)
