"""One file per person and per enterprise (一人一档, 一企一档): attributes, licences and behaviour, built in batch.

Entry points:

- :func:`build_profiles` computes every profile as one lazy Polars plan (:mod:`profiler.build`) and publishes
  it twice: to SQLite (``profiles``: blocks of consecutive subjects, swapped in by rename inside one
  transaction) for single-subject reads, and to ``HOME/profiles/profiles.parquet`` (written to a temporary
  name, then renamed) for batch jobs.
- :func:`scan_profiles` is the latest published batch as a LazyFrame (recommender, alerts, taggers).
- :func:`read_profile` is one subject's profile as a JSON-ready dict (HTTP API, CLI); the sensitive fields
  (``low_income``, ``disability``) are left out unless the caller has the profile scope.

``progress``, where accepted, is a callable ``progress(stage: str, done: int, total: int)``.
"""

from __future__ import annotations

import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import polars as pl
import pyarrow as pa
import sqlite_utils

from profiler.build import ENTERPRISE_FIELDS, PERSON_FIELDS, PERSON_SENSITIVE_FIELDS, profile_frame
from data.errors import StateError
from data.eventlog import scan_events
from data.registry import scan_table
from data.settings import Settings
from data.store import RunLock, create_build_table, dead_run, drop_old_table, swap_in_build_table

# What another engine may import from this one (tests/test_layering.py holds every engine to it): these modules,
# and in them the names that do not start with "_". The rest is this engine's own and may change without notice.
PUBLIC_MODULES = ("profiler", "profiler.build")

Progress = Callable[[str, int, int], None]

PROFILE_STAGES = ("compute", "write", "publish")
# Subjects per serving block: a read decodes one block (a few milliseconds at this size).
BLOCK_SUBJECTS = 1024
_BLOCK_CODEC = pa.Codec("lz4")
NOT_APPLICABLE = {
    "person": ENTERPRISE_FIELDS,
    "enterprise": tuple(f for f in PERSON_FIELDS if f != "district"),
    "unknown": tuple(f for f in PERSON_FIELDS + ENTERPRISE_FIELDS),
}


class StageClock:
    """Reports each stage to ``progress`` and keeps its wall time (for summaries and the benchmark)."""

    def __init__(self, progress: Progress | None, stages: tuple[str, ...]):
        self.progress = progress or (lambda stage, done, total: None)
        self.stages = stages
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}  # process CPU (all threads): on a busy machine wall time misleads
        self._current: str | None = None
        self._t = time.perf_counter()
        self._cpu = time.process_time()

    def __call__(self, stage: str) -> None:
        self._close()
        self._current = stage
        self.progress(stage, self.stages.index(stage), len(self.stages))

    def done(self) -> None:
        self._close()
        self._current = None
        self.progress(self.stages[-1], len(self.stages), len(self.stages))

    def _close(self) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if self._current is not None:
            self.seconds[self._current] = round(self.seconds.get(self._current, 0.0) + now - self._t, 2)
            self.cpu_seconds[self._current] = round(self.cpu_seconds.get(self._current, 0.0) + cpu - self._cpu, 2)
        self._t, self._cpu = now, cpu


@dataclass
class ProfileSummary:
    batch_id: int
    as_of: str
    persons: int
    enterprises: int
    unknown: int
    parquet_path: str
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def profiles_path(settings: Settings) -> Path:
    return Path(settings.home) / "profiles" / "profiles.parquet"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def compute_profiles(settings: Settings, as_of: date) -> pl.DataFrame:
    """The profiles of every subject at ``as_of`` from the registry snapshots and the event log (not published)."""
    home = settings.home
    plan = profile_frame(
        scan_table(home, "people"),
        scan_table(home, "enterprises"),
        scan_table(home, "licenses"),
        scan_events(settings.events_dir),
        scan_table(home, "catalog"),
        as_of,
    )
    return plan.collect()


# The run locks of this process's batches from :func:`new_batch` until :func:`publish_profiles` is over (see
# data.store: a batch whose lock is free died, and :func:`recover_dead_batches` clears up after it).
_BATCH_LOCKS: dict[int, RunLock] = {}


def _batch_run(batch_id: int) -> str:
    return f"profile-batch-{batch_id}"


def _home(conn) -> Path | None:
    """The store's home (None for a store in memory, which no other process can open)."""
    file = conn.execute("PRAGMA database_list").fetchone()[2]
    return Path(file).parent if file else None


def new_batch(db: sqlite_utils.Database, as_of: date) -> int:
    """Record the start of a profile batch; its id stamps every row it publishes. The batch's run lock is
    held from before the record commits until :func:`publish_profiles` is over (or the process ends)."""
    db.conn.commit()
    db.conn.execute("BEGIN IMMEDIATE")
    try:
        cur = db.conn.execute("INSERT INTO profile_batches (as_of, started_at) VALUES (?, ?)", (as_of.isoformat(), _now()))
        if (home := _home(db.conn)) is not None:
            _BATCH_LOCKS[cur.lastrowid] = RunLock(home, _batch_run(cur.lastrowid)).acquire()
        db.conn.execute("COMMIT")
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise
    return cur.lastrowid


def end_batch(batch_id: int) -> None:
    """Let go of a batch of this process that will not be published (the next open of the store fails it)."""
    if (lock := _BATCH_LOCKS.pop(batch_id, None)) is not None:
        lock.release()


def recover_dead_batches(conn, home: Path) -> list[int]:
    """Clear up after profile batches whose process died (their run lock is free); returns the batches failed.

    A dead batch never published is marked failed (``failed_at``). Its Parquet temporary
    (``profiles/.profiles.parquet.<batch>.tmp``) is deleted, except when SQLite serves that very batch: the
    process died between the SQLite swap's COMMIT and the rename, and the temporary, written whole before the
    COMMIT, is the Parquet copy of what SQLite serves, so it is renamed into place (cheaper than rebuilding the
    copy, and the only way the copy can lag SQLite).
    """
    failed = []
    for (batch_id,) in conn.execute(
        "SELECT batch_id FROM profile_batches WHERE published_at IS NULL AND failed_at IS NULL"
    ).fetchall():
        with dead_run(home, _batch_run(batch_id)) as dead:
            if dead and conn.execute(
                "UPDATE profile_batches SET failed_at = ? WHERE batch_id = ? AND published_at IS NULL AND failed_at IS NULL",
                (_now(), batch_id),
            ).rowcount:
                failed.append(batch_id)
            conn.commit()
    final = Path(home) / "profiles" / "profiles.parquet"
    for tmp in sorted(final.parent.glob(f".{final.name}.*.tmp")):
        batch = tmp.name.removeprefix(f".{final.name}.").removesuffix(".tmp")
        if not batch.isdigit() or conn.execute(
                "SELECT 1 FROM profile_batches WHERE batch_id = ?", (int(batch),)).fetchone() is None:
            continue  # no batch of that number has started (its record commits before its temporary is written)
        with dead_run(home, _batch_run(int(batch))) as dead:
            if not dead:
                continue
            served = conn.execute("SELECT MAX(batch_id) FROM profile_batches WHERE published_at IS NOT NULL").fetchone()[0]
            if served == int(batch):
                os.replace(tmp, final)
            else:
                tmp.unlink(missing_ok=True)
    return failed


def publish_profiles(settings: Settings, conn, df: pl.DataFrame, batch_id: int, tick: StageClock | None = None) -> dict[str, int]:
    """Publish computed profiles to SQLite and Parquet, atomically each; returns the count per subject type.

    ``conn`` is a connection of this thread's own (the batch may publish in a worker thread while the
    taggers run on the same profiles, see :func:`taggers.profile_and_tag`).
    """
    tick = tick or StageClock(None, PROFILE_STAGES)
    counts = dict(df.group_by("subject_type").len().iter_rows())
    tick("write")
    try:
        return _publish_profiles(settings, conn, df, batch_id, tick, counts)
    finally:
        end_batch(batch_id)


def _publish_profiles(settings: Settings, conn, df: pl.DataFrame, batch_id: int, tick: StageClock,
                      counts: dict[str, int]) -> dict[str, int]:
    final = profiles_path(settings)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{batch_id}.tmp")
    # The Parquet copy is written by Polars (which lets go of the GIL) in a thread while this one fills the
    # SQLite build table: the two overlap on two cores.
    with ThreadPoolExecutor(1) as pool:
        parquet = pool.submit(
            lambda: df.with_columns(pl.lit(batch_id, pl.Int64).alias("batch_id")).write_parquet(tmp, compression="lz4")
        )
        try:
            try:
                _fill_build_table(conn, df, batch_id)
            finally:
                parquet.result()

            tick("publish")
            conn.execute("BEGIN IMMEDIATE")
            try:
                swap_in_build_table(conn, "profiles")
                conn.execute(
                    "UPDATE profile_batches SET published_at = ?, n_persons = ?, n_enterprises = ?, n_unknown = ? WHERE batch_id = ?",
                    (_now(), counts.get("person", 0), counts.get("enterprise", 0), counts.get("unknown", 0), batch_id),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, final)
    drop_old_table(conn, "profiles")
    return counts


def profile_summary(settings: Settings, batch_id: int, as_of: date, counts: dict[str, int], t0: datetime, tick: StageClock) -> ProfileSummary:
    return ProfileSummary(
        batch_id=batch_id,
        as_of=as_of.isoformat(),
        persons=counts.get("person", 0),
        enterprises=counts.get("enterprise", 0),
        unknown=counts.get("unknown", 0),
        parquet_path=str(profiles_path(settings)),
        seconds=round((datetime.now() - t0).total_seconds(), 2),
        stage_seconds=tick.seconds,
        stage_cpu_seconds=tick.cpu_seconds,
    )


def build_profiles(settings: Settings, db: sqlite_utils.Database, as_of: date, progress: Progress | None = None) -> ProfileSummary:
    """Compute every profile at ``as_of`` and publish them atomically to SQLite and Parquet."""
    t0 = datetime.now()
    tick = StageClock(progress, PROFILE_STAGES)
    batch_id = new_batch(db, as_of)
    tick("compute")
    try:
        df = compute_profiles(settings, as_of)
    except BaseException:
        end_batch(batch_id)
        raise
    counts = publish_profiles(settings, db.conn, df, batch_id, tick)
    tick.done()
    return profile_summary(settings, batch_id, as_of, counts, t0, tick)


def _fill_build_table(conn, df: pl.DataFrame, batch_id: int) -> None:
    """Fill ``profiles_build`` with blocks of BLOCK_SUBJECTS consecutive profiles (``df`` is sorted by subject)."""
    create_build_table(conn, "profiles")
    with conn:
        conn.executemany("INSERT INTO profiles_build VALUES (?, ?, ?, ?, ?, ?)", serving_blocks(df, batch_id))


def serving_blocks(df: pl.DataFrame, batch_id: int, size: int = 0) -> Iterator[tuple]:
    """(first_subject, last_subject, batch_id, n_subjects, block_bytes, block) rows of the serving table, from
    profiles sorted by subject_id.

    A block is an Arrow IPC stream compressed whole with LZ4: per-column compression inside the stream cost
    four times as much for the small buffers of a block, and uncompressed blocks made SQLite write (and later
    free) a gigabyte per million subjects. The stream is written by pyarrow from slices of one Arrow table,
    because Polars writes a slice of a list column with the whole chunk's values behind it.
    """
    size = size or BLOCK_SUBJECTS
    table = df.to_arrow()
    ids = df["subject_id"]
    for offset in range(0, df.height, size):
        part = table.slice(offset, size)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, part.schema) as writer:
            writer.write_table(part)
        raw = sink.getvalue()
        yield (ids[offset], ids[offset + part.num_rows - 1], batch_id, part.num_rows, raw.size,
               _BLOCK_CODEC.compress(raw, asbytes=True))


def _read_block(block_bytes: int, block: bytes) -> pl.DataFrame:
    return pl.read_ipc_stream(io.BytesIO(_BLOCK_CODEC.decompress(block, decompressed_size=block_bytes, asbytes=True)))


# Kept out of the serving JSON: the id columns (table columns already), the breakdowns (appended compactly),
# and household fields a reader can see in household_members (the Parquet copy keeps them for batch rules).
SERVING_OMITS = (
    "subject_id", "subject_type", "by_category", "by_department",
    "children_ages", "youngest_child_age", "youngest_child_birth_date", "newest_member_birth_date",
)
BREAKDOWN_FIELDS = ("views_7d", "views_30d", "views_180d", "applies_7d", "applies_30d", "applies_180d")


def _breakdown_json(col: str) -> pl.Expr:
    """``[{key, views_7d, ...}, ...]`` as the compact JSON object ``{"key": [views_7d, ...], ...}``.

    The per-category and per-department lists are half of a profile; as objects of arrays they take a third
    of the room, which is what the serving table pays for a million subjects.
    """
    key = pl.element().struct.field("key").fill_null("?").str.replace_all(r"[\\\"]", "")
    entry = pl.concat_str(
        [pl.lit('"'), key, pl.lit('":['), pl.concat_str([pl.element().struct.field(f).cast(pl.String) for f in BREAKDOWN_FIELDS], separator=","), pl.lit("]")]
    )
    return pl.concat_str([pl.lit("{"), pl.col(col).list.eval(entry).list.join(","), pl.lit("}")]).fill_null("{}")


def serving_json_expr(columns: list[str]) -> pl.Expr:
    """The profile as one JSON text per subject, with only the fields that apply to its subject type."""
    parts = {}
    for subject_type, skip in NOT_APPLICABLE.items():
        keep = [c for c in columns if c not in skip and c not in SERVING_OMITS]
        parts[subject_type] = pl.struct(keep).struct.json_encode() if keep else pl.lit("{}")
    base = pl.when(pl.col("subject_type") == "person").then(parts["person"])
    base = base.when(pl.col("subject_type") == "enterprise").then(parts["enterprise"]).otherwise(parts["unknown"])
    tail = []
    for key in ("by_category", "by_department"):
        if key in columns:
            tail += [pl.lit(f',"{key}":'), _breakdown_json(key)]
    return pl.concat_str([base.str.head(-1), *tail, pl.lit("}")])


def latest_batch(db: sqlite_utils.Database) -> dict | None:
    row = db.conn.execute(
        "SELECT batch_id, as_of, published_at FROM profile_batches WHERE published_at IS NOT NULL ORDER BY batch_id DESC LIMIT 1"
    ).fetchone()
    return None if row is None else {"batch_id": row[0], "as_of": row[1], "published_at": row[2]}


def list_batches(db: sqlite_utils.Database) -> list[dict]:
    """Every profile batch recorded, published, failed (its process died) or neither (running), oldest first."""
    rows = db.conn.execute("SELECT batch_id, as_of, started_at, published_at, failed_at FROM profile_batches ORDER BY batch_id")
    return [{"batch_id": b, "as_of": a, "started_at": s, "published_at": p, "failed_at": f} for b, a, s, p, f in rows]


def served_profiles_shape(conn) -> tuple[int, int, int]:
    """(blocks, subjects, distinct batches) of the profiles being served: one batch, whole, at any instant."""
    return conn.execute("SELECT COUNT(*), COALESCE(SUM(n_subjects), 0), COUNT(DISTINCT batch_id) FROM profiles").fetchone()


def scan_profiles(settings: Settings) -> pl.LazyFrame:
    """The latest published profiles (one row per subject) for batch jobs; StateError before the first build."""
    path = profiles_path(settings)
    if not path.exists():
        raise StateError(f"no profiles at {path}: run `yiwang profile` first")
    return pl.scan_parquet(path)


def read_profile(db: sqlite_utils.Database, subject_id: str, include_sensitive: bool = False) -> dict | None:
    """One subject's published profile as a JSON-ready dict, or None if the subject has none."""
    row = db.conn.execute(
        "SELECT batch_id, block_bytes, block FROM profiles WHERE first_subject <= ? ORDER BY first_subject DESC LIMIT 1",
        (subject_id,),
    ).fetchone()
    if row is None:
        return None
    found = _read_block(row[1], row[2]).filter(pl.col("subject_id") == subject_id)
    if found.height == 0:
        return None
    text = found.select(serving_json_expr(found.columns)).item()
    profile = {"subject_id": subject_id, "subject_type": found["subject_type"][0], "batch_id": row[0], **json.loads(text)}
    for key in ("by_category", "by_department"):
        profile[key] = [{"key": k, **dict(zip(BREAKDOWN_FIELDS, v))} for k, v in profile.get(key, {}).items()]
    if not include_sensitive:
        for key in PERSON_SENSITIVE_FIELDS:
            profile.pop(key, None)
    return profile
