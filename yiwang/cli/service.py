"""CLI commands: service."""

import typer


def register(app: typer.Typer) -> None:
    pass
