"""The rules file: every kind of mistake is rejected naming file, rule and line; the shipped file is valid."""

from __future__ import annotations

import textwrap
from datetime import date

import polars as pl
import pytest

import profiler
import taggers
from testsupport.sample_city import SAMPLE_AS_OF, load_city, sample_city
from taggers.rules import Compiler, parse_rules
from taggers.store import list_tags
from data.errors import RulesError
from data.reference import load_taxonomy
from data.settings import REPO_ROOT, load_settings

AS_OF = date.fromisoformat(SAMPLE_AS_OF)
FIELDS = {"age": "num", "gender": "str", "birth_date": "date", "low_income": "bool", "industry": "str", "as_of": "date"}


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy(REPO_ROOT / "data")


def _parse(text: str, taxonomy):
    return parse_rules(textwrap.dedent(text), "rules.yaml", FIELDS, taxonomy, {"marriage_certificate"})


GOOD = """\
rules:
  - id: child
    tag: crowd.child
    when: {field: age, op: "<", value: 14}
    evidence: {zh: "儿童", en: "child"}
"""


def test_shipped_rules_file_is_valid(settings):
    rs = taggers.check_rules(settings)
    assert len(rs.rules) >= 20
    assert {r.tag for r in rs.rules} >= {"life_event.marriage", "crowd.child", "crowd.hardship", "enterprise.new_business"}


def test_good_minimal_file(taxonomy):
    rs = _parse(GOOD, taxonomy)
    assert [r.id for r in rs.rules] == ["child"]
    assert rs.rules[0].source == "rule:child@1"


@pytest.mark.parametrize(
    ("text", "rule", "line", "words"),
    [
        (  # unknown field
            """\
            rules:
              - id: a
                tag: crowd.child
                when: {field: agee, op: "<", value: 14}
                evidence: {zh: x, en: x}
            """,
            "a", 4, "unknown field 'agee'",
        ),
        (  # bad operator
            """\
            rules:
              - id: b
                tag: crowd.child
                when:
                  field: age
                  op: "=<"
                  value: 14
                evidence: {zh: x, en: x}
            """,
            "b", 5, "unknown operator '=<'",
        ),
        (  # wrong type: a number field compared with text
            """\
            rules:
              - id: c
                tag: crowd.child
                when: {field: age, op: "<", value: "fourteen"}
                evidence: {zh: x, en: x}
            """,
            "c", 4, "wrong type",
        ),
        (  # wrong type: ordering a text field
            """\
            rules:
              - id: c2
                tag: crowd.child
                when: {field: gender, op: ">", value: "M"}
                evidence: {zh: x, en: x}
            """,
            "c2", 4, "wrong type",
        ),
        (  # unknown tag code
            """\
            rules:
              - id: d
                tag: crowd.giant
                when: {field: age, op: ">", value: 1}
                evidence: {zh: x, en: x}
            """,
            "d", 2, "unknown tag code 'crowd.giant'",
        ),
        (  # unknown licence type
            """\
            rules:
              - id: e
                tag: life_event.marriage
                when: {license: wedding_ring}
                evidence: {zh: x, en: x}
            """,
            "e", 4, "unknown licence type 'wedding_ring'",
        ),
        (  # unknown event filter
            """\
            rules:
              - id: f
                tag: life_event.job_seeking
                when:
                  events: {life_events: job_seeking}
                evidence: {zh: x, en: x}
            """,
            "f", 5, "unknown event filter",
        ),
        (  # unknown placeholder in evidence
            """\
            rules:
              - id: g
                tag: crowd.child
                when: {field: age, op: "<", value: 14}
                evidence: {zh: "{nickname}", en: x}
            """,
            "g", 5, "unknown field 'nickname'",
        ),
        (  # refers to a rule that does not exist
            """\
            rules:
              - id: h
                tag: crowd.child
                when: {rule: ghost}
                evidence: {zh: x, en: x}
            """,
            "h", 2, "unknown rule 'ghost'",
        ),
        (  # unknown key in a rule
            """\
            rules:
              - id: i
                tag: crowd.child
                whenn: {field: age, op: "<", value: 14}
                evidence: {zh: x, en: x}
            """,
            "i", 2, "unknown key",
        ),
        (  # an operator outside the language (no eval, ever)
            """\
            rules:
              - id: j
                tag: crowd.child
                when: {field: age, op: "__import__('os')", value: 1}
                evidence: {zh: x, en: x}
            """,
            "j", 4, "unknown operator",
        ),
        (  # shifting a non-date field
            """\
            rules:
              - id: k
                tag: crowd.child
                when: {field: age + 1y, op: "<", value: 14}
                evidence: {zh: x, en: x}
            """,
            "k", 4, "not a date",
        ),
    ],
)
def test_bad_rule_names_file_rule_and_line(taxonomy, text, rule, line, words):
    with pytest.raises(RulesError) as err:
        _parse(text, taxonomy)
    msg = str(err.value)
    assert msg.startswith("rules.yaml")
    assert f"rule {rule!r}" in msg
    assert f"line {line}" in msg
    assert words in msg


def test_duplicate_rule_id_names_both_lines(taxonomy):
    text = GOOD + """\
  - id: child
    tag: crowd.elderly
    when: {field: age, op: ">=", value: 60}
    evidence: {zh: x, en: x}
"""
    with pytest.raises(RulesError, match=r"rules.yaml, rule 'child', line 6: duplicate rule id \(first defined on line 2\)"):
        _parse(text, taxonomy)


def test_cycle_between_rules_is_rejected(taxonomy):
    text = """\
    rules:
      - id: a
        tag: crowd.child
        when: {rule: b}
        evidence: {zh: x, en: x}
      - id: b
        tag: crowd.elderly
        when: {all: [{rule: c}, {field: age, op: ">", value: 1}]}
        evidence: {zh: x, en: x}
      - id: c
        tag: crowd.hardship
        when: {rule: a}
        evidence: {zh: x, en: x}
    """
    with pytest.raises(RulesError, match=r"cycle: a -> b -> c -> a") as err:
        _parse(text, taxonomy)
    assert "line 2" in str(err.value)


def test_self_reference_is_a_cycle(taxonomy):
    text = """\
    rules:
      - id: a
        tag: crowd.child
        when: {rule: a}
        evidence: {zh: x, en: x}
    """
    with pytest.raises(RulesError, match="cycle: a -> a"):
        _parse(text, taxonomy)


def test_yaml_syntax_error_names_line(taxonomy):
    with pytest.raises(RulesError, match=r"rules.yaml, line 4: not valid YAML"):
        _parse("rules:\n  - id: a\n    tag: crowd.child\n    when: {field: age, op: <}}\n    evidence: x\n", taxonomy)


def test_duplicate_key_in_mapping_is_rejected(taxonomy):
    text = GOOD.replace("    tag: crowd.child\n", "    tag: crowd.child\n    tag: crowd.elderly\n")
    with pytest.raises(RulesError, match="duplicate key 'tag'"):
        _parse(text, taxonomy)


def test_not_a_rules_document(taxonomy):
    with pytest.raises(RulesError, match="expected a mapping with a 'rules' list"):
        _parse("- just a list\n", taxonomy)


def test_missing_file_is_a_rules_error(tmp_path, taxonomy):
    from taggers.rules import load_rules

    with pytest.raises(RulesError, match="rules file not found"):
        load_rules(tmp_path / "nope.yaml", FIELDS, taxonomy)


def test_rules_compile_to_expressions_not_eval(taxonomy):
    rs = _parse(GOOD, taxonomy)
    comp = Compiler(rs, AS_OF)
    df = pl.DataFrame({"subject_id": ["a", "b", "c"], "subject_type": ["person"] * 3, "age": [3, 40, None]})
    out = df.with_columns(comp.rule_columns())
    assert out["rule.child"].to_list() == [True, False, False]


def test_bad_rules_file_leaves_tags_in_force(settings, db, tmp_path):
    load_city(settings, db, **sample_city())
    profiler.build_profiles(settings, db, AS_OF)
    taggers.run_taggers(settings, db, AS_OF)
    before = list_tags(db, "P6", include_sensitive=True)
    assert before
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace('op: "<"', 'op: "<<"'), encoding="utf-8")
    broken = load_settings(home=settings.home, id_hash_key="test-key", tag_rules_file=bad)
    with pytest.raises(RulesError, match=r"bad.yaml, rule 'child', line 4: unknown operator"):
        taggers.run_taggers(broken, db, AS_OF)
    assert list_tags(db, "P6", include_sensitive=True) == before


def test_event_filters_on_catalogue_tags_match_full_codes_in_cells(taxonomy):
    """A bare code in a rule (``life_event: job_seeking``) matches the catalogue's full codes
    (``life_event.job_seeking``), in a cell holding several; so does the full code; no partial matches."""
    from taggers.rules import item_flag_exprs

    rs = _parse(
        """\
        rules:
          - id: bare
            tag: life_event.job_seeking
            when: {events: {life_event: job_seeking}}
            evidence: {zh: "求职", en: "job seeking"}
          - id: full
            tag: life_event.job_seeking
            when: {events: {life_event: [life_event.job_seeking], occupation: teacher}}
            evidence: {zh: "求职", en: "job seeking"}
        """,
        taxonomy,
    )
    bare, full = (next(a for a in rs.aggregates.values() if a.kind == "events" and len(a.spec) == n) for n in (2, 3))
    assert bare.spec["life_event"] == ["life_event.job_seeking"]
    assert full.spec["occupation"] == ["occupation.teacher"]
    catalog = pl.DataFrame(
        {
            "item_id": ["both", "only", "other", "none"],
            "category": ["x"] * 4,
            "department": ["d"] * 4,
            "life_events": ["life_event.graduation|life_event.job_seeking", "life_event.job_seeking", "life_event.graduation", None],
            "crowds": [None] * 4,
            "occupations": ["occupation.teacher", None, "occupation.teacher", None],
        }
    )
    flags = catalog.select(item_flag_exprs([bare, full]))
    assert flags[f"_item.{bare.column}"].to_list() == [True, True, False, False]
    assert flags[f"_item.{full.column}"].to_list() == [True, False, False, False]
