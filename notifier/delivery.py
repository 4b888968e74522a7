"""Delivery: release pending alerts to their channels, then send webhooks reliably.

Release (one transaction) applies what the subject chose and what the city promised: non-statutory alerts stop
for a subject with personalisation off; channels are the rule's channels the subject accepts (statutory notices
fall back to in-app, the portal's own inbox, when none match); at most ``daily_alert_cap`` alerts are released per
subject and local day, most important first, the rest wait for the next day.

Webhook sends are at-least-once with a stable idempotency key: a row is leased and its attempt counted *before*
the POST and settled after it, so a sender killed mid-send leaves a lease that expires and a retry that carries
the same key, never a second key. Failures back off exponentially (base * 2^(attempt-1)); after
``webhook_max_attempts`` the delivery is dead-lettered. No webhook is sent during quiet hours (local time).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, time as dtime, timedelta, timezone
from zoneinfo import ZoneInfo

import httpx

from data.citizen import preferences_of
from data.settings import TIMEZONE
from data.store import connect

LOCAL = ZoneInfo(TIMEZONE)


@dataclass
class DeliverySummary:
    """What one delivery run did (printed by `yiwang deliver`)."""

    now: str
    released: int = 0
    in_app: int = 0
    deferred_by_cap: int = 0
    cancelled_by_preferences: int = 0
    cancelled_rule_not_in_force: int = 0
    webhook_sent: int = 0
    webhook_delivered: int = 0
    webhook_retry: int = 0
    webhook_dead: int = 0
    quiet_hours: bool = False
    seconds: float = 0.0


def idempotency_key(rule_id: str, subject_id: str, object_id: str, stage: str, channel: str) -> str:
    """Derived from the outbox's dedup key, so every send of one alert on one channel carries the same key."""
    return hashlib.sha256(f"{rule_id}|{subject_id}|{object_id}|{stage}|{channel}".encode()).hexdigest()[:32]


def parse_quiet_hours(value: str) -> tuple[dtime, dtime] | None:
    start, end = (dtime.fromisoformat(p) for p in value.split("-"))
    return None if start == end else (start, end)


def in_quiet_hours(value: str, now: datetime) -> bool:
    window = parse_quiet_hours(value)
    if window is None:
        return False
    start, end = window
    t = now.astimezone(LOCAL).time()
    return start <= t < end if start < end else (t >= start or t < end)


def _iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    if now.tzinfo is None:
        raise ValueError("deliver(now=...) needs a timezone-aware datetime")
    return now.astimezone(timezone.utc)


def deliver(settings, db, now: datetime | None = None, max_sends: int | None = None) -> DeliverySummary:
    """Release due alerts and send due webhooks as of ``now`` (UTC-aware; default: the clock)."""
    t0 = time.perf_counter()
    now = _utc(now)
    summary = DeliverySummary(now=_iso(now))
    release(settings, db, now, summary)
    if settings.webhook_url and in_quiet_hours(settings.quiet_hours, now):
        summary.quiet_hours = True
    elif settings.webhook_url:
        send_webhooks(settings, db, now, summary, max_sends)
    summary.seconds = round(time.perf_counter() - t0, 3)
    return summary


def release(settings, db, now: datetime, summary: DeliverySummary) -> None:
    from notifier.rules import rules_in_force

    conn = db.conn
    today = now.astimezone(LOCAL).date().isoformat()
    stamp = _iso(now)
    # Checked here as well as at evaluation: the rules may have changed since the alerts were created.
    enabled = [r.id for r in rules_in_force(settings, db).rules if r.enabled]
    # ``now`` decides what is due (a nightly run passes as-of + 1 h); delivered_at records when it really happened.
    delivered_at = _iso(datetime.now(timezone.utc))
    conn.execute("BEGIN IMMEDIATE")
    try:
        summary.cancelled_rule_not_in_force += _withdraw_not_in_force(conn, enabled, stamp)
        rows = conn.execute(
            """SELECT alert_id, rule_id, subject_id, object_id, stage, channels, statutory FROM outbox
               WHERE status = 'pending' AND released_on IS NULL
               ORDER BY subject_id, priority DESC, statutory DESC, alert_id"""
        ).fetchall()
        if not rows:
            conn.execute("COMMIT")
            return
        prefs = preferences_of(conn, (r[2] for r in rows))
        used = dict(
            conn.execute("SELECT subject_id, COUNT(*) FROM outbox WHERE released_on = ? GROUP BY subject_id", (today,))
        )
        cap = settings.daily_alert_cap
        available = {"in_app"} | ({"webhook"} if settings.webhook_url else set())
        cancel, released, deliveries, final = [], [], [], []
        for alert_id, rule_id, subject_id, object_id, stage, channels_json, statutory in rows:
            personalisation, accepted = prefs.get(subject_id, (1, ["in_app"]))
            if not statutory and not personalisation:
                cancel.append(("personalisation switched off", stamp, alert_id))
                continue
            channels = [c for c in json.loads(channels_json) if c in accepted and c in available]
            if not channels:
                if not statutory:
                    cancel.append(("no channel the subject accepts", stamp, alert_id))
                    continue
                channels = ["in_app"]  # a public-duty notice always reaches the portal's own inbox
            if used.get(subject_id, 0) >= cap:
                summary.deferred_by_cap += 1
                continue
            used[subject_id] = used.get(subject_id, 0) + 1
            released.append((today, stamp, alert_id))
            for ch in channels:
                key = idempotency_key(rule_id, subject_id, object_id, stage, ch)
                if ch == "in_app":
                    deliveries.append((alert_id, ch, key, "delivered", stamp, delivered_at))
                    summary.in_app += 1
                else:
                    deliveries.append((alert_id, ch, key, "pending", stamp, None))
            if channels == ["in_app"]:
                final.append((stamp, alert_id))
        conn.executemany(
            "UPDATE outbox SET status='cancelled', status_reason=?, updated_at=? WHERE alert_id=?", cancel
        )
        conn.executemany("UPDATE outbox SET released_on=?, updated_at=? WHERE alert_id=?", released)
        conn.executemany(
            "INSERT OR IGNORE INTO deliveries (alert_id, channel, idempotency_key, status, next_attempt_at, delivered_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            deliveries,
        )
        conn.executemany("UPDATE outbox SET status='delivered', updated_at=? WHERE alert_id=?", final)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    summary.released += len(released)
    summary.cancelled_by_preferences += len(cancel)


def _withdraw_not_in_force(conn, enabled_rule_ids: list[str], stamp: str) -> int:
    """Cancel pending alerts (released or not) whose rule is not in force and enabled, and their unsent webhooks."""
    marks = ",".join("?" * len(enabled_rule_ids))
    where = f"status = 'pending' AND rule_id NOT IN ({marks})" if enabled_rule_ids else "status = 'pending'"
    ids = [a for (a,) in conn.execute(f"SELECT alert_id FROM outbox WHERE {where}", enabled_rule_ids)]
    if not ids:
        return 0
    conn.executemany(
        "UPDATE outbox SET status='cancelled', status_reason='rule not in force', updated_at=? WHERE alert_id=?",
        [(stamp, a) for a in ids],
    )
    conn.executemany(
        "UPDATE deliveries SET status='cancelled', last_error=COALESCE(last_error, 'alert withdrawn')"
        " WHERE alert_id=? AND status='pending'",
        [(a,) for a in ids],
    )
    return len(ids)


def _claim(conn, now: datetime, lease_s: float):
    """Lease one due webhook delivery and count its attempt, in one short transaction."""
    stamp = _iso(now)
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            """SELECT d.alert_id, d.idempotency_key, d.attempts, o.rule_id, o.rule_version, o.subject_id,
                      o.subject_type, o.object_id, o.stage, o.message_zh, o.message_en, o.item_ids, o.priority,
                      o.statutory, o.created_at, o.fields_json
               FROM deliveries d JOIN outbox o ON o.alert_id = d.alert_id
               WHERE d.channel = 'webhook' AND d.status = 'pending' AND d.next_attempt_at <= ?
                 AND (d.lease_until IS NULL OR d.lease_until <= ?)
               ORDER BY o.priority DESC, d.next_attempt_at LIMIT 1""",
            (stamp, stamp),
        ).fetchone()
        if row is None:
            conn.execute("COMMIT")
            return None
        attempt = row[2] + 1
        conn.execute(
            "UPDATE deliveries SET attempts=?, lease_until=? WHERE alert_id=? AND channel='webhook'",
            (attempt, _iso(now + timedelta(seconds=lease_s)), row[0]),
        )
        cur = conn.execute(
            "INSERT INTO delivery_attempts (alert_id, channel, attempt, started_at) VALUES (?, 'webhook', ?, ?)",
            (row[0], attempt, _iso(datetime.now(timezone.utc))),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return row, attempt, cur.lastrowid


def _payload(row) -> dict:
    (alert_id, key, _attempts, rule_id, rule_version, subject_id, subject_type, object_id, stage, zh, en, items,
     priority, statutory, created_at, fields) = row
    return {
        "idempotency_key": key, "alert_id": alert_id, "rule_id": rule_id, "rule_version": rule_version,
        "subject_id": subject_id, "subject_type": subject_type, "object_id": object_id, "stage": stage,
        "message": {"zh": zh, "en": en}, "items": json.loads(items), "priority": priority,
        "statutory": bool(statutory), "created_at": created_at, "fields": json.loads(fields),
    }


def send_webhooks(settings, db, now: datetime, summary: DeliverySummary, max_sends: int | None = None) -> None:
    """Send due webhooks with ``webhook_concurrency`` senders, each on its own connection (a gateway answers in
    tens of milliseconds; one sender at a time would take hours for a first run's backlog)."""
    lock = threading.Lock()
    budget = [max_sends]

    def take() -> bool:
        with lock:
            if budget[0] is None:
                return True
            if budget[0] <= 0:
                return False
            budget[0] -= 1
            return True

    workers = max(1, settings.webhook_concurrency)
    if workers == 1:
        _sender(settings, db.conn, now, summary, take, lock)
        return
    errors: list[BaseException] = []

    def run() -> None:
        conn = connect(settings.db_path)
        try:
            _sender(settings, conn, now, summary, take, lock)
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run, name=f"webhook-{i}") for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _sender(settings, conn, now: datetime, summary: DeliverySummary, take, lock) -> None:
    timeout = settings.webhook_timeout_s
    # A lease outlives one send (connect + read timeouts) with margin; a sender killed mid-send frees it then.
    lease_s = 2 * timeout + 1
    with httpx.Client(timeout=httpx.Timeout(timeout)) as client:
        while take():
            claimed = _claim(conn, now, lease_s)
            if claimed is None:
                return
            row, attempt, attempt_id = claimed
            alert_id, key = row[0], row[1]
            status_code, error = None, None
            try:
                resp = client.post(
                    settings.webhook_url, json=_payload(row),
                    headers={"Idempotency-Key": key, "X-Yiwang-Attempt": str(attempt)},
                )
                status_code = resp.status_code
                if not 200 <= resp.status_code < 300:
                    error = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:500]
            outcome = _settle(settings, conn, now, alert_id, attempt, attempt_id, error, status_code)
            with lock:
                summary.webhook_sent += 1
                setattr(summary, outcome, getattr(summary, outcome) + 1)


def _settle(settings, conn, now, alert_id, attempt, attempt_id, error, status_code=None) -> str:
    """Record one attempt's outcome; returns the summary counter it adds to."""
    stamp = _iso(now)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "UPDATE delivery_attempts SET finished_at=?, http_status=?, error=? WHERE id=?",
            (_iso(datetime.now(timezone.utc)), status_code, error, attempt_id),
        )
        if error is None:
            conn.execute(
                "UPDATE deliveries SET status='delivered', delivered_at=?, lease_until=NULL, last_error=NULL"
                " WHERE alert_id=? AND channel='webhook' AND status='pending'",
                (_iso(datetime.now(timezone.utc)), alert_id),
            )
            outcome = "webhook_delivered"
        elif attempt >= settings.webhook_max_attempts:
            cur = conn.execute(
                "UPDATE deliveries SET status='dead', lease_until=NULL, last_error=?"
                " WHERE alert_id=? AND channel='webhook' AND status='pending'",
                (error, alert_id),
            )
            if cur.rowcount:
                conn.execute(
                    "INSERT OR REPLACE INTO dead_letters (alert_id, channel, attempts, last_error, dead_at)"
                    " VALUES (?, 'webhook', ?, ?, ?)",
                    (alert_id, attempt, error, stamp),
                )
            outcome = "webhook_dead"
        else:
            backoff = settings.webhook_backoff_base_s * 2 ** (attempt - 1)
            conn.execute(
                "UPDATE deliveries SET next_attempt_at=?, lease_until=NULL, last_error=?"
                " WHERE alert_id=? AND channel='webhook' AND status='pending'",
                (_iso(now + timedelta(seconds=backoff)), error, alert_id),
            )
            outcome = "webhook_retry"
        _finalise(conn, alert_id, stamp)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return outcome


def _finalise(conn, alert_id: int, stamp: str) -> None:
    """An alert whose every channel is settled becomes delivered (some channel got it) or dead (none did)."""
    conn.execute(
        """UPDATE outbox SET updated_at = ?, status = CASE
               WHEN EXISTS (SELECT 1 FROM deliveries WHERE alert_id = ? AND status = 'delivered') THEN 'delivered'
               ELSE 'dead' END
           WHERE alert_id = ? AND status = 'pending'
             AND NOT EXISTS (SELECT 1 FROM deliveries WHERE alert_id = ? AND status = 'pending')""",
        (stamp, alert_id, alert_id, alert_id),
    )
