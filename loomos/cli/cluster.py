"""`loomos cluster status`: a pool's nodes, their slots and its placement queue, from LoomCtl."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from loomos.cli.errors import console, reported_errors
from loomos.cli.formatting import EndpointOption, when
from loomos.client import LoomOSClient

cluster_app = typer.Typer(no_args_is_help=True, add_completion=False)


@cluster_app.command("status")
def cluster_status(
    pool: Annotated[str, typer.Option("--pool", "-p", help="Resource pool.")] = "default",
    endpoint: EndpointOption = None,
) -> None:
    """Nodes of a pool with their slots (used/free), and the jobs waiting for placement."""
    with reported_errors(), LoomOSClient(endpoint) as client:
        snap = client.cluster_status(pool)
    nodes = Table(
        show_edge=False, header_style="bold", title=f"pool {escape(snap.pool)}", title_justify="left"
    )
    for column in ("NODE", "DEVICE", "SLOTS", "USED", "FREE", "STATUS", "JOBS", "LAST SEEN"):
        nodes.add_column(column, no_wrap=column == "NODE")
    for usage in snap.nodes:
        info = usage.node
        nodes.add_row(
            escape(info.node_id),
            escape(info.gpu_type if info.accelerator == "cuda" else "cpu"),
            str(info.slots),
            str(usage.used_slots),
            str(max(info.slots - usage.used_slots, 0)),
            "[green]available[/]" if usage.available else "[red]unavailable[/]",
            escape(", ".join(usage.jobs)) or "-",
            when(usage.last_seen, short=True),
        )
    console.print(nodes)
    console.print(f"slots: {snap.total_slots} total, {snap.free_slots} free", highlight=False)
    if not snap.queue:
        console.print("queue: empty", style="dim")
        return
    queue = Table(show_edge=False, header_style="bold", title="queue", title_justify="left")
    for column in ("JOB ID", "ATTEMPT", "GPUS", "NODES", "PRIORITY"):
        queue.add_column(column)
    for req in snap.queue:
        gpus = f"{req.gpu_count} x {req.gpu_type}" if req.gpu_type else str(req.gpu_count)
        queue.add_row(escape(req.job_id), str(req.attempt), gpus, str(req.nodes), str(req.priority))
    console.print(queue)
