"""Which reminder rules are in force (issue 10, item 3): a dry run of a draft changes nothing, a broken rules file
falls back only to rules that were really in force, and alerts of a rule no longer in force never go out.

The commands run in-process through the `yiwang` entry point, as an operator types them.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from notifier.outbox import stored_alerts, stored_deliveries
from notifier.rules import install_rules, list_snapshots
from testsupport.registries import put_rows
from data.settings import load_settings
from yiwang.migrations import open_db
from testsupport.cli import run_in_process as _cli

REPO_DATA = Path(__file__).resolve().parent.parent / "data"
AS_OF = "2026-03-02"
NOON = "2026-03-02T04:00:00+00:00"  # 12:00 in Shanghai, outside quiet hours

# A rule the operator was still drafting: every person, in a window that contains AS_OF.
DRAFT_RULE = """
  - id: newlywed_greeting
    version: 1
    kind: calendar
    window: {start: "01-01", end: "12-31"}
    audience: {subject_type: person}
    message:
      zh: "新婚快乐！{year}年新婚家庭可办理以下事项。"
      en: "Congratulations! Services for newly-weds in {year}."
    channels: [in_app]
    priority: normal
    statutory: false
"""
PEOPLE = [f"P{i:03d}" for i in range(1, 8)]


@pytest.fixture
def city(tmp_path, monkeypatch):
    """A home with seven residents; the operator's rules file is the shipped one, the draft adds one rule."""
    monkeypatch.setenv("YIWANG_ID_HASH_KEY", "test-key")
    monkeypatch.delenv("YIWANG_REMINDER_RULES_FILE", raising=False)
    home = tmp_path / "home"
    settings = load_settings(home=home)
    db = open_db(settings.db_path)
    put_rows(settings, db, "people", [{"person_id": p, "birth_date": date(1990, 5, 1)} for p in PEOPLE])
    db.conn.close()
    real = tmp_path / "reminder_rules.yaml"
    shipped = (REPO_DATA / "reminder_rules.yaml").read_text(encoding="utf-8")
    real.write_text(shipped, encoding="utf-8")
    draft = tmp_path / "draft.yaml"
    draft.write_text(shipped.rstrip("\n") + "\n" + DRAFT_RULE, encoding="utf-8")
    return home, real, draft, shipped


def _outbox(home: Path, rule_id: str) -> list[tuple]:
    db = open_db(home / "yiwang.db")
    try:
        return stored_alerts(db.conn).filter(pl.col("rule_id") == rule_id).select("status", "released_on").rows()
    finally:
        db.conn.close()


def _count(home: Path, table: str) -> int:
    db = open_db(home / "yiwang.db")
    try:
        return len(list_snapshots(db)) if table == "rule_snapshots" else stored_alerts(db.conn).height
    finally:
        db.conn.close()


def test_reported_sequence_a_previewed_draft_never_goes_out(city, monkeypatch, capsys):
    """dry-run of a draft, break the real file, alerts, restore, alerts, deliver: nothing of the draft goes out."""
    home, real, draft, shipped = city
    # The operator previews the draft rule the way the notifier reads a rules file: through the setting.
    monkeypatch.setenv("YIWANG_REMINDER_RULES_FILE", str(draft))
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "rules", "dry-run", "newlywed_greeting",
                          "--as-of", AS_OF, "--json")
    assert code == 0, err
    assert '"subjects": 7' in out
    # A dry run writes nothing: no rules on record, no alerts, no rules copied into the home.
    assert _count(home, "rule_snapshots") == 0 and _count(home, "outbox") == 0
    assert not (home / "rules").exists()

    # The real rules file is broken; the evaluation must not fall back to the previewed draft.
    monkeypatch.setenv("YIWANG_REMINDER_RULES_FILE", str(real))
    real.write_text(shipped.replace("kind: calendar", "kind: calender"), encoding="utf-8")
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "alerts", "--as-of", AS_OF, "--json")
    assert code == 2, out
    assert "unknown kind 'calender'" in " ".join(err.split()) and "no earlier good rules" in " ".join(err.split())
    assert _outbox(home, "newlywed_greeting") == []

    # Restored: the real rules are in force, the draft's rule is not.
    real.write_text(shipped, encoding="utf-8")
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "alerts", "--as-of", AS_OF, "--json")
    assert code == 0, err
    assert _outbox(home, "newlywed_greeting") == []
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "deliver", "--now", NOON, "--json")
    assert code == 0, err
    assert _outbox(home, "newlywed_greeting") == []


def test_a_broken_file_falls_back_to_the_last_rules_in_force_not_a_previewed_draft(city, monkeypatch, capsys):
    """Rules in force, a draft previewed from its own file, the rules file in force broken by hand: evaluation
    keeps the rules last in force and says so; nothing of the draft is created."""
    home, real, draft, shipped = city
    monkeypatch.setenv("YIWANG_REMINDER_RULES_FILE", str(real))
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "alerts", "--as-of", AS_OF)
    assert code == 0, err
    in_force = home / "rules" / "reminder_rules.yaml"
    assert in_force.read_text(encoding="utf-8") == shipped
    snapshots = _count(home, "rule_snapshots")
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "rules", "dry-run", "newlywed_greeting",
                          "--file", str(draft), "--as-of", AS_OF, "--json")
    assert code == 0, err
    assert '"subjects": 7' in out
    assert _count(home, "rule_snapshots") == snapshots and _outbox(home, "newlywed_greeting") == []
    # The draft is not in force: a dry run of its rule against the rules in force does not find it.
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "rules", "dry-run", "newlywed_greeting")
    assert code == 3 and "no reminder rule 'newlywed_greeting'" in err

    in_force.write_text("rules: [", encoding="utf-8")
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "alerts", "--as-of", AS_OF, "--json")
    assert code == 0, err
    assert "not valid YAML" in err and _outbox(home, "newlywed_greeting") == []
    in_force.write_text(shipped, encoding="utf-8")
    assert _cli(monkeypatch, capsys, "--home", str(home), "alerts", "--as-of", AS_OF)[0] == 0
    assert _cli(monkeypatch, capsys, "--home", str(home), "deliver", "--now", NOON)[0] == 0
    assert _outbox(home, "newlywed_greeting") == []


def _pending_draft_alerts(home: Path, draft: Path, real: Path) -> None:
    """The state the defect left behind: the draft's rule was in force for one evaluation and left seven
    pending alerts; then the real rules were put back."""
    settings = load_settings(home=home, reminder_rules_file=real)
    db = open_db(settings.db_path)
    try:
        install_rules(settings, db, draft.read_text(encoding="utf-8"))
    finally:
        db.conn.close()


def test_alerts_of_a_rule_no_longer_in_force_are_cancelled_at_evaluation(city, monkeypatch, capsys):
    home, real, draft, shipped = city
    monkeypatch.setenv("YIWANG_REMINDER_RULES_FILE", str(real))
    _pending_draft_alerts(home, draft, real)
    assert _cli(monkeypatch, capsys, "--home", str(home), "alerts", "--as-of", AS_OF)[0] == 0
    assert [s for s, _ in _outbox(home, "newlywed_greeting")] == ["pending"] * 7
    settings = load_settings(home=home)
    db = open_db(settings.db_path)
    install_rules(settings, db, shipped)
    db.conn.close()
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "alerts", "--as-of", AS_OF)
    assert code == 0, err
    assert _outbox(home, "newlywed_greeting") == [("cancelled", None)] * 7
    assert _cli(monkeypatch, capsys, "--home", str(home), "deliver", "--now", NOON)[0] == 0
    assert _outbox(home, "newlywed_greeting") == [("cancelled", None)] * 7


def test_deliver_never_releases_an_alert_of_a_rule_not_in_force(city, monkeypatch, capsys):
    """The check holds at delivery too: rules replaced after the evaluation, deliver runs before the next one."""
    home, real, draft, shipped = city
    monkeypatch.setenv("YIWANG_REMINDER_RULES_FILE", str(real))
    _pending_draft_alerts(home, draft, real)
    assert _cli(monkeypatch, capsys, "--home", str(home), "alerts", "--as-of", AS_OF)[0] == 0
    settings = load_settings(home=home)
    db = open_db(settings.db_path)
    install_rules(settings, db, shipped)
    db.conn.close()
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "deliver", "--now", NOON)
    assert code == 0, err
    assert _outbox(home, "newlywed_greeting") == [("cancelled", None)] * 7
    db = open_db(home / "yiwang.db")
    reasons = set(stored_alerts(db.conn).filter(pl.col("rule_id") == "newlywed_greeting")["status_reason"])
    delivered = stored_deliveries(db.conn).filter(pl.col("rule_id") == "newlywed_greeting").height
    db.conn.close()
    assert reasons == {"rule not in force"} and delivered == 0


def test_disabling_a_rule_holds_its_pending_alerts_back_at_delivery(city, monkeypatch, capsys):
    home, real, draft, shipped = city
    monkeypatch.setenv("YIWANG_REMINDER_RULES_FILE", str(real))
    _pending_draft_alerts(home, draft, real)
    assert _cli(monkeypatch, capsys, "--home", str(home), "alerts", "--as-of", AS_OF)[0] == 0
    settings = load_settings(home=home)
    db = open_db(settings.db_path)
    install_rules(settings, db, draft.read_text(encoding="utf-8").replace(
        "    priority: normal\n    statutory: false", "    priority: normal\n    statutory: false\n    enabled: false"))
    db.conn.close()
    assert _cli(monkeypatch, capsys, "--home", str(home), "deliver", "--now", NOON)[0] == 0
    assert _outbox(home, "newlywed_greeting") == [("cancelled", None)] * 7


def test_rules_show_install_dry_run_and_alerts_read_the_same_rules(city, monkeypatch, capsys):
    home, real, draft, shipped = city
    monkeypatch.setenv("YIWANG_REMINDER_RULES_FILE", str(real))
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "rules", "show", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["sha256"] == hashlib.sha256(shipped.encode()).hexdigest() and shown["in_force_since"] is None
    bad = draft.parent / "bad.yaml"
    bad.write_text(draft.read_text(encoding="utf-8").replace("priority: normal\n    statutory: false",
                                                             "priority: urgent\n    statutory: false"))
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "rules", "install", str(bad))
    assert code == 2 and f"{bad}:" in " ".join(err.split()) and "priority must be one of" in " ".join(err.split())
    assert not (home / "rules").exists() and _count(home, "rule_snapshots") == 0
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "rules", "install", str(draft), "--json")
    assert code == 0, err
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "rules", "show", "--json")
    shown = json.loads(out)
    assert shown["sha256"] == hashlib.sha256(draft.read_bytes()).hexdigest() and shown["in_force_since"]
    assert "newlywed_greeting" in [r["id"] for r in shown["rules"]]
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "rules", "dry-run", "newlywed_greeting",
                          "--as-of", AS_OF, "--json")
    assert code == 0 and json.loads(out)["new"] == 7
    code, out, err = _cli(monkeypatch, capsys, "--home", str(home), "alerts", "--as-of", AS_OF, "--json")
    assert code == 0 and json.loads(out)["rules_source"] == "rules/reminder_rules.yaml"
    assert [s for s, _ in _outbox(home, "newlywed_greeting")] == ["pending"] * 7
    assert real.read_text(encoding="utf-8") == shipped  # the seed is only ever read
