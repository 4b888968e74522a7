"""Columnar snapshots of the registries for batch jobs.

SQLite serves single-subject reads; batch jobs (profiles, taggers, recommender, alerts) scan the same
tables as Parquet snapshots under ``HOME/snapshots/<table>.parquet``, which ingest rewrites (atomically:
write to a temporary file, then rename) after every successful load of that table.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import polars as pl

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


def snapshot_path(home: Path, table: str) -> Path:
    return Path(home) / "snapshots" / f"{table}.parquet"


def scan_table(home: Path, table: str) -> pl.LazyFrame:
    """A registry table as a LazyFrame with its snapshot schema (empty and typed if never ingested)."""
    schema = SNAPSHOT_SCHEMAS[table]
    path = snapshot_path(home, table)
    if not path.exists():
        return pl.LazyFrame(schema=schema)
    return pl.scan_parquet(path).select([pl.col(c).cast(t) for c, t in schema.items()])


def write_snapshot(home: Path, table: str, conn: sqlite3.Connection) -> int:
    """Rewrite ``table``'s snapshot from SQLite; returns its row count."""
    schema = SNAPSHOT_SCHEMAS[table]
    cols = ", ".join(schema)
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
    raw = (
        pl.concat(frames, how="vertical_relaxed")
        if frames
        else pl.DataFrame(schema={c: _sqlite_type(t) for c, t in schema.items()})
    )
    df = raw.select([_to_type(c, t) for c, t in schema.items()])
    path = snapshot_path(home, table)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    df.write_parquet(tmp)
    os.replace(tmp, path)
    return df.height


def write_snapshot_frame(home: Path, table: str, rows: pl.DataFrame) -> int:
    """Write ``table``'s snapshot from a frame holding the whole table in SQLite form (dates as ISO text,
    booleans 0/1): what ingest uses after a first load, instead of reading a million rows back."""
    schema = SNAPSHOT_SCHEMAS[table]
    df = rows.select([_to_type(c, t) for c, t in schema.items()])
    path = snapshot_path(home, table)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    df.write_parquet(tmp)
    os.replace(tmp, path)
    return df.height


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
                "subject_id": subject_id}
    r = conn.execute("SELECT district, industry FROM enterprises WHERE enterprise_id = ?", (subject_id,)).fetchone()
    if r:
        return {"kind": "enterprise", "birth_date": None, "district": r[0], "local_hukou": None, "industry": r[1],
                "subject_id": subject_id}
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
