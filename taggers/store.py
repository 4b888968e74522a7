"""Tags in the store: batch replacement, and the citizen's controls (list, delete, restore).

A deleted tag is recorded in ``tag_suppressions`` and removed from ``tags`` at once; every later batch drops
suppressed (subject, code) pairs inside the same transaction that replaces the tags, so a deletion cannot
race a batch and no batch brings a deleted tag back until the citizen restores it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import sqlite_utils

from yiwang.errors import NotFound

TAG_COLUMNS = (
    "subject_id",
    "code",
    "dimension",
    "confidence",
    "source",
    "evidence_zh",
    "evidence_en",
    "valid_from",
    "valid_until",
    "sensitive",
    "as_of",
)
TAG_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.String(),
    "code": pl.String(),
    "dimension": pl.String(),
    "confidence": pl.Float64(),
    "source": pl.String(),
    "evidence_zh": pl.String(),
    "evidence_en": pl.String(),
    "valid_from": pl.Date(),
    "valid_until": pl.Date(),
    "sensitive": pl.Boolean(),
    "as_of": pl.Date(),
}
INSERT_CHUNK = 200_000


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_suppressions(conn) -> pl.DataFrame:
    rows = conn.execute("SELECT subject_id, code FROM tag_suppressions").fetchall()
    return pl.DataFrame(rows, schema={"subject_id": pl.String, "code": pl.String}, orient="row")


def replace_tags(db: sqlite_utils.Database, tags: pl.DataFrame, parquet_path: Path | None = None) -> tuple[int, int]:
    """Replace every tag with ``tags`` in one transaction, minus suppressed pairs; returns (written, suppressed).

    The suppressions are read after taking the write lock, so a deletion committed a moment before the batch
    is honoured and none can be committed in between.
    """
    conn = db.conn
    conn.commit()
    conn.execute("BEGIN IMMEDIATE")
    try:
        suppressed = read_suppressions(conn)
        kept = tags.join(suppressed, on=["subject_id", "code"], how="anti").sort("subject_id", "code")
        rows = kept.select(
            [
                pl.col(c).dt.to_string("%Y-%m-%d") if TAG_SCHEMA[c] == pl.Date() else pl.col(c).cast(pl.Int64) if c == "sensitive" else pl.col(c)
                for c in TAG_COLUMNS
            ]
        )
        tmp = None if parquet_path is None else parquet_path.with_name(f".{parquet_path.name}.tmp")
        with ThreadPoolExecutor(1) as pool:
            written = None
            if tmp is not None:
                # Batch consumers read this copy; written before COMMIT, renamed after, so it never runs ahead
                # of SQLite. Polars writes it in a thread (without the GIL) while this one fills the table.
                tmp.parent.mkdir(parents=True, exist_ok=True)
                written = pool.submit(lambda: kept.select(list(TAG_COLUMNS)).write_parquet(tmp, compression="zstd"))
            try:
                # Building the code index once after the load is faster than maintaining it row by row; DDL is
                # transactional in SQLite, so readers still see the old tags, index and all, until COMMIT.
                conn.execute("DROP INDEX IF EXISTS tags_code")
                conn.execute("DELETE FROM tags")
                sql = f"INSERT INTO tags ({', '.join(TAG_COLUMNS)}) VALUES ({', '.join('?' * len(TAG_COLUMNS))})"
                for offset in range(0, rows.height, INSERT_CHUNK):
                    conn.executemany(sql, rows.slice(offset, INSERT_CHUNK).iter_rows())
                conn.execute("CREATE INDEX tags_code ON tags(code)")
            finally:
                if written is not None:
                    written.result()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        if parquet_path is not None:
            parquet_path.with_name(f".{parquet_path.name}.tmp").unlink(missing_ok=True)
        raise
    if tmp is not None:
        os.replace(tmp, parquet_path)
    return kept.height, tags.height - kept.height


def _row(r: tuple) -> dict:
    d = dict(zip(TAG_COLUMNS, r))
    d["sensitive"] = bool(d["sensitive"])
    return d


def list_tags(db: sqlite_utils.Database, subject_id: str, include_sensitive: bool) -> list[dict]:
    """A subject's tags in force, with evidence; sensitive ones only when the caller has the profile scope."""
    sql = f"SELECT {', '.join(TAG_COLUMNS)} FROM tags WHERE subject_id = ?"
    if not include_sensitive:
        sql += " AND sensitive = 0"
    rows = db.conn.execute(sql + " ORDER BY dimension, code", (subject_id,)).fetchall()
    return [_row(r) for r in rows]


def list_suppressed(db: sqlite_utils.Database, subject_id: str) -> list[dict]:
    rows = db.conn.execute(
        "SELECT code, deleted_at FROM tag_suppressions WHERE subject_id = ? ORDER BY code", (subject_id,)
    ).fetchall()
    return [{"code": c, "deleted_at": t} for c, t in rows]


def delete_tag(db: sqlite_utils.Database, subject_id: str, code: str) -> dict:
    """Remove a tag now and keep it out of every later batch; NotFound if the subject has no such tag."""
    conn = db.conn
    conn.commit()
    with conn:
        row = conn.execute("SELECT 1 FROM tags WHERE subject_id = ? AND code = ?", (subject_id, code)).fetchone()
        already = conn.execute(
            "SELECT deleted_at FROM tag_suppressions WHERE subject_id = ? AND code = ?", (subject_id, code)
        ).fetchone()
        if row is None and already is None:
            raise NotFound(f"subject {subject_id!r} has no tag {code!r}")
        if already is None:
            conn.execute(
                "INSERT INTO tag_suppressions (subject_id, code, deleted_at) VALUES (?, ?, ?)", (subject_id, code, _now())
            )
        conn.execute("DELETE FROM tags WHERE subject_id = ? AND code = ?", (subject_id, code))
    return {"subject_id": subject_id, "code": code, "deleted": True}


def restore_tag(db: sqlite_utils.Database, subject_id: str, code: str) -> dict:
    """Lift a deletion; the tag returns with the next batch if its facts still hold. NotFound if not deleted."""
    conn = db.conn
    conn.commit()
    with conn:
        cur = conn.execute("DELETE FROM tag_suppressions WHERE subject_id = ? AND code = ?", (subject_id, code))
        if cur.rowcount == 0:
            raise NotFound(f"subject {subject_id!r} has no deleted tag {code!r}")
    return {"subject_id": subject_id, "code": code, "restored": True}


def read_tags(db: sqlite_utils.Database) -> pl.DataFrame:
    """Every tag in force, typed as :data:`TAG_SCHEMA`."""
    rows = db.conn.execute(f"SELECT {', '.join(TAG_COLUMNS)} FROM tags").fetchall()
    raw = pl.DataFrame(rows, schema=list(TAG_COLUMNS), orient="row", infer_schema_length=None)
    return _typed(raw)


def _typed(raw: pl.DataFrame | pl.LazyFrame):
    return raw.select(
        [
            pl.col(c).cast(pl.String).str.to_date("%Y-%m-%d", strict=False)
            if t == pl.Date()
            else (pl.col(c).cast(pl.Int64) != 0)
            if t == pl.Boolean()
            else pl.col(c).cast(t)
            for c, t in TAG_SCHEMA.items()
        ]
    )
