"""Operator reminder rules: a YAML file, validated with errors that name file, rule and line.

A file is parsed with yaml's composer (not ``safe_load``) so every value keeps the line it was written on; every
error message reads ``FILE:LINE: rule 'ID': ...``. The rules in force belong to the store home
(``HOME/rules/reminder_rules.yaml``), seeded from ``data/reminder_rules.yaml`` or YIWANG_REMINDER_RULES_FILE
until the home has its own. Rules enter ``rule_snapshots`` only when they are really in force (used by an
evaluation, or installed through PUT /v1/rules or `yiwang rules install`); when the home's file is broken,
evaluation keeps using the last of those (and says so), never a file that was only read or previewed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from data.errors import RulesError
from data.reference import CATALOG_FILE, LICENSE_TYPES_FILE, TAXONOMY_FILE, read_reference_table

KINDS = ("licence_expiry", "tag_gained", "calendar", "age_milestone")
CHANNELS = ("in_app", "webhook")
PRIORITIES = {"high": 3, "normal": 2, "low": 1}
SUBJECT_TYPES = ("person", "enterprise")
NOTIFY = ("self", "household_adults")

COMMON_FIELDS = {"subject_id", "rule_id", "as_of", "item_names"}
KIND_FIELDS = {
    "licence_expiry": {
        "license_id", "license_type", "licence_name_zh", "licence_name_en", "expires_on", "days_left", "stage",
        "item_id", "item_name", "expiry_zh", "expiry_en",
    },
    "tag_gained": {"tag_code", "tag_name_zh", "tag_name_en", "tag_date"},
    "calendar": {"year", "window_start", "window_end"},
    "age_milestone": {"age", "member_id", "birthday", "milestone_date"},
}

_ID = re.compile(r"^[a-z][a-z0-9_]{1,63}$")
_MMDD = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")

COMMON_KEYS = {"id", "version", "kind", "enabled", "audience", "message", "channels", "priority", "statutory", "items"}
KIND_KEYS = {
    "licence_expiry": {"licence_types", "stages_days", "renewal_item"},
    "tag_gained": {"tag", "within_days"},
    "calendar": {"window", "existing_before_window"},
    "age_milestone": {"age", "notify", "days_before", "days_after"},
}
AUDIENCE_KEYS = {"subject_type", "tags_any", "tags_all", "tags_none", "districts"}


@dataclass(frozen=True)
class Audience:
    subject_type: str
    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    tags_none: tuple[str, ...] = ()
    districts: tuple[str, ...] = ()

    @property
    def tag_codes(self) -> set[str]:
        return set(self.tags_any) | set(self.tags_all) | set(self.tags_none)


@dataclass(frozen=True)
class Rule:
    id: str
    version: int
    kind: str
    audience: Audience
    message_zh: str
    message_en: str
    channels: tuple[str, ...]
    priority: int
    statutory: bool
    enabled: bool = True
    items: tuple[str, ...] = ()
    line: int = 0
    # licence_expiry
    licence_types: tuple[str, ...] = ()
    stages_days: tuple[int, ...] = ()
    renewal_item: str = "auto"
    # tag_gained
    tag: str = ""
    within_days: int = 30
    # calendar
    window_start: str = ""
    window_end: str = ""
    existing_before_window: bool = False
    # age_milestone
    age: int = 0
    notify: str = "self"
    days_before: int = 0
    days_after: int = 60


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str  # the home's file, the seed, or "snapshot N" when the file is broken; never a server path
    sha256: str
    text: str
    warning: str | None = None  # why the file is not in force
    updated_at: str | None = None  # when these rules were put in force; None: not used in force yet
    origin: str = "home"  # home / seed (the home has no rules file yet) / snapshot (the file is broken)

    def get(self, rule_id: str) -> Rule:
        for r in self.rules:
            if r.id == rule_id:
                return r
        from data.errors import NotFound

        raise NotFound(f"no reminder rule {rule_id!r} in {self.source}")


@dataclass
class Reference:
    """What rules may name: licence types, tag codes, catalogue items. Empty sets mean 'not known, skip the check'."""

    licence_types: set[str] = field(default_factory=set)
    tag_codes: set[str] = field(default_factory=set)
    items: dict[str, str] = field(default_factory=dict)  # item_id -> renews_license ('' if none)


def load_reference(data_dir: Path) -> Reference:
    """Reference sets from data/ (each file is optional: a missing file turns its check off)."""
    data_dir = Path(data_dir)
    ref = Reference()
    lic = read_reference_table(data_dir, LICENSE_TYPES_FILE)
    if lic is not None:
        ref.licence_types = set(lic["license_type"].to_list())
    tax = read_reference_table(data_dir, TAXONOMY_FILE)
    if tax is not None:
        codes = tax["code"].to_list()
        dims = tax["dimension"].to_list() if "dimension" in tax.columns else [None] * len(codes)
        for code, dim in zip(codes, dims):
            ref.tag_codes.add(code if "." in code or not dim else f"{dim}.{code}")
    cat = read_reference_table(data_dir, CATALOG_FILE)
    if cat is not None:
        cat = cat.select("item_id", pl.col("renews_license").fill_null(""))
        ref.items = dict(zip(cat["item_id"].to_list(), cat["renews_license"].to_list()))
    return ref


# -- parsing with line numbers ---------------------------------------------------------------------------------


class _Located:
    """A YAML mapping converted to a dict, remembering each key's line."""

    def __init__(self, values: dict[str, Any], lines: dict[str, int], line: int):
        self.values, self.lines, self.line = values, lines, line
        self.duplicates: list[tuple[str, int]] = []  # reported by the reader that knows the rule id


def _convert(node: yaml.Node, where: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        out = _Located({}, {}, node.start_mark.line + 1)
        for key_node, value_node in node.value:
            key = key_node.value
            if not isinstance(key_node, yaml.ScalarNode):
                raise RulesError(f"{where}:{key_node.start_mark.line + 1}: a key must be a plain word")
            if key in out.values:
                # yaml would silently keep the last value; an operator almost never means that.
                out.duplicates.append((key, key_node.start_mark.line + 1))
                continue
            out.values[key] = _convert(value_node, where)
            out.lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [(_convert(v, where), v.start_mark.line + 1) for v in node.value]
    # Scalars go through yaml's own constructors so `true`, `30` and `null` get their usual types.
    return _SCALAR_LOADER.construct_object(node, deep=True)


_SCALAR_LOADER = yaml.SafeLoader("")


class _RuleReader:
    """Typed access to one rule's fields, raising errors that carry file, rule and line."""

    def __init__(self, where: str, node: _Located, rule_id: str):
        self.where, self.node, self.rule_id = where, node, rule_id
        if node.duplicates:
            key, line = node.duplicates[0]
            raise self.fail(None, f"duplicate key {key!r}", line)

    def fail(self, key: str | None, msg: str, line: int | None = None) -> RulesError:
        line = line or (self.node.lines.get(key, self.node.line) if key else self.node.line)
        return RulesError(f"{self.where}:{line}: rule {self.rule_id!r}: {msg}")

    def has(self, key: str) -> bool:
        return key in self.node.values

    def get(self, key: str, typ, default=None, required: bool = False):
        if key not in self.node.values:
            if required:
                raise self.fail(None, f"missing field {key!r}")
            return default
        value = self.node.values[key]
        if typ is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise self.fail(key, f"field {key!r} must be a whole number, got {_show(value)}")
        if typ is bool and not isinstance(value, bool):
            raise self.fail(key, f"field {key!r} must be true or false, got {_show(value)}")
        if typ is str and not isinstance(value, str):
            raise self.fail(key, f"field {key!r} must be text, got {_show(value)}")
        if typ is list:
            if not isinstance(value, list):
                raise self.fail(key, f"field {key!r} must be a list, got {_show(value)}")
        if typ is dict and not isinstance(value, _Located):
            raise self.fail(key, f"field {key!r} must be a mapping (key: value lines), got {_show(value)}")
        return value

    def str_list(self, key: str, required: bool = False, item_type=str) -> tuple:
        raw = self.get(key, list, default=[], required=required)
        out = []
        for value, line in raw:
            ok = isinstance(value, item_type) and not isinstance(value, bool)
            if not ok:
                kind = "text" if item_type is str else "whole numbers"
                raise self.fail(key, f"field {key!r} must list {kind}, got {_show(value)}", line)
            out.append(value)
        if required and not out:
            raise self.fail(key, f"field {key!r} must not be empty")
        if len(set(out)) != len(out):
            raise self.fail(key, f"field {key!r} lists a value twice")
        return tuple(out)


def _show(value: Any) -> str:
    if isinstance(value, _Located):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _template_fields(template: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"bad braces ({exc})") from None


def parse_rules(text: str, source: str = "<rules>", reference: Reference | None = None) -> tuple[Rule, ...]:
    """Parse and validate a rules file's text; raises RulesError naming ``source``, line and rule."""
    ref = reference or Reference()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise RulesError(f"{source}{line}: not valid YAML: {problem}") from None
    if root is None:
        raise RulesError(f"{source}:1: the file is empty; expected a top-level 'rules:' list")
    doc = _convert(root, source)
    if not isinstance(doc, _Located) or "rules" not in doc.values:
        raise RulesError(f"{source}:1: expected a top-level mapping with a 'rules:' list")
    if doc.duplicates:
        raise RulesError(f"{source}:{doc.duplicates[0][1]}: duplicate key {doc.duplicates[0][0]!r}")
    extra = set(doc.values) - {"rules"}
    if extra:
        key = sorted(extra)[0]
        raise RulesError(f"{source}:{doc.lines[key]}: unknown top-level key {key!r} (only 'rules' is allowed)")
    if not isinstance(doc.values["rules"], list):
        raise RulesError(f"{source}:{doc.lines['rules']}: 'rules' must be a list of rules")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for node, line in doc.values["rules"]:
        if not isinstance(node, _Located):
            raise RulesError(f"{source}:{line}: each rule must be a mapping, got {_show(node)}")
        rule = _parse_rule(source, node, ref)
        if rule.id in seen:
            raise RulesError(
                f"{source}:{node.lines['id']}: rule {rule.id!r}: duplicate rule id (first defined on line {seen[rule.id]})"
            )
        seen[rule.id] = node.lines["id"]
        rules.append(rule)
    return tuple(rules)


def _parse_rule(source: str, node: _Located, ref: Reference) -> Rule:
    raw_id = node.values.get("id")
    if not isinstance(raw_id, str):
        raise RulesError(f"{source}:{node.line}: rule without a text 'id' field")
    r = _RuleReader(source, node, raw_id)
    if not _ID.match(raw_id):
        raise r.fail("id", "id must be lower-case letters, digits and underscores, starting with a letter")
    kind = r.get("kind", str, required=True)
    if kind not in KINDS:
        raise r.fail("kind", f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    unknown = set(node.values) - COMMON_KEYS - KIND_KEYS[kind]
    if unknown:
        key = sorted(unknown, key=lambda k: node.lines[k])[0]
        raise r.fail(key, f"unknown field {key!r} for kind {kind}")
    version = r.get("version", int, required=True)
    if version < 1:
        raise r.fail("version", "version must be 1 or more")
    statutory = r.get("statutory", bool, required=True)
    enabled = r.get("enabled", bool, default=True)
    priority_name = r.get("priority", str, default="normal")
    if priority_name not in PRIORITIES:
        raise r.fail("priority", f"priority must be one of {', '.join(PRIORITIES)}, got {priority_name!r}")
    channels = r.str_list("channels", required=True)
    for ch in channels:
        if ch not in CHANNELS:
            raise r.fail("channels", f"unknown channel {ch!r}; expected {' / '.join(CHANNELS)}")

    audience = _parse_audience(r, ref)
    items = r.str_list("items")
    for item in items:
        if item.count("{district}") > 1 or ("{" in item.replace("{district}", "")):
            raise r.fail("items", f"item {item!r}: the only placeholder allowed is {{district}}")
        if ref.items and "{district}" in item:
            pattern = re.compile("^" + re.escape(item).replace(re.escape("{district}"), r"\d{6}") + "$")
            if not any(pattern.match(i) for i in ref.items):
                raise r.fail("items", f"no catalogue item matches {item!r} for any district")
        elif ref.items and item not in ref.items:
            raise r.fail("items", f"item {item!r} is not in the catalogue")

    kw: dict[str, Any] = {}
    if kind == "licence_expiry":
        types = r.str_list("licence_types", required=True)
        for t in types:
            if ref.licence_types and t not in ref.licence_types:
                raise r.fail("licence_types", f"unknown licence type {t!r} (see data/license_types.csv)")
        stages = r.str_list("stages_days", required=True, item_type=int)
        if any(s < 0 for s in stages):
            raise r.fail("stages_days", "stages_days must be 0 or more days before expiry")
        renewal = r.get("renewal_item", str, default="auto")
        if ref.items:
            if renewal == "auto":
                missing = [t for t in types if t not in set(ref.items.values())]
                if missing:
                    raise r.fail("renewal_item", f"renewal_item auto: no catalogue item renews {missing[0]!r}")
            elif renewal not in ref.items:
                raise r.fail("renewal_item", f"renewal item {renewal!r} is not in the catalogue")
            elif ref.items[renewal] not in types:
                raise r.fail(
                    "renewal_item",
                    f"item {renewal!r} renews {ref.items[renewal] or 'no licence'!r}, not {' / '.join(types)}",
                )
        if audience.subject_type not in SUBJECT_TYPES:
            raise r.fail("audience", "licence rules need audience.subject_type")
        kw = dict(licence_types=types, stages_days=tuple(sorted(stages, reverse=True)), renewal_item=renewal)
    elif kind == "tag_gained":
        tag = r.get("tag", str, required=True)
        _check_tag(r, "tag", tag, ref)
        within = r.get("within_days", int, default=30)
        if within < 0:
            raise r.fail("within_days", "within_days must be 0 or more")
        kw = dict(tag=tag, within_days=within)
    elif kind == "calendar":
        window = r.get("window", dict, required=True)
        wr = _RuleReader(source, window, raw_id)
        unknown = set(window.values) - {"start", "end"}
        if unknown:
            raise wr.fail(sorted(unknown)[0], f"unknown window field {sorted(unknown)[0]!r} (expected start, end)")
        start = wr.get("start", str, required=True)
        end = wr.get("end", str, required=True)
        for key, value in (("start", start), ("end", end)):
            if not _MMDD.match(value):
                raise wr.fail(key, f"window {key} must be MM-DD (e.g. 06-30), got {value!r}")
        if end < start:
            raise wr.fail("end", "window end must not come before its start within the year")
        kw = dict(
            window_start=start, window_end=end,
            existing_before_window=r.get("existing_before_window", bool, default=False),
        )
    elif kind == "age_milestone":
        age = r.get("age", int, required=True)
        if not 0 < age < 130:
            raise r.fail("age", f"age must be between 1 and 129, got {age}")
        notify = r.get("notify", str, default="self")
        if notify not in NOTIFY:
            raise r.fail("notify", f"notify must be one of {', '.join(NOTIFY)}, got {notify!r}")
        before = r.get("days_before", int, default=0)
        after = r.get("days_after", int, default=60)
        if before < 0 or after < 0:
            raise r.fail("days_before" if before < 0 else "days_after", "days must be 0 or more")
        if audience.subject_type != "person":
            raise r.fail("audience", "age milestones apply to persons: set audience.subject_type: person")
        kw = dict(age=age, notify=notify, days_before=before, days_after=after)

    message = r.get("message", dict, required=True)
    mr = _RuleReader(source, message, raw_id)
    unknown = set(message.values) - {"zh", "en"}
    if unknown:
        raise mr.fail(sorted(unknown)[0], f"unknown message language {sorted(unknown)[0]!r} (expected zh, en)")
    texts = {}
    allowed = COMMON_FIELDS | KIND_FIELDS[kind]
    for lang in ("zh", "en"):
        text = mr.get(lang, str, required=True)
        try:
            names = _template_fields(text)
        except ValueError as exc:
            raise mr.fail(lang, f"message.{lang}: {exc}") from None
        for name in names:
            if name not in allowed:
                raise mr.fail(
                    lang, f"message.{lang} uses unknown field {{{name}}}; fields for {kind}: {', '.join(sorted(allowed))}"
                )
        texts[lang] = text
    return Rule(
        id=raw_id, version=version, kind=kind, audience=audience, message_zh=texts["zh"], message_en=texts["en"],
        channels=channels, priority=PRIORITIES[priority_name], statutory=statutory, enabled=enabled, items=items,
        line=node.line, **kw,
    )


def _check_tag(r: _RuleReader, key: str, code: str, ref: Reference) -> None:
    if "." not in code:
        raise r.fail(key, f"tag code {code!r} must be written dimension.code, e.g. life_event.birth")
    if ref.tag_codes and code not in ref.tag_codes:
        raise r.fail(key, f"unknown tag code {code!r} (see data/tag_taxonomy.csv)")


def _parse_audience(r: _RuleReader, ref: Reference) -> Audience:
    node = r.get("audience", dict, required=True)
    ar = _RuleReader(r.where, node, r.rule_id)
    unknown = set(node.values) - AUDIENCE_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ar.fail(key, f"unknown audience field {key!r}; expected {', '.join(sorted(AUDIENCE_KEYS))}")
    subject_type = ar.get("subject_type", str, required=True)
    if subject_type not in SUBJECT_TYPES:
        raise ar.fail("subject_type", f"subject_type must be person or enterprise, got {subject_type!r}")
    lists = {k: ar.str_list(k) for k in ("tags_any", "tags_all", "tags_none", "districts")}
    for key in ("tags_any", "tags_all", "tags_none"):
        for code in lists[key]:
            _check_tag(ar, key, code, ref)
    return Audience(subject_type=subject_type, **lists)


# -- files and the rules in force ------------------------------------------------------------------------------

# The rules in force are a file in the store home, never in the package or the code checkout. Messages and API
# answers name it by this home-relative name, never by a server path.
IN_FORCE_NAME = "rules/reminder_rules.yaml"


def in_force_path(settings) -> Path:
    return Path(settings.home) / IN_FORCE_NAME


def seed_path(settings) -> Path:
    """Where a home that has no rules of its own takes them from: YIWANG_REMINDER_RULES_FILE or the shipped file."""
    return Path(settings.reminder_rules_file or Path(settings.data_dir) / "reminder_rules.yaml")


def _seed_label(settings) -> str:
    return Path(settings.reminder_rules_file).name if settings.reminder_rules_file else "data/reminder_rules.yaml"


def check_file(path: Path, data_dir: Path) -> tuple[Rule, ...]:
    """Validate a rules file against the reference data; returns its rules or raises RulesError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RulesError(f"{path}: no such rules file") from None
    except UnicodeDecodeError as exc:
        raise RulesError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_rules(text, str(path), load_reference(data_dir))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _in_force_since(db, sha: str) -> str | None:
    row = db.conn.execute(
        "SELECT loaded_at FROM rule_snapshots WHERE sha256 = ? AND in_force_by IS NOT NULL"
        " ORDER BY snapshot_id DESC LIMIT 1",
        (sha,),
    ).fetchone()
    return row[0] if row else None


def _record_in_force(conn, source: str, text: str, by: str) -> None:
    """Append ``text`` to the rules that were in force (the only rows a broken file may fall back to), inside
    the caller's transaction."""
    sha = _sha(text)
    last = conn.execute(
        "SELECT sha256 FROM rule_snapshots WHERE in_force_by IS NOT NULL ORDER BY snapshot_id DESC LIMIT 1"
    ).fetchone()
    if last and last[0] == sha:
        return
    conn.execute(
        "INSERT INTO rule_snapshots (source, sha256, text, loaded_at, in_force_by) VALUES (?, ?, ?, ?, ?)",
        (source, sha, text, _now(), by),
    )


def _write_private(path: Path, text: str, replace: bool) -> None:
    """Write ``path`` whole or not at all (0600, in a 0700 folder); with ``replace`` False an existing file wins."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # create-if-absent, atomically: a concurrent writer's file is kept
            except FileExistsError:
                pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def rules_in_force(settings, db) -> RuleSet:
    """The rules in force, read only: the home's rules file (or, before the home has one, the seed file) if it
    validates, else the last rules that were actually in force (used by an evaluation or installed).

    Nothing is recorded here, so reading rules (a dry run, GET /v1/rules, delivery) never changes what a broken
    file falls back to. Raises RulesError when the file is broken and no rules were ever in force.
    """
    home = in_force_path(settings)
    if home.exists():
        path, label, origin = home, IN_FORCE_NAME, "home"
    else:
        path, label, origin = seed_path(settings), _seed_label(settings), "seed"
    try:
        text = path.read_text(encoding="utf-8")
        rules = parse_rules(text, label, load_reference(settings.data_dir))
    except FileNotFoundError:
        error = f"{label}: no such rules file"
    except OSError as exc:
        error = f"{label}: cannot read the rules file ({exc.strerror})"
    except UnicodeDecodeError as exc:
        error = f"{label}: not UTF-8 text ({exc.reason} at byte {exc.start})"
    except RulesError as exc:
        error = str(exc)
    else:
        sha = _sha(text)
        return RuleSet(rules, label, sha, text, updated_at=_in_force_since(db, sha), origin=origin)
    row = db.conn.execute(
        "SELECT snapshot_id, text, loaded_at FROM rule_snapshots WHERE in_force_by IS NOT NULL"
        " ORDER BY snapshot_id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        raise RulesError(f"{error}; and no earlier good rules are on record")
    snapshot_id, snap_text, loaded_at = row
    # The snapshot was valid when it was put in force; reparse without reference checks so a catalogue change
    # cannot leave the city with no rules at all.
    source = f"snapshot {snapshot_id} (the rules last in force)"
    rules = parse_rules(snap_text, source)
    return RuleSet(rules, source, _sha(snap_text), snap_text, warning=error, updated_at=loaded_at, origin="snapshot")


def mark_in_force(settings, conn, ruleset: RuleSet, by: str) -> None:
    """Record that an evaluation just used ``ruleset`` (call inside its write transaction). Rules still taken
    from the seed become the home's own file here, the first time they are really in force."""
    if ruleset.origin == "snapshot":
        return  # already on record; the broken file stays for its owner to fix
    home = in_force_path(settings)
    if ruleset.origin == "seed":
        _write_private(home, ruleset.text, replace=False)
    try:
        current = home.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    if _sha(current) == ruleset.sha256:  # not replaced since this run read it
        _record_in_force(conn, IN_FORCE_NAME, ruleset.text, by)


def install_rules(settings, db, text: str, source: str = "api", by: str | None = None) -> RuleSet:
    """Validate ``text`` and, only if it is valid, make it the rules in force: the home's rules file is replaced
    atomically and the text recorded as in force. ``source`` names the text in errors; ``by`` (default
    ``source``) records who put it in force."""
    rules = parse_rules(text, source, load_reference(settings.data_dir))
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        _write_private(in_force_path(settings), text, replace=True)
        _record_in_force(conn, IN_FORCE_NAME, text, by or source)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    sha = _sha(text)
    return RuleSet(rules, IN_FORCE_NAME, sha, text, updated_at=_in_force_since(db, sha), origin="home")


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    """A rule as plain JSON-able data (for the API and `--json`)."""
    from dataclasses import asdict

    d = asdict(rule)
    d["priority"] = {v: k for k, v in PRIORITIES.items()}[rule.priority]
    return json.loads(json.dumps(d))


def list_snapshots(db) -> list[dict]:
    """Every rules text on record (oldest first): id, source, sha256, when loaded and the run it was in force by."""
    rows = db.conn.execute(
        "SELECT snapshot_id, source, sha256, loaded_at, in_force_by FROM rule_snapshots ORDER BY snapshot_id")
    return [dict(zip(("snapshot_id", "source", "sha256", "loaded_at", "in_force_by"), r)) for r in rows]
