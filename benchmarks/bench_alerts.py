"""Alert evaluation at city scale: N persons holding ~3N licences (+ N/10 enterprises), the shipped rules.

    .venv/bin/python benchmarks/bench_alerts.py [--sizes 10000,100000,1000000] [--licences-per-person 3]

For each size: builds the registries column-wise (testsupport.registries.population) straight into the Parquet
snapshots of a fresh home, then times ``evaluate_alerts`` three ways: cold (empty outbox: every due alert is
inserted), rerun (same day: nothing new, the dedup path) and next day (a few new stages, supersession,
cancellation). Target: cold evaluation of 1M persons / ~3M licences in at most 30 s on 2 cores.
Prints a table and writes benchmarks/out/alerts.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from notifier.engine import evaluate_alerts  # noqa: E402
from testsupport.registries import population, write_snapshots  # noqa: E402
from data.settings import load_settings  # noqa: E402
from yiwang.migrations import open_db  # noqa: E402

AS_OF = date(2026, 3, 2)
TARGET_S = 30.0


def bench(people: int, licences_per_person: float, workdir: Path) -> dict:
    home = workdir / f"home-{people}"
    settings = load_settings(home=home, id_hash_key="bench")
    db = open_db(settings.db_path)
    t0 = time.perf_counter()
    frames = population(people, licences_per_person, AS_OF, seed=42)
    write_snapshots(home, frames)
    build_s = time.perf_counter() - t0
    proc = psutil.Process()
    out = {
        "persons": people,
        "enterprises": frames["enterprises"].height,
        "licences": frames["licenses"].height,
        "build_s": round(build_s, 2),
    }
    del frames
    for name, as_of in (("cold", AS_OF), ("rerun", AS_OF), ("next_day", AS_OF + timedelta(days=1))):
        t = time.perf_counter()
        s = evaluate_alerts(settings, db, as_of)
        out[f"{name}_s"] = round(time.perf_counter() - t, 2)
        out[f"{name}_created"] = s.created
        out[f"{name}_query_s"] = s.query_seconds
        out[f"{name}_write_s"] = s.write_seconds
        if name == "cold":
            out["candidates"] = s.candidates
        if name == "next_day":
            out["next_day_superseded"] = s.superseded
            out["next_day_cancelled"] = s.cancelled + s.resolved
    out["peak_rss_mb"] = round(proc.memory_info().rss / 2**20)
    out["within_target"] = out["cold_s"] <= TARGET_S if people >= 1_000_000 else None
    db.conn.close()
    shutil.rmtree(home, ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated person counts")
    ap.add_argument("--licences-per-person", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "alerts.json")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    rows = []
    try:
        for n in sizes:
            row = bench(n, args.licences_per_person, work)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "alert evaluation (notifier.evaluate_alerts, shipped rules)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "target": f"1M persons / ~3M licences cold evaluation <= {TARGET_S:.0f} s on 2 cores",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"\n{'persons':>10} {'licences':>10} {'alerts':>8} {'cold s':>7} {'rerun s':>8} {'next day s':>10} {'RSS MB':>7}")
    for r in rows:
        print(f"{r['persons']:>10} {r['licences']:>10} {r['cold_created']:>8} {r['cold_s']:>7} {r['rerun_s']:>8} "
              f"{r['next_day_s']:>10} {r['peak_rss_mb']:>7}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
