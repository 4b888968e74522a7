"""`yiwang eval` from the command line: temporal windows, full values when piped, BLAS threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

YIWANG = Path(sys.executable).parent / "yiwang"


@pytest.fixture
def dated_csv(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        base = 0 if u < 30 else 10
        for d, i in enumerate(rng.choice(10, 8, replace=False)):
            rows.append((f"resident-{u:04d}", f"service-{base + int(i):03d}", 1_700_000_000 + 86400 * (3 * d + u % 3)))
    p = tmp_path / "inter.csv"
    pl.DataFrame(rows, schema=["user", "item", "when"], orient="row").write_csv(p)
    return p


def _cli(*args, cwd, env=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1") if env is None else env
    return subprocess.run([str(YIWANG), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_temporal_protocol_runs_from_the_cli(tmp_path, dated_csv):
    base = ["eval", "--interactions", str(dated_csv), "--time-col", "when", "--protocol", "temporal",
            "--models", "ease,pop", "--k", "5", "--out", "res", "--json"]
    r = _cli(*base, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = _cli(*base, "--test-days", "3", "--valid-days", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert [x["system"] for x in rows] == ["ease", "pop"]


def test_piped_table_prints_full_values(tmp_path, dated_csv):
    args = ["eval", "--interactions", str(dated_csv), "--time-col", "when", "--protocol", "leave-last-out",
            "--models", "ease,pop", "--k", "5", "--out", "res"]
    r = _cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    js = _cli(*args, "--json", cwd=tmp_path)
    rows = {x["system"]: x for x in json.loads(js.stdout)["rows"]}
    lines = {line.split("\t")[0]: line.split("\t") for line in r.stdout.splitlines() if "\t" in line}
    header = lines["system"]
    for system in ("ease", "pop"):
        got = dict(zip(header, lines[system]))
        for metric in ("recall", "ndcg", "mrr", "hit", "precision", "map", "coverage"):
            assert float(got[metric]) == pytest.approx(rows[system][metric], abs=1e-12), (system, metric)
    assert "…" not in r.stdout


def _default_blas_threads() -> int:
    env = {k: v for k, v in os.environ.items() if not k.endswith("NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", "import numpy, scipy.linalg, threadpoolctl; print(max(a['num_threads'] "
                          "for a in threadpoolctl.threadpool_info() if a['user_api'] == 'blas'))"],
                         capture_output=True, text=True, env=env, check=True)
    return int(out.stdout)


def test_eval_uses_the_machines_blas_threads(tmp_path, dated_csv):
    n = _default_blas_threads()
    if n < 2:
        pytest.skip("BLAS runs one thread on this machine anyway")
    env = {k: v for k, v in os.environ.items() if not k.endswith("NUM_THREADS")}
    r = _cli("eval", "--interactions", str(dated_csv), "--time-col", "when", "--protocol", "leave-last-out",
             "--models", "ease", "--k", "5", "--out", "res", "--json", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    notes = json.loads(r.stdout)["notes"]
    assert f"BLAS threads: {n}" in "\n".join(notes), notes


def test_als_fit_keeps_implicit_quiet_under_threaded_blas():
    """implicit warns (and runs slowly) when OpenBLAS is threaded: ALS limits BLAS to one thread around its fit."""
    if _default_blas_threads() < 2:
        pytest.skip("BLAS runs one thread on this machine anyway")
    env = {k: v for k, v in os.environ.items() if not k.endswith("NUM_THREADS")}
    code = ("import numpy as np, scipy.sparse as sp, scipy.linalg, threadpoolctl\n"
            "from recommender.models import ALS\n"
            "X = sp.random(50, 30, density=0.2, format='csr', random_state=0, dtype=np.float32)\n"
            "ALS(factors=4, iterations=2, num_threads=1).fit(X)\n"
            "print(max(a['num_threads'] for a in threadpoolctl.threadpool_info() if a['user_api'] == 'blas'))\n")
    r = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout) >= 2  # the limit is lifted again after the fit
