"""Every command and group has help text: a command without it fails this test."""

import click
import typer.main

from yiwang.cli import app


def _walk(cmd: click.Command, path: str):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, f"{path} {name}")


def test_every_command_has_help():
    root = typer.main.get_command(app)
    missing = [path for path, cmd in _walk(root, "yiwang") if not (cmd.help or "").strip()]
    assert missing == []
