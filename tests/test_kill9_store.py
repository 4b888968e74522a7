"""kill -9 of a batch at its vulnerable point (issue 10, item 7): the registry snapshots and SQLite agree
again on the next run, and the dead run leaves no 'running' ingest, no 'building' feed version, no .tmp file
and no run lock behind.

The processes are real and killed with SIGKILL. To hold one still at the vulnerable point without any hook in
yiwang, the test blocks it from outside. Ingest: a FIFO sits where ingest writes the people snapshot's temporary
file (opening it for writing waits for a reader that never comes), and the test holds that table's snapshot lock
as a live writer would (so the FIFO is not cleaned away as a dead writer's leftover, and the fixed ingest waits
for the lock instead): either way the ingest stops right after the people table's COMMIT. Feed: the frames
handed to ``publish`` come from a generator that waits on a FIFO after the first chunk, so the version stays
'building' with rows written.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path
from typing import Callable, TypeVar

import polars as pl
import sqlite_utils

from data.registry import ingest_record, open_ingest, scan_table, snapshot_path, stored_record, stored_records
from data.settings import load_settings
from profiler import read_profile
from recommender.feeds import list_versions, publish, stored_versions
from yiwang.migrations import open_db

REPO_ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from yiwang.cli import main; main()"]
AS_OF = "2026-11-20"
KEY = "kill9-test-key"


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("YIWANG_")}
    e["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), e.get("PYTHONPATH", "")])
    e["YIWANG_ID_HASH_KEY"] = KEY
    return e


def people_csv(household_of_p1: str) -> str:
    return (
        "person_id,birth_date,gender,district,local_hukou,household_id\n"
        f"P0000001,1980-01-01,F,黄浦区,1,{household_of_p1}\n"
        "P0000002,1982-02-02,M,黄浦区,1,H0000002\n"
        "P0000003,2015-03-03,F,徐汇区,1,H0000002\n"
    )


def write_export(root: Path, name: str, household_of_p1: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "people.csv").write_text(people_csv(household_of_p1), encoding="utf-8")
    return d


def wait_for(what, condition, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """Poll until ``condition()``; the process under test must still be alive (it is blocked, not racing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the process ended (rc {proc.returncode}) before {what}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


T = TypeVar("T")


def read(db_path: Path, owner_read: Callable[[sqlite3.Connection], T]) -> T:
    """An owner's read on a read-only connection (opening the store would run its recovery)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return owner_read(conn)
    finally:
        conn.close()


def ingest_statuses(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """(ingest_id, status) of every recorded ingest (ids count up from 1)."""
    out = []
    while (record := ingest_record(conn, len(out) + 1)) is not None:
        out.append((len(out) + 1, record["status"]))
    return out


def feed_state(conn: sqlite3.Connection) -> tuple[dict[int, str], dict[int, dict[str, int]]]:
    """version -> status of every feed version, and what rows and reasons each still holds."""
    return ({v["version"]: v["status"] for v in list_versions(sqlite_utils.Database(conn))},
            stored_versions(conn))


def leftovers(home: Path) -> list[str]:
    """Temporary files anywhere, and run locks of runs that are over."""
    return sorted(p.relative_to(home).as_posix() for p in home.rglob("*")
                  if p.name.endswith(".tmp") or p.parent == home / "run")


def test_ingest_killed_between_commit_and_snapshot(tmp_path):
    home = tmp_path / "home"
    db_path = home / "yiwang.db"
    first = subprocess.run([*CLI, "--home", str(home), "ingest", str(write_export(tmp_path, "night1", "H0000001")),
                            "--as-of", AS_OF], env=env(), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr

    tmp = snapshot_path(home, "people").with_suffix(".parquet.tmp")
    os.mkfifo(tmp)
    writer = open(home / "snapshots" / ".people.lock", "a")
    fcntl.flock(writer, fcntl.LOCK_EX)
    second = subprocess.Popen(
        [*CLI, "--home", str(home), "ingest", str(write_export(tmp_path, "night2", "H0000001m")), "--as-of", AS_OF],
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for("the people load to commit", lambda: read(
            db_path, lambda c: stored_record(c, "people", "P0000001", ["household_id"])) == ("H0000001m",), second)
        # Still alive, still 'running': opening the store meanwhile must not take it for dead.
        open_db(db_path).conn.close()
        assert read(db_path, ingest_statuses) == [(1, "done"), (2, "running")]
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait()
        second.stderr.close()
        writer.close()
    assert second.returncode == -signal.SIGKILL
    # What the kill leaves: a half-written temporary file (here in place of the FIFO), a snapshot a load behind.
    tmp.unlink()
    tmp.write_bytes(b"PAR1\x15\x04half a snapshot")
    stale = pl.read_parquet(snapshot_path(home, "people")).filter(pl.col("person_id") == "P0000001")
    assert stale["household_id"].to_list() == ["H0000001"]

    profile = subprocess.run([*CLI, "--home", str(home), "profile", "--as-of", AS_OF], env=env(),
                             capture_output=True, text=True, timeout=300)
    assert profile.returncode == 0, profile.stderr

    in_sqlite = dict(read(db_path, lambda c: stored_records(c, "people", ["person_id", "household_id"])))
    in_snapshot = dict(pl.read_parquet(snapshot_path(home, "people")).select("person_id", "household_id").iter_rows())
    assert in_snapshot == in_sqlite
    assert in_snapshot["P0000001"] == "H0000001m"
    db = open_db(db_path)
    published = read_profile(db, "P0000001", include_sensitive=True)
    db.conn.close()
    assert published["household_id"] == "H0000001m"
    assert read(db_path, ingest_statuses) == [(1, "done"), (2, "failed")]
    assert "died" in read(db_path, lambda c: ingest_record(c, 2))["summary"]["error"]
    assert leftovers(home) == []


def test_snapshot_lagging_sqlite_is_rewritten_before_use(tmp_path):
    """The same agreement in one process: a table loaded (generation raised) whose snapshot was not rewritten."""
    settings = load_settings(home=tmp_path / "home", id_hash_key=KEY)
    db = open_db(settings.db_path)
    from data.ingest import ingest_export

    ingest_export(settings, db, write_export(tmp_path, "night1", "H0000001"))
    old = snapshot_path(settings.home, "people").read_bytes()
    ingest_export(settings, db, write_export(tmp_path, "night2", "H0000001m"))
    snapshot_path(settings.home, "people").write_bytes(old)  # as if the rewrite had never happened
    people = scan_table(settings.home, "people").collect()
    assert dict(people.select("person_id", "household_id").iter_rows())["P0000001"] == "H0000001m"
    db.conn.close()



def test_a_snapshot_in_step_with_sqlite_is_not_rewritten(tmp_path):
    """The check must read the generation the snapshot was written with: otherwise every read rewrites it from
    SQLite (a million rows, several times per profile run)."""
    settings = load_settings(home=tmp_path / "home", id_hash_key=KEY)
    db = open_db(settings.db_path)
    from data.ingest import ingest_export
    from data.registry import refresh_stale_snapshot, snapshot_generation

    ingest_export(settings, db, write_export(tmp_path, "night1", "H0000001"))
    path = snapshot_path(settings.home, "people")
    assert snapshot_generation(path) == 1
    before = path.stat().st_mtime_ns
    assert refresh_stale_snapshot(settings.home, "people") is False
    scan_table(settings.home, "people").collect()
    assert path.stat().st_mtime_ns == before
    db.conn.close()

_PUBLISHER = textwrap.dedent(
    """
    import sys
    from datetime import date
    import polars as pl
    from data.settings import load_settings
    from recommender.feeds import publish
    from yiwang.migrations import open_db

    home, gate = sys.argv[1], sys.argv[2]
    settings = load_settings(home=home, id_hash_key="k")
    db = open_db(settings.db_path)

    def frames():
        yield pl.DataFrame({"subject_id": ["P1", "P2"], "rank": [1, 1], "item_id": ["I1", "I2"], "score": [0.5, 0.4],
                            "reasons_json": ['[{"source":"popular","zh":"热门","en":"popular","ref":"x"}]'] * 2})
        open(gate).read()  # the test's own input stalls here: nothing in yiwang waits
        yield pl.DataFrame()

    publish(db, settings, frames(), "m1", date(2026, 11, 20))
    """
)


def test_publisher_killed_while_building(tmp_path):
    home = tmp_path / "home"
    db_path = home / "yiwang.db"
    open_db(db_path).conn.close()
    script, gate = tmp_path / "publisher.py", tmp_path / "gate"
    script.write_text(_PUBLISHER)
    os.mkfifo(gate)
    proc = subprocess.Popen([sys.executable, str(script), str(home), str(gate)], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("a building version with rows", lambda: (
            (state := read(db_path, feed_state))[0] == {1: "building"} and state[1].get(1, {}).get("rows") == 2), proc)
        open_db(db_path).conn.close()  # a live build is left alone
        assert read(db_path, feed_state)[0] == {1: "building"}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    db = open_db(db_path)  # the next open of the store, by any command
    # Its rows are gone; the version stays as a 'failed' tombstone, so no later build gets its number.
    assert read(db_path, feed_state) == ({1: "failed"}, {})
    assert leftovers(home) == []

    frame = pl.DataFrame({"subject_id": ["P1"], "rank": [1], "item_id": ["I1"], "score": [0.5],
                          "reasons_json": ['[{"source":"popular","zh":"热门","en":"popular","ref":"x"}]']})
    publish(db, load_settings(home=home, id_hash_key="k"), [frame], "m2", date(2026, 11, 21))
    assert read(db_path, feed_state)[0] == {2: "published"}
    assert leftovers(home) == []
    db.conn.close()


_HOLDER = textwrap.dedent(
    """
    import sys
    from data.store import RunLock
    RunLock(sys.argv[1], sys.argv[2]).acquire()
    print("held", flush=True)
    sys.stdin.read()
    """
)


def test_only_ingests_whose_process_is_gone_are_failed(tmp_path):
    """Two ingests 'running', each with event files pending: the one whose process is alive (holding its run
    lock) is left alone by an open of the store; once that process is killed, the next open fails it too."""
    home = tmp_path / "home"
    db = open_db(home / "yiwang.db")
    for _ in range(2):
        open_ingest(db.conn, "x", "2026-11-20")
    month = home / "events" / "month=2026-11"
    month.mkdir(parents=True)
    pending = {i: month / f"part-{i:06d}-00000n-0123abcd.parquet.pending" for i in (1, 2)}
    for path in pending.values():
        path.write_bytes(b"PAR1 half")
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(home), "ingest-2"], env=env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        open_db(home / "yiwang.db").conn.close()
        assert ingest_statuses(db.conn) == [(1, "failed"), (2, "running")]
        assert not pending[1].exists() and pending[2].exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
    open_db(home / "yiwang.db").conn.close()
    assert ingest_statuses(db.conn) == [(1, "failed"), (2, "failed")]
    assert not pending[2].exists()
    assert leftovers(home) == []
    db.conn.close()
