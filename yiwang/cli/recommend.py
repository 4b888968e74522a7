"""CLI commands: recommend."""

import typer


def register(app: typer.Typer) -> None:
    pass
