"""The audit log: every profile or tag read and every change made through the API.

A record holds the key id, the action, the subject (a subject id, alert id, rule id or model version,
never anything else about the person), the outcome and the request id, at a UTC time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import sqlite_utils
from fastapi import Request

from yiwang.api.errors import request_id_of
from yiwang.api.keys import ApiKey
from data.errors import YiwangError


def record(
    db: sqlite_utils.Database, key_id: str, action: str, subject: str | None, outcome: str, request_id: str
) -> None:
    # One record per audited request, so a plain INSERT: sqlite-utils' ``insert`` looks the table up on every
    # call, which more than doubles the cost of this write.
    with db.conn:
        db.conn.execute(
            "INSERT INTO audit_log (at, key_id, action, subject, outcome, request_id) VALUES (?, ?, ?, ?, ?, ?)",
            (datetime.now(timezone.utc).isoformat(timespec="milliseconds"), key_id, action, subject, outcome,
             request_id),
        )


@contextmanager
def audited(
    db: sqlite_utils.Database, request: Request, key: ApiKey, action: str, subject: str | None
) -> Iterator[None]:
    """Record ``action`` on ``subject`` with its outcome: ``ok``, the error code, or ``internal_error``."""
    request_id = request_id_of(request)
    try:
        yield
    except YiwangError as exc:
        record(db, key.key_id, action, subject, exc.code, request_id)
        raise
    except Exception:
        if db.conn.in_transaction:
            db.conn.rollback()
        record(db, key.key_id, action, subject, "internal_error", request_id)
        raise
    record(db, key.key_id, action, subject, "ok", request_id)


def list_audit(
    db: sqlite_utils.Database, *, subject: str | None = None, key_id: str | None = None, limit: int = 100
) -> list[dict]:
    """Most recent records first, optionally for one subject or one key."""
    where, params = [], []
    if subject is not None:
        where.append("subject = ?")
        params.append(subject)
    if key_id is not None:
        where.append("key_id = ?")
        params.append(key_id)
    return list(db["audit_log"].rows_where(" AND ".join(where) or None, params, order_by="id DESC", limit=limit,
                                           select="at, key_id, action, subject, outcome, request_id"))
