"""Every area's migrations, in dependency order, and the store opened with them.

The data layer's store names no area; the shell is the one place that knows them all. Later areas may reference
tables of earlier ones.
"""

from __future__ import annotations

from pathlib import Path

import sqlite_utils

import data.schema
import notifier.schema
import profiler.schema
import recommender.schema
import taggers.schema
import yiwang.api.schema
import yiwang.schema
from data import registry, store
from recommender import feeds

AREAS = (
    ("data", data.schema.MIGRATIONS),
    ("profiler", profiler.schema.MIGRATIONS),
    ("taggers", taggers.schema.MIGRATIONS),
    ("recommender", recommender.schema.MIGRATIONS),
    ("notifier", notifier.schema.MIGRATIONS),
    ("api", yiwang.api.schema.MIGRATIONS),
    ("shell", yiwang.schema.MIGRATIONS),
)


# Each area's clean-up after its runs that died (kill -9 included), run on every open of the store.
RECOVERY: tuple[store.Recovery, ...] = (
    store.fail_dead_ingests,
    registry.remove_dead_snapshot_temps_at_open,
    feeds.drop_dead_builds,
)


def all_migrations() -> list[store.Migration]:
    return store.check_migrations(AREAS)


def apply_migrations(db: sqlite_utils.Database) -> list[str]:
    """Apply every pending migration of every area; returns the names applied now."""
    return store.apply_migrations(db, all_migrations())


def open_db(db_path: Path, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the store, bring every area's schema up to date and clean up after dead runs."""
    return store.open_db(db_path, all_migrations(), RECOVERY) if migrate else store.open_db(db_path)
