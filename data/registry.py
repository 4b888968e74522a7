"""Columnar snapshots of the registries for batch jobs.

SQLite serves single-subject reads; batch jobs (profiles, taggers, recommender, alerts) scan the same
tables as Parquet snapshots under ``HOME/snapshots/<table>.parquet``, which ingest rewrites (atomically:
write to a temporary file, then rename) after every successful load of that table.

A process killed between a load's COMMIT and that rewrite leaves the snapshot older than SQLite, so the two
are tied by a number: the load raises the table's generation (``registry_generations``) in its transaction,
and the snapshot carries the generation it was written from (Parquet metadata). :func:`scan_table` compares
them and rewrites a snapshot that lags from the committed rows before handing it out. Writers hold
``snapshots/.<table>.lock`` while they write ``<table>.parquet.tmp``, so a ``.tmp`` found with the lock free
is a dead writer's and is deleted (:func:`remove_dead_snapshot_temps`).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from data.eventlog import PENDING_SUFFIX
from data.store import dead_run

# Column types of each snapshot; the SQLite tables hold the same columns (booleans as 0/1 there).
SNAPSHOT_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "people": {
        "person_id": pl.String(),
        "birth_date": pl.Date(),
        "gender": pl.String(),
        "district": pl.String(),
        "local_hukou": pl.Boolean(),
        "id_hash": pl.String(),
        "marital_status": pl.String(),
        "household_id": pl.String(),
        "occupation": pl.String(),
        "low_income": pl.Boolean(),
        "disability": pl.Boolean(),
    },
    "enterprises": {
        "enterprise_id": pl.String(),
        "name": pl.String(),
        "industry": pl.String(),
        "district": pl.String(),
        "founded_on": pl.Date(),
        "employees": pl.Int64(),
        "uscc": pl.String(),
        "legal_rep_id": pl.String(),
    },
    "licenses": {
        "license_id": pl.String(),
        "holder_id": pl.String(),
        "license_type": pl.String(),
        "issued_on": pl.Date(),
        "expires_on": pl.Date(),
    },
    "catalog": {
        "item_id": pl.String(),
        "name": pl.String(),
        "department": pl.String(),
        "audience": pl.String(),
        "category": pl.String(),
        "life_events": pl.String(),
        "crowds": pl.String(),
        "occupations": pl.String(),
        "industries": pl.String(),
        "once_per_subject": pl.Boolean(),
        "min_age": pl.Int64(),
        "max_age": pl.Int64(),
        "local_hukou_only": pl.Boolean(),
        "renews_license": pl.String(),
    },
}


# Parquet key-value metadata: the registry generation the snapshot was written from.
GENERATION_KEY = b"yiwang.registry_generation"


def snapshot_path(home: Path, table: str) -> Path:
    return Path(home) / "snapshots" / f"{table}.parquet"


def scan_table(home: Path, table: str) -> pl.LazyFrame:
    """A registry table as a LazyFrame with its snapshot schema (empty and typed if never ingested); a snapshot
    older than the committed table (a killed ingest) is rewritten from SQLite first."""
    schema = SNAPSHOT_SCHEMAS[table]
    refresh_stale_snapshot(home, table)
    path = snapshot_path(home, table)
    if not path.exists():
        return pl.LazyFrame(schema=schema)
    return pl.scan_parquet(path).select([pl.col(c).cast(t) for c, t in schema.items()])


def registry_generation(conn: sqlite3.Connection, table: str) -> int:
    """The table's generation in SQLite: 0 until an ingest has loaded it (or in a store not yet migrated)."""
    try:
        row = conn.execute("SELECT generation FROM registry_generations WHERE table_name = ?", (table,)).fetchone()
    except sqlite3.OperationalError:  # no such table: a store older than the migration, opened read-only
        return 0
    return row[0] if row else 0


def next_generation(conn: sqlite3.Connection, table: str) -> int:
    """Within the caller's write transaction (the one loading ``table``): raise and return its generation."""
    conn.execute(
        "INSERT INTO registry_generations (table_name, generation) VALUES (?, 1) "
        "ON CONFLICT(table_name) DO UPDATE SET generation = generation + 1",
        (table,),
    )
    return registry_generation(conn, table)


def snapshot_generation(path: Path) -> int | None:
    """The generation a snapshot file was written from; None if it has none recorded (or is unreadable)."""
    try:
        # The file's key-value metadata: Polars writes it there, and read_schema's view of the Arrow schema
        # does not carry it.
        meta = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowException):
        return None
    value = meta.get(GENERATION_KEY)
    return int(value) if value is not None and value.isdigit() else None


def _is_stale(home: Path, table: str, generation: int) -> bool:
    written_from = snapshot_generation(snapshot_path(home, table))
    if generation == 0 and written_from is None:
        # Never loaded by an ingest that counts generations (a store from before them, or a snapshot written
        # straight by a benchmark): whatever snapshot exists is all there is.
        return False
    return written_from != generation


def refresh_stale_snapshot(home: Path, table: str) -> bool:
    """Rewrite ``table``'s snapshot from the committed rows if it lags SQLite; returns whether it did."""
    db_path = Path(home) / "yiwang.db"
    if not db_path.exists():
        return False
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        if not _is_stale(home, table, registry_generation(conn, table)):
            return False
        with _snapshot_lock(home, table):
            # Another process may have rewritten it while this one waited for the lock.
            if not _is_stale(home, table, registry_generation(conn, table)):
                return False
            _write_snapshot_locked(home, table, conn)
        return True
    finally:
        conn.close()


@contextmanager
def _snapshot_lock(home: Path, table: str):
    """Exclusive right to write ``table``'s snapshot (released by the kernel if the holder dies)."""
    directory = Path(home) / "snapshots"
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / f".{table}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def remove_dead_snapshot_temps(home: Path) -> list[Path]:
    """Delete ``snapshots/*.tmp`` files left by killed writers (those whose table lock nobody holds)."""
    removed = []
    for tmp in sorted((Path(home) / "snapshots").glob("*.parquet.tmp")):
        table = tmp.name.removesuffix(".parquet.tmp")
        fd = os.open(tmp.parent / f".{table}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue  # a live writer is on it
        try:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        finally:
            os.close(fd)
    return removed


def remove_dead_snapshot_temps_at_open(conn: sqlite3.Connection, home: Path) -> None:
    remove_dead_snapshot_temps(home)


def write_snapshot(home: Path, table: str, conn: sqlite3.Connection) -> int:
    """Rewrite ``table``'s snapshot from SQLite (committed rows and generation, read together); returns its
    row count. ``conn`` must not be inside a write transaction of its own."""
    with _snapshot_lock(home, table):
        return _write_snapshot_locked(home, table, conn)


def _write_snapshot_locked(home: Path, table: str, conn: sqlite3.Connection) -> int:
    schema = SNAPSHOT_SCHEMAS[table]
    cols = ", ".join(schema)
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")  # one read snapshot of the store: the rows are those of the generation read
    try:
        generation = registry_generation(conn, table)
        frames = _read_rows(conn, table, schema, cols)
    finally:
        if own:
            conn.execute("COMMIT")
    raw = (
        pl.concat(frames, how="vertical_relaxed")
        if frames
        else pl.DataFrame(schema={c: _sqlite_type(t) for c, t in schema.items()})
    )
    df = raw.select([_to_type(c, t) for c, t in schema.items()])
    _replace_snapshot(home, table, df, generation)
    return df.height


def _read_rows(conn: sqlite3.Connection, table: str, schema: dict[str, pl.DataType], cols: str) -> list[pl.DataFrame]:
    cur = conn.execute(f"SELECT {cols} FROM {table}")
    frames = []
    while True:
        rows = cur.fetchmany(500_000)
        if not rows:
            break
        # Column-wise construction with the SQLite storage types given (text, or integer for counts and
        # 0/1 booleans): inferring types row by row made a 1M-row snapshot take tens of seconds.
        columns = list(zip(*rows))
        frames.append(
            pl.DataFrame(
                {c: pl.Series(c, vals, dtype=_sqlite_type(t), strict=False) for (c, t), vals in zip(schema.items(), columns)}
            )
        )
    return frames


def write_snapshot_frame(home: Path, table: str, rows: pl.DataFrame, generation: int) -> int:
    """Write ``table``'s snapshot from a frame holding the whole table in SQLite form (dates as ISO text,
    booleans 0/1) as committed at ``generation``: what ingest uses after a first load, instead of reading a
    million rows back."""
    schema = SNAPSHOT_SCHEMAS[table]
    df = rows.select([_to_type(c, t) for c, t in schema.items()])
    with _snapshot_lock(home, table):
        _replace_snapshot(home, table, df, generation)
    return df.height


def _replace_snapshot(home: Path, table: str, df: pl.DataFrame, generation: int) -> None:
    """Under the table's snapshot lock: write the temporary file, then rename it over the snapshot."""
    path = snapshot_path(home, table)
    tmp = path.with_suffix(".parquet.tmp")
    df.write_parquet(tmp, metadata={GENERATION_KEY.decode(): str(generation)})
    os.replace(tmp, path)


def _sqlite_type(dtype: pl.DataType) -> pl.DataType:
    return pl.Int64() if dtype in (pl.Boolean(), pl.Int64()) else pl.String()


def _to_type(col: str, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.Date():
        return pl.col(col).cast(pl.String).str.to_date("%Y-%m-%d", strict=False).alias(col)
    if dtype == pl.Boolean():
        return (pl.col(col).cast(pl.Int64) != 0).alias(col)
    return pl.col(col).cast(dtype).alias(col)


# Single-subject reads of the registries in SQLite: the one place outside ingest that names their tables.


def catalog_names(conn: sqlite3.Connection, item_ids: list[str] | None = None) -> dict[str, str]:
    """item_id -> name of the catalogue items asked (all when ``item_ids`` is None); unknown ids are left out."""
    if item_ids is None:
        return dict(conn.execute("SELECT item_id, name FROM catalog").fetchall())
    if not item_ids:
        return {}
    marks = ",".join("?" * len(item_ids))
    return dict(conn.execute(f"SELECT item_id, name FROM catalog WHERE item_id IN ({marks})", list(item_ids)).fetchall())


def catalog_item_exists(conn: sqlite3.Connection, item_id: str) -> bool:
    return conn.execute("SELECT 1 FROM catalog WHERE item_id = ?", (item_id,)).fetchone() is not None


def catalog_item_rules(conn: sqlite3.Connection, item_ids: list[str]) -> dict[str, tuple]:
    """item_id -> (audience, min_age, max_age, local_hukou_only, industries, department, once_per_subject)."""
    if not item_ids:
        return {}
    marks = ",".join("?" * len(item_ids))
    return {r[0]: r[1:] for r in conn.execute(
        "SELECT item_id, audience, min_age, max_age, local_hukou_only, industries, department, once_per_subject "
        f"FROM catalog WHERE item_id IN ({marks})", list(item_ids)).fetchall()}


def registered_subject(conn: sqlite3.Connection, subject_id: str) -> dict | None:
    """The registry facts of a person or enterprise the feed filters with, or None if in neither registry."""
    r = conn.execute("SELECT birth_date, district, local_hukou FROM people WHERE person_id = ?", (subject_id,)).fetchone()
    if r:
        return {"kind": "person", "birth_date": r[0], "district": r[1], "local_hukou": bool(r[2]), "industry": None,
                "founded_on": None, "subject_id": subject_id}
    r = conn.execute("SELECT district, industry, founded_on FROM enterprises WHERE enterprise_id = ?",
                     (subject_id,)).fetchone()
    if r:
        return {"kind": "enterprise", "birth_date": None, "district": r[0], "local_hukou": None, "industry": r[1],
                "founded_on": r[2], "subject_id": subject_id}
    return None


def is_registered(conn: sqlite3.Connection, subject_id: str) -> bool:
    """True if the subject is a person or an enterprise in the registries."""
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM people WHERE person_id = ?1)"
        " OR EXISTS (SELECT 1 FROM enterprises WHERE enterprise_id = ?1)", (subject_id,)).fetchone()[0] == 1


def insert_rows(conn: sqlite3.Connection, table: str, rows: pl.DataFrame) -> int:
    """Insert registry rows as they are stored (dates ISO text, booleans 0/1), bypassing ingest's checks.

    For test fixtures and synthetic set-ups that build a registry directly; real data goes through ingest.
    """
    if table not in SNAPSHOT_SCHEMAS:
        raise ValueError(f"not a registry table: {table!r}")
    cols = rows.columns
    with conn:
        conn.executemany(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows.rows())
    return rows.height


def replace_rows(conn: sqlite3.Connection, table: str, rows: pl.DataFrame) -> int:
    """Replace every row of a registry table by ``rows`` (as :func:`insert_rows` stores them), in one transaction.

    For test fixtures and synthetic set-ups, like :func:`insert_rows`.
    """
    if table not in SNAPSHOT_SCHEMAS:
        raise ValueError(f"not a registry table: {table!r}")
    cols = rows.columns
    with conn:
        conn.execute(f"DELETE FROM {table}")
        conn.executemany(
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows.iter_rows())
    return rows.height


def upsert_records(conn: sqlite3.Connection, table: str, records: list[dict]) -> None:
    """Insert registry records, or update the given columns of those whose key is already stored (fixtures)."""
    if table not in _KEYS:
        raise ValueError(f"not a registry table: {table!r}")
    key = _KEYS[table]
    with conn:
        for record in records:
            cols = list(record)
            updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != key) or f"{key} = excluded.{key}"
            conn.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
                         f"ON CONFLICT({key}) DO UPDATE SET {updates}", list(record.values()))


def delete_records(conn: sqlite3.Connection, table: str, keys: list[str]) -> None:
    """Delete registry records by key (fixtures; real data leaves through ingest)."""
    if table not in _KEYS:
        raise ValueError(f"not a registry table: {table!r}")
    with conn:
        conn.executemany(f"DELETE FROM {table} WHERE {_KEYS[table]} = ?", [(k,) for k in keys])


def known_items(conn: sqlite3.Connection, item_ids) -> set[str]:
    """Those of ``item_ids`` that are in the catalogue."""
    ids = list(item_ids)
    known: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        known.update(r[0] for r in conn.execute(f"SELECT item_id FROM catalog WHERE item_id IN ({marks})", chunk))
    return known


def has_ingested_data(conn: sqlite3.Connection) -> bool:
    """True once an ingest finished or a registry holds a subject."""
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM ingests WHERE status = 'done') OR EXISTS (SELECT 1 FROM people) "
        "OR EXISTS (SELECT 1 FROM enterprises)"
    ).fetchone()[0] == 1


def open_ingest(conn: sqlite3.Connection, source: str, started_at: str) -> int:
    """Record a running ingest (e.g. events appended through the API); returns its id."""
    with conn:
        cur = conn.execute("INSERT INTO ingests (source, started_at, status) VALUES (?, ?, 'running')",
                           (source, started_at))
    return int(cur.lastrowid)


def close_ingest(conn: sqlite3.Connection, ingest_id: int, finished_at: str, status: str, summary_json: str) -> None:
    with conn:
        conn.execute(
            "UPDATE ingests SET finished_at = ?, status = ?, summary_json = ? WHERE ingest_id = ?",
            (finished_at, status, summary_json, ingest_id),
        )


_KEYS = {"people": "person_id", "enterprises": "enterprise_id", "licenses": "license_id", "catalog": "item_id"}


def stored_record(conn: sqlite3.Connection, table: str, key: str, columns: list[str]) -> tuple | None:
    """``columns`` of one registry record exactly as SQLite stores it (checks and tools), or None if absent."""
    if table not in _KEYS:
        raise ValueError(f"not a registry table: {table!r}")
    bad = [c for c in columns if c not in (*SNAPSHOT_SCHEMAS[table], "ingest_id")]
    if bad:
        raise ValueError(f"{table} has no column {', '.join(bad)}")
    return conn.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE {_KEYS[table]} = ?", (key,)).fetchone()


def stored_records(conn: sqlite3.Connection, table: str, columns: list[str]) -> list[tuple]:
    """``columns`` of every record of a registry table exactly as SQLite stores it, in key order (checks and tools)."""
    if table not in _KEYS:
        raise ValueError(f"not a registry table: {table!r}")
    bad = [c for c in columns if c not in (*SNAPSHOT_SCHEMAS[table], "ingest_id")]
    if bad:
        raise ValueError(f"{table} has no column {', '.join(bad)}")
    return conn.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {_KEYS[table]}").fetchall()


def ingest_record(conn: sqlite3.Connection, ingest_id: int) -> dict | None:
    """The bookkeeping row of one ingest: source, status, as_of and its summary (parsed), or None."""
    row = conn.execute("SELECT source, status, as_of, summary_json FROM ingests WHERE ingest_id = ?",
                       (ingest_id,)).fetchone()
    if row is None:
        return None
    return {"source": row[0], "status": row[1], "as_of": row[2], "summary": json.loads(row[3]) if row[3] else None}


def count_records(conn: sqlite3.Connection, table: str) -> int:
    """Rows of a registry table in SQLite."""
    if table not in _KEYS:
        raise ValueError(f"not a registry table: {table!r}")
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def forget_id_hashes(conn: sqlite3.Connection) -> None:
    """Clear every stored resident ``id_hash`` (the ID-hash key was replaced; called inside its transaction)."""
    conn.execute("UPDATE people SET id_hash = NULL WHERE id_hash IS NOT NULL")


def holds_hashed_ids(conn: sqlite3.Connection) -> bool:
    """Whether any resident ID in the people registry is stored hashed."""
    return conn.execute("SELECT 1 FROM people WHERE id_hash IS NOT NULL LIMIT 1").fetchone() is not None


# -- ingests that died half-way (see data.store: runs that die half-way) -------------------------------------------


def fail_dead_ingests(conn: sqlite3.Connection, home: Path) -> list[int]:
    """Mark ingests left 'running' by a dead process as failed, and delete the event files they left pending
    (named after the ingest, so no live writer's); returns their ids."""
    failed = []
    for (ingest_id,) in conn.execute("SELECT ingest_id FROM ingests WHERE status = 'running'").fetchall():
        with dead_run(home, f"ingest-{ingest_id}") as dead:
            if not dead:
                continue
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            note = json.dumps({"ingest_id": ingest_id, "status": "failed", "error": (
                "the ingest process died before finishing (killed or crashed); found by a later open of the store. "
                "Tables whose load had committed are kept; re-run the ingest to load the rest"
            )})
            cur = conn.execute(
                "UPDATE ingests SET status = 'failed', finished_at = ?, summary_json = COALESCE(summary_json, ?) "
                "WHERE ingest_id = ? AND status = 'running'",
                (now, note, ingest_id),
            )
            conn.commit()
            if cur.rowcount:
                failed.append(ingest_id)
                for pending in Path(home).glob(f"events/month=*/part-{ingest_id:06d}-*{PENDING_SUFFIX}"):
                    pending.unlink(missing_ok=True)
    return failed
