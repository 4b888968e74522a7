"""CLI commands: profiles."""

import typer


def register(app: typer.Typer) -> None:
    pass
