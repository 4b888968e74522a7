"""CLI commands of the notifier.

- ``yiwang rules check FILE``: validate a reminder-rules file (errors name file, line and rule);
- ``yiwang rules show``: the rules in force (the store home's rules file) and where they came from;
- ``yiwang rules install FILE``: validate FILE and make it the rules in force (what PUT /v1/rules does);
- ``yiwang rules dry-run RULE_ID --as-of D [--file DRAFT]``: how many subjects a rule would alert, and a sample;
  writes and sends nothing;
- ``yiwang alerts --as-of D``: evaluate the rules in force into the outbox (exactly once per alert);
- ``yiwang deliver``: release due alerts to their channels and send due webhooks;
- ``yiwang schedule``: run the scheduler in the foreground, logging each job;
- ``yiwang jobs``: scheduled jobs and their next run times.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from yiwang.cli.context import AS_OF_HELP, app_context, console, err_console, parse_as_of
from data.errors import RulesError

rules_app = typer.Typer(help="Reminder rules (提醒规则): validate a file, preview a rule.", no_args_is_help=True)


def _print(title: str, data: dict, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(data, ensure_ascii=False, default=str))
        return
    table = Table(title=title, show_header=False)
    for k, v in data.items():
        if isinstance(v, (list, dict)):
            continue
        table.add_row(str(k), str(v))
    console.print(table)


def _table(title: str, rows: list[dict]) -> None:
    if not rows:
        return
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(str(col))
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r.values()])
    console.print(table)


@rules_app.command("check")
def rules_check(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="The rules file to validate (YAML)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rules as JSON."),
) -> None:
    """Validate a reminder-rules file against the catalogue, licence types and tag taxonomy; exit 2 on error."""
    from notifier.rules import PRIORITIES, check_file, rule_to_dict

    c = app_context(ctx)
    rules = check_file(file, c.settings.data_dir)
    if as_json:
        console.print_json(json.dumps([rule_to_dict(r) for r in rules], ensure_ascii=False))
        return
    names = {v: k for k, v in PRIORITIES.items()}
    _table(f"{file}: {len(rules)} rules OK", [
        {"id": r.id, "version": r.version, "kind": r.kind, "audience": r.audience.subject_type,
         "statutory": r.statutory, "enabled": r.enabled, "priority": names[r.priority],
         "channels": ",".join(r.channels), "line": r.line}
        for r in rules
    ])


def _rules_summary(c, ruleset) -> dict:
    from notifier.rules import in_force_path, seed_path

    home_file = in_force_path(c.settings)
    return {"file": str(home_file) if home_file.exists() else f"{seed_path(c.settings)} (seed: the home has no rules file yet)",
            "source": ruleset.source, "sha256": ruleset.sha256, "in_force_since": ruleset.updated_at,
            "rules": len(ruleset.rules), "warning": ruleset.warning}


@rules_app.command("show")
def rules_show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the rules as JSON."),
) -> None:
    """The reminder rules in force: the store home's rules file, or the last rules in force if it is broken."""
    from notifier.rules import rule_to_dict, rules_in_force

    c = app_context(ctx)
    ruleset = rules_in_force(c.settings, c.db)
    data = _rules_summary(c, ruleset)
    if as_json:
        console.print_json(json.dumps({**data, "rules": [rule_to_dict(r) for r in ruleset.rules]}, ensure_ascii=False))
        return
    if ruleset.warning:
        err_console.print(f"[yellow]warning:[/] rules file not in force: {ruleset.warning}", highlight=False)
    _print("rules in force", data, False)
    _table("rules", [{"id": r.id, "version": r.version, "kind": r.kind, "enabled": r.enabled} for r in ruleset.rules])


@rules_app.command("install")
def rules_install(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="The rules file to put in force (YAML)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Validate FILE and make it the rules in force (copied into the store home); exit 2 and change nothing on error."""
    from notifier.rules import install_rules

    c = app_context(ctx)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"{file}: no such rules file") from None
    except UnicodeDecodeError as exc:
        raise RulesError(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    ruleset = install_rules(c.settings, c.db, text, source=str(file), by="cli")
    _print("rules installed", _rules_summary(c, ruleset), as_json)


@rules_app.command("dry-run")
def rules_dry_run(
    ctx: typer.Context,
    rule_id: str = typer.Argument(..., help="The rule to preview."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help=AS_OF_HELP),
    sample: int = typer.Option(5, "--sample", min=0, help="How many example alerts to show."),
    rules_file: Optional[Path] = typer.Option(
        None, "--file", help="Take the rule from this draft file (only read) instead of the rules in force."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Show how many subjects RULE_ID would alert on a date, with a sample; writes and sends nothing."""
    from notifier.engine import dry_run

    c = app_context(ctx)
    result = dry_run(c.settings, c.ingested_db, rule_id, parse_as_of(as_of), sample=sample, rules_file=rules_file)
    data = asdict(result)
    _print(f"dry run of {rule_id}", data, as_json)
    if not as_json:
        _table("sample", [{k: v for k, v in r.items() if k != "message_en"} for r in result.sample])


def register(app: typer.Typer) -> None:
    app.add_typer(rules_app, name="rules")

    @app.command("alerts")
    def alerts_cmd(
        ctx: typer.Context,
        as_of: Optional[str] = typer.Option(None, "--as-of", help=AS_OF_HELP),
        rule: Optional[List[str]] = typer.Option(None, "--rule", help="Evaluate only this rule (repeatable)."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Evaluate the reminder rules in force into the outbox; each alert is created once, stale ones cancelled."""
        c = app_context(ctx)
        from yiwang.stages import ALERTS
        s = ALERTS(c.settings, c.ingested_db, parse_as_of(as_of), rule_ids=rule or None)
        if s.rules_warning:
            from notifier.rules import in_force_path

            err_console.print(f"[yellow]warning:[/] {in_force_path(c.settings)} is not in force, using"
                              f" {s.rules_source}: {s.rules_warning}", highlight=False)
        _print("alerts", asdict(s), as_json)
        if not as_json:
            _table("per rule", [asdict(r) for r in s.per_rule])

    @app.command("deliver")
    def deliver_cmd(
        ctx: typer.Context,
        now: Optional[str] = typer.Option(None, "--now", help="Act as if it were this time (ISO-8601; default: now)."),
        max_sends: Optional[int] = typer.Option(None, "--max-sends", min=1, help="Stop after this many webhook sends."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Release due alerts (preferences, daily cap) to in-app and webhook; send webhooks with retries."""
        c = app_context(ctx)
        when = None
        if now is not None:
            try:
                when = datetime.fromisoformat(now)
            except ValueError:
                raise typer.BadParameter(f"--now {now!r} is not an ISO-8601 time") from None
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
        from yiwang.stages import DELIVER
        _print("deliver", asdict(DELIVER(c.settings, c.ingested_db, when, max_sends=max_sends)), as_json)

    @app.command("schedule")
    def schedule_cmd(ctx: typer.Context) -> None:
        """Run the scheduler in the foreground (jobs persist in the store); Ctrl-C or SIGTERM stops it."""
        from yiwang.scheduler import list_jobs, start

        c = app_context(ctx)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        scheduler = start(c.settings)
        for j in list_jobs(c.settings):
            logging.getLogger("yiwang.scheduler").info("job %s [%s] next run %s", j.job_id, j.schedule, j.next_run)
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            scheduler.shutdown(wait=True)
            logging.getLogger("yiwang.scheduler").info("scheduler stopped")

    @app.command("jobs")
    def jobs_cmd(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print the jobs as JSON."),
    ) -> None:
        """List the scheduled jobs: schedule, next run time (Asia/Shanghai) and last run."""
        from yiwang.scheduler import list_jobs

        c = app_context(ctx)
        rows = [asdict(j) for j in list_jobs(c.settings)]
        if as_json:
            console.print_json(json.dumps(rows, ensure_ascii=False))
        else:
            _table("jobs", rows)
