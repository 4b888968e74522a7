"""CLI commands of the recommender.

- ``yiwang train [--as-of D]``: fit the implicit model and the ranker, save a model version, promote it;
- ``yiwang recommend [--as-of D]``: publish a new feed version for every subject with the promoted model;
- ``yiwang feed SUBJECT_ID [--json]``: the subject's served feed with reasons;
- ``yiwang models`` lists model versions, ``yiwang models promote VERSION`` serves one;
- ``yiwang feeds`` lists feed versions, ``yiwang feeds rollback`` serves the previous one again.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Optional

import typer
from rich.table import Table

from yiwang.cli.context import AS_OF_HELP, app_context, console, parse_as_of, print_summary, stage_progress


def _rows(title: str, rows: list[dict], as_json: bool, empty: str) -> None:
    if as_json:
        console.print_json(json.dumps(rows, ensure_ascii=False, default=str))
        return
    if not rows:
        console.print(empty)
        return
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(str(col))
    for r in rows:
        table.add_row(*[str(v) for v in r.values()])
    console.print(table)


models_app = typer.Typer(help="Trained model versions: list them (default) or `promote VERSION`.",
                         invoke_without_command=True)
feeds_app = typer.Typer(help="Published feed versions: list them (default) or `rollback` to the previous one.",
                        invoke_without_command=True)


@models_app.callback()
def models_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List model versions on disk, newest first, with headline metrics; the promoted one is marked."""
    if ctx.invoked_subcommand is not None:
        return
    from recommender.training import list_models

    c = app_context(ctx)
    _rows("models", list_models(c.settings, c.ingested_db), as_json, "no model trained yet: run `yiwang train`")


@models_app.command("promote")
def models_promote(ctx: typer.Context, version: str = typer.Argument(..., help="A version from `yiwang models`.")) -> None:
    """Serve VERSION from the next `yiwang recommend` on."""
    from recommender.training import promote

    c = app_context(ctx)
    promote(c.settings, c.ingested_db, version)
    console.print(f"promoted model {version}")


@feeds_app.callback()
def feeds_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """List the kept feed versions, newest first; status 'published' is the one served."""
    if ctx.invoked_subcommand is not None:
        return
    from recommender.feeds import list_versions

    c = app_context(ctx)
    _rows("feed versions", list_versions(c.ingested_db), as_json, "no feed published yet: run `yiwang recommend`")


@feeds_app.command("rollback")
def feeds_rollback(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Serve the previous kept feed version again (atomically); the current one is retired."""
    from recommender.feeds import rollback

    c = app_context(ctx)
    print_summary("feed rollback", rollback(c.ingested_db), as_json)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        ctx: typer.Context,
        as_of: Optional[str] = typer.Option(None, "--as-of", help=AS_OF_HELP),
        no_promote: bool = typer.Option(False, "--no-promote", help="Save the version but keep serving the current one."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Train the implicit model and the LambdaRank ranker on a time-ordered split; save and promote a version."""
        c = app_context(ctx)
        db = c.ingested_db
        with stage_progress("train", as_json) as tick:
            from yiwang.stages import TRAIN
            s = TRAIN(c.settings, db, parse_as_of(as_of), progress=tick, promote_version=not no_promote)
        data = asdict(s)
        if not as_json:
            data["metrics"] = {k: v for k, v in s.metrics.items() if k != "feature_gain"}
        print_summary("train", data, as_json)

    @app.command("recommend")
    def recommend_cmd(
        ctx: typer.Context,
        as_of: Optional[str] = typer.Option(None, "--as-of", help=AS_OF_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Score, filter and rank every subject's feed with the promoted model and publish it as a new version."""
        c = app_context(ctx)
        db = c.ingested_db
        with stage_progress("recommend", as_json) as tick:
            from yiwang.stages import RECOMMEND
            s = RECOMMEND(c.settings, db, parse_as_of(as_of), progress=tick)
        print_summary("recommend", asdict(s), as_json)

    @app.command("feed")
    def feed_cmd(
        ctx: typer.Context,
        subject_id: str = typer.Argument(..., help="A person (P...) or enterprise (E...) id."),
        limit: Optional[int] = typer.Option(None, "--limit", min=1, max=200, help="At most this many items."),
        as_json: bool = typer.Option(False, "--json", help="Print the feed as JSON."),
    ) -> None:
        """Show a subject's served 个性推荐 feed with reasons (honours the personalisation switch and dismissals)."""
        from recommender.feeds import read_feed

        c = app_context(ctx)
        feed = read_feed(c.ingested_db, c.settings, subject_id, limit)
        if as_json:
            console.print_json(json.dumps(feed.to_dict(), ensure_ascii=False))
            return
        kind = "personalised" if feed.personalised else "not personalised"
        table = Table(title=f"{subject_id}: feed v{feed.version} ({kind}), model {feed.model_version}, as of {feed.as_of}",
                      caption=feed.notice_zh)
        for col in ("rank", "item", "name", "score", "reasons"):
            table.add_column(col)
        for it in feed.items:
            table.add_row(str(it.rank), it.item_id, it.name, f"{it.score:.3f}", "\n".join(r["zh"] for r in it.reasons))
        console.print(table)

    app.add_typer(models_app, name="models")
    app.add_typer(feeds_app, name="feeds")
