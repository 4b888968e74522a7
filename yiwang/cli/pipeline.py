"""CLI commands: run (the nightly pipeline) and demo (the whole story on a synthetic city)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from yiwang.cli.context import AS_OF_HELP, app_context, console, err_console, parse_as_of, progress
from data.errors import StateError
from yiwang.pipeline import RunSummary, StageResult, run_nightly


def _stage_line(result: StageResult) -> None:
    colour = {"ok": "green", "skipped": "yellow", "failed": "red"}[result.status]
    err_console.print(f"[{colour}]{result.stage:<10}[/] {result.status:<8} {result.seconds:7.1f}s")


def _summary_table(summary: RunSummary) -> Table:
    table = Table(title=f"yiwang run, as of {summary.as_of}")
    for col in ("stage", "status", "seconds", "summary"):
        table.add_column(col)
    for s in summary.stages:
        table.add_row(s.stage, s.status, f"{s.seconds:.1f}", s.error or _counts(s.summary))
    return table


def _counts(summary: dict) -> str:
    """The stage's counts (ids, paths, timings and nested detail stay in --json)."""
    shown = [
        f"{k}={v:,}"
        for k, v in summary.items()
        if isinstance(v, int) and not isinstance(v, bool) and not k.endswith(("_id", "seconds", "version"))
    ]
    return ", ".join(shown[:6]) or summary.get("reason", "")


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        ctx: typer.Context,
        as_of: Optional[str] = typer.Option(None, "--as-of", help=AS_OF_HELP),
        export: Optional[Path] = typer.Option(None, "--export", help="Ingest this export directory first."),
        train: str = typer.Option("auto", "--train", help="Retrain: auto (weekly), always or never."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Run the nightly stages in order (ingest, profile, tag, train when due, recommend, alerts) and summarise."""
        if train not in ("auto", "always", "never"):
            raise typer.BadParameter("--train must be auto, always or never")
        app_ctx = app_context(ctx)
        day = parse_as_of(as_of)
        # Without an export to ingest first, the run works on what is already in the store.
        db = app_ctx.db if export is not None else app_ctx.ingested_db
        with progress() as bar:
            summary = run_nightly(app_ctx.settings, db, day, export_dir=export, train=train, progress=bar, on_stage=_stage_line)
        if as_json:
            console.print_json(json.dumps(summary.to_dict()))
        else:
            console.print(_summary_table(summary))
        if not summary.ok:
            raise typer.Exit(1)

    @app.command("demo")
    def demo_cmd(
        ctx: typer.Context,
        people: int = typer.Option(20_000, help="Persons in the synthetic city."),
        enterprises: int = typer.Option(2_000, help="Enterprises in the synthetic city."),
        seed: int = typer.Option(7, help="Random seed of the synthetic city."),
        as_of: Optional[str] = typer.Option(None, "--as-of", help=AS_OF_HELP),
    ) -> None:
        """Synthesise a city, ingest it, run the whole nightly pipeline and print sample feeds and alerts."""
        from yiwang.demo import run_demo

        app_ctx = app_context(ctx)
        day = parse_as_of(as_of)
        with progress() as bar:
            result = run_demo(app_ctx.settings, app_ctx.db, day, people=people, enterprises=enterprises, seed=seed, progress=bar, on_stage=_stage_line)
        console.print(_summary_table(result.run))
        for block in result.samples:
            console.print(block)
        if not result.run.ok:
            raise StateError("the demo pipeline had a failed stage (see the table above)")
