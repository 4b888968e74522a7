"""Tags in the store: batch replacement, and the citizen's controls (list, delete, restore).

A deleted tag is recorded in ``tag_suppressions`` and removed from ``tags`` at once; every later batch drops
suppressed (subject, code) pairs inside the same transaction that replaces the tags, so a deletion cannot
race a batch and no batch brings a deleted tag back until the citizen restores it.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import sqlite_utils

from data.errors import NotFound
from data.store import RunLock, create_build_table, dead_run, drop_old_table, swap_in_build_table

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
    """Replace every tag with ``tags`` in one step, minus suppressed pairs; returns (written, suppressed)."""
    writer = TagBatchWriter(db, parquet_path)
    try:
        writer.add(tags)
        return writer.finish()
    except BaseException:
        writer.abort()
        raise


class TagBatchWriter:
    """Writes one batch of tags, replacing every tag in one step.

    The tags arrive in parts whose (subject, code) pairs are disjoint (the batch's rule tags, then the model's
    occupation tags); each part fills a build table in a worker thread while the caller computes the next, and
    readers and the citizen controls carry on against the old table. :meth:`finish` then, under the write lock,
    removes from the build table the pairs deleted meanwhile and swaps it in by rename: a deletion committed
    before the swap is honoured and none can slip in between. Until then the caller must leave ``db.conn`` to
    the writer.
    """

    def __init__(self, db: sqlite_utils.Database, parquet_path: Path | None = None):
        self.conn = db.conn
        self.parquet_path = parquet_path
        self.conn.commit()
        self.early = read_suppressions(self.conn)
        self.parts: list[pl.DataFrame] = []
        self.offered = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tag-writer")
        self._fills: list[Future] = []
        self._tmp = None if parquet_path is None else parquet_path.with_name(f".{parquet_path.name}.tmp")
        # Held until the Parquet copy is renamed in (or given up): see recover_dead_tag_batches.
        home = None if parquet_path is None else _home(self.conn)
        self._run = None if home is None else RunLock(home, f"{TAG_BATCH_RUN}{os.getpid()}-{id(self):x}").acquire()
        create_build_table(self.conn, "tags")

    def add(self, tags: pl.DataFrame) -> None:
        kept = tags.join(self.early, on=["subject_id", "code"], how="anti").sort("subject_id", "code")
        self.parts.append(kept)
        self.offered += tags.height
        rows = kept.select(
            [
                pl.col(c).dt.to_string("%Y-%m-%d") if TAG_SCHEMA[c] == pl.Date() else pl.col(c).cast(pl.Int64) if c == "sensitive" else pl.col(c)
                for c in TAG_COLUMNS
            ]
        )
        self._fills.append(self._pool.submit(_fill_build_table, self.conn, rows))

    def finish(self) -> tuple[int, int]:
        """Swap the batch in; returns (written, suppressed)."""
        kept = pl.concat(self.parts, how="vertical_relaxed") if self.parts else pl.DataFrame(schema=TAG_SCHEMA)
        if self._tmp is not None:
            # Batch consumers read this copy (and drop pairs deleted since, see scan_tags); written before the
            # swap, renamed after, so it never runs ahead of SQLite. Polars writes it (without the GIL) while the
            # worker fills the build table.
            self._tmp.parent.mkdir(parents=True, exist_ok=True)
            kept.select(list(TAG_COLUMNS)).write_parquet(self._tmp, compression="zstd")
        for fill in self._fills:
            fill.result()
        self._pool.shutdown()
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            late = conn.execute(
                "DELETE FROM tags_build WHERE (subject_id, code) IN (SELECT subject_id, code FROM tag_suppressions)"
            ).rowcount
            swap_in_build_table(conn, "tags")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if self._tmp is not None:
            os.replace(self._tmp, self.parquet_path)
        if self._run is not None:
            self._run.release()
        drop_old_table(conn, "tags")
        return kept.height - late, self.offered - kept.height + late

    def abort(self) -> None:
        """Give the batch up: no fill left running, the build table and the Parquet copy gone."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.conn.in_transaction:
            self.conn.rollback()
        self.conn.execute("DROP TABLE IF EXISTS tags_build")
        self.conn.commit()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        if self._run is not None:
            self._run.release()


TAG_BATCH_RUN = "tag-batch-"


def _home(conn) -> Path | None:
    """The store's home (None for a store in memory, which no other process can open)."""
    file = conn.execute("PRAGMA database_list").fetchone()[2]
    return Path(file).parent if file else None


def recover_dead_tag_batches(conn, home: Path) -> bool:
    """After a tag batch whose process died (its run lock is free) left the Parquet temporary
    (``tags/.tags.parquet.tmp``), rewrite ``tags/tags.parquet`` from the ``tags`` table and delete the temporary;
    returns whether it did.

    Whether the dead batch's swap had committed cannot be told from the files (a tag batch has no id), and
    after a COMMIT the copy lags SQLite; the rewrite from the table SQLite serves is right either way and
    happens only after a kill.
    """
    final = Path(home) / "tags" / "tags.parquet"  # taggers.tags_parquet_path
    tmp = final.with_name(f".{final.name}.tmp")
    died = live = False
    for lock in sorted((Path(home) / "run").glob(f"{TAG_BATCH_RUN}*.lock")):
        with dead_run(home, lock.name.removesuffix(".lock")) as dead:
            died, live = died or dead, live or not dead
    if not died or live or not tmp.exists():
        return False  # a live batch renames (or deletes) the temporary itself
    frame = read_tags(sqlite_utils.Database(conn)).select(list(TAG_COLUMNS))
    fresh = final.with_name(f".{final.name}.recovered.tmp")
    frame.write_parquet(fresh, compression="zstd")
    os.replace(fresh, final)
    tmp.unlink(missing_ok=True)
    return True


def _fill_build_table(conn, rows: pl.DataFrame) -> None:
    """Add rows to ``tags_build`` in chunks.

    No index on code: the only readers by code (the alert rules) ask once per run, and a scan of the table is
    cheaper than maintaining the index in every batch.
    """
    sql = f"INSERT INTO tags_build ({', '.join(TAG_COLUMNS)}) VALUES ({', '.join('?' * len(TAG_COLUMNS))})"
    # The build table is disposable until the swap commits, so it need not be synced as it is filled.
    conn.execute("PRAGMA synchronous=OFF")
    try:
        for offset in range(0, rows.height, INSERT_CHUNK):
            with conn:
                conn.executemany(sql, rows.slice(offset, INSERT_CHUNK).iter_rows())
    finally:
        conn.execute("PRAGMA synchronous=NORMAL")


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


def read_tags(db: sqlite_utils.Database, codes: list[str] | None = None) -> pl.DataFrame:
    """Every tag in force (of ``codes`` only, when given), typed as :data:`TAG_SCHEMA`."""
    sql = f"SELECT {', '.join(TAG_COLUMNS)} FROM tags"
    if codes is not None:
        if not codes:
            return pl.DataFrame(schema=TAG_SCHEMA)
        sql += f" WHERE code IN ({','.join('?' * len(codes))})"
    rows = db.conn.execute(sql, list(codes or ())).fetchall()
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


def group_tags(conn) -> pl.DataFrame:
    """(subject_id, group) of the non-sensitive crowd tags and ``occupation.student``: the fairness groups."""
    rows = conn.execute(
        "SELECT subject_id, code FROM tags WHERE sensitive = 0 AND (dimension = 'crowd' OR code = 'occupation.student')"
    ).fetchall()
    return pl.DataFrame(rows, schema={"subject_id": pl.String, "group": pl.String}, orient="row")


def has_any(conn, subject_id: str) -> bool:
    """True if the subject holds a tag or deleted one (a deletion is a trace of the subject too)."""
    return conn.execute(
        "SELECT EXISTS (SELECT 1 FROM tags WHERE subject_id = ?1)"
        " OR EXISTS (SELECT 1 FROM tag_suppressions WHERE subject_id = ?1)", (subject_id,)).fetchone()[0] == 1
