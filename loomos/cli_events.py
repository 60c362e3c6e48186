"""`loomos events ...` and `loomos compliance ...` (LoomDB)."""

import typer

events_app = typer.Typer(no_args_is_help=True)
compliance_app = typer.Typer(no_args_is_help=True)
