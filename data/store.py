"""The serving store: one SQLite file in WAL mode, schema changed only through named migrations.

Each area owns its migrations (``<area>/schema.py`` exposes ``MIGRATIONS``: a list of ``(name, sql)``). The store
names no area: the app shell gathers them (``yiwang.migrations``) and hands them to :func:`open_db`, which applies
each pending one once, in the order given, recording it in ``_migrations``.

sqlite-utils wraps the connection (:class:`sqlite_utils.Database`) for what it does well at small volume: an
owner's row-at-a-time writes and lookups by key (``db[table].insert/upsert/get/update/rows_where``, e.g. API keys
and registry rows loaded by tests). Tables are created only by the named migrations, never by an insert, and
the bulk and per-request paths (ingest batches, snapshots, feeds, the audit write, key checks) use prepared
statements on ``db.conn``, where sqlite-utils' per-call table look-ups would cost more than the write.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import sqlite_utils

from data.errors import StateError

Migration = tuple[str, str]


def check_migrations(sources: Iterable[tuple[str, Sequence[Migration]]]) -> list[Migration]:
    """Concatenate each area's ``MIGRATIONS`` in order, refusing a name used twice."""
    out: list[Migration] = []
    seen: set[str] = set()
    for area, migrations in sources:
        for name, sql in migrations:
            if name in seen:
                raise RuntimeError(f"duplicate migration name {name!r} in {area}")
            seen.add(name)
            out.append((name, sql))
    return out


def connect(db_path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A raw sqlite3 connection with the pragmas every yiwang connection uses."""
    db_path = Path(db_path)
    if readonly:
        if not db_path.exists():
            raise StateError(f"no store at {db_path}: run `yiwang ingest` first")
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30, check_same_thread=False)
    else:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def open_db(db_path: Path, migrations: Sequence[Migration] = ()) -> sqlite_utils.Database:
    """Open (creating if needed) the store and apply the pending ones of ``migrations``."""
    db = sqlite_utils.Database(connect(db_path))
    if migrations:
        apply_migrations(db, migrations)
    return db


def apply_migrations(db: sqlite_utils.Database, migrations: Sequence[Migration]) -> list[str]:
    """Apply every pending migration of ``migrations`` in order; returns the names applied now."""
    conn = db.conn
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    applied = []
    for name, sql in migrations:
        if name in done:
            continue
        # BEGIN IMMEDIATE serialises concurrent first-time openers; re-check inside the lock.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("COMMIT")
                continue
            for statement in _split_sql(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO _migrations (name, applied_at) VALUES (?, ?)",
                (name, datetime.now(timezone.utc).isoformat(timespec="seconds")),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def _split_sql(sql: str) -> list[str]:
    statements, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


# -- tables replaced whole by each batch ------------------------------------------------------------------------
# A batch fills ``<table>_build`` (same DDL) while readers use ``<table>``, then swaps it in by rename inside the
# caller's write transaction: readers see the old batch or the new one, never a mix.


def create_build_table(conn: sqlite3.Connection, table: str) -> None:
    """An empty ``<table>_build`` with ``table``'s DDL (a leftover from a crashed batch is dropped)."""
    conn.execute(f"DROP TABLE IF EXISTS {table}_build")
    ddl = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]
    # After a swap SQLite keeps the renamed table's DDL with the name quoted; either spelling is replaced.
    conn.execute(re.sub(rf'^CREATE TABLE\s+("{table}"|{table})', f"CREATE TABLE {table}_build", ddl, count=1))
    conn.commit()


def swap_in_build_table(conn: sqlite3.Connection, table: str) -> None:
    """Within the caller's transaction: ``<table>_build`` becomes ``table``, the previous one ``<table>_old``
    (dropped by :func:`drop_old_table` after the commit: freeing its pages need not hold the lock)."""
    conn.execute(f"DROP TABLE IF EXISTS {table}_old")
    conn.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
    conn.execute(f"ALTER TABLE {table}_build RENAME TO {table}")


def drop_old_table(conn: sqlite3.Connection, table: str) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {table}_old")
    conn.commit()
