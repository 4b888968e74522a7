"""Benchmark: profile + tag a synthetic city at several sizes (wall time and peak RSS per stage).

    .venv/bin/python benchmarks/bench_profile_tag.py                    # 100k, 300k, 1M people
    .venv/bin/python benchmarks/bench_profile_tag.py --sizes 20000      # a quick check
    .venv/bin/python benchmarks/bench_profile_tag.py --home COPY --as-of 2026-11-20   # an ingested store

Each size is a city of N people and N/10 enterprises with the synth's default ~27 events per subject
(about 30M events at 1M people), generated and ingested once into WORK/<N>/ (reused on later runs; not
timed). Then, each in a fresh process: ``yiwang profile --tag`` (profiles and tags in one pass, as the nightly
run makes them), and for comparison ``yiwang profile`` and ``yiwang tag`` one after the other; wall time and
that process's peak RSS (``wait4``) are recorded. Target at 1M people: profile + tag in at most 60 s and 6 GB on
2 cores (judged on the one-pass run). Writes benchmarks/out/profile_tag.json.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
TARGET_SECONDS, TARGET_RSS_MB, TARGET_PEOPLE = 60.0, 6 * 1024, 1_000_000

STAGE_CODE = {
    "profile": "import profiler; s = profiler.build_profiles(settings, db, as_of); print(s.as_dict())",
    "tag": "import taggers; s = taggers.run_taggers(settings, db, as_of); print(s.as_dict())",
    "profile --tag": (
        "import taggers; p, t = taggers.profile_and_tag(settings, db, as_of)\n"
        "print({'stage_seconds': {**{'profile ' + k: v for k, v in p.stage_seconds.items()}, **{'tag ' + k: v for k, v in t.stage_seconds.items()}},"
        " 'stage_cpu_seconds': {**{'profile ' + k: v for k, v in p.stage_cpu_seconds.items()}, **{'tag ' + k: v for k, v in t.stage_cpu_seconds.items()}},"
        " 'tags_written': t.tags_written, 'by_dimension': t.by_dimension})"
    ),
}


def run_stage(stage: str, home: Path, as_of: str) -> dict:
    """Run one stage in a fresh interpreter; (wall seconds, peak RSS MB of that process)."""
    code = (
        "import os; os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')\n"
        "from datetime import date\n"
        "from data.settings import load_settings\n"
        "from yiwang.migrations import open_db\n"
        f"settings = load_settings(home={str(home)!r}); db = open_db(settings.db_path); as_of = date.fromisoformat({as_of!r})\n"
        + STAGE_CODE[stage]
    )
    t0 = time.perf_counter()
    proc = subprocess.Popen([PY, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{stage} failed:\n{err[-3000:]}")
    summary = ast.literal_eval(out.strip().splitlines()[-1])
    return {
        "seconds": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "stage_seconds": summary.get("stage_seconds", {}),
        "stage_cpu_seconds": summary.get("stage_cpu_seconds", {}),
        "summary": summary,
    }


def prepare(people: int, work: Path, as_of: str, seed: int) -> tuple[Path, dict]:
    """Generate and ingest the city once; returns (home, facts)."""
    city, home = work / str(people) / "city", work / str(people) / "home"
    facts_path = work / str(people) / "facts.json"
    if facts_path.exists():
        return home, json.loads(facts_path.read_text())
    enterprises = max(people // 10, 1)
    yiwang = [str(Path(PY).parent / "yiwang")]
    t0 = time.perf_counter()
    if not (city / "export").exists():
        subprocess.run(
            yiwang + ["synth", "--people", str(people), "--enterprises", str(enterprises), "--seed", str(seed),
                      "--as-of", as_of, "--out", str(city), "--format", "parquet", "--json"],
            check=True, cwd=REPO, stdout=subprocess.DEVNULL,
        )
    synth_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not (home / "snapshots" / "people.parquet").exists():
        subprocess.run(yiwang + ["--home", str(home), "ingest", str(city / "export"), "--json"], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    ingest_s = time.perf_counter() - t0
    import polars as pl

    events = pl.scan_parquet(sorted((home / "events").glob("month=*/*.parquet"))).select(pl.len()).collect().item()
    facts = {"people": people, "enterprises": enterprises, "events": events, "synth_s": round(synth_s, 1), "ingest_s": round(ingest_s, 1)}
    facts_path.write_text(json.dumps(facts))
    return home, facts


def existing(home: Path) -> tuple[int, dict]:
    """An already-ingested store (profiled and tagged in place: pass a copy); returns (people, facts)."""
    import polars as pl

    count = lambda lf: lf.select(pl.len()).collect().item()  # noqa: E731
    people = count(pl.scan_parquet(home / "snapshots" / "people.parquet"))
    facts = {
        "people": people,
        "enterprises": count(pl.scan_parquet(home / "snapshots" / "enterprises.parquet")),
        "events": count(pl.scan_parquet(sorted((home / "events").glob("month=*/*.parquet")))),
        "home": str(home),
    }
    return people, facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,300000,1000000", help="comma-separated numbers of people")
    ap.add_argument("--as-of", default="2026-01-20")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work", type=Path, default=Path("/tmp/yiwang-bench-profile-tag"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "profile_tag.json")
    ap.add_argument(
        "--home", type=Path, action="append",
        help="benchmark this already-ingested store instead of generating cities (repeatable; it is profiled and "
        "tagged in place, so pass a copy; --as-of must be the city's)",
    )
    args = ap.parse_args(argv)

    if args.home:
        runs = [(home, existing(home)[1]) for home in args.home]
    else:
        runs = [prepare(people, args.work, args.as_of, args.seed) for people in [int(x) for x in args.sizes.split(",") if x.strip()]]
    results = []
    for home, facts in runs:
        people = facts["people"]
        together = run_stage("profile --tag", home, args.as_of)
        profile = run_stage("profile", home, args.as_of)
        tag = run_stage("tag", home, args.as_of)
        apart = round(profile["seconds"] + tag["seconds"], 2)
        row = {
            **facts,
            "one_pass_s": together["seconds"],
            "one_pass_cpu_s": together["cpu_s"],
            "one_pass_peak_rss_mb": together["peak_rss_mb"],
            "one_pass_stages_s": together["stage_seconds"],
            "one_pass_stages_cpu_s": together["stage_cpu_seconds"],
            "profile_s": profile["seconds"],
            "profile_cpu_s": profile["cpu_s"],
            "profile_peak_rss_mb": profile["peak_rss_mb"],
            "profile_stages_s": profile["stage_seconds"],
            "profile_stages_cpu_s": profile["stage_cpu_seconds"],
            "tag_s": tag["seconds"],
            "tag_cpu_s": tag["cpu_s"],
            "tag_peak_rss_mb": tag["peak_rss_mb"],
            "tag_stages_s": tag["stage_seconds"],
            "tag_stages_cpu_s": tag["stage_cpu_seconds"],
            "apart_total_s": apart,
            "tags_written": together["summary"]["tags_written"],
            "tag_summary": tag["summary"],
            "load_average_1m": round(os.getloadavg()[0], 2),
        }
        if people >= TARGET_PEOPLE:
            row["meets_target"] = together["seconds"] <= TARGET_SECONDS and together["peak_rss_mb"] <= TARGET_RSS_MB
        print(
            f"{people:>9,} people {facts['events']:>11,} events | one pass {together['seconds']:6.1f} s"
            f" (cpu {together['cpu_s']:.1f} s) {together['peak_rss_mb']:7.0f} MB"
            f" | apart: profile {profile['seconds']:6.1f} s {profile['peak_rss_mb']:7.0f} MB"
            f" + tag {tag['seconds']:6.1f} s {tag['peak_rss_mb']:7.0f} MB = {apart:6.1f} s"
            f" (cpu {profile['cpu_s'] + tag['cpu_s']:.1f} s) | load {os.getloadavg()[0]:.1f}\n"
            f"    one pass stages wall {together['stage_seconds']}\n"
            f"    profile stages wall {profile['stage_seconds']} cpu {profile['stage_cpu_seconds']}\n"
            f"    tag stages wall {tag['stage_seconds']} cpu {tag['stage_cpu_seconds']}",
            flush=True,
        )
        results.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "profile_tag",
                "target": {"people": TARGET_PEOPLE, "seconds": TARGET_SECONDS, "peak_rss_mb": TARGET_RSS_MB},
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
                "as_of": args.as_of,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
