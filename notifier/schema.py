"""notifier tables (named migrations, applied by data.store).

``outbox`` holds one row per alert. Its UNIQUE key (rule_id, subject_id, object_id, stage) is what makes an alert
exist once across reruns, crashes and overlapping runs: evaluation only ever does INSERT OR IGNORE on it.
``deliveries`` holds one row per alert and channel; its idempotency key is derived from the dedup key, so every
retry of a webhook send carries the same key. ``rule_snapshots`` keeps every good rules file that was put in force,
so a broken file on disk never replaces the rules in force.

The scheduler's tables (``scheduler_jobs``, ``job_runs``), which this area's first migration also created while
the scheduler was the notifier's, are the app shell's now (yiwang/schema.py, same definitions): a store made
before keeps them, a new store gets them from the shell's migration.
"""

MIGRATIONS: list[tuple[str, str]] = [
    (
        "notifier_0001_outbox",
        """
        CREATE TABLE outbox (
            alert_id INTEGER PRIMARY KEY AUTOINCREMENT,
            rule_id TEXT NOT NULL,
            rule_version INTEGER NOT NULL,
            kind TEXT NOT NULL,                 -- licence_expiry / tag_gained / calendar / age_milestone
            subject_id TEXT NOT NULL,
            subject_type TEXT NOT NULL,         -- person / enterprise
            object_id TEXT NOT NULL,            -- licence id, tag code@valid_from, year, household member id
            stage TEXT NOT NULL,                -- ladder step ('90'), tag date, window start, age
            stage_order INTEGER NOT NULL,       -- later stages of the same object have higher numbers
            due_on TEXT NOT NULL,               -- the as-of date of the run that created it
            cause_date TEXT,                    -- expiry date, tag date, window end, birthday
            item_ids TEXT NOT NULL,             -- JSON list of linked catalogue items (renewal item, bundle)
            message_zh TEXT NOT NULL,
            message_en TEXT NOT NULL,
            fields_json TEXT NOT NULL,          -- template fields, for the webhook payload and explanations
            channels TEXT NOT NULL,             -- JSON list: the rule's channels
            priority INTEGER NOT NULL,          -- 3 high, 2 normal, 1 low
            statutory INTEGER NOT NULL,         -- 1 = public-duty notice (goes out with personalisation off)
            status TEXT NOT NULL DEFAULT 'pending', -- pending / delivered / dead / cancelled / superseded / resolved
            status_reason TEXT,
            released_on TEXT,                   -- local date it was released to its channels (counts to the cap)
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            read_at TEXT,
            dismissed_at TEXT,
            UNIQUE (rule_id, subject_id, object_id, stage)
        );
        CREATE INDEX outbox_status ON outbox(status, priority);
        CREATE INDEX outbox_subject ON outbox(subject_id, released_on);
        CREATE TABLE deliveries (
            alert_id INTEGER NOT NULL REFERENCES outbox(alert_id),
            channel TEXT NOT NULL,              -- in_app / webhook
            idempotency_key TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL DEFAULT 'pending', -- pending / delivered / dead / cancelled
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,      -- UTC ISO timestamp
            lease_until TEXT,                   -- a sender holds the row until then (overlapping delivery runs)
            last_error TEXT,
            delivered_at TEXT,
            PRIMARY KEY (alert_id, channel)
        );
        CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
        CREATE TABLE delivery_attempts (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            alert_id INTEGER NOT NULL,
            channel TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,                   -- NULL: the sender died mid-attempt
            http_status INTEGER,
            error TEXT
        );
        CREATE INDEX delivery_attempts_alert ON delivery_attempts(alert_id, channel);
        CREATE TABLE dead_letters (
            alert_id INTEGER NOT NULL,
            channel TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            last_error TEXT,
            dead_at TEXT NOT NULL,
            PRIMARY KEY (alert_id, channel)
        );
        CREATE TABLE rule_snapshots (
            snapshot_id INTEGER PRIMARY KEY AUTOINCREMENT,
            source TEXT NOT NULL,               -- the file (or 'api') the rules came from
            sha256 TEXT NOT NULL,
            text TEXT NOT NULL,                 -- the YAML exactly as validated
            loaded_at TEXT NOT NULL
        );
        """,
    ),
    (
        # Who put a snapshot in force: an evaluation ('alerts') or an install ('api:KEY', 'cli'). Rows recorded
        # before this column existed stay NULL: a dry run of a draft recorded such rows, so they are never a
        # fallback for a broken rules file.
        "notifier_0002_rule_snapshots_in_force_by",
        "ALTER TABLE rule_snapshots ADD COLUMN in_force_by TEXT;",
    ),
]
