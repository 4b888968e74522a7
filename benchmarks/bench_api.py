"""Load benchmark of the HTTP API on loopback: the feed endpoint beside a trivial endpoint of the same app.

    .venv/bin/python benchmarks/bench_api.py                  # 100k subjects (the figure for the README)
    .venv/bin/python benchmarks/bench_api.py --subjects 2000 --seconds 5   # a quick check

What it does, in a throwaway home:
1. builds a store with a catalogue, ``--subjects`` people and a published feed of ``--items`` items per subject,
   written by the recommender's own publisher (``recommender.feeds.publish``);
2. starts ``yiwang serve`` as its own process on 127.0.0.1 (a free port);
3. drives it with a keep-alive HTTP/1.1 load generator (asyncio, ``--connections`` connections, random
   subjects) in phases: ``GET /healthz`` (trivial, same app, same middleware), ``GET /v1/subjects/{id}/feed``,
   then the feed again while another process publishes a whole new feed version;
4. prints throughput and p50/p99 per phase, the feed/trivial throughput ratio (target >= 0.6) and the
   errors seen while publishing (target 0), and writes them to ``benchmarks/out/api.json``.

Every phase is bounded by ``--seconds`` and ``--max-requests``; the server is stopped on every exit path.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out" / "api.json"
HOST = "127.0.0.1"  # loopback only, by design
AS_OF = date(2026, 3, 1)
VERSION_RE = re.compile(rb'"version":(\d+)')


# -- the store --------------------------------------------------------------------------------------------


def _feed_chunks(subjects: int, items: int, n_items: int, seed: int, chunk_subjects: int = 20_000):
    """Feed rows like the recommender's: ranked items per subject with 1-2 reasons in zh and en."""
    import polars as pl

    rng = random.Random(seed)
    reasons = [
        json.dumps([{"source": "licence", "zh": "您的往来港澳通行证将于2026-04-20到期", "en": "your HK/Macau permit "
                     "expires on 2026-04-20", "ref": "hk_macau_permit"}], ensure_ascii=False),
        json.dumps([{"source": "tag", "zh": "因为您近期结婚", "en": "because you recently married",
                     "ref": "life_event.marriage"},
                    {"source": "popular", "zh": "同区同龄人常办", "en": "popular with people like you",
                     "ref": None}], ensure_ascii=False),
    ]
    for start in range(0, subjects, chunk_subjects):
        ids, ranks, item_ids, scores, why = [], [], [], [], []
        for s in range(start, min(subjects, start + chunk_subjects)):
            picked = rng.sample(range(n_items), items)
            for r, it in enumerate(picked):
                ids.append(f"P{s:08d}")
                ranks.append(r + 1)
                item_ids.append(f"BENCH{it:05d}")
                scores.append(1.0 - r / 100)
                why.append(reasons[(s + r) % 2])
        yield pl.DataFrame({"subject_id": ids, "rank": ranks, "item_id": item_ids, "score": scores,
                            "reasons_json": why})
    # The non-personalised list every version carries (see recommender.feeds).
    yield pl.DataFrame({"subject_id": ["~popular:person"] * items, "rank": list(range(1, items + 1)),
                        "item_id": [f"BENCH{i:05d}" for i in range(items)], "score": [0.5] * items,
                        "reasons_json": [reasons[1]] * items})


def publish_version(home: str, subjects: int, items: int, n_items: int, seed: int) -> dict:
    """Publish one whole feed version with the recommender's publisher; returns its summary and duration."""
    from recommender.feeds import publish

    from data.settings import load_settings
    from yiwang.migrations import open_db

    settings = load_settings(home=home, id_hash_key="bench")
    db = open_db(settings.db_path)
    started = time.perf_counter()
    summary = publish(db, settings, _feed_chunks(subjects, items, n_items, seed), "bench-model", AS_OF)
    db.conn.close()
    return {**asdict(summary), "seconds": round(time.perf_counter() - started, 2)}


def _publish_in_child(home, subjects, items, n_items, seed, queue) -> None:
    try:
        queue.put(publish_version(home, subjects, items, n_items, seed))
    except BaseException as exc:  # reported by the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def build_store(home: Path, subjects: int, items: int, n_items: int) -> tuple[str, dict]:
    import polars as pl

    from data.registry import insert_rows
    from yiwang.api.keys import create_key
    from yiwang.migrations import open_db

    db = open_db(home / "yiwang.db")
    insert_rows(db.conn, "catalog", pl.DataFrame({
        "item_id": [f"BENCH{i:05d}" for i in range(n_items)], "name": [f"基准事项{i}" for i in range(n_items)],
        "department": "市公安局出入境管理局", "audience": "person", "category": "出入境", "ingest_id": 0}))
    insert_rows(db.conn, "people", pl.DataFrame({
        "person_id": [f"P{s:08d}" for s in range(subjects)], "birth_date": "1990-05-01", "gender": "F",
        "district": "静安区", "local_hukou": 1, "ingest_id": 0}))
    _, key = create_key(db, "bench", ["feed:read"])
    db.conn.close()
    first = publish_version(str(home), subjects, items, n_items, seed=1)
    return key, first


# -- the server -------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen:
    yiwang = Path(sys.executable).parent / "yiwang"
    env = {**os.environ, "YIWANG_ID_HASH_KEY": "bench"}
    proc = subprocess.Popen(
        [str(yiwang), "--home", str(home), "serve", "--host", HOST, "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError("server did not come up within 60 s")


def _cpu(proc: subprocess.Popen) -> float:
    """CPU seconds the server process has used: a cost per request that background load barely moves."""
    import psutil

    times = psutil.Process(proc.pid).cpu_times()
    return times.user + times.system


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- the load generator -----------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    path: str
    requests: int = 0
    errors: int = 0
    statuses: dict = field(default_factory=dict)
    seconds: float = 0.0
    throughput_rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    versions_seen: list = field(default_factory=list)
    server_cpu_s: float = 0.0
    server_cpu_ms_per_request: float = 0.0
    latencies: list = field(default_factory=list, repr=False)


async def _connection(port, key, make_path, deadline, budget, latencies, statuses, versions) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    auth = f"Authorization: Bearer {key}\r\n".encode()
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            request = b"GET " + make_path().encode() + b" HTTP/1.1\r\nHost: bench\r\n" + auth + b"\r\n"
            t0 = time.perf_counter()
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - t0)
            status = int(status_line.split()[1]) if status_line else 0
            statuses[status] = statuses.get(status, 0) + 1
            match = VERSION_RE.search(body)
            if match:
                versions.add(int(match.group(1)))
    finally:
        writer.close()


async def run_phase(name, port, key, make_path, label, connections, seconds, max_requests, publisher=None):
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    versions: set[int] = set()
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + seconds

    async def until_published():
        # During the publish phase keep loading until the new version is live (bounded by the deadline).
        while publisher.is_alive() and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        budget[0] = min(budget[0], connections * 50)  # a short tail after the flip, then stop

    tasks = [
        asyncio.create_task(_connection(port, key, make_path, deadline, budget, latencies, statuses, versions))
        for _ in range(connections)
    ]
    if publisher is not None:
        tasks.append(asyncio.create_task(until_published()))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.perf_counter() - started
    failures = [r for r in results if isinstance(r, BaseException)]
    latencies.sort()
    n = len(latencies)
    errors = sum(c for s, c in statuses.items() if s != 200) + len(failures)
    return PhaseResult(
        name=name, path=label, requests=n, errors=errors, statuses={str(k): v for k, v in sorted(statuses.items())},
        seconds=round(elapsed, 2), throughput_rps=round(n / elapsed, 1) if elapsed else 0.0,
        p50_ms=round(latencies[n // 2] * 1000, 2) if n else 0.0,
        p99_ms=round(latencies[min(n - 1, int(n * 0.99))] * 1000, 2) if n else 0.0,
        versions_seen=sorted(versions),
        latencies=latencies,
    )


def merge(name: str, parts: list[PhaseResult]) -> PhaseResult:
    latencies = sorted(x for p in parts for x in p.latencies)
    n, seconds = len(latencies), sum(p.seconds for p in parts)
    statuses: dict[str, int] = {}
    for p in parts:
        for k, v in p.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
    cpu = sum(p.server_cpu_s for p in parts)
    return PhaseResult(
        server_cpu_s=round(cpu, 3), server_cpu_ms_per_request=round(cpu * 1000 / n, 4) if n else 0.0,
        name=name, path=parts[0].path, requests=n, errors=sum(p.errors for p in parts), statuses=statuses,
        seconds=round(seconds, 2), throughput_rps=round(n / seconds, 1) if seconds else 0.0,
        p50_ms=round(latencies[n // 2] * 1000, 2) if n else 0.0,
        p99_ms=round(latencies[min(n - 1, int(n * 0.99))] * 1000, 2) if n else 0.0,
        latencies=latencies,
    )


def _public(result: PhaseResult) -> dict:
    out = asdict(result)
    out.pop("latencies")
    return out


# -- main -------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=100_000, help="subjects with a feed (default 100000)")
    p.add_argument("--items", type=int, default=20, help="feed items per subject (default 20)")
    p.add_argument("--catalog", type=int, default=1500, help="catalogue items (default 1500)")
    p.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections (default 16)")
    p.add_argument("--seconds", type=float, default=30.0, help="measuring time per endpoint, split into rounds (default 30)")
    p.add_argument("--rounds", type=int, default=3, help="alternating trivial/feed slices (default 3)")
    p.add_argument("--max-requests", type=int, default=200_000, help="upper bound of requests per phase")
    p.add_argument("--publish-seconds", type=float, default=300.0, help="upper bound of the publish phase")
    p.add_argument("--out", type=Path, default=OUT, help=f"JSON output (default {OUT.relative_to(REPO)})")
    args = p.parse_args(argv)
    if args.items > args.catalog:
        p.error("--items must not exceed --catalog")

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    home = Path(tempfile.mkdtemp(prefix="yiwang-bench-api-"))
    server = None
    publisher = None
    try:
        t0 = time.perf_counter()
        key, first = build_store(home, args.subjects, args.items, args.catalog)
        setup_s = time.perf_counter() - t0
        print(f"store: {args.subjects:,} subjects x {args.items} items published as version {first['version']} "
              f"in {first['seconds']} s (setup {setup_s:.1f} s)", flush=True)
        port = _free_port()
        server = start_server(home, port)
        rng = random.Random(7)
        subjects = args.subjects

        def feed_path() -> str:
            return f"/v1/subjects/P{rng.randrange(subjects):08d}/feed"

        def trivial_path() -> str:
            return "/healthz"

        feed_label = "/v1/subjects/{subject_id}/feed"
        phases = []
        # Warm both paths (imports, connection pool, page cache) before measuring.
        asyncio.run(run_phase("warmup", port, key, feed_path, feed_label, args.connections, 2, 2000))
        asyncio.run(run_phase("warmup", port, key, trivial_path, "/healthz", args.connections, 2, 2000))
        # Alternate short slices of each endpoint so background load on a shared machine hits both alike.
        slices: dict[str, list[PhaseResult]] = {"trivial": [], "feed": []}
        for _ in range(args.rounds):
            for name, make, label in (("trivial", trivial_path, "/healthz"), ("feed", feed_path, feed_label)):
                cpu0 = _cpu(server)
                part = asyncio.run(run_phase(name, port, key, make, label, args.connections,
                                             args.seconds / args.rounds, args.max_requests // args.rounds))
                part.server_cpu_s = _cpu(server) - cpu0
                slices[name].append(part)
        for name, parts in slices.items():
            result = merge(name, parts)
            phases.append(result)
            print(f"{name:>8}: {result.requests:>7,} req in {result.seconds:>5} s  {result.throughput_rps:>8,.0f} req/s"
                  f"  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  errors {result.errors}"
                  f"  server CPU {result.server_cpu_ms_per_request:.3f} ms/req  (per slice: {', '.join(f'{p.throughput_rps:,.0f}' for p in parts)} req/s)", flush=True)

        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        publisher = ctx.Process(target=_publish_in_child,
                                args=(str(home), args.subjects, args.items, args.catalog, 2, queue))
        publisher.start()
        during = asyncio.run(run_phase("feed_while_publishing", port, key, feed_path, feed_label, args.connections,
                                       args.publish_seconds, args.max_requests * 10, publisher=publisher))
        publisher.join(timeout=args.publish_seconds)
        published = queue.get(timeout=10) if publisher.exitcode == 0 else {"error": f"exit {publisher.exitcode}"}
        phases.append(during)
        print(f"publish: new version {published.get('version')} in {published.get('seconds')} s; "
              f"{during.requests:,} feed reads meanwhile, versions served {during.versions_seen}, "
              f"errors {during.errors}", flush=True)

        trivial, feed = phases[0], phases[1]
        ratio = round(feed.throughput_rps / trivial.throughput_rps, 3) if trivial.throughput_rps else 0.0
        cpu_ratio = (round(trivial.server_cpu_ms_per_request / feed.server_cpu_ms_per_request, 3)
                     if feed.server_cpu_ms_per_request else 0.0)
        report = {
            "benchmark": "api",
            "command": "python benchmarks/bench_api.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "subjects": args.subjects,
            "items_per_subject": args.items,
            "connections": args.connections,
            "rounds": args.rounds,
            "phases": [_public(ph) for ph in phases],
            "feed_to_trivial_throughput_ratio": ratio,
            "ratio_target": 0.6,
            "feed_to_trivial_server_cpu_ratio": cpu_ratio,
            "ratio_met": ratio >= 0.6,
            "errors_during_publish": during.errors,
            "publish": published,
            "new_version_served": published.get("version") in during.versions_seen,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "note": "server (uvicorn, 1 process) and load generator (1 process, asyncio) share the same cores",
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        print(f"server CPU per request, trivial/feed: {cpu_ratio} (what throughput would be on a quiet core)")
        print(f"ratio feed/trivial throughput: {ratio} (target >= 0.6); errors during publish: {during.errors}; "
              f"wrote {args.out}")
        ok = ratio >= 0.6 and during.errors == 0 and "error" not in published
        return 0 if ok else 1
    finally:
        if publisher is not None and publisher.is_alive():
            publisher.terminate()
            publisher.join()
        if server is not None:
            stop_server(server)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
