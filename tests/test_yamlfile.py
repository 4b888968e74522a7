"""The one YAML loader: every mistake names file, line and the rule or key, through nested lists and unions."""

from __future__ import annotations

import textwrap
from typing import Annotated, Literal, Union

import pytest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from data.errors import ConfigError, RulesError
from data.yamlfile import Rules, comma_style, load, read, validate


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Expiry(_Strict):
    kind: Literal["licence_expiry"]
    licence_types: list[str] = Field(min_length=1)
    stages_days: list[int]


class Gained(_Strict):
    kind: Literal["tag_gained"]
    tag: str
    within_days: int = Field(default=30, gt=0)

    @field_validator("tag")
    @classmethod
    def _dotted(cls, v: str) -> str:
        if "." not in v:
            raise ValueError(f"tag {v!r} is not a taxonomy code (dimension.code)")
        return v


class Rule(_Strict):
    id: str
    enabled: bool = True
    trigger: Annotated[Union[Expiry, Gained], Field(discriminator="kind")]


class RulesFile(_Strict):
    rules: list[Rule]


GOOD = """\
rules:
  - id: renew_permit
    trigger:
      kind: licence_expiry
      licence_types: [business_licence]
      stages_days: [60, 30, 7]
  - id: new_parent
    enabled: false
    trigger: {kind: tag_gained, tag: life_event.birth}
"""


def _check(text: str):
    return validate(RulesFile, textwrap.dedent(text), "reminders.yaml", error=RulesError, rules=Rules())


def test_good_file_gives_plain_validated_data():
    rf = _check(GOOD)
    assert [r.id for r in rf.rules] == ["renew_permit", "new_parent"]
    assert rf.rules[0].trigger.stages_days == [60, 30, 7]
    assert rf.rules[1].enabled is False and rf.rules[1].trigger.within_days == 30


def test_locator_maps_paths_to_lines():
    doc = load(GOOD, "reminders.yaml")
    assert doc.data["rules"][1]["trigger"]["tag"] == "life_event.birth"
    loc = doc.locator
    assert loc.line(("rules", 0)) == 2
    assert loc.line(("rules", 0, "trigger")) == 3
    assert loc.node_line(("rules", 0, "trigger")) == 4  # the block mapping starts below its key
    assert loc.line(("rules", 0, "trigger", "stages_days", 2)) == 6
    assert loc.line(("rules", 1, "enabled")) == 8
    assert loc.line(("rules", 1, "trigger", "nope")) == 9  # an absent key: its mapping's line


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # wrong type inside a union member: the member's tag is not in the data and is not in the message
        ("stages_days: [60, 30, 7]", "stages_days: [60, soon, 7]",
         "reminders.yaml:6: rule 'renew_permit': field 'trigger.stages_days[1]': must be a whole number, got 'soon'"),
        # unknown key inside a union member
        ("      stages_days: [60, 30, 7]\n", "      stages_days: [60, 30, 7]\n      stage_days: [1]\n",
         "reminders.yaml:7: rule 'renew_permit': field 'trigger': unknown key 'stage_days'"),
        # missing field of a union member: the line of the key holding the mapping that lacks it
        ("      licence_types: [business_licence]\n", "",
         "reminders.yaml:3: rule 'renew_permit': field 'trigger': missing field 'licence_types'"),
        # an unknown union tag
        ("kind: tag_gained", "kind: tag_lost",
         "reminders.yaml:9: rule 'new_parent': field 'trigger.kind': unknown kind 'tag_lost'; "
         "expected one of 'licence_expiry', 'tag_gained'"),
        # no tag at all
        ("{kind: tag_gained, tag: life_event.birth}", "{tag: life_event.birth}",
         "reminders.yaml:9: rule 'new_parent': field 'trigger': missing field 'kind'"),
        # a wrong type at the rule's own level
        ("enabled: false", "enabled: nope",
         "reminders.yaml:8: rule 'new_parent': field 'enabled': must be true or false, got 'nope'"),
        # a bound, and a validator's own message
        ("tag: life_event.birth}", "tag: life_event.birth, within_days: 0}",
         "reminders.yaml:9: rule 'new_parent': field 'trigger.within_days': must be > 0, got 0"),
        ("tag: life_event.birth}", "tag: birth}",
         "reminders.yaml:9: rule 'new_parent': field 'trigger.tag': tag 'birth' is not a taxonomy code"),
        # an empty list where one item is needed
        ("licence_types: [business_licence]", "licence_types: []",
         "reminders.yaml:5: rule 'renew_permit': field 'trigger.licence_types': must not be empty"),
        # a rule without an id is named by its position
        ("  - id: new_parent\n    enabled: false\n", "  - enabled: false\n",
         "reminders.yaml:7: rule '#2': missing field 'id'"),
    ],
)
def test_errors_name_file_line_rule_and_field(old, new, expected):
    assert old in GOOD
    with pytest.raises(RulesError) as err:
        _check(GOOD.replace(old, new))
    assert str(err.value).startswith(expected), str(err.value)


def test_duplicate_key_names_both_lines():
    text = GOOD.replace("    enabled: false\n", "    enabled: false\n    enabled: true\n")
    with pytest.raises(RulesError, match=r"^reminders.yaml:9: rule 'new_parent': duplicate key 'enabled' \(first on line 8\)$"):
        _check(text)


def test_a_list_or_mapping_as_key_is_refused():
    with pytest.raises(ConfigError, match=r"^c.yaml:2: a key must be a plain word"):
        load("a: 1\n? [x, y]\n: 2\n", "c.yaml")


def test_no_python_objects_and_no_odd_tags():
    with pytest.raises(ConfigError, match=r"^c.yaml:1: unsupported YAML tag 'tag:yaml.org,2002:python/object"):
        load("a: !!python/object/apply:os.system [echo]\n", "c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml:2: unsupported YAML tag"):
        load("a: 1\nb: !!set {x, y}\n", "c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml:3: merge keys"):
        load("base: &b {x: 1}\nother:\n  <<: *b\n", "c.yaml")


def test_syntax_error_names_line_in_each_style():
    with pytest.raises(ConfigError, match=r"^c.yaml:3: not valid YAML"):
        load("a: 1\nb: 2\nc: d: 3\n", "c.yaml")
    with pytest.raises(RulesError, match=r"^r.yaml, line 2: not valid YAML"):
        load("rules:\n  - id: a: b\n", "r.yaml", error=RulesError, style=comma_style)


def test_mapping_lines_style_points_at_the_holding_mapping():
    text = "rules:\n  - id: a\n    trigger:\n      kind: tag_gained\n      tag: x.y\n      extra: 1\n"
    with pytest.raises(RulesError) as err:
        validate(RulesFile, text, "r.yaml", error=RulesError, rules=Rules(), style=comma_style, line_at="mapping")
    assert str(err.value) == "r.yaml, rule 'a', line 4: field 'trigger': unknown key 'extra'"


def test_top_level_errors_without_rules():
    class Conf(_Strict):
        k: int = Field(gt=0)
        name: str

    with pytest.raises(ConfigError, match=r"^c.yaml:2: field 'k': must be > 0, got 0$"):
        validate(Conf, "name: x\nk: 0\n", "c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml:1: missing field 'name'$"):
        validate(Conf, "k: 1\n", "c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml:3: unknown key 'kk'$"):
        validate(Conf, "k: 1\nname: x\nkk: 2\n", "c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml:1: must be a mapping \(key: value lines\), got None$"):
        validate(Conf, "", "c.yaml")


def test_read_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        read(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"a: 1\nb: \xff\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:2: not UTF-8"):
        read(bad)


def test_duplicate_key_inside_a_rule_names_the_rule_even_before_its_id():
    text = "rules:\n  - enabled: true\n    enabled: false\n    id: late_id\n"
    with pytest.raises(RulesError, match=r"^r.yaml:3: rule 'late_id': duplicate key 'enabled' \(first on line 2\)$"):
        load(text, "r.yaml", error=RulesError, rules=Rules())
    text = "rules:\n  - id: a\n    trigger: {kind: tag_gained, tag: x.y, tag: y.z}\n"
    with pytest.raises(RulesError, match=r"^r.yaml:3: rule 'a': field 'trigger': duplicate key 'tag'"):
        validate(RulesFile, text, "r.yaml", error=RulesError, rules=Rules())


def test_phrases_reword_an_error_type():
    text = GOOD.replace("    enabled: false\n", "    enabeld: false\n")
    with pytest.raises(RulesError, match=r"^reminders.yaml:8: rule 'new_parent': unknown field 'enabeld'$"):
        validate(RulesFile, text, "reminders.yaml", error=RulesError, rules=Rules(),
                 phrases={"extra_forbidden": "unknown field {key!r}"})


class FlatExpiry(_Strict):
    id: str
    kind: Literal["licence_expiry"]
    stages_days: list[Annotated[int, Field(ge=0)]]


class FlatGained(_Strict):
    id: str
    kind: Literal["tag_gained"]
    tag: str


class FlatFile(_Strict):
    rules: list[Annotated[Union[FlatExpiry, FlatGained], Field(discriminator="kind")]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rules:\n  - id: a\n    kind: licence_expiry\n    stages_days: [90, -30]\n",
         "f.yaml:4: rule 'a': field 'stages_days[1]': must be >= 0, got -30"),
        ("rules:\n  - id: a\n    kind: licence_expiry\n    stages_days: [90]\n    tag: x\n",
         "f.yaml:5: rule 'a': unknown key 'tag'"),
        ("rules:\n  - id: b\n    kind: tag_gained\n", "f.yaml:2: rule 'b': missing field 'tag'"),
        ("rules:\n  - id: c\n    kind: birthday\n", "f.yaml:3: rule 'c': field 'kind': unknown kind 'birthday'"),
    ],
)
def test_a_union_of_whole_rules_names_the_rule_and_field(text, expected):
    """The reminder rules' shape: each rule is one member of a union discriminated by its ``kind``."""
    with pytest.raises(RulesError) as err:
        validate(FlatFile, text, "f.yaml", error=RulesError, rules=Rules())
    assert str(err.value).startswith(expected), str(err.value)


def test_validators_see_the_callers_context():
    """Checks against reference data (known licence types) run inside the schema and are located like the rest."""
    from pydantic import ValidationInfo

    class Known(_Strict):
        licence_types: list[str]

        @field_validator("licence_types")
        @classmethod
        def _known(cls, v, info: ValidationInfo):
            unknown = [x for x in v if x not in info.context["licence_types"]]
            if unknown:
                raise ValueError(f"unknown licence type {unknown[0]!r}")
            return v

    text = "licence_types: [passport]\n"
    assert validate(Known, text, "k.yaml", context={"licence_types": {"passport"}}).licence_types == ["passport"]
    with pytest.raises(ConfigError, match=r"^k.yaml:1: field 'licence_types': unknown licence type 'passport'$"):
        validate(Known, text, "k.yaml", context={"licence_types": set()})
