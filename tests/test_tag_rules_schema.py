"""The tag rules file's structure (checked by its pydantic schema): each mistake names file, rule and line."""

from __future__ import annotations

import pytest

from data.errors import RulesError
from data.reference import load_taxonomy
from data.settings import REPO_ROOT
from taggers.rules import parse_rules

FIELDS = {"age": "num", "gender": "str", "birth_date": "date"}
GOOD = """\
rules:
  - id: child
    tag: crowd.child
    when: {field: age, op: "<", value: 14}
    evidence:
      zh: 儿童
      en: child
"""


@pytest.fixture(scope="module")
def taxonomy():
    return load_taxonomy(REPO_ROOT / "data")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("id: child", "id: Child", "rule 'Child', line 2: field 'id': bad rule id 'Child'"),
        ("tag: crowd.child", "tag: 3", "rule 'child', line 2: field 'tag': must be text, got 3"),
        ("tag: crowd.child", "tag: crowd.child\n    confidence: 1.5", "rule 'child', line 2: field 'confidence': must be <= 1, got 1.5"),
        ("tag: crowd.child", "tag: crowd.child\n    version: true", "rule 'child', line 2: field 'version': must be a whole number, got True"),
        ("tag: crowd.child", "tag: crowd.child\n    subject: alien", "rule 'child', line 2: field 'subject': expected 'person', 'enterprise' or 'unknown', got 'alien'"),
        ("tag: crowd.child", "tag: crowd.child\n    valid_until: [as_of]", "rule 'child', line 2: field 'valid_until': must be text, got a list"),
        ("      en: child\n", "", "rule 'child', line 6: field 'evidence': missing field 'en'"),
        ("      en: child\n", "      en: child\n      fr: enfant\n", "rule 'child', line 6: field 'evidence': unknown key 'fr'"),
        ("    when: {field: age, op: \"<\", value: 14}\n", "", "rule 'child', line 2: missing field 'when'"),
        ("when: {field: age, op: \"<\", value: 14}", "when: [1]", "rule 'child', line 2: field 'when': must be a mapping"),
        ("  - id: child\n", "  - ident: child\n", "rule '#1', line 2: unknown key 'ident'"),
        ("rules:\n", "rules:\n  - 3\n", "rule '#1', line 2: must be a mapping"),
    ],
)
def test_structure_errors_name_file_rule_and_line(taxonomy, old, new, expected):
    assert old in GOOD
    with pytest.raises(RulesError) as err:
        parse_rules(GOOD.replace(old, new), "tag_rules.yaml", FIELDS, taxonomy)
    assert str(err.value).startswith(f"tag_rules.yaml, {expected}"), str(err.value)


def test_a_condition_error_inside_a_nested_block_names_its_own_line(taxonomy):
    text = GOOD.replace(
        'when: {field: age, op: "<", value: 14}',
        'when:\n      all:\n        - {field: age, op: "<", value: 14}\n        - not:\n            field: agee\n            op: is_null',
    )
    with pytest.raises(RulesError, match=r"^tag_rules.yaml, rule 'child', line 8: unknown field 'agee'"):
        parse_rules(text, "tag_rules.yaml", FIELDS, taxonomy)


def test_the_shipped_file_compiles_with_its_lines(taxonomy):
    from data.settings import load_settings
    import taggers

    rs = taggers.check_rules(load_settings(home="/nonexistent", id_hash_key="k"))
    lines = (REPO_ROOT / "data" / "tag_rules.yaml").read_text(encoding="utf-8").splitlines()
    for rule in rs.rules:
        assert lines[rule.line - 1].strip() == f"- id: {rule.id}"


def test_duplicate_key_names_the_rule_and_both_lines(taxonomy):
    text = GOOD.replace("    tag: crowd.child\n", "    tag: crowd.child\n    tag: crowd.elderly\n")
    with pytest.raises(RulesError, match=r"^tag_rules.yaml, rule 'child', line 4: duplicate key 'tag' \(first on line 3\)$"):
        parse_rules(text, "tag_rules.yaml", FIELDS, taxonomy)
