"""Reminder rules: the shipped file, every class of rules-file error (file, rule, line), the rules in force."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import pytest

from notifier.engine import evaluate_alerts
from notifier.rules import (
    check_file, in_force_path, install_rules, list_snapshots, load_reference, parse_rules, rules_in_force,
)
from data.errors import RulesError
from data.settings import REPO_ROOT, load_settings
from yiwang.migrations import open_db

DATA = REPO_ROOT / "data"
SHIPPED = DATA / "reminder_rules.yaml"

GOOD = textwrap.dedent("""\
    rules:
      - id: hk_permit
        version: 1
        kind: licence_expiry
        licence_types: [hk_macau_permit]
        stages_days: [90, 30, 7]
        renewal_item: SH-CRJ-0002
        audience: {subject_type: person}
        message:
          zh: "{licence_name_zh}将于{expires_on}到期"
          en: "{licence_name_en} expires on {expires_on}"
        channels: [in_app]
        priority: high
        statutory: true
    """)


@pytest.fixture(scope="module")
def ref():
    return load_reference(DATA)


def test_shipped_rules_are_valid_and_cover_every_kind(ref):
    rules = check_file(SHIPPED, DATA)
    by_id = {r.id: r for r in rules}
    assert {r.kind for r in rules} == {"licence_expiry", "tag_gained", "calendar", "age_milestone"}
    for licence in ("hk_macau_permit", "passport", "resident_id_card", "driving_licence", "residence_permit",
                    "food_business_licence"):
        [rule] = [r for r in rules if r.kind == "licence_expiry" and r.licence_types == (licence,)]
        assert rule.stages_days == (90, 30, 7) and rule.statutory
        # The renewal item really renews this licence in the catalogue.
        assert ref.items[rule.renewal_item] == licence
    assert by_id["newborn_bundle"].statutory is False and len(by_id["newborn_bundle"].items) == 4
    assert by_id["enterprise_annual_report"].window_start == "01-01"
    assert by_id["enterprise_annual_report"].window_end == "06-30"
    assert by_id["primary_school_enrollment"].age == 6 and by_id["senior_card_at_60"].age == 60
    assert by_id["senior_card_at_60"].statutory is False


def _edit(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


ERRORS = [
    ("yaml syntax", _edit("stages_days: [90, 30, 7]", "stages_days: [90, 30, 7"), None, "not valid YAML"),
    ("unknown field", _edit("    priority: high", "    priorty: high"), 13, "unknown field 'priorty'"),
    ("wrong type", _edit("version: 1", "version: one"), 3, "must be a whole number"),
    ("unknown kind", _edit("kind: licence_expiry", "kind: licence_expire"), 4, "unknown kind"),
    ("unknown licence", _edit("[hk_macau_permit]", "[hk_permit]"), 5, "unknown licence type 'hk_permit'"),
    ("negative stage", _edit("[90, 30, 7]", "[90, -30]"), 6, "0 or more"),
    ("stage not a number", _edit("[90, 30, 7]", "[90, thirty]"), 6, "whole numbers"),
    ("wrong renewal", _edit("SH-CRJ-0002", "SH-CRJ-0010"), 7, "renews 'passport'"),
    ("unknown item", _edit("SH-CRJ-0002", "SH-XXX-9999"), 7, "not in the catalogue"),
    ("bad audience", _edit("subject_type: person", "subject_type: citizen"), 8, "person or enterprise"),
    ("unknown template field", _edit("{expires_on}到期", "{expiry}到期"), 10, "unknown field {expiry}"),
    ("bad braces", _edit("{expires_on}到期", "{expires_on到期"), 10, "bad braces"),
    ("unknown channel", _edit("channels: [in_app]", "channels: [sms]"), 12, "unknown channel 'sms'"),
    ("bad priority", _edit("priority: high", "priority: urgent"), 13, "priority must be one of"),
    ("missing statutory", _edit("    statutory: true\n", ""), 2, "missing field 'statutory'"),
    ("statutory not bool", _edit("statutory: true", "statutory: yes please"), 14, "true or false"),
    ("duplicate key", _edit("    priority: high\n", "    priority: high\n    priority: low\n"), 14,
     "duplicate key 'priority'"),
    ("duplicate id", GOOD + GOOD.split("rules:\n", 1)[1], 15, "duplicate rule id (first defined on line 2)"),
    ("bad id", _edit("id: hk_permit", "id: HK-Permit"), 2, "id must be lower-case"),
]


@pytest.mark.parametrize("name,text,line,needle", ERRORS, ids=[e[0] for e in ERRORS])
def test_rules_file_errors_name_file_rule_and_line(ref, name, text, line, needle):
    with pytest.raises(RulesError) as exc:
        parse_rules(text, "ops/rules.yaml", ref)
    msg = str(exc.value)
    assert msg.startswith("ops/rules.yaml:"), msg
    assert needle in msg, msg
    if line is not None:
        assert msg.startswith(f"ops/rules.yaml:{line}:"), msg
        assert "rule 'hk_permit'" in msg or "rule 'HK-Permit'" in msg, msg


def test_kind_specific_errors(ref):
    tag_rule = textwrap.dedent("""\
        rules:
          - id: birth
            version: 1
            kind: tag_gained
            tag: life_event.born
            audience: {subject_type: person}
            message: {zh: "x", en: "x"}
            channels: [in_app]
            statutory: false
        """)
    with pytest.raises(RulesError, match=r"^f:5: rule 'birth': unknown tag code 'life_event.born'"):
        parse_rules(tag_rule, "f", ref)
    calendar = textwrap.dedent("""\
        rules:
          - id: report
            version: 1
            kind: calendar
            window: {start: "01-01", end: "6-30"}
            audience: {subject_type: enterprise}
            message: {zh: "{year}", en: "{year}"}
            channels: [in_app]
            statutory: true
        """)
    with pytest.raises(RulesError, match=r"^f:5: rule 'report': window end must be MM-DD"):
        parse_rules(calendar, "f", ref)
    age = textwrap.dedent("""\
        rules:
          - id: school
            version: 1
            kind: age_milestone
            age: 6
            notify: parents
            items: ["SH{district}-JW-0502"]
            audience: {subject_type: person}
            message: {zh: "{age}", en: "{age}"}
            channels: [in_app]
            statutory: true
        """)
    with pytest.raises(RulesError, match=r"^f:6: rule 'school': notify must be one of"):
        parse_rules(age, "f", ref)
    with pytest.raises(RulesError, match=r"no catalogue item matches 'SH\{district\}-JW-9999'"):
        parse_rules(age.replace("parents", "self").replace("0502", "9999"), "f", ref)
    with pytest.raises(RulesError, match=r"^f:1: expected a top-level mapping"):
        parse_rules("- just a list\n", "f", ref)
    with pytest.raises(RulesError, match=r"^f:1: the file is empty"):
        parse_rules("", "f", ref)


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD, encoding="utf-8")
    return path


@pytest.fixture
def rsettings(tmp_path, rules_file):
    return load_settings(home=tmp_path / "home", id_hash_key="k", reminder_rules_file=rules_file)


@pytest.fixture
def rdb(rsettings):
    d = open_db(rsettings.db_path)
    yield d
    d.conn.close()


def test_broken_file_never_replaces_the_rules_in_force(rsettings, rdb, rules_file):
    good = rules_in_force(rsettings, rdb)
    assert [r.id for r in good.rules] == ["hk_permit"] and good.warning is None and good.origin == "seed"
    # An evaluation puts the seed in force: it becomes the home's rules file and the first snapshot.
    evaluate_alerts(rsettings, rdb, date(2026, 3, 1))
    home_file = in_force_path(rsettings)
    assert home_file.read_text(encoding="utf-8") == GOOD
    home_file.write_text(GOOD.replace("version: 1", "version: [1"), encoding="utf-8")
    kept = rules_in_force(rsettings, rdb)
    assert [r.id for r in kept.rules] == ["hk_permit"]
    assert kept.source.startswith("snapshot 1 ")
    assert "not valid YAML" in kept.warning and kept.warning.startswith("rules/reminder_rules.yaml:")
    # Evaluation keeps running on the kept rules and says why.
    summary = evaluate_alerts(rsettings, rdb, date(2026, 3, 1))
    assert summary.rules == 1 and summary.rules_warning == kept.warning
    # A fixed file becomes the new rules in force (and a second snapshot) once an evaluation uses it.
    home_file.write_text(GOOD.replace("version: 1", "version: 2"), encoding="utf-8")
    assert rules_in_force(rsettings, rdb).rules[0].version == 2
    assert len(list_snapshots(rdb)) == 1
    evaluate_alerts(rsettings, rdb, date(2026, 3, 1))
    assert len(list_snapshots(rdb)) == 2
    # The seed file is only ever read.
    assert rules_file.read_text(encoding="utf-8") == GOOD


def test_broken_file_with_no_good_version_on_record_is_an_error(rsettings, rdb, rules_file):
    rules_file.write_text("rules: [", encoding="utf-8")
    with pytest.raises(RulesError, match="no earlier good rules are on record"):
        rules_in_force(rsettings, rdb)


def test_install_rules_rejects_invalid_text_and_keeps_the_file(rsettings, rdb, rules_file):
    with pytest.raises(RulesError, match=r"^api:13: rule 'hk_permit': priority must be one of"):
        install_rules(rsettings, rdb, GOOD.replace("priority: high", "priority: top"))
    assert not in_force_path(rsettings).exists()
    installed = install_rules(rsettings, rdb, GOOD.replace("version: 1", "version: 3"))
    assert installed.rules[0].version == 3 and "version: 3" in in_force_path(rsettings).read_text(encoding="utf-8")
    assert rules_file.read_text(encoding="utf-8") == GOOD


def test_cli_rules_check_reports_error_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(_edit("channels: [in_app]", "channels: [fax]"), encoding="utf-8")
    yiwang = Path(sys.executable).parent / "yiwang"
    out = subprocess.run([str(yiwang), "--home", str(tmp_path / "h"), "rules", "check", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert f"{bad}:12: rule 'hk_permit': unknown channel 'fax'" in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr
    ok = subprocess.run([str(yiwang), "--home", str(tmp_path / "h"), "rules", "check", str(SHIPPED), "--json"],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert '"id": "hk_macau_permit_expiry"' in ok.stdout
