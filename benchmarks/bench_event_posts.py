"""Latency of ``POST /v1/events`` as the event log grows by one small batch per post.

    .venv/bin/python benchmarks/bench_event_posts.py                      # 800 posts of 50 events
    .venv/bin/python benchmarks/bench_event_posts.py --posts 200 --per-post 20   # a quick check

In a throwaway home: ingests the catalogue (``data/catalog.csv``), starts ``yiwang serve`` as its own process
on 127.0.0.1, posts ``--posts`` batches of ``--per-post`` new events (all in one month, the worst case for
the duplicate check) one after another over a keep-alive connection, then resends the first ``--window``
batches (every event a duplicate). Prints median and p99 latency of the first and the last ``--window``
posts and of the resends, and the number of event files readers see at the end; writes them to
``benchmarks/out/event_posts.json``. The server is stopped on every exit path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out" / "event_posts.json"
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _quantiles(ms: list[float]) -> dict[str, float]:
    s = sorted(ms)
    return {"median_ms": round(s[len(s) // 2], 2), "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--posts", type=int, default=800)
    ap.add_argument("--per-post", type=int, default=50)
    ap.add_argument("--window", type=int, default=100, help="posts measured at the start and at the end")
    args = ap.parse_args()

    import httpx

    from yiwang.api.keys import create_key
    from data.eventlog import month_dir

    try:
        from data.eventlog import live_files
    except ImportError:  # a checkout from before compaction: every file is read

        def live_files(part: Path) -> list[Path]:
            return sorted(Path(part).glob("*.parquet"))
    from data.ingest import ingest_export
    from data.registry import stored_records
    from data.settings import load_settings
    from yiwang.migrations import open_db

    tmp = Path(tempfile.mkdtemp(prefix="bench-event-posts-"))
    proc = None
    try:
        home = tmp / "home"
        export = tmp / "export"
        export.mkdir()
        shutil.copy(REPO / "data" / "catalog.csv", export / "catalog.csv")
        settings = load_settings(home=home, id_hash_key="bench-key")
        db = open_db(settings.db_path)
        ingest_export(settings, db, export)
        item = next(i for i, audience in stored_records(db.conn, "catalog", ["item_id", "audience"]) if audience == "person")
        key = create_key(db, "bench", ["events:write"])[1]
        db.conn.close()

        port = _free_port()
        env = {**os.environ, "YIWANG_ID_HASH_KEY": "bench-key"}
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "yiwang"), "--home", str(home), "serve", "--port", str(port),
             "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )
        base = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not come up: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.1)

        def batch(k: int) -> dict:
            return {"events": [
                {"event_id": f"bench-{k}-{j}", "subject_id": f"P{j % 97:07d}", "item_id": item, "action": "view",
                 "ts": f"2026-10-{1 + (k + j) % 28:02d}T10:{j % 60:02d}:00+08:00", "channel": "app"}
                for j in range(args.per_post)
            ]}

        latencies: list[float] = []
        resend: list[float] = []
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
            for k in range(args.posts):
                body = batch(k)
                t0 = time.perf_counter()
                r = client.post("/v1/events", json=body)
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200 or r.json()["inserted"] != args.per_post:
                    raise SystemExit(f"post {k}: {r.status_code} {r.text}")
            for k in range(min(args.window, args.posts)):
                t0 = time.perf_counter()
                r = client.post("/v1/events", json=batch(k))
                resend.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200 or r.json()["inserted"] != 0:
                    raise SystemExit(f"resend {k}: {r.status_code} {r.text}")

        w = min(args.window, args.posts)
        part = month_dir(settings.events_dir, 202610)
        result = {
            "posts": args.posts,
            "events_per_post": args.per_post,
            "window": w,
            "first": _quantiles(latencies[:w]),
            "last": _quantiles(latencies[-w:]),
            "resend_duplicates": _quantiles(resend),
            "live_files_at_end": len(live_files(part)),
            "files_on_disk_at_end": sum(1 for _ in settings.events_dir.rglob("*.parquet")),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        }
        print(
            f"{args.posts} posts of {args.per_post} events: first {w} median {result['first']['median_ms']} ms "
            f"p99 {result['first']['p99_ms']} ms; last {w} median {result['last']['median_ms']} ms "
            f"p99 {result['last']['p99_ms']} ms; resends median {result['resend_duplicates']['median_ms']} ms; "
            f"{result['live_files_at_end']} files read, {result['files_on_disk_at_end']} on disk"
        )
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
