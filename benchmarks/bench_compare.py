"""Two source trees, one city, the nightly stages side by side: the before/after figures of a change.

Each stage (ingest, profile --tag, train, recommend) runs as a child process of the real CLI of each tree, on its
own home, one tree right after the other, so both meet the same machine load; wall time, CPU seconds and peak RSS
come from ``os.wait4`` for that child alone. The figure to read is the ratio after/before of each stage.

    .venv/bin/python benchmarks/bench_compare.py --before /path/to/old-checkout --after . \\
        --city CITY/export --work W --as-of 2026-11-20

``--before`` and ``--after`` are checkouts (e.g. ``git worktree add --detach /tmp/old <commit>``); each runs with
itself first on ``sys.path``, whatever is installed. Writes ``benchmarks/out/compare.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = {
    "ingest": lambda city, as_of: ["ingest", str(city), "--as-of", as_of, "--json"],
    "profile_tag": lambda city, as_of: ["profile", "--tag", "--as-of", as_of, "--json"],
    "train": lambda city, as_of: ["train", "--as-of", as_of, "--json"],
    "recommend": lambda city, as_of: ["recommend", "--as-of", as_of, "--json"],
}


def run_stage(tree: Path, home: Path, args: list[str]) -> dict:
    """One CLI stage of ``tree`` in a fresh child: wall and CPU seconds, peak RSS, and its JSON summary."""
    env = {
        **os.environ,
        "PYTHONPATH": str(tree),
        "YIWANG_HOME": str(home),
        "YIWANG_ID_HASH_KEY": "bench-compare",
        "OPENBLAS_NUM_THREADS": "1",
        "COLUMNS": "200",
    }
    cmd = [sys.executable, "-c", "from yiwang.cli import main; main()", *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=tree)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if code != 0:
        raise SystemExit(f"{tree}: {' '.join(args[:2])} failed (exit {code}):\n{stderr[-3000:]}")
    try:
        summary = json.loads(stdout)
    except json.JSONDecodeError:
        summary = None
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "summary": summary,
    }


def event_rate(result: dict) -> int | None:
    events = ((result.get("summary") or {}).get("tables") or {}).get("events") or {}
    return round(events["rows_per_s"]) if events.get("rows_per_s") else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="checkout of the code before the change")
    ap.add_argument("--after", type=Path, required=True, help="checkout of the code after the change")
    ap.add_argument("--city", type=Path, required=True, help="an export folder (yiwang synth ... --out CITY: CITY/export)")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder for the two homes (emptied first)")
    ap.add_argument("--as-of", default="2026-11-20")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, in order (default {','.join(STAGES)})")
    ap.add_argument("--out", type=Path, default=HERE / "out" / "compare.json")
    args = ap.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise SystemExit(f"--stages: unknown stage(s) {', '.join(unknown)}; known: {', '.join(STAGES)}")
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    homes = {label: args.work / label for label in trees}
    for home in homes.values():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)

    rows = []
    load_at_start = list(os.getloadavg())
    for stage in stages:
        row = {"stage": stage}
        for label, tree in trees.items():
            print(f"{stage}: {label} ...", file=sys.stderr, flush=True)
            row[label] = run_stage(tree, homes[label], STAGES[stage](args.city, args.as_of))
        row["wall_ratio"] = round(row["after"]["wall_s"] / row["before"]["wall_s"], 3)
        row["cpu_ratio"] = round(row["after"]["cpu_s"] / row["before"]["cpu_s"], 3)
        rows.append(row)

    report = {
        "benchmark": "before/after, one city, stages interleaved",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "run_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_at_start, "load_avg_at_end": list(os.getloadavg())},
        "trees": {k: str(v) for k, v in trees.items()},
        "stages": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    header = (f"{'stage':<12} {'before s':>9} {'after s':>9} {'ratio':>6} {'cpu before':>11} {'cpu after':>10} "
              f"{'cpu ratio':>9} {'MB before':>10} {'MB after':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        b, a = r["before"], r["after"]
        print(f"{r['stage']:<12} {b['wall_s']:>9.1f} {a['wall_s']:>9.1f} {r['wall_ratio']:>6.2f} {b['cpu_s']:>11.1f} "
              f"{a['cpu_s']:>10.1f} {r['cpu_ratio']:>9.2f} {b['peak_rss_mb']:>10,.0f} {a['peak_rss_mb']:>9,.0f}")
        if r["stage"] == "ingest":
            print(f"{'':<12} event rows/s: before {event_rate(b) or 0:,}, after {event_rate(a) or 0:,}")
    print(f"load average at start {load_at_start}, at end {report['machine']['load_avg_at_end']}; written {args.out}")


if __name__ == "__main__":
    main()
