"""Every event_id is stored once, whoever writes it: two `yiwang serve` processes on one home and a
`yiwang ingest` of the same ids running at the same time (the normal deployment: the nightly ingest while
the API is live)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import polars as pl
import pytest

from yiwang.api.keys import create_key
from data.eventlog import scan_events
from data.ingest import ingest_export
from data.settings import load_settings
from yiwang.migrations import open_db

YIWANG = [str(Path(sys.executable).parent / "yiwang")]
ENV = {**os.environ, "YIWANG_ID_HASH_KEY": "test-key", "YIWANG_UNKNOWN_SUBJECT_EVENTS": "keep"}

CATALOG = """\
item_id,name,department,audience,category,life_events,once_per_subject,min_age,max_age,renews_license
I1,结婚登记,市民政局,person,婚育,marriage,1,18,,
I2,往来港澳通行证换发,市出入境管理局,person,出入境,,0,,,
"""
PEOPLE = """\
person_id,birth_date,gender,district,local_hukou,marital_status,household_id
P1,1980-01-01,F,黄浦区,1,married,H1
P2,1990-02-02,M,浦东新区,0,single,H2
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _events(n: int) -> pl.DataFrame:
    """``n`` events with ids ev-00000.., all in one month, as the portal and the export both send them."""
    return pl.DataFrame(
        {
            "event_id": [f"ev-{k:05d}" for k in range(n)],
            "subject_id": ["P1" if k % 2 == 0 else "P2" for k in range(n)],
            "item_id": ["I1" if k % 3 == 0 else "I2" for k in range(n)],
            "action": ["view"] * n,
            "ts": [f"2026-10-{1 + k % 28:02d}T{k % 24:02d}:{k % 60:02d}:{(k // 60) % 60:02d}+08:00" for k in range(n)],
            "channel": ["app"] * n,
        }
    )


def _start_server(home: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [*YIWANG, "--home", str(home), "serve", "--port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV,
    )
    return proc, f"http://127.0.0.1:{port}"


def _wait_up(proc: subprocess.Popen, base: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "server did not come up"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def test_two_servers_and_an_ingest_store_each_event_id_once(tmp_path):
    home = tmp_path / "home"
    settings = load_settings(home=home, id_hash_key="test-key")
    base = tmp_path / "base"
    base.mkdir()
    (base / "catalog.csv").write_text(CATALOG, encoding="utf-8")
    (base / "people.csv").write_text(PEOPLE, encoding="utf-8")
    db = open_db(settings.db_path)
    ingest_export(settings, db, base)
    key = create_key(db, "portal", ["events:write"])[1]
    db.conn.close()

    # The nightly export holds 30,000 events; the portal posts the first 6,000 of them again, in batches
    # of 200, each batch to both servers at the same moment: some before the ingest starts, the rest while
    # it is reading its file.
    events = _events(30_000)
    export = tmp_path / "nightly"
    export.mkdir()
    # Parquet: read in batches of exactly YIWANG_INGEST_BATCH_ROWS rows (a CSV block holds far more).
    events.write_parquet(export / "events.parquet")
    batches = [events.slice(k, 200).to_dicts() for k in range(0, 6_000, 200)]
    before, during = batches[:10], batches[10:]

    servers = [_start_server(home) for _ in range(2)]
    try:
        for proc, url in servers:
            _wait_up(proc, url)
        together = threading.Barrier(2)
        failures: list[str] = []

        def post_all(url: str, chunk: list[list[dict]]) -> None:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
                for batch in chunk:
                    together.wait(timeout=60)
                    if failures:
                        return
                    r = client.post("/v1/events", json={"events": batch})
                    for _ in range(10):
                        if r.status_code != 503:
                            break
                        # The log is busy: the portal resends the same batch after Retry-After.
                        time.sleep(float(r.headers["Retry-After"]))
                        r = client.post("/v1/events", json={"events": batch})
                    if r.status_code != 200:
                        failures.append(f"{url}: {r.status_code} {r.text}")

        def post_on_both(chunk: list[list[dict]]) -> None:
            threads = [threading.Thread(target=post_all, args=(url, chunk)) for _, url in servers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        post_on_both(before)
        ingest = subprocess.Popen([*YIWANG, "--home", str(home), "ingest", str(export)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env={**ENV, "YIWANG_INGEST_BATCH_ROWS": "500"})
        # Its first pending file means it has read which ids the log holds and is streaming its file: hold
        # it there (SIGSTOP: the race made certain, not left to timing) while the portal posts the rest.
        deadline = time.monotonic() + 120
        while not any(settings.events_dir.rglob("*.pending")):
            assert ingest.poll() is None, "ingest finished before it could be caught writing"
            assert time.monotonic() < deadline, "ingest did not start writing"
            time.sleep(0.005)
        ingest.send_signal(signal.SIGSTOP)
        try:
            post_on_both(during)
        finally:
            ingest.send_signal(signal.SIGCONT)
        _, ingest_err = ingest.communicate(timeout=120)
        assert ingest.returncode == 0, ingest_err.decode()
        assert failures == []
    finally:
        for proc, _ in servers:
            _stop(proc)

    stored = scan_events(settings.events_dir).select("event_id").collect()
    copies = stored.group_by("event_id").len().filter(pl.col("len") > 1)
    assert copies.height == 0, f"{copies.height} event ids stored more than once ({stored.height} rows)"
    assert sorted(stored["event_id"].to_list()) == events["event_id"].to_list()


def test_an_append_waits_for_the_writer_lock_at_most_its_timeout(tmp_path):
    """Another process holding the writer lock (an ingest committing) makes an API append give up after
    its timeout with EventLogBusy (HTTP 503 + Retry-After), storing nothing; once it is free the same
    batch is stored."""
    from datetime import datetime, timezone

    from data.eventlog import EventLogBusy, append_events

    events_dir = tmp_path / "events"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from data.eventlog import writer_lock\n"
         f"with writer_lock({str(events_dir)!r}):\n    print('held', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=ENV,
    )
    batch = pl.DataFrame({"event_id": ["a", "b"], "subject_id": "P1", "item_id": "I1", "action": "view",
                          "ts": datetime(2026, 10, 1, tzinfo=timezone.utc), "channel": "app"})
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(EventLogBusy, match="send the batch again") as busy:
            append_events(events_dir, batch, ingest_id=1, lock_timeout=0.2)
        assert busy.value.http_status == 503
        assert scan_events(events_dir).collect().height == 0
    finally:
        holder.communicate(b"\n", timeout=30)
    assert append_events(events_dir, batch, ingest_id=2, lock_timeout=0.2) == (2, 0)
