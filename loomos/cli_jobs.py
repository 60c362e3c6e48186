"""`loomos submit`, `loomos jobs ...`, `loomos cluster ...`: talk to LoomCtl through the SDK."""

import typer

jobs_app = typer.Typer(no_args_is_help=True)
cluster_app = typer.Typer(no_args_is_help=True)


def register_submit(app: typer.Typer) -> None:
    pass
