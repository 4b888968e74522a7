"""The floors: the data layer at the bottom, the four engines above it, the app shell on top, and no arrow back up.

The import graph is read from the source with ``ast``: every ``import`` and ``from ... import`` (those inside
functions and under ``if TYPE_CHECKING`` too) and every ``importlib.import_module`` / ``__import__`` given a
literal name (a string lookup is an arrow like any other). The rules:

(a) ``data`` imports no engine and not ``yiwang``;
(b) an engine does not import ``yiwang``;
(c) an engine imports another engine only through the modules that engine lists in its ``PUBLIC_MODULES``
    (its ``__init__.py``), and never a name starting with ``_`` from it;
(d) no cycle between the packages;
(e) no ``import_module``/``__import__`` of a computed name or of a module of this project (in the shell too: the
    string lookups it had were arrows nobody could see).

The checker runs on the real tree, and on small trees made here that break each rule once, so it is known to catch
what it is for.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = "data"
ENGINES = ("profiler", "taggers", "recommender", "notifier")
SHELL = "yiwang"
PACKAGES = (DATA, *ENGINES, SHELL)


@dataclass(frozen=True)
class Arrow:
    importer: str  # the importing module
    target: str  # the module imported (a from-import of a submodule names the submodule)
    name: str | None  # the name taken from ``target``, when it is not a module
    where: str  # file:line
    dynamic: bool = False  # by import_module / __import__


def module_of(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(root: Path, dotted: str) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _dynamic_import(node: ast.Call) -> bool:
    fn = node.func
    return (isinstance(fn, ast.Attribute) and fn.attr in ("import_module", "__import__")) or (
        isinstance(fn, ast.Name) and fn.id in ("import_module", "__import__")
    )


def arrows_of(root: Path, path: Path) -> tuple[list[Arrow], list[str]]:
    """The project-internal imports of one file, and its imports by a name computed at run time."""
    module = module_of(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    arrows: list[Arrow] = []
    computed: list[str] = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            arrows += [Arrow(module, alias.name, None, where) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if alias.name != "*" and is_module(root, sub):
                    arrows.append(Arrow(module, sub, None, where))
                else:
                    arrows.append(Arrow(module, base, None if alias.name == "*" else alias.name, where))
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                arrows.append(Arrow(module, arg.value, None, where, dynamic=True))
            else:
                computed.append(f"{where}: {ast.unparse(node)} imports a name computed at run time")
    return [a for a in arrows if a.target.split(".")[0] in PACKAGES], computed


def public_modules(root: Path, engine: str) -> tuple[str, ...] | None:
    """The engine's declared ``PUBLIC_MODULES`` (read from the source, not imported), or None."""
    init = root / engine / "__init__.py"
    if not init.is_file():
        return None
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "PUBLIC_MODULES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return None


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that starts and ends at the same node, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def violations(root: Path) -> list[str]:
    """Every breach of rules (a)-(e) in the tree at ``root``, each naming file and line."""
    problems: list[str] = []
    public = {}
    for engine in ENGINES:
        if not (root / engine).is_dir():
            continue
        declared = public_modules(root, engine)
        if declared is None:
            problems.append(f"{engine}/__init__.py declares no PUBLIC_MODULES (what other engines may import)")
            declared = (engine,)
        problems += [f"{engine}.PUBLIC_MODULES names {m}, which is not a module of {engine}"
                     for m in declared if m.split(".")[0] != engine or not is_module(root, m)]
        public[engine] = set(declared)

    packages: dict[str, set[str]] = {p: set() for p in PACKAGES if (root / p).is_dir()}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            arrows, computed = arrows_of(root, path)
            problems += [f"(e) {c}" for c in computed]
            for a in arrows:
                target_pkg = a.target.split(".")[0]
                if target_pkg != pkg:
                    packages[pkg].add(target_pkg)
                what = a.target + (f".{a.name}" if a.name else "")
                how = f"import_module({a.target!r})" if a.dynamic else f"imports {what}"
                if a.dynamic:
                    problems.append(f"(e) {a.where}: {a.importer} {how}: a string lookup; import it by name")
                if pkg == DATA and target_pkg in (*ENGINES, SHELL):
                    problems.append(f"(a) {a.where}: {a.importer} {how}: the data layer imports no engine and not {SHELL}")
                elif pkg in ENGINES and target_pkg == SHELL:
                    problems.append(f"(b) {a.where}: {a.importer} {how}: an engine does not import the app shell")
                elif pkg in ENGINES and target_pkg in ENGINES and target_pkg != pkg:
                    if a.target not in public[target_pkg]:
                        problems.append(f"(c) {a.where}: {a.importer} {how}: {a.target} is not in "
                                        f"{target_pkg}.PUBLIC_MODULES {sorted(public[target_pkg])}")
                    elif a.name and a.name.startswith("_"):
                        problems.append(f"(c) {a.where}: {a.importer} {how}: {a.name} is private to {target_pkg}")
    cycle = find_cycle(packages)
    if cycle:
        problems.append(f"(d) the packages import each other in a cycle: {' -> '.join(cycle)}")
    return problems


def test_the_floors_hold():
    assert violations(ROOT) == []


def test_every_engine_declares_its_public_surface():
    for engine in ENGINES:
        declared = public_modules(ROOT, engine)
        assert declared and engine in declared, engine


def test_the_real_graph_is_read():
    """The reader sees the arrows the tree really has (an empty graph would pass every rule)."""
    arrows = [a for p in sorted((ROOT / "taggers").rglob("*.py")) for a in arrows_of(ROOT, p)[0]]
    targets = {a.target for a in arrows}
    assert {"profiler", "profiler.build", "data.settings"} <= targets
    shell = [a for p in sorted((ROOT / SHELL).rglob("*.py")) for a in arrows_of(ROOT, p)[0]]
    assert {a.target.split(".")[0] for a in shell} >= set(PACKAGES)


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


# A lawful little house: the checker finds nothing in it, then each case below adds one breach.
LAWFUL = {
    "data/__init__.py": "",
    "data/store.py": "import sqlite3\nimport importlib\nimportlib.import_module('lightgbm')\n",
    "profiler/__init__.py": "PUBLIC_MODULES = ('profiler', 'profiler.build')\nfrom data import store\n",
    "profiler/build.py": "from data.store import sqlite3\n",
    "profiler/_cache.py": "",
    "taggers/__init__.py": "PUBLIC_MODULES = ('taggers',)\nfrom profiler import build\nfrom profiler.build import sqlite3\n",
    "taggers/rules.py": "from . import store\n",
    "taggers/store.py": "",
    "recommender/__init__.py": "PUBLIC_MODULES = ('recommender',)\nimport taggers\n",
    "notifier/__init__.py": "PUBLIC_MODULES = ('notifier',)\n",
    "yiwang/__init__.py": "",
    "yiwang/cli.py": "import notifier, recommender\nfrom taggers.rules import store\nfrom profiler import _cache\n",
}

BREACHES = {
    "data imports an engine": ({"data/contract.py": "def f():\n    from taggers import rules\n"}, "(a) data/contract.py:2"),
    "data imports the shell": ({"data/contract.py": "import yiwang.cli\n"}, "(a) data/contract.py:1"),
    "an engine imports the shell": ({"notifier/engine.py": "from yiwang import cli\n"}, "(b) notifier/engine.py:1"),
    "an engine reaches a private module": ({"taggers/x.py": "from profiler import _cache\n"}, "profiler._cache is not in"),
    "an engine reaches a non-public module": ({"notifier/x.py": "import taggers.rules\n"}, "taggers.rules is not in"),
    "relative import counts": ({"taggers/x.py": "from ..profiler import _cache\n"}, "profiler._cache is not in"),
    "an engine takes a private name": ({"taggers/x.py": "from profiler import _secret\n"}, "_secret is private to profiler"),
    "a cycle": ({"profiler/y.py": "from recommender import z\n"}, "(d) the packages import each other in a cycle"),
    "a computed import": ({"profiler/y.py": "import importlib\nm = 'x'\nimportlib.import_module(m)\n"},
                          "(e) profiler/y.py:3: importlib.import_module(m)"),
    "a string lookup of an engine": ({"recommender/y.py": "__import__('notifier')\n"}, "(e) recommender/y.py:1"),
    "a string lookup in the shell": ({"yiwang/cli.py": "import importlib\nfor m in ['x']:\n    importlib.import_module(m)\n"},
                                     "(e) yiwang/cli.py:3"),
    "a string lookup of a private module": ({"notifier/y.py": "import importlib\nimportlib.import_module('taggers.rules')\n"},
                                            "(c) notifier/y.py:2: notifier.y import_module('taggers.rules')"),
    "an undeclared surface": ({"notifier/__init__.py": "import taggers\n"}, "notifier/__init__.py declares no PUBLIC_MODULES"),
}


def test_the_checker_finds_nothing_in_a_lawful_tree(tmp_path):
    assert violations(_tree(tmp_path, LAWFUL)) == []


def test_the_checker_catches_each_breach(tmp_path):
    for case, (files, expected) in BREACHES.items():
        root = _tree(tmp_path / case.replace(" ", "_"), {**LAWFUL, **files})
        found = violations(root)
        assert any(expected in v for v in found), (case, found)
