"""psutil and matplotlib are optional extras (``bench``, ``plots``): the installed engine runs without them.

``yiwang eval`` runs as a real process with matplotlib made unimportable (``sys.modules['matplotlib'] = None``,
what Python does for a package that is not there): the tables are written and the output says how to get plots.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recommender.evaluation import PLOTS_MISSING

ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("psutil", "matplotlib")
SHIPPED = ("data", "yiwang", "profiler", "taggers", "recommender", "notifier")
CLI = "import sys\n{block}from yiwang.cli import main\nsys.argv = ['yiwang', *sys.argv[1:]]\nmain()\n"


@pytest.fixture
def interactions(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    rows = [(f"resident-{u:03d}", f"service-{int(i):02d}") for u in range(40) for i in rng.choice(12, 6, replace=False)]
    path = tmp_path / "inter.csv"
    pl.DataFrame(rows, schema=["user", "item"], orient="row").write_csv(path)
    return path


def _eval(interactions: Path, cwd: Path, *, block_matplotlib: bool, as_json: bool = False):
    block = "sys.modules['matplotlib'] = None\n" if block_matplotlib else ""
    args = ["eval", "--interactions", str(interactions), "--models", "pop", "--k", "5", "--out", "res"]
    return subprocess.run([sys.executable, "-c", CLI.format(block=block), *args, *(["--json"] if as_json else [])],
                          capture_output=True, text=True, cwd=cwd, timeout=120,
                          env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))


def test_eval_without_matplotlib_writes_the_tables_and_says_how_to_get_plots(tmp_path, interactions):
    run = _eval(interactions, tmp_path, block_matplotlib=True)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert "install yiwang[plots] for plots" in run.stdout
    out = tmp_path / "res"
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "results.md"]
    assert pl.read_csv(out / "results.csv")["system"].to_list() == ["pop"]
    assert PLOTS_MISSING in (out / "results.md").read_text()

    listed = json.loads(_eval(interactions, tmp_path, block_matplotlib=True, as_json=True).stdout)
    assert PLOTS_MISSING in listed["notes"] and not [p for p in listed["written"] if p.endswith(".png")]


def test_eval_with_matplotlib_draws_the_plots(tmp_path, interactions):
    pytest.importorskip("matplotlib", reason="the plots extra is not installed here")
    run = _eval(interactions, tmp_path, block_matplotlib=False)
    assert run.returncode == 0, run.stderr
    assert "yiwang[plots]" not in run.stdout
    assert (tmp_path / "res" / "results_metrics.png").stat().st_size > 0
    assert PLOTS_MISSING not in (tmp_path / "res" / "results.md").read_text()


def test_optional_dependencies_are_extras_and_dev_has_them():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = lambda reqs: {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip() for r in reqs}  # noqa: E731
    core, extras = names(project["dependencies"]), project["optional-dependencies"]
    assert not core & set(OPTIONAL)
    assert "psutil" in names(extras["bench"]) and "matplotlib" in names(extras["plots"])
    assert set(OPTIONAL) <= names(extras["dev"])
    assert {"prometheus_client", "threadpoolctl", "sqlite-utils"} <= core


def test_shipped_code_imports_the_optional_ones_only_inside_functions():
    """A module-level import would make ``import`` of the engine fail where the extra is not installed."""
    offenders = []
    for top in SHIPPED:
        for path in (ROOT / top).rglob("*.py"):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in tree.body:
                imported = ([a.name for a in node.names] if isinstance(node, ast.Import)
                            else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in imported
                              if n.split(".")[0] in OPTIONAL]
    assert not offenders, offenders
