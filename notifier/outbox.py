"""The in-app side of the outbox: what the portal shows a subject, and the subject's read/dismiss actions."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import polars as pl

from data.errors import NotFound

# Statuses whose alert is still current; cancelled/superseded/resolved ones no longer describe the world.
VISIBLE = ("pending", "delivered", "dead")

_COLUMNS = (
    "o.alert_id, o.rule_id, o.rule_version, o.kind, o.subject_id, o.object_id, o.stage, o.cause_date, o.item_ids,"
    " o.message_zh, o.message_en, o.priority, o.statutory, o.status, o.created_at, o.read_at, o.dismissed_at,"
    " d.delivered_at"
)


def _row(cur, row) -> dict:
    out = dict(zip([c[0] for c in cur.description], row))
    out["item_ids"] = json.loads(out["item_ids"])
    out["statutory"] = bool(out["statutory"])
    out["read"] = out["read_at"] is not None
    return out


def list_alerts(db, subject_id: str, include_dismissed: bool = False) -> list[dict]:
    """The subject's current in-app alerts, most important and newest first."""
    sql = (
        f"SELECT {_COLUMNS} FROM outbox o JOIN deliveries d ON d.alert_id = o.alert_id AND d.channel = 'in_app'"
        f" WHERE o.subject_id = ? AND d.status = 'delivered' AND o.status IN ({','.join('?' * len(VISIBLE))})"
    )
    if not include_dismissed:
        sql += " AND o.dismissed_at IS NULL"
    sql += " ORDER BY o.priority DESC, d.delivered_at DESC, o.alert_id DESC"
    cur = db.conn.execute(sql, (subject_id, *VISIBLE))
    return [_row(cur, r) for r in cur.fetchall()]


def get_alert(db, alert_id: int) -> dict:
    cur = db.conn.execute(
        f"SELECT {_COLUMNS} FROM outbox o LEFT JOIN deliveries d ON d.alert_id = o.alert_id AND d.channel = 'in_app'"
        " WHERE o.alert_id = ?",
        (alert_id,),
    )
    row = cur.fetchone()
    if row is None:
        raise NotFound(f"no alert {alert_id}")
    return _row(cur, row)


def _stamp(db, alert_id: int, column: str) -> dict:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with db.conn:
        # Only the first read/dismiss is recorded: repeating the call is harmless.
        cur = db.conn.execute(
            f"UPDATE outbox SET {column} = COALESCE({column}, ?), updated_at = ? WHERE alert_id = ?",
            (now, now, alert_id),
        )
    if cur.rowcount == 0:
        raise NotFound(f"no alert {alert_id}")
    return get_alert(db, alert_id)


def mark_read(db, alert_id: int) -> dict:
    """Record that the subject read the alert; returns the alert."""
    return _stamp(db, alert_id, "read_at")


def dismiss(db, alert_id: int) -> dict:
    """Hide the alert from the subject's list (it stays in the outbox, so it is never created again)."""
    return _stamp(db, alert_id, "dismissed_at")


# The stored state as frames, for checks and tools (tests, the kill -9 harness, an operator looking in).


def _frame(conn, sql: str) -> pl.DataFrame:
    cur = conn.execute(sql)
    columns = [c[0] for c in cur.description]
    return pl.DataFrame(cur.fetchall(), schema=columns, orient="row", infer_schema_length=None)


def stored_alerts(conn) -> pl.DataFrame:
    """Every outbox row as stored, in alert_id order."""
    return _frame(conn, "SELECT * FROM outbox ORDER BY alert_id")


def stored_deliveries(conn) -> pl.DataFrame:
    """Every delivery row (one per alert and channel) as stored, with the alert's rule_id and subject_id."""
    return _frame(conn, "SELECT d.*, o.rule_id, o.subject_id FROM deliveries d JOIN outbox o USING (alert_id) "
                        "ORDER BY d.alert_id, d.channel")


def stored_dead_letters(conn) -> pl.DataFrame:
    return _frame(conn, "SELECT * FROM dead_letters ORDER BY alert_id")


def stored_attempts(conn) -> pl.DataFrame:
    return _frame(conn, "SELECT * FROM delivery_attempts")
