"""The app shell's tables (named migrations, gathered by yiwang/migrations.py): the scheduler's.

``scheduler_jobs`` is APScheduler's job store (yiwang/scheduler.py ``SQLiteJobStore``); ``job_runs`` records each
run of a scheduled job, its status and its stages' summaries.

These tables were first created by the notifier's first migration, when the scheduler was the notifier's. The
statements say IF NOT EXISTS so that a store made then, which has them already, takes this migration unchanged.
"""

MIGRATIONS: list[tuple[str, str]] = [
    (
        "yiwang_0001_scheduler",
        """
        CREATE TABLE IF NOT EXISTS scheduler_jobs (
            id TEXT PRIMARY KEY,
            next_run_time REAL,                 -- UTC epoch seconds; NULL = paused
            job_state BLOB NOT NULL
        );
        CREATE INDEX IF NOT EXISTS scheduler_jobs_next ON scheduler_jobs(next_run_time);
        CREATE TABLE IF NOT EXISTS job_runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,               -- running / ok / failed
            summary TEXT
        );
        CREATE INDEX IF NOT EXISTS job_runs_job ON job_runs(job_id, id);
        """,
    ),
]
