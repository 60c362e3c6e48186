"""`loomos`: the command line. Each group lives in its own module; this one only mounts them."""

from __future__ import annotations

import typer

from loomos.cli.events import compliance_app, events_app
from loomos.cli.jobs import cluster_app, jobs_app, register_submit
from loomos.cli.market import market_app
from loomos.cli.serve import register_stack_commands, worker_app

app = typer.Typer(
    name="loomos",
    help="LoomOS: PyTorch DDP training jobs on GPU pools, as durable Temporal workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
register_submit(app)
register_stack_commands(app)
app.add_typer(jobs_app, name="jobs", help="List, inspect, cancel jobs and read their logs.")
app.add_typer(cluster_app, name="cluster", help="Nodes, capacity and queue of a pool.")
app.add_typer(worker_app, name="worker", help="Run a control worker or a node (GPU) worker.")
app.add_typer(events_app, name="events", help="Query, tail and verify LoomDB events.")
app.add_typer(compliance_app, name="compliance", help="Compliance reports from LoomDB.")
app.add_typer(market_app, name="market", help="GPU offers, prices and cost estimates.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
