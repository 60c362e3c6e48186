"""`loomos worker control|node`: the worker processes. Production entry points: run any number of
them, on any hosts, against one Temporal cluster (TEMPORAL_ADDRESS) and one LoomDB
(LOOMOS_DB_URL); one node worker on every GPU host."""

from __future__ import annotations

from typing import Annotated

import typer

from loomos.cli.errors import reported_errors
from loomos.cli.serve import settings_with
from loomos.settings import load_settings

worker_app = typer.Typer(no_args_is_help=True, add_completion=False)


@worker_app.command("control")
def worker_control() -> None:
    """Run a control worker: job, scheduler and log workflows, placement and audit activities."""
    from loomos.workers.control import run_control_worker
    from loomos.workers.entry import run_until_signalled

    with reported_errors():
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

    with reported_errors():
        settings = settings_with(
            node__pool=pool, node__node_id=node_id, node__host=host, node__cpu_slots=cpu_slots
        )
        run_until_signalled(lambda stop: run_node_worker(settings, stop))
