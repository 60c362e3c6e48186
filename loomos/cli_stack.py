"""`loomos dev`, `loomos demo`, `loomos api`, `loomos worker control|node`: run the processes."""

import typer

worker_app = typer.Typer(no_args_is_help=True)


def register_stack_commands(app: typer.Typer) -> None:
    pass
