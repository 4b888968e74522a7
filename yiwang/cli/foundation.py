"""CLI commands: foundation."""

import typer


def register(app: typer.Typer) -> None:
    pass
