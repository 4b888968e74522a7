"""Whether the store knows a subject at all: the edges answer "not found" for one it does not."""

from __future__ import annotations

import polars as pl
import sqlite_utils

from data.eventlog import scan_events
from data.registry import is_registered
from data.settings import Settings
from profiler import read_profile
from taggers.store import has_any

def subject_known(settings: Settings, db: sqlite_utils.Database, subject_id: str) -> bool:
    """True if the subject is in a registry, holds or deleted a tag, has a published profile or any event."""
    if is_registered(db.conn, subject_id) or has_any(db.conn, subject_id):
        return True
    if read_profile(db, subject_id) is not None:
        return True
    # Subjects seen only in events (the registries do not list them) are still subjects of this store.
    seen = scan_events(settings.events_dir).filter(pl.col("subject_id") == subject_id).select("subject_id").head(1)
    return seen.collect().height > 0
