"""`loomos`: the command line. One module per command group; this one only lists them.

Groups are loaded when they are run, not when `loomos` starts: `loomos --help` and shell
completion of the top level never import the SDK, Temporal, SQL or torch. Each entry below
names the Typer app that implements it and the line of help the top level shows for it.
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import typer
from typer.core import TyperGroup


class Entry(NamedTuple):
    target: str  # module:attribute of its Typer app
    help: str  # the line the top level shows
    group: bool = True  # a group of subcommands (`loomos jobs list`), or one command (`loomos dev`)


# In the order `loomos --help` lists them.
COMMANDS: dict[str, Entry] = {
    "submit": Entry(
        "loomos.cli.jobs:submit_app", "Submit a job spec (YAML or JSON) to LoomCtl.", group=False
    ),
    "jobs": Entry("loomos.cli.jobs:jobs_app", "List, inspect, cancel jobs and read their logs."),
    "cluster": Entry("loomos.cli.cluster:cluster_app", "Nodes, capacity and queue of a pool."),
    "events": Entry("loomos.cli.events:events_app", "Query, tail and verify LoomDB events."),
    "compliance": Entry("loomos.cli.compliance:compliance_app", "Compliance reports from LoomDB."),
    "market": Entry("loomos.cli.market:market_app", "GPU offers, prices and cost estimates."),
    "login": Entry(
        "loomos.cli.auth:login_app", "Log in to LoomCtl (OIDC, or --username for a password).", group=False
    ),
    "logout": Entry("loomos.cli.auth:logout_app", "End the stored session and forget it.", group=False),
    "whoami": Entry("loomos.cli.auth:whoami_app", "Who the current credentials belong to.", group=False),
    "tokens": Entry("loomos.cli.auth:tokens_app", "Create, list and revoke your API tokens."),
    "roles": Entry("loomos.cli.admin:roles_app", "Roles: their permissions and limits."),
    "grants": Entry("loomos.cli.admin:grants_app", "Grant and revoke roles per team."),
    "users": Entry("loomos.cli.admin:users_app", "Users and their role grants."),
    "config": Entry("loomos.cli.config:config_app", "Show the effective settings and where they come from."),
    "keys": Entry("loomos.cli.keys:keys_app", "List and rotate the encryption keyring (never key material)."),
    "dev": Entry(
        "loomos.cli.dev:dev_app",
        "Run the embedded stack until Ctrl-C: Temporal, workers, LoomCtl.",
        group=False,
    ),
    "demo": Entry(
        "loomos.cli.demo:demo_app",
        "Run a DDP job end to end on an ephemeral stack (crash included).",
        group=False,
    ),
    "api": Entry("loomos.cli.serve:api_app", "Serve LoomCtl, the REST API (OpenAPI at /docs).", group=False),
    "worker": Entry("loomos.cli.workers:worker_app", "Run a control worker or a node (GPU) worker."),
}


class _LazyCommand(typer.core.TyperCommand):
    """Stands in for a command group in the top level's listing; the real one is imported only
    when this command runs (its context is the real command's)."""

    def __init__(self, name: str, entry: Entry) -> None:
        super().__init__(name=name, help=entry.help, short_help=entry.help, callback=None)
        self.entry = entry

    def load(self) -> Any:
        module, _, attribute = self.entry.target.partition(":")
        typer_app = getattr(importlib.import_module(module), attribute)
        command = typer.main.get_group(typer_app) if self.entry.group else typer.main.get_command(typer_app)
        command.name = self.name
        command.help = command.help or self.help
        return command

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        return self.load().make_context(info_name, args, parent=parent, **extra)


class _LazyGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, entry in COMMANDS.items():
            self.add_command(_LazyCommand(name, entry), name)


app = typer.Typer(
    name="loomos",
    cls=_LazyGroup,
    help="LoomOS: PyTorch DDP training jobs on GPU pools, as durable Temporal workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _top_level() -> None:
    """LoomOS: PyTorch DDP training jobs on GPU pools, as durable Temporal workflows."""


def main() -> None:
    from loomos.cli.errors import reported_errors

    # Errors a command did not report itself (a package of an extra missing, say) still get
    # the one-line treatment.
    try:
        with reported_errors():
            app()
    except typer.Exit as done:  # raised by reported_errors itself, outside Typer's own handling
        raise SystemExit(done.exit_code) from None
