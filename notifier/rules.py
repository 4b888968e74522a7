"""Operator reminder rules: a YAML file, validated with errors that name file, rule and line.

A file is read by ``data.yamlfile`` (every value keeps the line it was written on) and validated by the trigger
kinds' pydantic classes (``notifier.kinds``, one per kind, a union on ``kind:``); every error message reads
``FILE:LINE: rule 'ID': ...``. The rules in force belong to the store home
(``HOME/rules/reminder_rules.yaml``), seeded from ``data/reminder_rules.yaml`` or YIWANG_REMINDER_RULES_FILE
until the home has its own. Rules enter ``rule_snapshots`` only when they are really in force (used by an
evaluation, or installed through PUT /v1/rules or `yiwang rules install`); when the home's file is broken,
evaluation keeps using the last of those (and says so), never a file that was only read or previewed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from data import yamlfile
from data.errors import RulesError
from data.reference import CATALOG_FILE, LICENSE_TYPES_FILE, TAXONOMY_FILE, read_reference_table
from notifier import kinds
from notifier.kinds import RuleBase
from notifier.kinds.base import CHANNELS, PRIORITIES, SUBJECT_TYPES, Audience  # noqa: F401 (named here as before)

# A rule is an instance of one trigger kind's class (notifier/kinds/), chosen by its `kind:` key.
Rule = RuleBase


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


# -- parsing ---------------------------------------------------------------------------------------------------


# Today's wording: FILE:LINE: rule 'ID': what is wrong (the field is named in the words, not as a prefix).
def _style(fault: yamlfile.Fault) -> str:
    return yamlfile.colon_style(replace(fault, field=()))


def _style_for(exc: ValidationError):
    """A wrong type names its field (``field 'version': must be a whole number``); the kinds' own checks say
    what is wrong in words that already name it (``priority must be one of ...``)."""
    first = exc.errors(include_url=False)[0]["type"]
    if first in ("value_error", "missing", "extra_forbidden") or first.startswith("union_tag"):
        return _style
    return yamlfile.colon_style


_RULES = yamlfile.Rules()
_PHRASES = {"extra_forbidden": "unknown field {key!r}"}


def parse_rules(text: str, source: str = "<rules>", reference: Reference | None = None) -> tuple[Rule, ...]:
    """Parse and validate a rules file's text; raises RulesError naming ``source``, line and rule."""
    ref = reference or Reference()
    doc = yamlfile.load(text, source, error=RulesError, style=_style, rules=_RULES)
    if doc.data is None:
        raise RulesError(f"{source}:1: the file is empty; expected a top-level 'rules:' list")
    if not isinstance(doc.data, dict) or "rules" not in doc.data:
        raise RulesError(f"{source}:1: expected a top-level mapping with a 'rules:' list")
    try:
        # the registry is read at each parse: a kind registered in notifier/kinds/__init__.py is all it takes
        parsed = kinds.rules_file_model(kinds.KIND_CLASSES).model_validate(doc.data, context={"reference": ref})
    except ValidationError as exc:
        raise RulesError(yamlfile.explain(exc, doc, style=_style_for(exc), rules=_RULES, line_at="key",
                                          phrases=_PHRASES)) from None
    seen: dict[str, int] = {}
    for i, rule in enumerate(parsed.rules):
        rule._line = doc.locator.line(("rules", i))
        # A message may only name the fields its kind offers (checked here, where the kind is known).
        for lang in ("zh", "en"):
            problem = rule.template_problem(lang)
            if problem:
                raise RulesError(yamlfile.where(doc, ("rules", i, "message", lang), style=_style, rules=_RULES)
                                 + problem)
        id_line = doc.locator.line(("rules", i, "id"))
        if rule.id in seen:
            raise RulesError(f"{source}:{id_line}: rule {rule.id!r}: duplicate rule id (first defined on line "
                             f"{seen[rule.id]})")
        seen[rule.id] = id_line
    return tuple(parsed.rules)


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
    """A rule as plain JSON-able data (for the API and `--json`): the flat shape, with every kind's fields."""
    d: dict[str, Any] = {
        "id": rule.id, "version": rule.version, "kind": rule.kind, "audience": rule.audience.model_dump(),
        "message_zh": rule.message_zh, "message_en": rule.message_en, "channels": rule.channels,
        "priority": {v: k for k, v in PRIORITIES.items()}[rule.priority], "statutory": rule.statutory,
        "enabled": rule.enabled, "items": rule.items, "line": rule.line,
    }
    for cls in kinds.KIND_CLASSES:
        d.update(rule.flat_fields() if isinstance(rule, cls) else cls.FLAT_DEFAULTS)
    return json.loads(json.dumps(d))


def list_snapshots(db) -> list[dict]:
    """Every rules text on record (oldest first): id, source, sha256, when loaded and the run it was in force by."""
    rows = db.conn.execute(
        "SELECT snapshot_id, source, sha256, loaded_at, in_force_by FROM rule_snapshots ORDER BY snapshot_id")
    return [dict(zip(("snapshot_id", "source", "sha256", "loaded_at", "in_force_by"), r)) for r in rows]
