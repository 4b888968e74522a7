"""CLI commands: synth (write a synthetic city's export and ground truth)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from yiwang.cli.context import AS_OF_HELP, app_context, console, parse_as_of, progress


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth_cmd(
        ctx: typer.Context,
        out: Path = typer.Option(..., "--out", help="Directory to write; gets export/ (the data contract) and truth/."),
        people: int = typer.Option(20_000, "--people", help="Number of persons."),
        enterprises: int = typer.Option(2_000, "--enterprises", help="Number of enterprises."),
        seed: int = typer.Option(7, "--seed", help="Random seed: the same arguments give byte-identical files."),
        as_of: Optional[str] = typer.Option(None, "--as-of", help=AS_OF_HELP),
        fmt: str = typer.Option("csv", "--format", help="File format of the export: csv or parquet."),
        events_per_person: Optional[float] = typer.Option(
            None, "--events-per-person",
            help="Mean events per subject (people and enterprises); default ~27, i.e. ~30M for 1M + 100k.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Generate a synthetic Shanghai-like city: registries, licences, two years of interactions, and
        the ground truth (kept in OUT/truth, which the pipeline never reads)."""
        from data.synth import generate_city

        app_ctx = app_context(ctx)
        day = parse_as_of(as_of)
        with progress() as bar:
            summary = generate_city(
                out, people, enterprises, seed, day, fmt=fmt, progress=bar,
                events_per_person=events_per_person, data_dir=app_ctx.settings.data_dir,
            )
        if as_json:
            console.print_json(json.dumps(summary.as_dict(), ensure_ascii=False))
            return
        table = Table(title=f"synthetic city in {summary.out_dir} (as of {summary.as_of}, seed {summary.seed})")
        table.add_column("what")
        table.add_column("count", justify="right")
        for label, value in (
            ("people", summary.people), ("households", summary.households), ("enterprises", summary.enterprises),
            ("licences", summary.licenses), ("events", summary.events), ("true life events", summary.life_events),
        ):
            table.add_row(label, f"{value:,}")
        console.print(table)
        console.print(f"written in {summary.seconds:.1f} s ({summary.format})")
        if summary.skipped_license_types:
            console.print("licence types nobody holds in this city: " + ", ".join(summary.skipped_license_types))
