"""Operators' tag rules (``data/tag_rules.yaml``): parsed, checked, then compiled to Polars expressions.

The file is data, never code: there is no ``eval``. A rule is a condition tree over a small, closed vocabulary
(profile fields, licences, past events, household members, other rules); anything outside it is rejected with
:class:`data.errors.RulesError` naming the file, the rule and the line, before any tag is touched, so the
rules in force stay in force.

Format (see ``data/tag_rules.yaml`` for a full, commented file)::

    rules:
      - id: marriage_registered          # unique; the source of a tag is "id@version"
        version: 1
        tag: life_event.marriage         # a taxonomy code, or a template "enterprise.industry_{industry}"
        subject: person                  # person | enterprise | unknown, or a list; default from the taxonomy
        confidence: 1.0
        when: {license: marriage_certificate, issued_within_days: 365, name: wed}
        valid_from: wed.latest           # date ref, or a list of them (the latest non-null wins); default as_of
        valid_until: wed.latest + 1y     # date ref; default valid_from + the taxonomy's default_validity_days
        evidence: {zh: "婚姻登记 {wed.latest}", en: "marriage registered {wed.latest}"}

Conditions (a mapping each):

- ``{all: [...]}``, ``{any: [...]}``, ``{not: {...}}``
- ``{field: REF, op: OP, value: V}``: OP is one of ``== != < <= > >= in not_in is_null not_null
  within_last_days within_next_days``; REF is a field, optionally shifted: ``birth_date + 60y`` (units y, m, d).
  For a date field, V may be an ISO date or a date ref (``as_of``, ``as_of.year_start + 8m``).
- ``{license: TYPE, issued_within_days: N, include_expired: false, name: NAME}``: holds a licence of TYPE not
  expired at as_of (issued within the last N days, if given; expired ones too with ``include_expired``).
- ``{events: {action, category, department, life_event, occupation, tag, item, within_days, since},
  count: {op, value}, name: NAME}``: count of the subject's events matching every given key (a key may take
  a list), default ``>= 1``. ``life_event``/``occupation``/``tag`` match the catalogue's tag columns
  (``job_seeking`` is ``life_event.job_seeking``); ``since`` is a date ref such as ``as_of.year_start``.
- ``{household: children|members, where: [member conditions], count: {op, value}, name: NAME}``: count of other
  household members (children: under 18 and at least 15 years younger) matching member conditions over
  ``age``, ``birth_date``, ``gender``.
- ``{rule: OTHER_ID}``: OTHER_ID's condition holds (rules may build on rules; a cycle is an error).

A named condition exposes ``NAME.count`` and ``NAME.latest`` (latest issue date / event date / member birth date)
to ``valid_from``, ``valid_until`` and evidence templates. Evidence may also say ``{tag.name_zh}`` /
``{tag.name_en}``: the taxonomy's name of the tag emitted (``登记职业：{tag.name_zh}`` -> 登记职业：驾驶员), so that
each language's evidence names a coded field in that language.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from data.facts import end_of_as_of_day_utc as day_end_utc
from data import yamlfile
from data.errors import RulesError

COMPARE_OPS = {"==", "!=", "<", "<=", ">", ">="}
DATE_WINDOW_OPS = {"within_last_days", "within_next_days"}
SET_OPS = {"in", "not_in"}
NULL_OPS = {"is_null", "not_null"}
ALL_OPS = COMPARE_OPS | DATE_WINDOW_OPS | SET_OPS | NULL_OPS
SUBJECT_TYPES = ("person", "enterprise", "unknown")
EVENT_KEYS = {"action", "category", "department", "life_event", "occupation", "tag", "item", "within_days", "since"}
# Catalogue columns holding tag codes, and the prefix a bare code in a rule gets ("job_seeking" -> "life_event.job_seeking").
TAG_COLUMNS = ("life_events", "crowds", "occupations")
_EVENT_CODE_PREFIX = {"life_event": "life_event.", "occupation": "occupation."}
MEMBER_FIELDS = {"age": "num", "birth_date": "date", "gender": "str"}
PSEUDO_DATES = ("as_of", "as_of.year_start")
# Evidence placeholders naming the emitted tag in the taxonomy's words: placeholder -> taxonomy column.
TAG_NAME_REFS = {"tag.name_zh": "name_zh", "tag.name_en": "name_en"}
# "as_of.last_09_01": the latest 1 September on or before as_of (enrolment days, filing deadlines).
_LAST_MMDD = re.compile(r"^as_of\.last_(\d\d)_(\d\d)$")


def _is_pseudo(name: str) -> bool:
    m = _LAST_MMDD.match(name)
    if m:
        try:
            date(2000, int(m.group(1)), int(m.group(2)))
        except ValueError:
            return False
        return True
    return name in PSEUDO_DATES

_REF = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*((?:[+-]\s*\d+\s*[ymd]\s*)*)$")
_SHIFT = re.compile(r"([+-])\s*(\d+)\s*([ymd])")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


# -- the file's structure ---------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    # strict: `true` is not a number, 1 is not text
    model_config = ConfigDict(extra="forbid", strict=True)


class Evidence(_Strict):
    zh: str
    en: str


class RuleSpec(_Strict):
    """One rule as written; its condition, dates and templates are then checked against the fields and taxonomy."""

    id: str
    version: int = Field(default=1, ge=1)
    tag: str  # a taxonomy code, or a template "enterprise.industry_{industry}"
    subject: Literal["person", "enterprise", "unknown"] | list[Literal["person", "enterprise", "unknown"]] | None = None
    confidence: float = Field(default=1.0, gt=0, le=1)
    when: dict[str, Any]  # the condition tree: checked by _Checker (the rule language)
    valid_from: str | list[str] | None = None
    valid_until: str | None = None
    evidence: Evidence
    description: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"bad rule id {v!r} (lowercase letters, digits, _)")
        return v


class RulesFile(_Strict):
    rules: list[RuleSpec]


_RULES = yamlfile.Rules("rules", "id")


def field_kind(dtype: pl.DataType) -> str:
    """The rule language's type of a column: num, str, bool, date, datetime or other."""
    if dtype == pl.Boolean:
        return "bool"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype.is_numeric():
        return "num"
    if dtype == pl.String:
        return "str"
    return "other"


# -- the checked rule set --------------------------------------------------------------------------------------------


@dataclass
class Aggregate:
    """A per-subject column the rules need that the profile does not hold (licences, events)."""

    column: str
    kind: str  # "license" or "events"
    spec: dict
    latest: bool = True  # also compute NAME.latest (model features need only the count)


@dataclass
class Rule:
    id: str
    version: int
    tag: str
    subjects: tuple[str, ...]
    confidence: float
    line: int
    when: dict
    valid_from: list[str] | None
    valid_until: str | None
    evidence_zh: str
    evidence_en: str
    deps: set[str] = field(default_factory=set)

    @property
    def source(self) -> str:
        return f"rule:{self.id}@{self.version}"

    @property
    def tag_field(self) -> str | None:
        m = _PLACEHOLDER.search(self.tag)
        return m.group(1) if m else None


@dataclass
class RuleSet:
    path: str
    rules: list[Rule]
    fields: dict[str, str]  # name -> kind of every column a rule may read, aggregates included
    aggregates: dict[str, Aggregate]
    digest: str = ""  # of the file's text: which rules were in force for a batch
    tag_names: dict[str, dict[str, str]] = field(default_factory=dict)  # name_zh / name_en -> {code: name}


class _Checker:
    def __init__(self, doc: yamlfile.Document, fields: dict[str, str], taxonomy: pl.DataFrame,
                 license_types: set[str] | None):
        self.path = doc.source
        self.loc = doc.locator
        self.fields = dict(fields) | {p: "date" for p in PSEUDO_DATES}
        self.taxonomy = {row["code"]: row for row in taxonomy.iter_rows(named=True)}
        self.license_types = license_types
        self.aggregates: dict[str, Aggregate] = {}
        self.rule_id = "?"
        self.rule_names: dict[str, str] = {}

    def fail(self, line: Any, msg: str):
        where = f"{self.path}, rule {self.rule_id!r}" + (f", line {line}" if line else "")
        raise RulesError(f"{where}: {msg}")

    # -- refs

    def parse_ref(self, text: Any, line, *, allowed: dict[str, str]) -> tuple[str, list[tuple[int, str]], str]:
        """(name, shifts, kind) of a field ref like ``birth_date + 60y``; shifts only on dates."""
        if not isinstance(text, str):
            self.fail(line, f"expected a field name, got {text!r}")
        m = _REF.match(text)
        if not m:
            self.fail(line, f"cannot read field reference {text!r} (expected NAME or NAME + 60y / - 3m / + 10d)")
        name = self._local(m.group(1))
        if _is_pseudo(name) and "as_of.year_start" in allowed:
            allowed = {**allowed, name: "date"}
        if name not in allowed:
            self.fail(line, f"unknown field {m.group(1)!r}")
        shifts = [(int(n) * (1 if s == "+" else -1), u) for s, n, u in _SHIFT.findall(m.group(2))]
        kind = allowed[name]
        if shifts and kind != "date":
            self.fail(line, f"field {m.group(1)!r} is not a date and cannot be shifted")
        return name, shifts, kind

    # -- conditions

    def check_when(self, cond: Any, line, path: tuple, *, member: bool = False) -> dict:
        """Check the condition at ``path``; errors name the line its mapping starts on."""
        if not isinstance(cond, dict):
            self.fail(line, f"a condition must be a mapping, got {cond!r}")
        line = self.loc.node_line(path)
        keys = set(cond)
        if keys & {"all", "any"}:
            if len(keys & {"all", "any"}) > 1:
                self.fail(line, "use one of all/any per condition")
            (op,) = keys & {"all", "any"}
            self._only(cond, {op}, line)
            items = cond[op]
            if not isinstance(items, list) or not items:
                self.fail(line, f"{op!r} needs a non-empty list of conditions")
            items = [self.check_when(c, line, path + (op, i), member=member) for i, c in enumerate(items)]
            return {"op": op, "items": items, "line": line}
        if "not" in keys:
            self._only(cond, {"not"}, line)
            return {"op": "not", "item": self.check_when(cond["not"], line, path + ("not",), member=member), "line": line}
        if "field" in keys:
            return self.check_compare(cond, line, member=member)
        if member:
            self.fail(line, f"a household member condition may only use field/all/any/not, got {sorted(keys)}")
        if "license" in keys:
            return self.check_license(cond, line)
        if "events" in keys:
            return self.check_events(cond, line, path)
        if "household" in keys:
            return self.check_household(cond, line, path)
        if "rule" in keys:
            self._only(cond, {"rule"}, line)
            if not isinstance(cond["rule"], str):
                self.fail(line, "'rule' takes a rule id")
            return {"op": "rule", "rule": cond["rule"], "line": line}
        self.fail(line, f"unknown condition {sorted(keys)} (expected field, license, events, household, rule, all, any, not)")

    def _only(self, cond: dict, allowed: set[str], line) -> None:
        extra = set(cond) - allowed
        if extra:
            self.fail(line, f"unknown key(s) {sorted(extra)} in condition")

    def check_compare(self, cond: dict, line, *, member: bool) -> dict:
        self._only(cond, {"field", "op", "value"}, line)
        allowed = (MEMBER_FIELDS | {p: "date" for p in PSEUDO_DATES}) if member else self.fields
        name, shifts, kind = self.parse_ref(cond["field"], line, allowed=allowed)
        op = cond.get("op", "==")
        if op not in ALL_OPS:
            self.fail(line, f"unknown operator {op!r} (expected one of {' '.join(sorted(ALL_OPS))})")
        value = cond.get("value")
        out = {"op": "compare", "field": name, "shifts": shifts, "cmp": op, "line": line, "kind": kind}
        if op in NULL_OPS:
            if "value" in cond:
                self.fail(line, f"operator {op!r} takes no value")
            return out
        if "value" not in cond:
            self.fail(line, f"operator {op!r} needs a value")
        if op in DATE_WINDOW_OPS:
            if kind != "date":
                self.fail(line, f"operator {op!r} needs a date field, {cond['field']!r} is {kind}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                self.fail(line, f"wrong type: {op!r} needs a whole number of days, got {value!r}")
            out["value"] = value
            return out
        if op in SET_OPS:
            if not isinstance(value, list) or not value:
                self.fail(line, f"wrong type: {op!r} needs a non-empty list, got {value!r}")
            out["value"] = [self.check_literal(v, kind, op, line, cond["field"], member) for v in value]
            return out
        if op in {"<", "<=", ">", ">="} and kind not in {"num", "date"}:
            self.fail(line, f"wrong type: {op!r} needs a number or date field, {cond['field']!r} is {kind}")
        out["value"] = self.check_literal(value, kind, op, line, cond["field"], member)
        return out

    def check_literal(self, value, kind: str, op: str, line, fname: str, member: bool):
        if kind == "num" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return ("lit", value)
        if kind == "bool" and isinstance(value, bool):
            return ("lit", value)
        if kind == "str" and isinstance(value, str):
            return ("lit", value)
        if kind == "date":
            if isinstance(value, date):
                return ("lit", value)
            if isinstance(value, str):
                try:
                    return ("lit", date.fromisoformat(value))
                except ValueError:
                    allowed = {p: "date" for p in PSEUDO_DATES}
                    if not member:
                        allowed |= {k: v for k, v in self.fields.items() if v == "date"}
                    name, shifts, _ = self.parse_ref(value, line, allowed=allowed)
                    return ("ref", name, shifts)
        self.fail(line, f"wrong type: {fname!r} is {kind}, {op!r} compares it with {value!r}")

    def _count(self, cond: dict, line, path: tuple) -> tuple[str, float]:
        spec = cond.get("count", {"op": ">=", "value": 1})
        if not isinstance(spec, dict):
            self.fail(line, f"wrong type: 'count' needs {{op, value}}, got {spec!r}")
        op, value = spec.get("op", ">="), spec.get("value")
        cline = self.loc.node_line(path + ("count",)) if "count" in cond else line
        if op not in COMPARE_OPS:
            self.fail(cline, f"unknown operator {op!r} in count")
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(cline, f"wrong type: count value must be a whole number, got {value!r}")
        return op, value

    def _name(self, cond: dict, line) -> str | None:
        name = cond.get("name")
        if name is None:
            return None
        if not isinstance(name, str) or not _NAME.match(name):
            self.fail(line, f"bad name {name!r} (lowercase letters, digits, _)")
        if name in self.rule_names:
            self.fail(line, f"name {name!r} used twice in the rule")
        return name

    def _expose(self, name: str | None, column: str) -> None:
        if name:
            self.rule_names[name] = column
            self.fields[f"{column}.count"] = "num"
            self.fields[f"{column}.latest"] = "date"

    def check_license(self, cond: dict, line) -> dict:
        self._only(cond, {"license", "issued_within_days", "include_expired", "name"}, line)
        expired_ok = cond.get("include_expired", False)
        if not isinstance(expired_ok, bool):
            self.fail(line, f"wrong type: include_expired must be true or false, got {expired_ok!r}")
        lt = cond["license"]
        if not isinstance(lt, str):
            self.fail(line, f"wrong type: 'license' takes a licence type, got {lt!r}")
        if self.license_types is not None and lt not in self.license_types:
            self.fail(line, f"unknown licence type {lt!r}")
        within = cond.get("issued_within_days")
        if within is not None and (not isinstance(within, int) or isinstance(within, bool) or within < 0):
            self.fail(line, f"wrong type: issued_within_days must be a whole number, got {within!r}")
        column = f"lic.{lt}.{within if within is not None else 'any'}" + (".ever" if expired_ok else "")
        self.aggregates[column] = Aggregate(column, "license", {"license_type": lt, "within_days": within, "include_expired": expired_ok})
        name = self._name(cond, line)
        self._expose(name, column)
        return {"op": "agg", "column": column, "cmp": ">=", "value": 1, "line": line}

    def check_events(self, cond: dict, line, path: tuple) -> dict:
        self._only(cond, {"events", "count", "name"}, line)
        spec = cond["events"]
        if not isinstance(spec, dict):
            self.fail(line, "wrong type: 'events' needs a mapping of filters")
        eline = self.loc.node_line(path + ("events",))
        bad = set(spec) - EVENT_KEYS
        if bad:
            self.fail(eline, f"unknown event filter(s) {sorted(bad)} (expected {' '.join(sorted(EVENT_KEYS))})")
        clean = {}
        for key in sorted(EVENT_KEYS - {"within_days", "since"}):
            if key in spec:
                v = spec[key]
                vals = v if isinstance(v, list) else [v]
                if not vals or not all(isinstance(x, str) for x in vals):
                    self.fail(eline, f"wrong type: event filter {key!r} takes a string or a list of strings")
                prefix = _EVENT_CODE_PREFIX.get(key)
                if prefix:
                    vals = [x if x.startswith(prefix) else prefix + x for x in vals]
                if key in ("life_event", "occupation", "tag"):
                    unknown = [x for x in vals if x not in self.taxonomy]
                    if unknown:
                        self.fail(eline, f"unknown tag code(s) {unknown} in event filter {key!r}")
                clean[key] = sorted(vals)
        if "since" in spec:
            name, shifts, _ = self.parse_ref(spec["since"], eline, allowed={p: "date" for p in PSEUDO_DATES})
            clean["since"] = (name, tuple(shifts))
        within = spec.get("within_days")
        if within is not None and (not isinstance(within, int) or isinstance(within, bool) or within <= 0):
            self.fail(eline, f"wrong type: within_days must be a positive whole number, got {within!r}")
        clean["within_days"] = within
        column = "ev." + hashlib.sha1(repr(sorted(clean.items())).encode()).hexdigest()[:10]
        self.aggregates[column] = Aggregate(column, "events", clean)
        op, value = self._count(cond, line, path)
        self._expose(self._name(cond, line), column)
        return {"op": "agg", "column": column, "cmp": op, "value": value, "line": line}

    def check_household(self, cond: dict, line, path: tuple) -> dict:
        self._only(cond, {"household", "where", "count", "name"}, line)
        who = cond["household"]
        if who not in ("children", "members"):
            self.fail(line, f"'household' takes children or members, got {who!r}")
        where = cond.get("where", [])
        if isinstance(where, dict):
            where_paths = [path + ("where",)]
            where = [where]
        elif isinstance(where, list):
            where_paths = [path + ("where", i) for i in range(len(where))]
        else:
            self.fail(line, "wrong type: 'where' takes a list of member conditions")
        member_conds = [self.check_when(c, line, p, member=True) for c, p in zip(where, where_paths)]
        op, value = self._count(cond, line, path)
        name = self._name(cond, line)
        out = {"op": "household", "who": who, "where": member_conds, "cmp": op, "value": value, "line": line}
        if name:
            column = f"hh.{self.rule_id}.{name}"
            out["column"] = column
            self.rule_names[name] = column
            self.fields[f"{column}.count"] = "num"
            self.fields[f"{column}.latest"] = "date"
        return out

    # -- a whole rule

    def check_rule(self, spec: RuleSpec, index: int) -> Rule:
        """Check a rule whose structure the schema has passed: its tag, condition, dates and templates."""
        path = ("rules", index)
        line = self.loc.node_line(path)
        self.rule_id = spec.id
        self.rule_names = {}
        tag = spec.tag
        tmpl = _PLACEHOLDER.findall(tag)
        if len(tmpl) > 1:
            self.fail(line, f"tag {tag!r}: at most one {{field}} placeholder")
        if tmpl:
            if tmpl[0] not in self.fields or self.fields[tmpl[0]] not in {"str", "num"}:
                self.fail(line, f"tag {tag!r}: unknown or non-text field {tmpl[0]!r}")
            prefix = tag.split("{")[0]
            if not any(c.startswith(prefix) for c in self.taxonomy):
                self.fail(line, f"tag {tag!r}: no taxonomy code starts with {prefix!r}")
            default_subject = next(row["subject_type"] for c, row in self.taxonomy.items() if c.startswith(prefix))
            validity = None
        else:
            if tag not in self.taxonomy:
                self.fail(line, f"unknown tag code {tag!r} (not in the taxonomy)")
            default_subject = self.taxonomy[tag]["subject_type"]
            validity = self.taxonomy[tag]["default_validity_days"]
            validity = None if validity is None or validity != validity else validity  # empty = open-ended
        subjects = default_subject if spec.subject is None else spec.subject
        subjects = subjects if isinstance(subjects, list) else [subjects]
        for s in subjects:
            if s not in SUBJECT_TYPES:  # a taxonomy's default subject type
                self.fail(line, f"unknown subject type {s!r} (expected person, enterprise or unknown)")
        when = self.check_when(spec.when, line, path + ("when",))

        date_refs = {k: v for k, v in self.fields.items() if v == "date"} | {p: "date" for p in PSEUDO_DATES}
        vf = spec.valid_from
        if vf is not None:
            for ref in vf if isinstance(vf, list) else [vf]:
                self.parse_ref(ref, line, allowed=date_refs)
            vf = [self._resolve(ref) for ref in (vf if isinstance(vf, list) else [vf])]
        vu = spec.valid_until
        if vu is not None:
            self.parse_ref(vu, line, allowed=date_refs)
            vu = self._resolve(vu)
        elif validity is not None:
            vu = f"valid_from + {int(validity)}d"
        ev_line = self.loc.node_line(path + ("evidence",))
        evidence = {}
        for lang in ("zh", "en"):
            text = getattr(spec.evidence, lang)
            for ph in _PLACEHOLDER.findall(text):
                if ph.strip() in TAG_NAME_REFS:
                    continue
                self.parse_ref(ph, ev_line, allowed=self.fields | {p: "date" for p in PSEUDO_DATES} | {"valid_from": "date"})
            evidence[lang] = _PLACEHOLDER.sub(lambda m: "{" + self._evidence_ref(m.group(1)) + "}", text)
        return Rule(
            id=spec.id,
            version=spec.version,
            tag=tag,
            subjects=tuple(subjects),
            confidence=float(spec.confidence),
            line=line,
            when=when,
            valid_from=vf,
            valid_until=vu,
            evidence_zh=evidence["zh"],
            evidence_en=evidence["en"],
            deps=_deps(when),
        )

    def _local(self, name: str) -> str:
        """A rule-local condition name (``wed.latest``) as its column (``lic.marriage_certificate.365.latest``)."""
        head, _, rest = name.partition(".")
        if rest and head in self.rule_names:
            return f"{self.rule_names[head]}.{rest}"
        return name

    def _evidence_ref(self, ref: str) -> str:
        return ref.strip() if ref.strip() in TAG_NAME_REFS else self._resolve(ref)

    def _resolve(self, ref: str) -> str:
        m = _REF.match(ref)
        shifts = " ".join(m.group(2).split())
        return self._local(m.group(1)) + (f" {shifts}" if shifts else "")


def _deps(cond: dict) -> set[str]:
    if cond["op"] == "rule":
        return {cond["rule"]}
    if cond["op"] in ("all", "any"):
        return set().union(*(_deps(c) for c in cond["items"]))
    if cond["op"] == "not":
        return _deps(cond["item"])
    return set()


def load_rules(
    path: Path, fields: dict[str, str], taxonomy: pl.DataFrame, license_types: set[str] | None = None
) -> RuleSet:
    """Read and check a rules file; raises RulesError naming file, rule and line on the first problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"{path}: rules file not found") from None
    except UnicodeDecodeError:
        raise RulesError(f"{path}: not UTF-8 text") from None
    return parse_rules(text, str(path), fields, taxonomy, license_types)


def parse_rules(
    text: str, path: str, fields: dict[str, str], taxonomy: pl.DataFrame, license_types: set[str] | None = None
) -> RuleSet:
    """Parse and check a rules file's text; raises RulesError naming ``path``, rule and line on the first problem.

    Errors name the line of the mapping at fault (the rule's first line for a rule's own fields, the condition's
    for a condition), as the file's comments promise.
    """
    doc = yamlfile.load(text, path, error=RulesError, style=yamlfile.comma_style, rules=_RULES)
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("rules"), list):
        raise RulesError(f"{path}: expected a mapping with a 'rules' list")
    spec = yamlfile.validate(RulesFile, doc, error=RulesError, style=yamlfile.comma_style, rules=_RULES,
                             line_at="mapping")
    checker = _Checker(doc, fields, taxonomy, license_types)
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(spec.rules):
        rule = checker.check_rule(raw, i)
        if rule.id in seen:
            checker.fail(rule.line, f"duplicate rule id (first defined on line {seen[rule.id]})")
        seen[rule.id] = rule.line
        rules.append(rule)
    by_id = {r.id: r for r in rules}
    for r in rules:
        checker.rule_id = r.id
        for d in r.deps:
            if d not in by_id:
                checker.fail(r.line, f"refers to unknown rule {d!r}")
    _check_cycles(by_id, checker)
    return RuleSet(
        path=path,
        rules=rules,
        fields=checker.fields,
        aggregates=checker.aggregates,
        digest=hashlib.sha256(text.encode()).hexdigest()[:12],
        tag_names={col: {code: row[col] for code, row in checker.taxonomy.items() if row.get(col)}
                   for col in TAG_NAME_REFS.values()},
    )


def _check_cycles(by_id: dict[str, Rule], checker: _Checker) -> None:
    state: dict[str, int] = {}

    def visit(rid: str, trail: list[str]) -> None:
        if state.get(rid) == 2:
            return
        if state.get(rid) == 1:
            cycle = trail[trail.index(rid) :] + [rid]
            checker.rule_id = rid
            checker.fail(by_id[rid].line, f"rules refer to each other in a cycle: {' -> '.join(cycle)}")
        state[rid] = 1
        for d in sorted(by_id[rid].deps):
            visit(d, trail + [rid])
        state[rid] = 2

    for rid in by_id:
        visit(rid, [])


# -- compilation -------------------------------------------------------------------------------------------------


def _shift(expr: pl.Expr, shifts: list[tuple[int, str]]) -> pl.Expr:
    for n, unit in shifts:
        expr = expr.dt.offset_by(f"{n}{'mo' if unit == 'm' else unit}")
    return expr


def _pseudo(name: str, as_of: date) -> pl.Expr:
    if name == "as_of":
        return pl.lit(as_of)
    if name == "as_of.year_start":
        return pl.lit(date(as_of.year, 1, 1))
    m = _LAST_MMDD.match(name)
    month, day = int(m.group(1)), int(m.group(2))
    this_year = date(as_of.year, month, day)
    return pl.lit(this_year if this_year <= as_of else date(as_of.year - 1, month, day))


class Compiler:
    """Turns a checked RuleSet into expressions over the tagging frame (profile + aggregate columns)."""

    def __init__(self, ruleset: RuleSet, as_of: date):
        self.rs = ruleset
        self.as_of = as_of
        self.by_id = {r.id: r for r in ruleset.rules}

    def ref(self, text: str, *, member: bool = False) -> pl.Expr:
        m = _REF.match(text)
        name = m.group(1)
        shifts = [(int(n) * (1 if s == "+" else -1), u) for s, n, u in _SHIFT.findall(m.group(2))]
        if _is_pseudo(name):
            base = _pseudo(name, self.as_of)
        elif member:
            base = pl.element().struct.field(name)
        else:
            base = pl.col(name)
        return _shift(base, shifts)

    def _value(self, v, *, member: bool) -> pl.Expr:
        if v[0] == "lit":
            return pl.lit(v[1])
        base = _pseudo(v[1], self.as_of) if _is_pseudo(v[1]) else pl.col(v[1])
        return _shift(base, v[2])

    def cond(self, c: dict, *, member: bool = False) -> pl.Expr:
        op = c["op"]
        if op == "all":
            return pl.all_horizontal([self.cond(x, member=member) for x in c["items"]])
        if op == "any":
            return pl.any_horizontal([self.cond(x, member=member) for x in c["items"]])
        if op == "not":
            return ~self.cond(c["item"], member=member)
        if op == "rule":
            return self.cond(self.by_id[c["rule"]].when)
        if op == "agg":
            return _cmp(pl.col(f"{c['column']}.count").fill_null(0), c["cmp"], pl.lit(c["value"]))
        if op == "household":
            return _cmp(self.household_count(c), c["cmp"], pl.lit(c["value"]))
        # compare
        if _is_pseudo(c["field"]):
            x = _shift(_pseudo(c["field"], self.as_of), c["shifts"])
        elif member:
            x = _shift(pl.element().struct.field(c["field"]), c["shifts"])
        else:
            x = _shift(pl.col(c["field"]), c["shifts"])
        cmp = c["cmp"]
        if cmp == "is_null":
            return x.is_null()
        if cmp == "not_null":
            return x.is_not_null()
        if cmp == "within_last_days":
            # "Within N days" includes the day N days ago, as a tag valid for N days from it is still live.
            return x.is_between(pl.lit(self.as_of - timedelta(days=c["value"])), pl.lit(self.as_of)).fill_null(False)
        if cmp == "within_next_days":
            return x.is_between(pl.lit(self.as_of), pl.lit(self.as_of + timedelta(days=c["value"]))).fill_null(False)
        if cmp in SET_OPS:
            values = [v[1] for v in c["value"]]
            out = x.is_in(pl.lit(pl.Series(values)).implode())
            return (~out if cmp == "not_in" else out).fill_null(False)
        # A comparison with a missing value is false, never null: a rule fires only on facts.
        return _cmp(x, cmp, self._value(c["value"], member=member)).fill_null(False)

    def _members(self, c: dict) -> pl.Expr:
        col = pl.col("household_members")
        if c["who"] == "children":
            col = col.list.eval(pl.element().filter(pl.element().struct.field("child")))
        if c["where"]:
            pred = pl.all_horizontal([self.cond(w, member=True) for w in c["where"]])
            col = col.list.eval(pl.element().filter(pred))
        return col

    def household_count(self, c: dict) -> pl.Expr:
        return self._members(c).list.len().fill_null(0)

    def named_columns(self) -> list[pl.Expr]:
        """``NAME.count`` / ``NAME.latest`` of named household conditions (licence and event ones come from aggregates)."""
        out = []
        for r in self.rs.rules:
            for c in _walk(r.when):
                if c["op"] == "household" and "column" in c:
                    members = self._members(c)
                    out.append(members.list.len().fill_null(0).alias(f"{c['column']}.count"))
                    out.append(members.list.eval(pl.element().struct.field("birth_date")).list.max().alias(f"{c['column']}.latest"))
        return out

    def rule_columns(self) -> list[pl.Expr]:
        """One boolean column per rule: the rule fires for this subject (dependencies inlined, so one pass)."""
        return [
            (pl.col("subject_type").is_in(list(r.subjects)) & self.cond(r.when)).fill_null(False).alias(f"rule.{r.id}")
            for r in self.rs.rules
        ]

    def template(self, text: str, code: pl.Expr | None = None) -> pl.Expr:
        """A template as one expression; ``code`` (the emitted tag) resolves ``{tag.name_zh}`` / ``{tag.name_en}``."""
        parts: list[pl.Expr] = []
        pos = 0
        for m in _PLACEHOLDER.finditer(text):
            if m.start() > pos:
                parts.append(pl.lit(text[pos : m.start()]))
            if m.group(1) in TAG_NAME_REFS and code is not None:
                names = self.rs.tag_names.get(TAG_NAME_REFS[m.group(1)], {})
                parts.append(code.replace_strict(names, default=code, return_dtype=pl.String) if names else code)
                pos = m.end()
                continue
            parts.append(self.ref(m.group(1)).cast(pl.String).fill_null("?"))
            pos = m.end()
        if pos < len(text):
            parts.append(pl.lit(text[pos:]))
        return pl.concat_str(parts) if parts else pl.lit("")

    def tag_rows(self, frame: pl.LazyFrame, rule: Rule) -> pl.LazyFrame:
        """The tags one rule emits, from a frame holding the rule's column."""
        if rule.valid_from:
            vf = pl.max_horizontal([self.ref(x) for x in rule.valid_from]).fill_null(pl.lit(self.as_of))
        else:
            vf = pl.lit(self.as_of)
        code = self.template(rule.tag) if rule.tag_field else pl.lit(rule.tag)
        staged = frame.filter(pl.col(f"rule.{rule.id}")).with_columns(vf.alias("valid_from"))
        vu = self.ref(rule.valid_until) if rule.valid_until else pl.lit(None, pl.Date)
        return staged.select(
            "subject_id",
            code.alias("code"),
            pl.lit(rule.confidence, pl.Float64).alias("confidence"),
            pl.lit(rule.source).alias("source"),
            self.template(rule.evidence_zh, code).alias("evidence_zh"),
            self.template(rule.evidence_en, code).alias("evidence_en"),
            pl.col("valid_from"),
            vu.cast(pl.Date).alias("valid_until"),
        )


def _walk(c: dict):
    yield c
    if c["op"] in ("all", "any"):
        for x in c["items"]:
            yield from _walk(x)
    elif c["op"] == "not":
        yield from _walk(c["item"])


def _cmp(x: pl.Expr, op: str, y: pl.Expr) -> pl.Expr:
    return {"==": x.eq, "!=": x.ne, "<": x.lt, "<=": x.le, ">": x.gt, ">=": x.ge}[op](y)


# -- aggregates over licences and events --------------------------------------------------------------------------


def licence_aggregate_exprs(aggs: list[Aggregate], as_of: date) -> list[pl.Expr]:
    out = []
    valid = pl.col("expires_on").is_null() | (pl.col("expires_on") >= pl.lit(as_of))
    for a in aggs:
        m = pl.col("license_type") == a.spec["license_type"]
        if not a.spec.get("include_expired"):
            m = m & valid
        if a.spec["within_days"] is not None:
            m = m & (pl.col("issued_on") >= pl.lit(as_of - timedelta(days=a.spec["within_days"])))
        out.append(m.sum().cast(pl.Int32).alias(f"{a.column}.count"))
        out.append(pl.col("issued_on").filter(m).max().alias(f"{a.column}.latest"))
    return out


def licence_aggregates(licenses: pl.LazyFrame, aggs: list[Aggregate], as_of: date) -> pl.LazyFrame | None:
    if not aggs:
        return None
    return (
        licenses.filter(pl.col("issued_on") <= pl.lit(as_of))
        .group_by("holder_id")
        .agg(licence_aggregate_exprs(aggs, as_of))
        .rename({"holder_id": "subject_id"})
    )


def _pipe_has(col: str, values: list[str]) -> pl.Expr:
    return pl.col(col).fill_null("").str.split("|").list.set_intersection(pl.lit(values)).list.len() > 0


def item_flag_exprs(aggs: list[Aggregate]) -> list[pl.Expr]:
    """Per catalogue item, whether it passes each event aggregate's item filters.

    Evaluated once over the (small) catalogue instead of once per event: the event pass then only checks
    action and time, and events on items no aggregate cares about are dropped before grouping.
    """
    out = []
    for a in aggs:
        s = a.spec
        m = pl.lit(True)
        for key, col in (("category", "category"), ("department", "department"), ("item", "item_id")):
            if key in s:
                m = m & pl.col(col).is_in(s[key])
        for key, col in (("life_event", "life_events"), ("occupation", "occupations")):
            if key in s:
                m = m & _pipe_has(col, s[key])
        if "tag" in s:
            m = m & pl.any_horizontal([_pipe_has(col, s["tag"]) for col in TAG_COLUMNS])
        out.append(m.fill_null(False).alias(f"_item.{a.column}"))
    return out


def event_aggregate_exprs(aggs: list[Aggregate], as_of: date) -> list[pl.Expr]:
    """Count and latest local date of each aggregate's events, over events joined with :func:`item_flag_exprs`."""
    end = day_end_utc(as_of)
    out = []
    for a in aggs:
        s = a.spec
        m = pl.col(f"_item.{a.column}")
        if "action" in s:
            m = m & pl.col("action").is_in(s["action"])
        if "since" in s:
            name, shifts = s["since"]
            since = pl.select(_shift(_pseudo(name, as_of), list(shifts))).item()
            m = m & (pl.col("ts") >= pl.lit(day_end_utc(since - timedelta(days=1))))
        if s["within_days"] is not None:
            # From the start of the day N days ago (Shanghai time), like licences and date fields.
            m = m & (pl.col("ts") >= pl.lit(end - timedelta(days=s["within_days"] + 1)))
        out.append(m.sum().cast(pl.Int32).alias(f"{a.column}.count"))
        if a.latest:
            # when/then rather than filter: no gather of each group's matching rows.
            out.append(
                pl.when(m).then(pl.col("ts")).max().dt.convert_time_zone("Asia/Shanghai").dt.date().alias(f"{a.column}.latest")
            )
    return out
