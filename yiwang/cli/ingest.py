"""CLI commands: ingest (load an export directory) and quarantine (what was rejected, and why)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.table import Table

from yiwang.cli.context import AS_OF_HELP, app_context, console, err_console, parse_as_of, progress
from data.errors import ContractError


def summary_table(summary) -> Table:
    """One column per table, one row per count: five 10-digit columns fit an 80-column terminal."""
    table = Table(
        title=f"ingest {summary.ingest_id} of {summary.source} (as of {summary.as_of})",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    tables = list(summary.tables.values())
    table.add_column("", no_wrap=True)
    for t in tables:
        table.add_column(t.table, justify="right", no_wrap=True)

    def cells(fmt) -> list[str]:
        return ["[red]rejected[/]" if t.rejected else fmt(t) for t in tables]

    table.add_row("rows in", *cells(lambda t: f"{t.rows_in:,}"))
    table.add_row("inserted", *cells(lambda t: f"{t.inserted:,}"))
    table.add_row("updated", *cells(lambda t: f"{t.updated:,}"))
    table.add_row("unchanged", *cells(lambda t: f"{t.unchanged:,}"))
    table.add_row("quarantined", *cells(lambda t: f"{t.quarantined:,}"))
    table.add_row("rows/s", *cells(lambda t: f"{t.rows_per_s:,.0f}"))
    return table


def reasons_table(summary) -> Table | None:
    rows = [(t.table, r, n) for t in summary.tables.values() for r, n in sorted(t.reasons.items(), key=lambda kv: -kv[1])]
    if not rows:
        return None
    table = Table(title="quarantined rows by reason")
    for col in ("table", "reason", "rows"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for t, r, n in rows:
        table.add_row(t, r, f"{n:,}")
    return table


def register(app: typer.Typer) -> None:
    @app.command("ingest")
    def ingest_cmd(
        ctx: typer.Context,
        export_dir: Path = typer.Argument(..., help="Export directory holding <table>.csv or <table>.parquet files."),
        as_of: Optional[str] = typer.Option(None, "--as-of", help=AS_OF_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
        rekey: bool = typer.Option(
            False, "--rekey",
            help="Make the current ID-hash key (YIWANG_ID_HASH_KEY, else HOME/secrets/id_hash.key, created if "
            "missing) the store's key: every stored resident-ID hash is cleared and those of the people in this "
            "export are recomputed with it. Without it, a key other than the store's is refused.",
        ),
    ) -> None:
        """Validate an export against the data contract and load it; rejected rows go to the quarantine.

        Exit code 2 when a whole file was refused (the other files are still loaded), or when the ID-hash key
        is not the one the store's IDs were hashed with (see --rekey).
        """
        app_ctx = app_context(ctx)
        day = parse_as_of(as_of)
        with progress() as bar:
            from yiwang.stages import INGEST
            summary = INGEST(app_ctx.settings, app_ctx.db, day, progress=bar, export_dir=export_dir, rekey=rekey)
        if summary.rekeyed:
            err_console.print(
                f"re-keyed: resident IDs are now hashed with the key from {app_ctx.settings.hash_key_source()}; "
                "every hash made with the previous key was cleared, and those of the people in this export were "
                "recomputed (people not in it have no ID hash until they are exported again)",
                highlight=False,
            )
        elif rekey:
            err_console.print("--rekey: the key already was the store's key; nothing was re-keyed", highlight=False)
        if as_json:
            console.print_json(json.dumps(summary.to_dict(), ensure_ascii=False))
        else:
            console.print(summary_table(summary))
            if (reasons := reasons_table(summary)) is not None:
                console.print(reasons)
            for t in summary.tables.values():
                if t.note:
                    console.print(f"{t.table}: {t.note}")
            if summary.quarantined:
                console.print(f"{summary.quarantined:,} rows quarantined: see `yiwang quarantine --ingest {summary.ingest_id}`")
        for message in summary.rejected_files:
            err_console.print(f"[bold red]file rejected:[/] {message}", highlight=False, soft_wrap=True)
        if summary.rejected_files:
            # A YiwangError (not typer.Exit) so the shell's handler sets the exit code 2.
            raise ContractError(
                f"{len(summary.rejected_files)} file(s) rejected (see above); the other files were loaded"
            )

    @app.command("quarantine")
    def quarantine_cmd(
        ctx: typer.Context,
        ingest: Optional[int] = typer.Option(None, "--ingest", help="Ingest id (default: the latest)."),
        table: Optional[str] = typer.Option(None, "--table", help="Only this table (people, events, ...)."),
        limit: int = typer.Option(20, "--limit", min=0, help="Sample rows to show."),
        as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
    ) -> None:
        """Show the rows an ingest quarantined: counts per table, reason and field, then sample rows."""
        from data.ingest import read_quarantine

        data = read_quarantine(app_context(ctx).ingested_db, ingest, table, limit)
        if as_json:
            console.print_json(json.dumps(data, ensure_ascii=False))
            return
        counts = Table(title=f"quarantine of ingest {data['ingest_id']} ({data['source']})")
        for col in ("table", "reason", "field", "rows"):
            counts.add_column(col, justify="right" if col == "rows" else "left")
        for c in data["counts"]:
            counts.add_row(c["table"], c["reason"], c["field"] or "-", f"{c['rows']:,}")
        if data["counts"]:
            console.print(counts)
        else:
            console.print(f"ingest {data['ingest_id']} quarantined no rows")
        for r in data["rejected_files"]:
            console.print(f"[red]file rejected[/] ({r['table']}): {r['message']}", highlight=False, soft_wrap=True)
        if data["rows"]:
            rows = Table(title=f"first {len(data['rows'])} rows")
            for col in ("table", "line", "field", "reason", "raw"):
                rows.add_column(col, overflow="fold")
            for r in data["rows"]:
                src = Path(r["source_file"]).name
                rows.add_row(r["table"], f"{src}:{r['line']}" if r["line"] is not None else src, r["field"] or "-", r["reason"], r["raw"] or "")
            console.print(rows)
