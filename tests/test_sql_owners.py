"""One owner per stored table: no SQL statement naming a table outside the module that owns it.

Every other module, the tests included, goes through the owner's functions. The scan reads the string literals of
every module (docstrings and comments are prose, not SQL) under the project's packages, tests, benchmarks and
experiments, and fails on a statement (``FROM``/``JOIN``/``INTO``/``UPDATE``/``TABLE`` + name) naming a table whose
owner is another module. Each area's ``schema.py`` holds its migration history (committed DDL never changes, and
one area's old migration may create a table another area now owns), so migrations are not scanned.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("data", "profiler", "taggers", "recommender", "notifier", "yiwang", "tests", "testsupport", "benchmarks",
           "experiments")

# Owner (a module, or a package for all its modules) -> the tables only it may name in SQL.
OWNERS: dict[str, set[str]] = {
    # The data layer: registries, catalogue and ingest bookkeeping (ingest writes them, the registry reads them).
    "data.ingest": {"people", "enterprises", "licenses", "catalog", "ingests", "quarantine"},
    "data.registry": {"people", "enterprises", "licenses", "catalog", "ingests", "registry_generations"},
    # The store's own bookkeeping (the id-hash key's fingerprint).
    "data.store": {"store_meta"},
    # Citizen controls.
    "data.citizen": {"subject_preferences", "dismissals"},
    "profiler": {"profiles", "profile_batches"},
    "taggers.store": {"tags", "tag_suppressions"},
    "recommender.feeds": {"feed_versions", "feed_rows", "feed_reasons", "feed_items", "serving_pointers"},
    "notifier": {"outbox", "deliveries", "delivery_attempts", "dead_letters", "rule_snapshots"},
    # The app shell.
    "yiwang.api.keys": {"api_keys"},
    "yiwang.api.audit": {"audit_log"},
    "yiwang.scheduler": {"scheduler_jobs", "job_runs"},
}
# Known exceptions, each with its reason; the test fails when one is no longer needed, so the list only shrinks.
ALLOWED: dict[tuple[str, str], str] = {}
TABLES = sorted(set().union(*OWNERS.values()))
_STATEMENT = re.compile(
    r"\b(?:FROM|JOIN|INTO|UPDATE|TABLE)\s+[\"`\[]?(" + "|".join(TABLES) + r")\b(?![\"`\]]?\.)", re.IGNORECASE
)


def _module(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _owns(module: str, table: str) -> bool:
    return any((module == owner or module.startswith(owner + ".")) and table in tables
               for owner, tables in OWNERS.items())


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string literal but docstrings; an f-string's literal parts joined around its fields."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.add(id(first.value))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
            out.append((node.lineno, text))
            docstrings.update(id(v) for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
    return out


def violations(source: str, module: str) -> list[str]:
    found = []
    for line, text in _strings(ast.parse(source)):
        for m in _STATEMENT.finditer(text):
            table = m.group(1).lower()
            if not _owns(module, table):
                found.append(f"{module}:{line}: {m.group(0).strip()!r} names {table}, owned by "
                             + " / ".join(o for o, t in OWNERS.items() if table in t))
    return found


def project_modules() -> list[Path]:
    # This module itself holds violations as test data.
    return sorted(p for d in SCANNED for p in (ROOT / d).rglob("*.py") if p.name != "schema.py" and p != Path(__file__))


def test_no_sql_outside_the_owner_of_its_table():
    found = [v for p in project_modules() for v in violations(p.read_text(encoding="utf-8"), _module(p))]
    allowed_hits = {pair for pair in ALLOWED for v in found if v.startswith(pair[0] + ":") and f" names {pair[1]}," in v}
    unexplained = [v for v in found if not any(v.startswith(m + ":") and f" names {t}," in v for m, t in ALLOWED)]
    assert not unexplained, "SQL naming another owner's table:\n" + "\n".join(unexplained)
    assert allowed_hits == set(ALLOWED), f"no longer needed, remove from ALLOWED: {sorted(set(ALLOWED) - allowed_hits)}"


def test_every_table_of_the_migrations_has_one_declared_owner():
    """A new table must be given an owner here, or its SQL would go unchecked."""
    from yiwang.migrations import all_migrations

    created = set()
    for _, sql in all_migrations():
        created |= {t.lower() for t in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql, re.IGNORECASE)}
    # Build tables of a swap and tables renamed away by a later migration are transient.
    transient = {t for t in created if t.endswith(("_new", "_build", "_old"))}
    assert created - transient <= set(TABLES), sorted(created - transient - set(TABLES))


@pytest.mark.parametrize("source, module", [
    # The API reading the feed tables itself: the fast lane's old second read path.
    ('SQL = "SELECT items FROM feed_rows WHERE version = ? AND subject_id = ?"', "yiwang.api.fastlane"),
    # The recommender reading the taggers' table.
    ("def f(conn):\n    return conn.execute('select subject_id, code from tags').fetchall()", "recommender.candidates"),
    # A test writing preferences by hand, in an f-string.
    ('q = f"INSERT INTO subject_preferences (subject_id) VALUES ({x!r})"', "tests.test_x"),
    ("conn.execute('UPDATE \"outbox\" SET status = 1')", "recommender.feeds"),
])
def test_a_statement_in_a_non_owner_is_found(source, module):
    assert len(violations(source, module)) == 1


@pytest.mark.parametrize("source, module", [
    ('SQL = "SELECT items FROM feed_rows WHERE version = ?"', "recommender.feeds"),
    ('"""Reads the feed from feed_rows via recommender.feeds."""', "yiwang.api.fastlane"),  # a docstring
    ("conn.execute('SELECT * FROM outbox')", "notifier.delivery"),  # the notifier package owns it
])
def test_the_owner_and_prose_are_not_flagged(source, module):
    assert violations(source, module) == []
