"""kill -9 of the other batch writers (issue 10, item 7): a profile batch, a tag batch, a training and an event-log
append that die leave no '.tmp' file or folder, no run lock and no batch "started" forever once the store is
next opened, and the profile and tag Parquet copies agree with what SQLite serves.

As in tests/test_kill9_store.py, the processes are real and killed with SIGKILL, held still at the vulnerable
point from outside: a FIFO sits at the temporary's path (opening it for writing waits for a reader that never
comes). A training's temporary folder has a time-stamped name, so its child process stalls on the test's own
ranker stand-in instead (see _TRAINER). A kill between a SQLite COMMIT and the rename that follows it cannot be
held from outside; those tests build the state such a kill leaves from real runs.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import polars as pl

from data.settings import load_settings
from test_kill9_store import AS_OF, CLI, KEY, REPO_ROOT, env, wait_for  # shared crash-test set-up
from yiwang.migrations import open_db


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def query(db_path: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def batches(db_path: Path) -> list[tuple]:
    from profiler import list_batches

    db = open_db(db_path, migrate=False)
    try:
        return [(b["batch_id"], b["published_at"], b["failed_at"]) for b in list_batches(db)]
    finally:
        db.conn.close()


def leftovers(home: Path) -> list[str]:
    """Temporary files and folders anywhere, and run locks of runs that are over."""
    return sorted(p.relative_to(home).as_posix() for p in home.rglob("*")
                  if p.name.endswith(".tmp") or p.parent == home / "run")


def ingested_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    export = tmp_path / "export"
    export.mkdir()
    (export / "people.csv").write_text(
        "person_id,birth_date,gender,district,local_hukou,household_id\n"
        "P0000001,1980-01-01,F,黄浦区,1,H0000001\n"
        "P0000002,1982-02-02,M,黄浦区,1,H0000002\n", encoding="utf-8")
    done = subprocess.run([*CLI, "--home", str(home), "ingest", str(export), "--as-of", AS_OF], env=env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return home


# -- profiles -------------------------------------------------------------------------------------------------


def test_profile_batch_killed_before_publishing(tmp_path):
    home = ingested_home(tmp_path)
    db_path = home / "yiwang.db"
    (home / "profiles").mkdir()
    tmp = home / "profiles" / ".profiles.parquet.1.tmp"
    os.mkfifo(tmp)
    proc = subprocess.Popen([*CLI, "--home", str(home), "profile", "--as-of", AS_OF], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the batch to fill its build table", lambda: query(
            db_path, "SELECT count(*) FROM sqlite_master WHERE name = 'profiles_build'") == [(1,)], proc)
        open_db(db_path).conn.close()  # a live batch is left alone
        assert batches(db_path) == [(1, None, None)]
        assert tmp.exists()
    finally:
        kill(proc)

    open_db(db_path).conn.close()
    (batch,) = batches(db_path)
    assert batch[:2] == (1, None) and batch[2] is not None
    assert leftovers(home) == []

    again = subprocess.run([*CLI, "--home", str(home), "profile", "--as-of", AS_OF], env=env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert pl.read_parquet(home / "profiles" / "profiles.parquet")["batch_id"].unique().to_list() == [2]
    assert leftovers(home) == []


def test_profile_copy_lagging_sqlite_after_a_kill_between_commit_and_rename(tmp_path):
    """What a kill right after the SQLite swap's COMMIT leaves: batch 2 served by SQLite, its Parquet copy
    still the temporary, the copy in place batch 1's. The next open renames the temporary in."""
    from profiler import build_profiles

    home = ingested_home(tmp_path)
    settings = load_settings(home=home, id_hash_key=KEY)
    final = home / "profiles" / "profiles.parquet"
    db = open_db(settings.db_path)
    build_profiles(settings, db, date(2026, 11, 20))
    first = final.read_bytes()
    build_profiles(settings, db, date(2026, 11, 21))
    db.conn.close()
    os.replace(final, final.with_name(".profiles.parquet.2.tmp"))
    final.write_bytes(first)

    open_db(settings.db_path).conn.close()
    assert max(b for b, published, _ in batches(settings.db_path) if published) == 2
    assert pl.read_parquet(final)["batch_id"].unique().to_list() == [2]
    assert leftovers(home) == []


# -- tags -----------------------------------------------------------------------------------------------------


def tag_frame(code: str) -> pl.DataFrame:
    from taggers.store import TAG_SCHEMA

    return pl.DataFrame({
        "subject_id": ["P0000001", "P0000002"], "code": [code, code], "dimension": ["life", "life"],
        "confidence": [1.0, 1.0], "source": ["rule", "rule"], "evidence_zh": ["证据", "证据"],
        "evidence_en": ["evidence", "evidence"], "valid_from": [date(2026, 11, 20)] * 2,
        "valid_until": [None, None], "sensitive": [False, False], "as_of": [date(2026, 11, 20)] * 2,
    }).cast(TAG_SCHEMA)


_TAGGER = textwrap.dedent(
    """
    import sys
    import polars as pl
    from data.settings import load_settings
    from taggers import tags_parquet_path
    from taggers.store import replace_tags
    from yiwang.migrations import open_db

    settings = load_settings(home=sys.argv[1], id_hash_key="k")
    db = open_db(settings.db_path)
    replace_tags(db, pl.read_parquet(sys.argv[2]), tags_parquet_path(settings))
    """
)


def tags_in_sqlite(db_path: Path) -> list[tuple]:
    from taggers.store import read_tags

    db = open_db(db_path, migrate=False)
    try:
        return sorted(read_tags(db).select("subject_id", "code").iter_rows())
    finally:
        db.conn.close()


def tags_in_copy(home: Path) -> list[tuple]:
    return sorted(pl.read_parquet(home / "tags" / "tags.parquet").select("subject_id", "code").iter_rows())


def test_tag_batch_killed_before_its_swap(tmp_path):
    from taggers import tags_parquet_path
    from taggers.store import replace_tags

    home = tmp_path / "home"
    settings = load_settings(home=home, id_hash_key="k")
    db = open_db(settings.db_path)
    replace_tags(db, tag_frame("life.old"), tags_parquet_path(settings))
    db.conn.close()
    new = tmp_path / "new.parquet"
    tag_frame("life.new").write_parquet(new)
    tmp = home / "tags" / ".tags.parquet.tmp"
    os.mkfifo(tmp)
    proc = subprocess.Popen([sys.executable, "-c", _TAGGER, str(home), str(new)], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the batch's build table", lambda: query(
            settings.db_path, "SELECT count(*) FROM sqlite_master WHERE name = 'tags_build'") == [(1,)], proc)
        open_db(settings.db_path).conn.close()  # a live batch is left alone
        assert tmp.exists()
    finally:
        kill(proc)

    open_db(settings.db_path).conn.close()
    assert tags_in_copy(home) == tags_in_sqlite(settings.db_path) == [("P0000001", "life.old"), ("P0000002", "life.old")]
    assert leftovers(home) == []


def test_tag_copy_lagging_sqlite_after_a_kill_between_commit_and_rename(tmp_path):
    """What a kill right after the swap's COMMIT leaves: SQLite holds the new batch, the copy the old one, the
    new copy sits in the temporary and the dead batch's run lock file is free."""
    from taggers import tags_parquet_path
    from taggers.store import replace_tags

    home = tmp_path / "home"
    settings = load_settings(home=home, id_hash_key="k")
    db = open_db(settings.db_path)
    replace_tags(db, tag_frame("life.old"), tags_parquet_path(settings))
    old = (home / "tags" / "tags.parquet").read_bytes()
    replace_tags(db, tag_frame("life.new"), tags_parquet_path(settings))
    db.conn.close()
    os.replace(home / "tags" / "tags.parquet", home / "tags" / ".tags.parquet.tmp")
    (home / "tags" / "tags.parquet").write_bytes(old)
    (home / "run").mkdir(exist_ok=True)
    (home / "run" / "tag-batch-999-dead.lock").touch()

    open_db(settings.db_path).conn.close()
    assert tags_in_copy(home) == tags_in_sqlite(settings.db_path) == [("P0000001", "life.new"), ("P0000002", "life.new")]
    assert leftovers(home) == []


# -- models ---------------------------------------------------------------------------------------------------

_TRAINER = textwrap.dedent(
    """
    import sys
    from data.settings import load_settings
    from recommender import ranker, training
    from cities import mini_city  # tests/cities.py
    from yiwang.migrations import open_db

    home, gate = sys.argv[1], sys.argv[2]
    settings = load_settings(home=home, id_hash_key="k")
    db = open_db(settings.db_path)
    city = mini_city(settings, db, n_people=60, n_ent=6)
    save = ranker.LambdaRanker.save

    def save_then_stall(self, path):  # the test's stand-in: nothing in yiwang waits
        save(self, path)
        open(gate).read()

    ranker.LambdaRanker.save = save_then_stall
    training.train(settings, db, city["as_of"])
    """
)


def test_training_killed_while_saving_its_version(tmp_path):
    home = tmp_path / "home"
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    e = env()
    e["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "tests"), e["PYTHONPATH"]])
    proc = subprocess.Popen([sys.executable, "-c", _TRAINER, str(home), str(gate)], env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the version's ranker in its temporary folder",
                 lambda: list((home / "models").glob(".*.tmp/ranker.txt")), proc)
        open_db(home / "yiwang.db").conn.close()  # a live training is left alone
        assert list((home / "models").glob(".*.tmp"))
    finally:
        kill(proc)

    open_db(home / "yiwang.db").conn.close()
    assert not list((home / "models").iterdir())
    assert leftovers(home) == []


# -- event log ------------------------------------------------------------------------------------------------

_APPENDER = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timezone
    import polars as pl
    from data.eventlog import append_events

    append_events(sys.argv[1], pl.DataFrame({
        "event_id": ["E1"], "subject_id": ["P0000001"], "item_id": ["I1"], "action": ["view"],
        "ts": [datetime(2026, 11, 19, tzinfo=timezone.utc)], "channel": ["web"]}), 0)
    """
)


def writer_lock_held(events_dir: Path) -> bool:
    with open(events_dir / ".writer.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def test_event_append_killed_while_writing_its_file(tmp_path):
    home = tmp_path / "home"
    open_db(home / "yiwang.db").conn.close()
    events_dir = home / "events"
    month = events_dir / "month=2026-11"
    month.mkdir(parents=True)
    (events_dir / ".writer.lock").touch()
    tmp = month / "api-000000001-000000001.parquet.tmp"
    os.mkfifo(tmp)
    proc = subprocess.Popen([sys.executable, "-c", _APPENDER, str(events_dir)], env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the writer lock", lambda: writer_lock_held(events_dir), proc)
        open_db(home / "yiwang.db").conn.close()  # a live writer is left alone
        assert tmp.exists()
    finally:
        kill(proc)

    open_db(home / "yiwang.db").conn.close()
    assert leftovers(home) == []
    assert sorted(p.name for p in month.iterdir()) == []
