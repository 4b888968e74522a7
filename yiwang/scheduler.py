"""The scheduler: APScheduler 3.x with its jobs persisted in the yiwang SQLite file.

Why our own job store instead of APScheduler's SQLAlchemyJobStore: it needs SQLAlchemy (not a dependency), and
a ~80-line store on the store's own connection gets the same pragmas (WAL, busy timeout) and a table created by
a named migration like every other table (``scheduler_jobs`` and ``job_runs``, yiwang/schema.py). It follows
``BaseJobStore`` exactly (pickled job state, next run time as a UTC epoch float, paused jobs last), like the
SQLAlchemy store does.

A job is a schedule of stages of the registry (:mod:`yiwang.stages`), the same ones `yiwang run` runs: the nightly
profile and tag job is the one pass ``profile_tag``. The store keeps ``run_job(job_id, home)`` by reference, so the
job survives restarts; a stage that fails fails that job (logged, recorded in ``job_runs``) and never the
scheduler. Schedules are cron strings in settings (Asia/Shanghai).
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError, JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.util import datetime_to_utc_timestamp, utc_timestamp_to_datetime

from data.errors import ConfigError
from data.settings import TIMEZONE, load_settings
from data.store import connect
from yiwang.migrations import open_db
from yiwang.stages import stage

log = logging.getLogger("yiwang.scheduler")
LOCAL = ZoneInfo(TIMEZONE)

# job id -> (settings field holding its cron, the stages it runs in order)
JOBS: dict[str, tuple[str, list[str]]] = {
    "profile_tag": ("schedule_profile_tag", ["profile_tag"]),
    "feed_refresh": ("schedule_feed_refresh", ["recommend"]),
    "retrain": ("schedule_retrain", ["train"]),
    "alerts": ("schedule_alerts", ["alerts"]),
    "delivery": ("schedule_delivery", ["deliver"]),
}


class SQLiteJobStore(BaseJobStore):
    """APScheduler 3.x job store on the ``scheduler_jobs`` table of the yiwang SQLite file."""

    def __init__(self, db_path: Path, pickle_protocol: int = pickle.HIGHEST_PROTOCOL):
        super().__init__()
        self.db_path = Path(db_path)
        self.pickle_protocol = pickle_protocol
        open_db(self.db_path).conn.close()  # make sure the table exists (migrations)
        self._conn = connect(self.db_path)
        self._lock = threading.Lock()

    def _query(self, sql: str, params=()) -> list:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _write(self, sql: str, params=()) -> int:
        with self._lock, self._conn:
            return self._conn.execute(sql, params).rowcount

    def lookup_job(self, job_id):
        rows = self._query("SELECT job_state FROM scheduler_jobs WHERE id = ?", (job_id,))
        if not rows:
            return None
        try:
            return self._reconstitute(rows[0][0])
        except Exception:
            # e.g. a job stored before its function moved (notifier.scheduler -> yiwang.scheduler): re-added by
            # install_jobs, as APScheduler's own stores do with jobs they cannot restore.
            self._logger.exception("Unable to restore job %r -- removing it", job_id)
            self._write("DELETE FROM scheduler_jobs WHERE id = ?", (job_id,))
            return None

    def get_due_jobs(self, now):
        return self._jobs("WHERE next_run_time <= ?", (datetime_to_utc_timestamp(now),))

    def get_next_run_time(self):
        rows = self._query(
            "SELECT next_run_time FROM scheduler_jobs WHERE next_run_time IS NOT NULL ORDER BY next_run_time LIMIT 1"
        )
        return utc_timestamp_to_datetime(rows[0][0]) if rows else None

    def get_all_jobs(self):
        jobs = self._jobs()
        self._fix_paused_jobs_sorting(jobs)
        return jobs

    def add_job(self, job):
        state = pickle.dumps(job.__getstate__(), self.pickle_protocol)
        try:
            self._write(
                "INSERT INTO scheduler_jobs (id, next_run_time, job_state) VALUES (?, ?, ?)",
                (job.id, datetime_to_utc_timestamp(job.next_run_time), state),
            )
        except Exception as exc:
            if "UNIQUE" in str(exc):
                raise ConflictingIdError(job.id) from None
            raise

    def update_job(self, job):
        n = self._write(
            "UPDATE scheduler_jobs SET next_run_time = ?, job_state = ? WHERE id = ?",
            (datetime_to_utc_timestamp(job.next_run_time), pickle.dumps(job.__getstate__(), self.pickle_protocol), job.id),
        )
        if n == 0:
            raise JobLookupError(job.id)

    def remove_job(self, job_id):
        if self._write("DELETE FROM scheduler_jobs WHERE id = ?", (job_id,)) == 0:
            raise JobLookupError(job_id)

    def remove_all_jobs(self):
        self._write("DELETE FROM scheduler_jobs")

    def shutdown(self):
        with self._lock:
            self._conn.close()

    def _reconstitute(self, blob) -> Job:
        state = pickle.loads(blob)
        state["jobstore"] = self
        job = Job.__new__(Job)
        job.__setstate__(state)
        job._scheduler = self._scheduler
        job._jobstore_alias = self._alias
        return job

    def _jobs(self, where: str = "", params=()) -> list[Job]:
        # NULL (paused) sorts first in SQLite; _fix_paused_jobs_sorting moves those last where it matters.
        rows = self._query(f"SELECT id, job_state FROM scheduler_jobs {where} ORDER BY next_run_time", params)
        jobs, broken = [], []
        for job_id, blob in rows:
            try:
                jobs.append(self._reconstitute(blob))
            except Exception:
                self._logger.exception("Unable to restore job %r -- removing it", job_id)
                broken.append(job_id)
        for job_id in broken:
            self._write("DELETE FROM scheduler_jobs WHERE id = ?", (job_id,))
        return jobs

    def __repr__(self):
        return f"<SQLiteJobStore ({self.db_path})>"


# -- schedules ------------------------------------------------------------------------------------------------

_DOW = ["sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def _crontab_dow(field: str, key: str) -> str:
    """Crontab day-of-week (0 or 7 = Sunday) as names: APScheduler 3.x reads number 0 as Monday."""
    parts = []
    for part in field.split(","):
        if part == "*" or part.isalpha():
            parts.append(part)
        elif "/" in part:
            raise ConfigError(f"setting YIWANG_{key.upper()}: step values in day-of-week are not supported: {part!r}")
        elif "-" in part:
            a, b = part.split("-", 1)
            if not (a.isdigit() and b.isdigit()) or int(a) > int(b) or int(b) > 7:
                raise ConfigError(f"setting YIWANG_{key.upper()}: bad day-of-week range {part!r}")
            parts.extend(_DOW[i] for i in range(int(a), int(b) + 1))
        elif part.isdigit() and int(part) <= 7:
            parts.append(_DOW[int(part)])
        else:
            raise ConfigError(f"setting YIWANG_{key.upper()}: bad day-of-week {part!r}")
    return ",".join(dict.fromkeys(parts))


def trigger_for(settings, job_id: str) -> CronTrigger:
    """The job's cron trigger from settings; a bad expression names its setting."""
    key = JOBS[job_id][0]
    expr = getattr(settings, key)
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"setting YIWANG_{key.upper()}: {expr!r} is not a 5-field cron expression")
    minute, hour, day, month, dow = fields
    try:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=_crontab_dow(dow, key),
                           timezone=LOCAL)
    except ValueError as exc:
        raise ConfigError(f"setting YIWANG_{key.upper()}: {expr!r}: {exc}") from None


# -- running a job --------------------------------------------------------------------------------------------


def _summary_json(result) -> str:
    if is_dataclass(result) and not isinstance(result, type):
        return json.dumps(asdict(result), default=str, ensure_ascii=False)[:4000]
    return json.dumps(repr(result), ensure_ascii=False)[:4000]


def run_job(job_id: str, home: str | None = None) -> list[str]:
    """Run one scheduled job now (what the scheduler calls). Records the run; re-raises a failure so the
    scheduler logs it as a failed job."""
    settings = load_settings(home=home)
    db = open_db(settings.db_path)
    run_id = start_run(db, job_id)
    done: list[str] = []
    try:
        for name in JOBS[job_id][1]:
            st = stage(name)
            now = datetime.now(timezone.utc)
            when = now if st.clock == "now" else now.astimezone(LOCAL).date()
            log.info("job %s: stage %s (%s)", job_id, name, when)
            result = st(settings, db, when)
            done += [f"{line}: {_summary_json(summary)}" for line, summary in st.summaries(result)]
    except Exception as exc:
        finish_run(db, run_id, "failed", "\n".join(done + [f"{type(exc).__name__}: {exc}"]))
        log.error("job %s failed: %s", job_id, exc)
        raise
    else:
        finish_run(db, run_id, "ok", "\n".join(done))
        log.info("job %s done", job_id)
    finally:
        db.conn.close()
    return done


def start_run(db, job_id: str) -> int:
    """Record a run of ``job_id`` as running now; returns its id for :func:`finish_run`."""
    with db.conn:
        return db.conn.execute(
            "INSERT INTO job_runs (job_id, started_at, status) VALUES (?, ?, 'running')",
            (job_id, datetime.now(timezone.utc).isoformat(timespec="seconds")),
        ).lastrowid


def finish_run(db, run_id: int, status: str, summary: str) -> None:
    """Record how a run ended: ``status`` 'ok' or 'failed', and the stages' summary lines."""
    with db.conn:
        db.conn.execute(
            "UPDATE job_runs SET finished_at=?, status=?, summary=? WHERE id=?",
            (datetime.now(timezone.utc).isoformat(timespec="seconds"), status, summary, run_id),
        )


# -- the scheduler --------------------------------------------------------------------------------------------


def build_scheduler(settings, max_workers: int = 2) -> BackgroundScheduler:
    """A BackgroundScheduler on the store's job table: coalesce, one instance per job, misfire grace."""
    return BackgroundScheduler(
        jobstores={"default": SQLiteJobStore(settings.db_path)},
        executors={"default": ThreadPoolExecutor(max_workers)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.schedule_misfire_grace_s,
        },
        timezone=LOCAL,
    )


def install_jobs(scheduler: BackgroundScheduler, settings) -> dict[str, str]:
    """Bring the stored jobs in line with settings. A job whose schedule is unchanged is kept as stored, so a
    run missed while the scheduler was down is still due (and runs once, within the misfire grace)."""
    home = str(Path(settings.home).resolve())
    triggers = {job_id: trigger_for(settings, job_id) for job_id in JOBS}  # all validated before any change
    actions = {}
    for job_id, trigger in triggers.items():
        existing = scheduler.get_job(job_id)
        if existing is not None and str(existing.trigger) == str(trigger) and tuple(existing.args) == (job_id, home):
            actions[job_id] = "kept"
            continue
        scheduler.add_job(
            run_job, trigger=trigger, args=(job_id, home), id=job_id, name=job_id,
            replace_existing=True,
        )
        actions[job_id] = "replaced" if existing is not None else "added"
    return actions


def start(settings) -> BackgroundScheduler:
    """Start the scheduler with the jobs from settings installed (paused while installing)."""
    scheduler = build_scheduler(settings)
    scheduler.start(paused=True)
    try:
        install_jobs(scheduler, settings)
    except BaseException:
        scheduler.shutdown(wait=False)
        raise
    scheduler.resume()
    return scheduler


@dataclass
class JobInfo:
    job_id: str
    schedule: str
    next_run: str | None
    installed: bool
    schedule_changed: bool
    last_status: str | None
    last_started: str | None


def list_jobs(settings) -> list[JobInfo]:
    """Jobs and their next run times as stored (what a running scheduler will do), without changing anything."""
    store = SQLiteJobStore(settings.db_path)
    try:
        stored = {job.id: job for job in store.get_all_jobs()}
    finally:
        store.shutdown()
    db = open_db(settings.db_path)
    try:
        out = []
        for job_id, (key, _stages) in JOBS.items():
            trigger = trigger_for(settings, job_id)
            job = stored.get(job_id)
            if job is not None:
                nxt = job.next_run_time
                changed = str(job.trigger) != str(trigger)
            else:
                nxt = trigger.get_next_fire_time(None, datetime.now(LOCAL))
                changed = False
            last = db.conn.execute(
                "SELECT status, started_at FROM job_runs WHERE job_id = ? ORDER BY id DESC LIMIT 1", (job_id,)
            ).fetchone()
            out.append(JobInfo(
                job_id=job_id, schedule=getattr(settings, key),
                next_run=nxt.astimezone(LOCAL).isoformat(timespec="seconds") if nxt else None,
                installed=job is not None, schedule_changed=changed,
                last_status=last[0] if last else None, last_started=last[1] if last else None,
            ))
        return out
    finally:
        db.conn.close()


def list_runs(db, job_id: str | None = None) -> list[tuple[str, str, str | None]]:
    """(job_id, status, summary) of every recorded run, oldest first; one job's only when ``job_id`` is given."""
    sql = "SELECT job_id, status, summary FROM job_runs" + (" WHERE job_id = ?" if job_id else "") + " ORDER BY id"
    return db.conn.execute(sql, (job_id,) if job_id else ()).fetchall()
