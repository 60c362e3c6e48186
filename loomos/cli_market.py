"""`loomos market ...` (GPU offers, estimates, refresh)."""

import typer

market_app = typer.Typer(no_args_is_help=True)
