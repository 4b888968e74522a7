"""CLI commands: profiles and tags.

- ``yiwang profile [--as-of D]``: build and publish every profile; ``yiwang profile-show ID`` prints one.
- ``yiwang tag [--as-of D]``: run the taggers; ``yiwang tag --check`` only validates the rules file.
- ``yiwang tags ID`` (same as ``yiwang tags show ID``): a subject's tags with evidence;
  ``yiwang tags delete ID CODE`` / ``yiwang tags restore ID CODE``: the citizen's controls.
"""

from __future__ import annotations

import json
from typing import Optional

import click
import typer
from rich.table import Table
from typer.core import TyperGroup

from yiwang.cli.context import AS_OF_HELP, app_context, console, parse_as_of, print_summary, stage_progress
from data.errors import NotFound
from yiwang.subjects import subject_known


class _ShowByDefault(TyperGroup):
    """``yiwang tags ID`` means ``yiwang tags show ID``: a first word that is no subcommand is a subject id."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


tags_app = typer.Typer(
    cls=_ShowByDefault,
    help="A subject's tags: `yiwang tags ID` lists them; `tags delete ID CODE` / `tags restore ID CODE` control them.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    @app.command("profile")
    def profile_cmd(
        ctx: typer.Context,
        as_of: Optional[str] = typer.Option(None, "--as-of", help=AS_OF_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
        tag: bool = typer.Option(
            False, "--tag", help="Also tag everyone in the same pass (as `yiwang tag` would), reading the profiles from memory."
        ),
    ) -> None:
        """Build every person's and enterprise's profile (一人一档/一企一档) and publish them atomically."""
        c = app_context(ctx)
        day = parse_as_of(as_of)
        db = c.ingested_db
        if not tag:
            with stage_progress("profile", as_json) as tick:
                from yiwang.stages import PROFILE
                summary = PROFILE(c.settings, db, day, progress=tick)
            print_summary("profiles", summary.as_dict(), as_json)
            return
        with stage_progress("profile and tag", as_json) as tick:
            from yiwang.stages import PROFILE_TAG
            profiles, tags = PROFILE_TAG(c.settings, db, day, progress=tick)
        if as_json:
            print_summary("profiles and tags", {"profiles": profiles.as_dict(), "tags": tags.as_dict()}, True)
            return
        print_summary("profiles", profiles.as_dict(), False)
        print_summary("tags", tags.as_dict(), False)

    @app.command("profile-show")
    def profile_show_cmd(
        ctx: typer.Context,
        subject_id: str = typer.Argument(..., help="Person or enterprise id."),
        sensitive: bool = typer.Option(False, "--sensitive", help="Include sensitive fields (profile scope)."),
        as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON."),
    ) -> None:
        """Show one subject's published profile."""
        from profiler import read_profile

        profile = read_profile(app_context(ctx).ingested_db, subject_id, include_sensitive=sensitive)
        if profile is None:
            raise NotFound(f"no profile for subject {subject_id!r} (run `yiwang profile` after ingest)")
        if as_json:
            console.print_json(json.dumps(profile, ensure_ascii=False, default=str))
            return
        table = Table(title=f"profile {subject_id}", show_header=False)
        for key, value in profile.items():
            table.add_row(key, json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (list, dict)) else str(value))
        console.print(table)

    @app.command("tag")
    def tag_cmd(
        ctx: typer.Context,
        as_of: Optional[str] = typer.Option(None, "--as-of", help=AS_OF_HELP),
        check: bool = typer.Option(False, "--check", help="Only validate the rules file; tag no one."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Run the rule and learned taggers over the published profiles and replace the tags in one transaction."""
        from taggers import check_rules, rules_path

        c = app_context(ctx)
        if check:
            rs = check_rules(c.settings)
            print_summary("rules file", {"file": str(rules_path(c.settings)), "rules": len(rs.rules), "ok": True}, as_json)
            return
        day = parse_as_of(as_of)
        db = c.ingested_db
        with stage_progress("tag", as_json) as tick:
            from yiwang.stages import TAG
            summary = TAG(c.settings, db, day, progress=tick)
        print_summary("tags", summary.as_dict(), as_json)

    @tags_app.command("show")
    def tags_show_cmd(
        ctx: typer.Context,
        subject_id: str = typer.Argument(..., help="Person or enterprise id."),
        sensitive: bool = typer.Option(False, "--sensitive", help="Include sensitive tags (profile scope)."),
        as_json: bool = typer.Option(False, "--json", help="Print the tags as JSON."),
    ) -> None:
        """List a subject's tags in force with their evidence, and the tags the subject deleted."""
        from taggers.store import list_suppressed, list_tags

        c = app_context(ctx)
        db = c.ingested_db
        tags = list_tags(db, subject_id, include_sensitive=sensitive)
        deleted = list_suppressed(db, subject_id)
        if not tags and not deleted and not subject_known(c.settings, db, subject_id):
            raise NotFound(f"subject {subject_id!r} is in no registry, profile or event of this store")
        if as_json:
            console.print_json(json.dumps({"subject_id": subject_id, "tags": tags, "deleted": deleted}, ensure_ascii=False))
            return
        table = Table(title=f"tags of {subject_id}")
        for col in ("code", "confidence", "evidence", "valid", "source"):
            table.add_column(col)
        for t in tags:
            valid = f"{t['valid_from']} .. {t['valid_until'] or ''}"
            mark = " (sensitive)" if t["sensitive"] else ""
            table.add_row(t["code"] + mark, f"{t['confidence']:.2f}", f"{t['evidence_zh']} / {t['evidence_en']}", valid, t["source"])
        console.print(table)
        if deleted:
            console.print("deleted by the subject: " + ", ".join(d["code"] for d in deleted))

    @tags_app.command("delete")
    def tags_delete_cmd(
        ctx: typer.Context,
        subject_id: str = typer.Argument(..., help="Person or enterprise id."),
        code: str = typer.Argument(..., help="Tag code, e.g. life_event.marriage."),
    ) -> None:
        """Delete a tag for a subject; no later batch brings it back until it is restored."""
        from taggers.store import delete_tag

        delete_tag(app_context(ctx).ingested_db, subject_id, code)
        console.print(f"deleted {code} for {subject_id}; it stays off until `yiwang tags restore {subject_id} {code}`")

    @tags_app.command("restore")
    def tags_restore_cmd(
        ctx: typer.Context,
        subject_id: str = typer.Argument(..., help="Person or enterprise id."),
        code: str = typer.Argument(..., help="Tag code, e.g. life_event.marriage."),
    ) -> None:
        """Lift a deletion; the tag returns with the next `yiwang tag` run if its facts still hold."""
        from taggers.store import restore_tag

        restore_tag(app_context(ctx).ingested_db, subject_id, code)
        console.print(f"restored {code} for {subject_id}; it returns with the next `yiwang tag` run")

    app.add_typer(tags_app, name="tags")
