"""Every area's migrations, in dependency order, and the store opened with them.

The data layer's store names no area; the shell is the one place that knows them all. Later areas may reference
tables of earlier ones.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import sqlite_utils

from data import store


# The engines are imported when the store is first opened, not when the shell is imported: `yiwang --help` and
# the CLI's start-up stay free of LightGBM, implicit and SciPy.
@lru_cache(maxsize=1)
def areas() -> tuple[tuple[str, tuple[store.Migration, ...]], ...]:
    """Each area's migrations, in dependency order."""
    import data.schema
    import notifier.schema
    import profiler.schema
    import recommender.schema
    import taggers.schema
    import yiwang.api.schema
    import yiwang.schema

    return (
        ("data", tuple(data.schema.MIGRATIONS)),
        ("profiler", tuple(profiler.schema.MIGRATIONS)),
        ("taggers", tuple(taggers.schema.MIGRATIONS)),
        ("recommender", tuple(recommender.schema.MIGRATIONS)),
        ("notifier", tuple(notifier.schema.MIGRATIONS)),
        ("api", tuple(yiwang.api.schema.MIGRATIONS)),
        ("shell", tuple(yiwang.schema.MIGRATIONS)),
    )


@lru_cache(maxsize=1)
def recovery() -> tuple[store.Recovery, ...]:
    """Each area's clean-up after its runs that died (kill -9 included), run on every open of the store."""
    import profiler
    from data import eventlog, registry
    from recommender import feeds, training
    from taggers import store as tag_store

    return (registry.fail_dead_ingests, registry.remove_dead_snapshot_temps_at_open, feeds.drop_dead_builds,
            profiler.recover_dead_batches, tag_store.recover_dead_tag_batches, training.remove_dead_model_temps,
            eventlog.remove_dead_writer_temps)


def all_migrations() -> list[store.Migration]:
    return store.check_migrations(areas())


def apply_migrations(db: sqlite_utils.Database) -> list[str]:
    """Apply every pending migration of every area; returns the names applied now."""
    return store.apply_migrations(db, all_migrations())


def open_db(db_path: Path, *, migrate: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the store, bring every area's schema up to date and clean up after dead runs."""
    return store.open_db(db_path, all_migrations(), recovery()) if migrate else store.open_db(db_path)
