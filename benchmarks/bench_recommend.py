"""Benchmark: train, then score + rank + publish feeds for every subject, on a synthetic city.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_recommend.py            # 1M persons, 100k enterprises
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_recommend.py --sizes 20000:2000

Targets (issue 4, 2 cores): train <= 10 min, score+rank+publish all subjects <= 5 min, peak RSS <= 8 GB. Each
stage runs as its own `yiwang` process so its wall time and peak RSS (from wait4) are its own. In the same run,
our batch top-K scorer is compared with `implicit`'s own `recommend` over all users on the same ALS factors.
Writes benchmarks/out/recommend.json (one entry per size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent
YIWANG = str(Path(sys.executable).parent / "yiwang")
LIMITS = {"train_s": 600, "recommend_s": 300, "peak_rss_gb": 8.0}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_stage(args: list[str]) -> dict:
    """Run one command; its wall time and output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    out, err = proc.communicate()
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])} ... failed ({proc.returncode}):\n{err[-3000:]}")
    return {"seconds": round(secs, 1), "stdout": out}


def run_measured(args: list[str]) -> dict:
    """Like run_stage, with the child's own peak RSS from wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    # Read output on the side so a full pipe never blocks the child; then reap it with wait4 for its rusage.
    import threading

    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def pump(stream, key):
        for line in stream:
            chunks[key].append(line)

    threads = [threading.Thread(target=pump, args=(proc.stdout, "out")),
               threading.Thread(target=pump, args=(proc.stderr, "err"))]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    for t in threads:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:5])} ... failed ({proc.returncode}):\n{''.join(chunks['err'])[-3000:]}")
    return {"seconds": round(secs, 1), "peak_rss_gb": round(usage.ru_maxrss / 1024 / 1024, 2),
            "stdout": "".join(chunks["out"])}


def _json(out: str) -> dict:
    start = out.find("{")
    return json.loads(out[start:]) if start >= 0 else {}


def compare_scoring(home: Path, k: int = 10) -> dict:
    """Our batch top-K vs implicit's recommend for every subject, on one ALS fit (run in a child process)."""
    import numpy as np
    import polars as pl
    from implicit.cpu.als import AlternatingLeastSquares

    from recommender import candidates as C
    from recommender.config import load_config
    from recommender.models import ALS
    from data.settings import load_settings
    from yiwang.migrations import open_db

    s = load_settings(home=home, id_hash_key="bench")
    db = open_db(s.db_path)
    cfg = load_config(s)
    as_of = date.fromisoformat(json.loads((home / "bench_as_of.json").read_text())["as_of"])
    world = C.build_world(s, db, cfg, as_of)
    X = C.interaction_matrix(world)
    t0 = time.perf_counter()
    als = AlternatingLeastSquares(factors=64, iterations=10, regularization=0.05, random_state=42, num_threads=0)
    als.fit(X, show_progress=False)
    fit_s = time.perf_counter() - t0
    ours = ALS(factors=64)
    ours.user_factors_, ours.item_factors_ = np.asarray(als.user_factors), np.asarray(als.item_factors)
    ours.n_users_, ours.n_items_ = X.shape
    users = np.arange(X.shape[0])
    t0 = time.perf_counter()
    a_items, _ = ours.recommend(users, X, k=k)
    ours_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    b_items, _ = als.recommend(users, X, N=k, filter_already_liked_items=True)
    implicit_s = time.perf_counter() - t0
    # same factors, same filter: the top-K sets should agree (up to ties)
    sample = np.random.default_rng(0).choice(len(users), min(2000, len(users)), replace=False)
    agree = float(np.mean([len(set(a_items[i]) & set(b_items[i])) / k for i in sample]))
    db.conn.close()
    del pl
    return {"users": int(X.shape[0]), "items": int(X.shape[1]), "nnz": int(X.nnz), "als_fit_s": round(fit_s, 1),
            "ours_batch_topk_s": round(ours_s, 2), "implicit_recommend_s": round(implicit_s, 2),
            "speedup_ours_vs_implicit": round(implicit_s / ours_s, 2) if ours_s else None,
            "top10_agreement": round(agree, 4)}


def bench(people: int, enterprises: int, as_of: date, workdir: Path, seed: int) -> dict:
    city = workdir / f"city_p{people}_e{enterprises}_s{seed}"
    home = city / "home"
    result: dict = {"people": people, "enterprises": enterprises, "as_of": as_of.isoformat(), "seed": seed}
    if not (city / "export").exists():
        log(f"synth {people} persons, {enterprises} enterprises")
        r = run_stage([YIWANG, "synth", "--people", str(people), "--enterprises", str(enterprises), "--seed", str(seed),
                       "--as-of", as_of.isoformat(), "--format", "parquet", "--out", str(city), "--json"])
        result["synth_s"] = r["seconds"]
    shutil.rmtree(home, ignore_errors=True)
    base = [YIWANG, "--home", str(home)]
    for stage, args in (("ingest", ["ingest", str(city / "export"), "--json"]),
                        ("profile", ["profile", "--as-of", as_of.isoformat(), "--json"]),
                        ("tag", ["tag", "--as-of", as_of.isoformat(), "--json"])):
        log(stage)
        r = run_measured(base + args)
        result[f"{stage}_s"] = r["seconds"]
        result[f"{stage}_peak_rss_gb"] = r["peak_rss_gb"]
    (home / "bench_as_of.json").write_text(json.dumps({"as_of": as_of.isoformat()}))
    log("train")
    r = run_measured(base + ["train", "--as-of", as_of.isoformat(), "--json"])
    result["train_s"], result["train_peak_rss_gb"] = r["seconds"], r["peak_rss_gb"]
    tm = _json(r["stdout"]).get("metrics", {})
    result["train_metrics"] = {k: v for k, v in tm.items() if k != "feature_gain"}
    log("recommend (score + rank + publish)")
    r = run_measured(base + ["recommend", "--as-of", as_of.isoformat(), "--json"])
    result["recommend_s"], result["recommend_peak_rss_gb"] = r["seconds"], r["peak_rss_gb"]
    result["recommend"] = _json(r["stdout"])
    log("batch scoring vs implicit's recommend")
    r = run_measured([sys.executable, __file__, "--compare", str(home)])
    result["scoring_comparison"] = _json(r["stdout"])
    result["scoring_comparison"]["peak_rss_gb"] = r["peak_rss_gb"]
    result["db_size_gb"] = round((home / "yiwang.db").stat().st_size / 1024**3, 2)
    peak = max(result["train_peak_rss_gb"], result["recommend_peak_rss_gb"])
    result["checks"] = {
        "train_s <= 600": result["train_s"] <= LIMITS["train_s"],
        "recommend_s <= 300": result["recommend_s"] <= LIMITS["recommend_s"],
        "peak_rss_gb <= 8": peak <= LIMITS["peak_rss_gb"],
    }
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Recommender benchmark (train, score+rank+publish, scoring vs implicit)")
    ap.add_argument("--sizes", default="1000000:100000",
                    help="Comma-separated PEOPLE:ENTERPRISES runs (default 1000000:100000)")
    ap.add_argument("--as-of", default="2026-11-20")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=REPO / ".yiwang" / "bench")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "recommend.json")
    ap.add_argument("--compare", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.compare:
        print(json.dumps(compare_scoring(a.compare)))
        return 0
    runs = []
    for spec in a.sizes.split(","):
        try:
            people, ents = (int(x) for x in spec.split(":"))
        except ValueError:
            print(f"error: --sizes expects PEOPLE:ENTERPRISES[,...], got {spec!r}", file=sys.stderr)
            return 2
        res = bench(people, ents, date.fromisoformat(a.as_of), a.workdir, a.seed)
        runs.append(res)
        print(json.dumps({k: v for k, v in res.items() if k not in ("train_metrics",)}, indent=2, ensure_ascii=False))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "recommend", "limits": LIMITS, "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "machine": platform.machine(), "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "runs": runs}
    a.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
