"""The scheduler: a real APScheduler on the SQLite job store. Jobs persist across a restart, a run missed while
down runs once (coalesce, misfire grace), a failing stage fails its job and not the scheduler, cron from settings;
the scheduler's tables are the shell's migration, and a store made while they were the notifier's keeps working."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from yiwang import scheduler as sched
from notifier.outbox import stored_alerts
from testsupport.registries import put_rows
from yiwang.scheduler import list_runs
from data.errors import ConfigError
from data.settings import load_settings
from yiwang.migrations import open_db

# Far-away schedules, so nothing fires during a test unless the test makes it due.
QUIET = dict(schedule_profile_tag="0 1 1 1 *", schedule_feed_refresh="0 3 1 1 *", schedule_retrain="0 2 1 1 *",
             schedule_alerts="5 0 1 1 *", schedule_delivery="10 0 1 1 *")


@pytest.fixture
def ssettings(tmp_path):
    return load_settings(home=tmp_path / "home", id_hash_key="k", **QUIET)


@pytest.fixture
def running():
    """Start schedulers through this; every one is shut down at the end, whatever happens."""
    started = []

    def start(settings):
        s = sched.start(settings)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.running:
            s.shutdown(wait=True)


def runs(settings, job_id=None):
    db = open_db(settings.db_path)
    try:
        return list_runs(db, job_id)
    finally:
        db.conn.close()


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_jobs_persist_across_a_restart_and_a_missed_run_runs_once(ssettings, running):
    db = open_db(ssettings.db_path)
    put_rows(ssettings, db, "people", [{"person_id": "P1", "birth_date": date(1980, 1, 1)}])
    today = datetime.now(sched.LOCAL).date()
    put_rows(ssettings, db, "licenses", [{"license_id": "L1", "holder_id": "P1", "license_type": "hk_macau_permit",
                                          "issued_on": date(2017, 1, 1), "expires_on": today + timedelta(days=20)}])
    db.conn.close()

    first = running(ssettings)
    jobs = {j.id: j for j in first.get_jobs()}
    assert set(jobs) == set(sched.JOBS)
    assert all(j.coalesce and j.max_instances == 1 and j.misfire_grace_time == 3600 for j in jobs.values())
    stored_next = {j.id: j.next_run_time for j in jobs.values()}
    first.shutdown(wait=True)
    # The alerts job was due 3 times while the process was down (the last 10 s ago): simulate by moving it back in
    # the stored jobs through a scheduler that never processes them (started paused). Changing it on the running
    # one raced with the processing its start had woken up: the job could run before the shutdown.
    offline = sched.build_scheduler(ssettings)
    offline.start(paused=True)
    offline.modify_job("alerts", next_run_time=datetime.now(timezone.utc) - timedelta(seconds=10))
    offline.shutdown(wait=True)
    assert runs(ssettings) == []

    second = running(ssettings)  # a new process would do exactly this: same file, new scheduler
    assert wait_for(lambda: [r[:2] for r in runs(ssettings)] == [("alerts", "ok")])
    time.sleep(1.0)
    assert len(runs(ssettings, "alerts")) == 1  # coalesced: one run, not one per missed time
    # The job evaluated real alerts in the store.
    db = open_db(ssettings.db_path)
    assert stored_alerts(db.conn).select("rule_id", "stage").rows() == [("hk_macau_permit_expiry", "30")]
    db.conn.close()
    kept = {j.id: j.next_run_time for j in second.get_jobs()}
    assert {k: v for k, v in kept.items() if k != "alerts"} == {k: v for k, v in stored_next.items() if k != "alerts"}
    assert kept["alerts"] > datetime.now(timezone.utc)  # rescheduled after running


def test_a_failing_stage_fails_its_job_not_the_scheduler(ssettings, running):
    # Nothing is ingested in this home: training has no catalogue to learn from and fails; delivery has nothing
    # to send and succeeds.
    s = running(ssettings)
    now = datetime.now(timezone.utc)
    s.modify_job("retrain", next_run_time=now)
    s.modify_job("delivery", next_run_time=now)
    assert wait_for(lambda: len(runs(ssettings)) == 2 and all(r[1] != "running" for r in runs(ssettings)))
    by = {r[0]: r for r in runs(ssettings)}
    assert by["retrain"][1] == "failed" and "StateError: the catalogue is empty" in by["retrain"][2]
    assert by["delivery"][1] == "ok" and by["delivery"][2].startswith("deliver: {")
    assert s.running and len(s.get_jobs()) == len(sched.JOBS)


def test_changed_schedule_replaces_the_stored_job(ssettings, running, tmp_path):
    s = running(ssettings)
    before = s.get_job("delivery").next_run_time
    s.shutdown(wait=True)
    changed = load_settings(home=ssettings.home, id_hash_key="k", **{**QUIET, "schedule_delivery": "*/2 * * * *"})
    s2 = running(changed)
    after = s2.get_job("delivery").next_run_time
    assert after != before and after - datetime.now(timezone.utc) <= timedelta(minutes=2)
    info = {j.job_id: j for j in sched.list_jobs(changed)}
    assert info["delivery"].installed and not info["delivery"].schedule_changed
    assert {j.job_id: j for j in sched.list_jobs(ssettings)}["delivery"].schedule_changed


def test_crontab_day_of_week_and_bad_expressions(ssettings):
    sunday = load_settings(home=ssettings.home, id_hash_key="k", schedule_retrain="0 2 * * 0")
    trigger = sched.trigger_for(sunday, "retrain")
    fire = trigger.get_next_fire_time(None, datetime(2026, 11, 25, 12, 0, tzinfo=sched.LOCAL))  # a Wednesday
    assert fire == datetime(2026, 11, 29, 2, 0, tzinfo=sched.LOCAL) and fire.weekday() == 6
    weekdays = load_settings(home=ssettings.home, id_hash_key="k", schedule_retrain="30 6 * * 1-5")
    fire = sched.trigger_for(weekdays, "retrain").get_next_fire_time(
        None, datetime(2026, 11, 28, 12, 0, tzinfo=sched.LOCAL))  # Saturday -> Monday
    assert fire == datetime(2026, 11, 30, 6, 30, tzinfo=sched.LOCAL)
    for bad, needle in (("0 2 * *", "not a 5-field"), ("61 * * * *", "YIWANG_SCHEDULE_ALERTS"),
                        ("0 2 * * 9", "bad day-of-week")):
        with pytest.raises(ConfigError, match=needle):
            sched.trigger_for(load_settings(home=ssettings.home, schedule_alerts=bad, schedule_retrain=bad),
                              "alerts" if "ALERTS" in needle else "retrain")


def test_cli_jobs_lists_next_run_times(ssettings, tmp_path):
    yiwang = Path(sys.executable).parent / "yiwang"
    env = {"YIWANG_SCHEDULE_ALERTS": "5 * * * *", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([str(yiwang), "--home", str(ssettings.home), "jobs", "--json"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    import json

    jobs = {j["job_id"]: j for j in json.loads(out.stdout)}
    assert set(jobs) == set(sched.JOBS) and jobs["alerts"]["schedule"] == "5 * * * *"
    nxt = datetime.fromisoformat(jobs["alerts"]["next_run"])
    assert nxt.minute == 5 and timedelta(0) < nxt - datetime.now(timezone.utc) <= timedelta(hours=1)


def test_cli_schedule_runs_in_the_foreground_and_stops_on_sigterm(ssettings):
    import os
    import signal

    yiwang = Path(sys.executable).parent / "yiwang"
    env = {**{f"YIWANG_{k.upper()}": v for k, v in QUIET.items()}, "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([str(yiwang), "--home", str(ssettings.home), "schedule"], stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("job delivery" in ln for ln in lines):
            lines.append(proc.stderr.readline())
        assert any("job alerts [5 0 1 1 *] next run" in ln for ln in lines), lines
        os.kill(proc.pid, signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
        assert proc.returncode == 0 and "scheduler stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_store_made_when_the_notifier_created_the_scheduler_tables_opens_unchanged(tmp_path):
    """The scheduler's tables moved from the notifier's first migration to the shell's: an older store, which has
    them from notifier_0001_outbox, takes the shell's migration without error and ends with the same schema."""
    from yiwang import migrations
    from yiwang.schema import MIGRATIONS as SHELL

    (shell_name, shell_sql), = SHELL
    older = []
    for name, sql in migrations.all_migrations():
        if name == shell_name:
            continue
        if name == "notifier_0001_outbox":  # as committed before the move
            sql += shell_sql.replace(" IF NOT EXISTS", "")
        older.append((name, sql))
    from data.store import open_db as open_with
    from yiwang.scheduler import finish_run, list_runs, start_run

    old = open_with(tmp_path / "old.db", older)
    finish_run(old, start_run(old, "alerts"), "ok", "")
    old.conn.close()
    reopened = open_db(tmp_path / "old.db")
    new = open_db(tmp_path / "new.db")

    def schema(db, table):
        return db.conn.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = ? ORDER BY name",
                               (table,)).fetchall()

    try:
        assert reopened.conn.execute("SELECT name FROM _migrations WHERE name = ?", (shell_name,)).fetchone()
        for table in ("scheduler_jobs", "job_runs"):
            assert schema(reopened, table) == schema(new, table) != []
        assert list_runs(reopened) == [("alerts", "ok", "")]
    finally:
        reopened.conn.close()
        new.conn.close()
