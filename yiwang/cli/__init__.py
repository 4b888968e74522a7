"""The one ``yiwang`` command. Thin: each command parses, calls one library function, formats.

Errors from the library (:class:`data.errors.YiwangError`) become a one-line message and an exit code
here, at the edge, and nowhere else. Exit codes: 0 ok, 1 unexpected failure, 2 bad input or config,
3 not found, 4 not allowed, 5 wrong state (e.g. nothing ingested in HOME yet, or the port `serve` is asked for
is in use).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from data.errors import YiwangError
from yiwang.cli import alerts, evaluate, ingest, pipeline, profiles, recommend, service, synth
from yiwang.cli.context import AppContext, err_console

app = typer.Typer(
    name="yiwang",
    help="Profiles, tags, 个性推荐 feeds and proactive alerts for a one-network government-services portal.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    home: Optional[Path] = typer.Option(
        None, "--home", help="Store directory (default: $YIWANG_HOME, else ./.yiwang).", show_default=False
    ),
) -> None:
    """yiwang: the profiling and proactive-recommendation engine."""
    ctx.obj = AppContext(home=home)


# Each area module exposes register(app); an area owns its commands, the shell only lists them.
for _commands in (synth, ingest, profiles, recommend, evaluate, alerts, service, pipeline):
    _commands.register(app)


def main() -> None:
    try:
        # Without standalone mode click returns a command's typer.Exit code instead of exiting.
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except YiwangError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:
        # Usage errors (missing argument, bad option value): typer >= 0.2x vendors its own click.
        usage_errors = tuple(_click_exception_classes())
        if isinstance(exc, usage_errors):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def _click_exception_classes():
    import click

    yield click.ClickException
    try:
        from typer._click.exceptions import ClickException as VendoredClickException
    except ImportError:  # older typer uses the real click
        return
    yield VendoredClickException
