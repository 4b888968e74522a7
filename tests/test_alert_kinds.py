"""Alert trigger kinds: one class per kind in notifier/kinds/, nothing outside that package names a kind, and the
worked example of docs/adding-an-alert-kind.md (loaded from the page itself) validates, registers and runs."""

from __future__ import annotations

import ast
import json
import re
import sys
import types
from datetime import date
from pathlib import Path

import pytest

import notifier.kinds as kinds
from data.errors import RulesError
from data.settings import REPO_ROOT
from notifier.engine import candidates, evaluate_alerts
from notifier.kinds import KIND_CLASSES, KINDS, RuleBase, kind_name
from notifier.rules import check_file, install_rules, load_reference, parse_rules, rule_to_dict
from testsupport.registries import put_rows

DOC = REPO_ROOT / "docs" / "adding-an-alert-kind.md"
EXAMPLE_MODULE = "notifier.kinds.enterprise_anniversary"
# Code that may name a kind: the kinds themselves, and the outbox's committed migration (a comment in its SQL).
MAY_NAME_KINDS = {Path("notifier/kinds"), Path("notifier/schema.py")}


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


@pytest.fixture
def example_kind(monkeypatch):
    """The doc's kind, imported as its own module and registered: what its file and its one line would do."""
    [code] = _blocks("python")
    module = types.ModuleType(EXAMPLE_MODULE)
    module.__file__ = str(DOC)
    monkeypatch.setitem(sys.modules, EXAMPLE_MODULE, module)
    exec(compile(code, str(DOC), "exec"), module.__dict__)
    cls = module.EnterpriseAnniversary
    monkeypatch.setattr(kinds, "KIND_CLASSES", KIND_CLASSES + (cls,))
    return cls


def kind_names_in(source: str, names=KINDS) -> list[tuple[int, str]]:
    """(line, kind) for every string constant in ``source`` that names a trigger kind."""
    word = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            out += [(node.lineno, m.group(1)) for m in word.finditer(node.value)]
    return out


def test_no_code_outside_the_kinds_package_names_a_kind():
    hits = []
    for package in ("data", "profiler", "taggers", "recommender", "notifier", "yiwang"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT)
            if any(rel == p or p in rel.parents for p in MAY_NAME_KINDS):
                continue
            hits += [(str(rel), line, kind) for line, kind in kind_names_in(path.read_text(encoding="utf-8"))]
    assert hits == [], "a kind is named outside notifier/kinds/ (add its logic to its class instead)"


def test_the_kind_name_check_catches_a_branch_on_kind():
    violation = 'def days(rule):\n    if rule.kind == "licence_expiry":\n        return rule.stages_days\n'
    assert kind_names_in(violation) == [(2, "licence_expiry")]
    assert kind_names_in("x = 'licence_expiry_extra'\n") == []


def test_registry_one_class_per_kind():
    assert KINDS == ("licence_expiry", "tag_gained", "calendar", "age_milestone")
    for cls in KIND_CLASSES:
        assert issubclass(cls, RuleBase) and cls.query is not RuleBase.query, cls
        assert cls.MESSAGE_FIELDS and set(cls.FLAT_DEFAULTS) <= set(dir(cls)) | set(cls.model_fields), cls
        assert Path(sys.modules[cls.__module__].__file__).stem == kind_name(cls)


def test_every_rule_shows_the_same_flat_shape():
    rules = check_file(REPO_ROOT / "data" / "reminder_rules.yaml", REPO_ROOT / "data")
    shapes = {tuple(rule_to_dict(r)) for r in rules}
    assert len(shapes) == 1
    [shape] = shapes
    assert {"id", "kind", "line", "stages_days", "tag", "window_start", "age", "days_after"} <= set(shape)


def test_the_documented_kind_runs_end_to_end(example_kind, settings, db):
    [rule_text] = _blocks("yaml")
    put_rows(settings, db, "enterprises", [
        {"enterprise_id": "E1", "founded_on": date(2016, 3, 5)},   # 10 years on 03-05: within 7 days of 03-01
        {"enterprise_id": "E2", "founded_on": date(2016, 3, 20)},  # 10 years, but not within 7 days yet
        {"enterprise_id": "E3", "founded_on": date(2021, 3, 3)},   # 5 years
    ])
    installed = install_rules(settings, db, rule_text)
    assert type(installed.rules[0]) is example_kind
    assert rule_to_dict(installed.rules[0])["years"] == 10
    [(rule, due, live)] = candidates(settings, db, date(2026, 3, 1), list(installed.rules))
    assert sorted(live["subject_id"]) == ["E1"]
    [alert] = due.to_dicts()
    assert (alert["subject_id"], alert["kind"], alert["object_id"], alert["stage"]) == (
        "E1", "enterprise_anniversary", "10", "10")
    assert alert["message_en"] == "Your enterprise turns 10 on 2026-03-05."
    assert alert["message_zh"] == "贵企业将于2026-03-05成立10周年。"
    assert json.loads(alert["fields_json"])["founded_on"] == "2016-03-05"
    # Into the outbox once; a rerun adds nothing; once the anniversary has passed the pending note is withdrawn.
    assert evaluate_alerts(settings, db, date(2026, 3, 1)).created == 1
    again = evaluate_alerts(settings, db, date(2026, 3, 2))
    assert (again.created, again.already_present) == (0, 1)
    assert evaluate_alerts(settings, db, date(2026, 3, 8)).cancelled == 1


def test_the_documented_kind_reports_errors_like_any_rule(example_kind):
    [rule_text] = _blocks("yaml")
    ref = load_reference(REPO_ROOT / "data")
    doc = DOC.read_text(encoding="utf-8")
    expected = "reminder_rules.yaml:5: rule 'tenth_anniversary': years must be between 1 and 199, got 0"
    assert expected in doc
    with pytest.raises(RulesError) as exc:
        parse_rules(rule_text.replace("years: 10", "years: 0"), "reminder_rules.yaml", ref)
    assert str(exc.value) == expected
    with pytest.raises(RulesError, match=r"^r:10: rule 'tenth_anniversary': message.en uses unknown field \{age\}"):
        parse_rules(rule_text.replace("{years} on", "{age} on"), "r", ref)
    with pytest.raises(RulesError, match=r"^r:7: rule 'tenth_anniversary': anniversaries apply to enterprises"):
        parse_rules(rule_text.replace("subject_type: enterprise", "subject_type: person"), "r", ref)


def test_without_its_registration_line_the_kind_is_unknown():
    [rule_text] = _blocks("yaml")
    with pytest.raises(RulesError, match=r"^r:4: rule 'tenth_anniversary': unknown kind 'enterprise_anniversary'"):
        parse_rules(rule_text, "r")


def test_a_control_character_is_a_rules_error_naming_its_line():
    with pytest.raises(RulesError, match=r"^r:2: not valid YAML: special characters are not allowed \(character #x0001\)"):
        parse_rules("rules:\n  - id: a\x01\n", "r")
