"""What ``pip install .`` ships: the four floors' packages, and no test support.

The test-support package (``testsupport/``: sample cities, registry loaders, the webhook receiver) runs from a
checkout only. The fast tests read the same ``[tool.setuptools.packages.find]`` setuptools reads; the slow one
builds the real wheel from a copy of the checkout and lists its files.
"""

from __future__ import annotations

import ast
import inspect
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from setuptools import find_namespace_packages

from testsupport.registries import population, put_rows
from testsupport.sample_city import load_city
from testsupport.webhook_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {"data", "yiwang", "profiler", "taggers", "recommender", "notifier"}


def shipped_packages(root: Path = ROOT) -> set[str]:
    """The packages setuptools collects from ``root`` per its pyproject (``namespaces = true`` is the default)."""
    find = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    return set(find_namespace_packages(where=str(root), include=find["include"], exclude=find.get("exclude", ())))


def test_the_floors_ship_and_test_support_does_not():
    shipped = shipped_packages()
    assert FLOORS <= {p.split(".")[0] for p in shipped}
    for outside in ("testsupport", "tests", "benchmarks"):
        assert not {p for p in shipped if p.split(".")[0] == outside}, f"{outside} would be installed"


def test_test_support_lives_outside_every_shipped_package():
    shipped_dirs = [ROOT / p.replace(".", "/") for p in shipped_packages()]
    for thing in (population, put_rows, load_city, Receiver):
        source = Path(inspect.getsourcefile(thing)).resolve()
        assert source.parent not in shipped_dirs, f"{thing.__name__} is defined in shipped {source.relative_to(ROOT)}"


def test_no_shipped_module_imports_test_support():
    """An installed yiwang has no testsupport, so production code must not need it."""
    offenders = []
    for package in shipped_packages():
        for path in (ROOT / package.replace(".", "/")).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names
                              if n.split(".")[0] in ("testsupport", "tests")]
    assert not offenders, offenders


@pytest.mark.slow
def test_the_built_wheel_holds_no_test_support(tmp_path):
    """Build the wheel (pip, isolated build backend) from a copy of the checkout and read its file list."""
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.egg-info", "build", "out", ".yiwang")
    shutil.copytree(ROOT, source, ignore=ignore)
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                          str(source)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    (wheel,) = (tmp_path / "dist").glob("yiwang-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert FLOORS <= tops
    assert not tops & {"testsupport", "tests", "benchmarks"}, sorted(tops)
