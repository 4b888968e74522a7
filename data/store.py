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

import fcntl
import os
import re
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

import sqlite_utils

from data.errors import ConfigError, StateError

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
        make_private_home(db_path.parent)
        conn = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
        _use_wal(conn, db_path)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def make_private_home(home: Path) -> None:
    """The store is its user's alone: everything this process creates from now on (database, WAL and SHM,
    snapshots, event log, profiles, models, secrets) is 0600 / 0700, and a home created here is 0700.
    An existing directory's mode is left as its owner set it."""
    os.umask(0o077)
    home = Path(home)
    if not home.exists():
        home.mkdir(parents=True, mode=0o700, exist_ok=True)


def _use_wal(conn: sqlite3.Connection, db_path: Path, wait_s: float = 30.0) -> None:
    """Switch the file to WAL (a no-op once it is). The first switch of a fresh file needs an exclusive lock,
    and SQLite answers "database is locked" to a concurrent opener without calling the busy handler: retry."""
    deadline = time.monotonic() + wait_s
    pause = 0.002
    while True:
        try:
            if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal":
                return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        if time.monotonic() > deadline:
            conn.close()
            raise StateError(
                f"{db_path}: could not switch the store to WAL mode (locked by another process for {wait_s:.0f} s)"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


Recovery = Callable[[sqlite3.Connection, Path], object]


def open_db(
    db_path: Path, migrations: Sequence[Migration] = (), recovery: Sequence[Recovery] = ()
) -> sqlite_utils.Database:
    """Open (creating if needed) the store, apply the pending ones of ``migrations``, then run each of
    ``recovery`` (``(conn, home)``: the areas' clean-up after runs that died, see below)."""
    db = sqlite_utils.Database(connect(db_path))
    if migrations:
        apply_migrations(db, migrations)
    for recover in recovery:
        recover(db.conn, Path(db_path).parent)
    return db


# -- runs that die half-way ---------------------------------------------------------------------------------------
# A long run (an ingest, a feed build) records itself in the store as in progress and holds an exclusive flock on
# ``HOME/run/<name>.lock`` until its outcome is recorded. The kernel drops the lock when the process dies however
# it dies (kill -9 included), so an "in progress" record whose lock is free belongs to a dead run.
# Each area cleans up after its own dead runs with a function ``(conn, home)``; the shell gathers them
# (``yiwang.migrations.recovery()``) and :func:`open_db` runs them on every open of the store.


class RunLock:
    """The lock a live run holds (see above); take it before committing the run's "in progress" record."""

    def __init__(self, home: Path, name: str) -> None:
        self.path = run_lock_path(home, name)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(f"{self.path} is held by another live process: the same run is already going on") from None
        self._fd = fd
        return self

    def release(self) -> None:
        """After the run's outcome is committed: a prober that still finds the file sees the final status."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def run_lock_path(home: Path, name: str) -> Path:
    return Path(home) / "run" / f"{name}.lock"


@contextmanager
def dead_run(home: Path, name: str):
    """Yields True, holding the run's lock, if the run ``name`` is dead (its lock file absent or free), else
    False. Record the run's failure inside, conditionally on it still being "in progress"; the lock file is
    removed on the way out."""
    path = run_lock_path(home, name)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


def apply_migrations(db: sqlite_utils.Database, migrations: Sequence[Migration]) -> list[str]:
    """Apply every pending migration of ``migrations`` in order; returns the names applied now."""
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
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


# -- the ID-hash key the store's resident IDs are hashed with ----------------------------------------------------

KEY_FINGERPRINT = "id_hash_key_fingerprint"


def recorded_key_fingerprint(conn: sqlite3.Connection) -> str | None:
    """The fingerprint of the ID-hash key the store's resident IDs were hashed with, or None before the first."""
    row = conn.execute("SELECT value FROM store_meta WHERE name = ?", (KEY_FINGERPRINT,)).fetchone()
    return None if row is None else row[0]


def bind_id_hash_key(
    conn: sqlite3.Connection, settings, forget_id_hashes: Callable[[sqlite3.Connection], object], *,
    rekey: bool = False,
) -> tuple[bytes, bool]:
    """The ID-hash key to ingest with, checked against the fingerprint the store recorded (the first key
    used is recorded). A different key raises :class:`ConfigError`, unless ``rekey``: then it becomes the
    store's key and ``forget_id_hashes`` (the registry's, :func:`data.registry.forget_id_hashes`) clears every
    stored ``id_hash`` in the same transaction (ingest recomputes those of the people it loads), so no hash
    made with another key remains. Returns (key, whether the key was replaced)."""
    from data.settings import key_fingerprint

    key = settings.hash_key(new_key_allowed=rekey)
    fingerprint = key_fingerprint(key)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    conn.execute("BEGIN IMMEDIATE")
    try:
        recorded = recorded_key_fingerprint(conn)
        replaced = recorded is not None and recorded != fingerprint
        if replaced and not rekey:
            raise ConfigError(
                f"the ID-hash key ({settings.hash_key_source()}) is not the key this store's resident IDs were "
                f"hashed with (fingerprint {recorded[:12]}, this key {fingerprint[:12]}): ingesting would re-hash "
                f"every ID. Set YIWANG_ID_HASH_KEY to the original key or restore {settings.hash_key_file}; to "
                "re-hash all IDs with this key on purpose, run `yiwang ingest --rekey`"
            )
        if recorded is None or replaced:
            conn.execute(
                "INSERT INTO store_meta (name, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                (KEY_FINGERPRINT, fingerprint, now),
            )
        if replaced:
            forget_id_hashes(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return key, replaced
