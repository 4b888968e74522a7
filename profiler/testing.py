"""Load small hand-written cities into a real store (SQLite rows, Parquet snapshots, event log) for tests.

Goes through the same writers ingest uses (SQLite tables, :func:`yiwang.registry.write_snapshot`,
:func:`yiwang.eventlog.append_events`), so what the profiler reads is what it would read in production.
"""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import sqlite_utils

from yiwang.eventlog import EVENT_SCHEMA, append_events
from yiwang.registry import SNAPSHOT_SCHEMAS, write_snapshot
from yiwang.settings import Settings

_DEFAULTS = {
    "people": {"gender": "F", "district": "静安区", "local_hukou": 1},
    "enterprises": {"name": "某公司", "industry": "I", "district": "静安区", "employees": 5},
    "licenses": {"expires_on": None},
    "catalog": {"department": "市民政局", "audience": "person", "category": "civil", "once_per_subject": 0, "local_hukou_only": 0},
}


def load_city(
    settings: Settings,
    db: sqlite_utils.Database,
    *,
    people: list[dict] = (),
    enterprises: list[dict] = (),
    licenses: list[dict] = (),
    catalog: list[dict] = (),
    events: list[dict] = (),
    ingest_id: int = 1,
) -> None:
    """Insert rows (defaults filled in) into SQLite, rewrite every snapshot, append events."""
    conn = db.conn
    for table, rows in (("people", people), ("enterprises", enterprises), ("licenses", licenses), ("catalog", catalog)):
        cols = list(SNAPSHOT_SCHEMAS[table])
        full = []
        for r in rows:
            row = {c: None for c in cols} | _DEFAULTS[table] | dict(r)
            full.append([_sql(row[c]) for c in cols] + [ingest_id])
        if full:
            with conn:
                conn.executemany(
                    f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}, ingest_id) VALUES ({', '.join('?' * (len(cols) + 1))})",
                    full,
                )
        write_snapshot(settings.home, table, conn)
    if events:
        df = pl.DataFrame(
            [
                {
                    "event_id": e.get("event_id", f"e{i}"),
                    "subject_id": e["subject_id"],
                    "item_id": e["item_id"],
                    "action": e.get("action", "view"),
                    "ts": _ts(e["ts"]),
                    "channel": e.get("channel", "app"),
                }
                for i, e in enumerate(events)
            ],
            schema={k: v for k, v in EVENT_SCHEMA.items() if k != "ingest_id"},
        )
        append_events(settings.events_dir, df, ingest_id)


def _sql(value):
    if isinstance(value, bool):
        return int(value)
    return value


def _ts(value) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
