"""Foundation benchmark: synth + ingest of a synthetic city at several sizes.

Each stage runs as its own child process (the real CLI), so its wall time and peak RSS are the
stage's alone: peak RSS is the kernel's ``ru_maxrss`` for that child, read with ``os.wait4``.
Prints a table and writes ``benchmarks/out/foundation.json``.

    .venv/bin/python benchmarks/bench_foundation.py                      # 100k, 300k, 1M people
    .venv/bin/python benchmarks/bench_foundation.py --sizes 20000         # a quick check

Enterprises = people / 10; synth's default gives about 27 events per subject (~30M at 1M people).
Targets (issue 2): ingest >= 1,000,000 event rows/s, peak RSS <= 4 GB, time growing linearly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TARGET_ROWS_PER_S = 1_000_000
TARGET_RSS_MB = 4096
CLI = [sys.executable, "-c", "from yiwang.cli import main; main()"]


def run_stage(args: list[str], env: dict[str, str]) -> dict:
    """Run one CLI stage in a fresh child; wall seconds, the child's peak RSS and its stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*CLI, *args], stdout=out, stderr=err, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"stage {' '.join(args[:2])} failed (exit {proc.returncode}):\n{stderr[-3000:]}")
    # ru_maxrss is in KiB on Linux.
    return {
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "stdout": stdout,
    }


def machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        import psutil

        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    import polars
    import pyarrow

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": mem_gb,
        "python": platform.python_version(),
        "polars": polars.__version__,
        "pyarrow": pyarrow.__version__,
        "load_avg_at_start": list(os.getloadavg()),
    }


def bench_size(people: int, args, work: Path) -> dict:
    enterprises = max(1, people // 10)
    city, home = work / f"city-{people}", work / f"home-{people}"
    shutil.rmtree(city, ignore_errors=True)
    shutil.rmtree(home, ignore_errors=True)
    env = {**os.environ, "YIWANG_HOME": str(home), "COLUMNS": "200", "OPENBLAS_NUM_THREADS": "1"}
    synth_args = [
        "synth", "--people", str(people), "--enterprises", str(enterprises), "--seed", str(args.seed),
        "--as-of", args.as_of, "--out", str(city), "--json",
    ]
    if args.events_per_person is not None:
        synth_args += ["--events-per-person", str(args.events_per_person)]
    print(f"[{people:,} people] synth ...", file=sys.stderr, flush=True)
    synth = run_stage(synth_args, env)
    export_bytes = sum(f.stat().st_size for f in (city / "export").iterdir())
    print(f"[{people:,} people] ingest ...", file=sys.stderr, flush=True)
    ingest = run_stage(["ingest", str(city / "export"), "--as-of", args.as_of, "--json"], env)
    summary = json.loads(ingest.pop("stdout"))
    synth.pop("stdout")
    events = summary["tables"].get("events", {})
    result = {
        "people": people,
        "enterprises": enterprises,
        "export_mb": round(export_bytes / 2**20, 1),
        "synth": synth,
        "ingest": {
            **ingest,
            "event_rows": events.get("rows_in", 0),
            "events_seconds": events.get("seconds", 0.0),
            "event_rows_per_s": round(events.get("rows_per_s", 0.0)),
            # The same rows per CPU-second of the ingest process while it loaded events (all its threads):
            # what the rate would be on one idle core, whatever else the machine was doing.
            "events_cpu_seconds": events.get("cpu_seconds", 0.0),
            "event_rows_per_cpu_s": round(events.get("rows_in", 0) / events["cpu_seconds"]) if events.get("cpu_seconds") else 0,
            "event_rows_per_s_whole_ingest": round(events.get("rows_in", 0) / ingest["wall_s"]) if ingest["wall_s"] else 0,
            "tables": {
                t: {k: v.get(k) for k in ("rows_in", "inserted", "quarantined", "seconds", "cpu_seconds")}
                for t, v in summary["tables"].items()
                if not v.get("rejected")
            },
            "rejected_files": summary["rejected_files"],
        },
    }
    if not args.keep:
        shutil.rmtree(city, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,300000,1000000", help="Comma-separated people counts.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--as-of", default="2025-06-30")
    parser.add_argument("--events-per-person", type=float, default=None, help="Passed to synth (default: synth's).")
    parser.add_argument("--work", type=Path, default=None, help="Scratch directory (default: a temporary one).")
    parser.add_argument("--keep", action="store_true", help="Keep the generated cities and stores.")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "foundation.json")
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]

    work = args.work or Path(tempfile.mkdtemp(prefix="yiwang-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for n in sizes:
            results.append(bench_size(n, args, work))
    finally:
        if args.work is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    # Linearity: seconds per million event rows should stay flat as the city grows.
    for r in results:
        rows = max(r["ingest"]["event_rows"], 1)
        r["ingest"]["seconds_per_million_events"] = round(r["ingest"]["wall_s"] / rows * 1e6, 2)
        r["synth"]["seconds_per_million_events"] = round(r["synth"]["wall_s"] / rows * 1e6, 2)
    report = {
        "benchmark": "foundation (synth + ingest)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "run_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "targets": {"event_rows_per_s": TARGET_ROWS_PER_S, "peak_rss_mb": TARGET_RSS_MB},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    header = (
        f"{'people':>10} {'events':>11} {'stage':>7} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'s/1M ev':>8} "
        f"{'event rows/s':>13} {'rows/cpu-s':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        for stage in ("synth", "ingest"):
            s = r[stage]
            rate = (
                f"{r['ingest']['event_rows_per_s']:>13,} {r['ingest']['event_rows_per_cpu_s']:>11,}"
                if stage == "ingest"
                else ""
            )
            print(
                f"{r['people']:>10,} {r['ingest']['event_rows']:>11,} {stage:>7} {s['wall_s']:>8.1f} {s['cpu_s']:>8.1f} "
                f"{s['peak_rss_mb']:>8.0f} {s['seconds_per_million_events']:>8.2f} {rate}"
            )
    worst_rate = min((r["ingest"]["event_rows_per_s"] for r in results), default=0)
    worst_rss = max((max(r["synth"]["peak_rss_mb"], r["ingest"]["peak_rss_mb"]) for r in results), default=0)
    print(
        f"\nevent rows/s (events table): min {worst_rate:,} (target >= {TARGET_ROWS_PER_S:,}: "
        f"{'met' if worst_rate >= TARGET_ROWS_PER_S else 'NOT met'}); peak RSS max {worst_rss:,.0f} MB "
        f"(target <= {TARGET_RSS_MB:,}: {'met' if worst_rss <= TARGET_RSS_MB else 'NOT met'})"
    )
    print(f"load average at start: {report['machine']['load_avg_at_start']}; written {args.out}")


if __name__ == "__main__":
    main()
