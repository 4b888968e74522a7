"""The append-only interaction log: Parquet files partitioned by month under ``HOME/events``.

Layout: ``HOME/events/month=YYYY-MM/<name>.parquet``, every file with exactly :data:`EVENT_SCHEMA`, and
beside each one its *id index* ``<name>.h<tag>``: the sorted 64-bit hashes of its event_ids (8 bytes
an event beside the ~14 of the Parquet file). Ingest writes ``part-<ingest_id>-...`` files; the API
writes ``api-<lo>-<hi>.parquet`` files, numbered per month.

Uniqueness of ``event_id`` across processes. Every writer publishes files only while holding
:func:`writer_lock` (an ``fcntl`` lock on ``events/.writer.lock``, so it holds across processes and threads)
and checks the ids it publishes against what is visible at that moment:

- the API (:func:`append_events`) takes the lock around check + write of each batch; it waits for it at
  most ``lock_timeout`` seconds and then raises :class:`EventLogBusy` (HTTP 503 with ``Retry-After``);
- ingest streams and checks a whole export file without it (under :func:`ingest_lock`, one ingest at a
  time), writing ``.pending`` files readers never see, then takes the writer lock only to re-check its
  rows against files published since it looked, store its quarantine and rename its files into place:
  the lock is held for that commit (no reading of the export, no rewriting of files but those holding
  ids the API published meanwhile), never for the whole file, so API posts go on during a nightly ingest.

The duplicate check costs O(files in the month x log n) per event, not a scan of the month: each file's
id index is searched (a memory-mapped sorted array), and only a hash hit reads that file's event_ids to
confirm it exactly. The indexes are keyed by a tag of the hash function (Polars' hash is stable within a
version only): a file whose index is missing or has another tag is read in full and re-indexed.

Compaction keeps the number of API files per month bounded: after an append, when the newest
:data:`COMPACT_AT` + 1 API files of a month share a level (log_16 of the posts each holds), they are merged
into one ``api-<lo>-<hi>`` file of the next level: at most :data:`COMPACT_AT` files per level. The name is
the commit: a file whose range another file's range strictly contains is a superseded source,
which readers skip (:func:`live_files`), so a crash at any point neither loses nor doubles an event.
Superseded sources are deleted only :data:`SUPERSEDED_GRACE_S` after the merge, so a reader that listed
files before the swap still finds every file it listed.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from data.errors import YiwangError

ACTIONS = ("view", "click", "favorite", "consult", "apply", "complete")
CHANNELS = ("web", "app", "window", "kiosk")

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "subject_id": pl.String(),
    "item_id": pl.String(),
    "action": pl.String(),
    "ts": pl.Datetime("us", "UTC"),
    "channel": pl.String(),
    "ingest_id": pl.Int64(),
}


# Files being written by an ingest that has not finished: invisible to readers, renamed into place by
# that ingest, deleted by the next one if it died first.
PENDING_SUFFIX = ".pending"
# A file (or id index) being written by the holder of the writer lock; any found while holding it are
# leftovers of a writer that died.
TMP_SUFFIX = ".tmp"
# LZ4: about a third less CPU than zstd to write and half to read back, for ~1.6x the bytes (~14 B/event).
COMPRESSION = "lz4"
ROW_GROUP_ROWS = 1 << 20
# Dictionary pages only where values repeat (event_id is unique: a dictionary there is wasted work), and
# min/max statistics only where scans filter.
_DICTIONARY_COLUMNS = ["subject_id", "item_id", "action", "channel"]
_STATISTICS_COLUMNS = ["ts", "ingest_id"]

# Compaction, by levels: a merged file's level is log_16 of how many API posts it holds (a post's file is
# level 0). When the newest COMPACT_AT + 1 API files of a month share a level they become one file of the
# next level, so a month holds at most COMPACT_AT files per level (levels grow as log_16 of the posts) and
# an event is rewritten once per level, never on every merge.
COMPACT_AT = 16
# How long a merged file's sources stay on disk after the merge, for readers that listed them before.
SUPERSEDED_GRACE_S = 15 * 60
# How long an API post waits for the writer lock before answering 503 (an ingest holds it only to commit).
API_LOCK_TIMEOUT_S = 10.0
RETRY_AFTER_S = 2

_API_FILE = re.compile(r"^api-(\d{9})-(\d{9})\.parquet$")
_ID_INDEX = re.compile(r"^(?P<stem>.+)\.h(?P<tag>[0-9a-f]{8})$")


class EventLogBusy(YiwangError):
    """Another writer (an ingest committing, or a compaction) held the event log longer than the caller
    would wait; nothing was stored, and sending the same batch again later is safe."""

    exit_code = 5
    http_status = 503
    code = "unavailable"


def event_id_hash(ids: pl.Series) -> pl.Series:
    """The 64-bit hash the id indexes hold (ingest computes the same with ``pl.col("event_id").hash()``)."""
    return ids.hash(seed=0)


# Polars documents its hash as stable within a version only: indexes are named after the hash of a fixed
# probe, so after an upgrade that changes it they are no longer found and are rebuilt from the files.
HASH_TAG = f"{event_id_hash(pl.Series(['yiwang.event_id.probe']))[0] & 0xFFFFFFFF:08x}"


def write_event_file(df: pl.DataFrame, path: Path) -> None:
    """Write one event-log file (``df`` in :data:`EVENT_SCHEMA` order and types). Through pyarrow:
    with per-column dictionary and statistics choices it writes a quarter faster than Polars' writer."""
    pq.write_table(
        df.to_arrow(compat_level=pl.CompatLevel.oldest()),
        path,
        compression=COMPRESSION,
        use_dictionary=_DICTIONARY_COLUMNS,
        write_statistics=_STATISTICS_COLUMNS,
        row_group_size=ROW_GROUP_ROWS,
    )


def id_index_path(data_file: Path) -> Path:
    """Where the id index of the event file ``data_file`` (its final ``.parquet`` name) lives."""
    return data_file.with_name(data_file.name.removesuffix(".parquet") + f".h{HASH_TAG}")


def write_id_index(hashes: np.ndarray, path: Path) -> None:
    """The sorted hashes as raw little-endian uint64 (a superset of the file's ids is harmless: a hit
    is always confirmed against the file itself)."""
    np.sort(np.asarray(hashes, dtype="<u8")).tofile(path)


def _read_id_index(data_file: Path) -> np.ndarray | None:
    path = id_index_path(data_file)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size == 0:
        return np.empty(0, dtype="<u8")
    # Memory-mapped: a binary search touches a few pages of a big ingest file's index, not all of it.
    return np.memmap(path, dtype="<u8", mode="r") if size > (1 << 20) else np.fromfile(path, dtype="<u8")


def month_dir(events_dir: Path, month: int) -> Path:
    """The partition folder of ``month`` given as the integer year*100+month."""
    return Path(events_dir) / f"month={month // 100:04d}-{month % 100:02d}"


@contextmanager
def _flock(path: Path, timeout: float | None):
    with open(path, "a") as f:
        if timeout is None:
            fcntl.flock(f, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise EventLogBusy(
                            f"the event log is busy (another writer held it for over {timeout:g} s); "
                            f"nothing was stored, send the batch again in {RETRY_AFTER_S} s"
                        ) from None
                    time.sleep(0.005)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def writer_lock(events_dir: Path, timeout: float | None = None):
    """Exclusive right to publish event files: every writer, in every process, checks event_ids against
    the visible files and publishes its own while holding it, so an id is never published twice. It is
    an ``fcntl`` lock on a fresh open file, so threads of one process exclude each other too, and the
    kernel drops it when its process dies (``.tmp`` files found while holding it are leftovers).
    ``timeout`` (seconds, None = wait as long as it takes) bounds the wait: :class:`EventLogBusy`."""
    events_dir = Path(events_dir)
    events_dir.mkdir(parents=True, exist_ok=True)
    with _flock(events_dir / ".writer.lock", timeout):
        yield


def remove_dead_writer_temps(conn, home: Path) -> list[Path]:
    """Delete the ``.tmp`` files (event files, id indexes) left in ``HOME/events`` by writers that died, if the
    writer lock is free right now (found while holding it, they are leftovers; see :func:`writer_lock`). When a
    live writer holds it, nothing is touched: a later open of the store (or a compaction's :func:`tidy`) clears
    them."""
    events_dir = Path(home) / "events"
    lock = events_dir / ".writer.lock"
    if not lock.exists():
        return []
    removed = []
    try:
        with _flock(lock, 0):
            for tmp in [*events_dir.glob(f"month=*/*{TMP_SUFFIX}"), *events_dir.glob(f"*{TMP_SUFFIX}")]:
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    except EventLogBusy:
        return []
    return removed


@contextmanager
def ingest_lock(events_dir: Path):
    """One bulk ingest at a time. Only ingests write ``.pending`` files, so any found while holding this
    are leftovers of a crashed ingest and are deleted. Held for a whole export file; it does not block
    API appends (they take :func:`writer_lock` only)."""
    events_dir = Path(events_dir)
    events_dir.mkdir(parents=True, exist_ok=True)
    with _flock(events_dir / ".ingest.lock", None):
        for pattern in (f"month=*/*{PENDING_SUFFIX}", f"*{PENDING_SUFFIX}"):
            for stale in events_dir.glob(pattern):
                stale.unlink(missing_ok=True)
        yield


def derived_event_id() -> pl.Expr:
    """A deterministic id for events that arrive without one, so re-ingesting them adds nothing."""
    return pl.concat_str(
        [
            pl.lit("d:"),
            pl.col("subject_id"),
            pl.col("item_id"),
            pl.col("action"),
            pl.col("ts").dt.epoch("us").cast(pl.String),
        ],
        separator="|",
    )


@lru_cache(maxsize=1 << 16)  # every append parses its month's listing; names never change meaning
def _api_range(name: str) -> tuple[int, int] | None:
    m = _API_FILE.match(name)
    return (int(m[1]), int(m[2])) if m else None


def _superseded(names: list[str]) -> dict[str, str]:
    """API files whose range another listed API file's range contains, each with that file (the merge
    holding its events). API file ranges are unique, so containing means strictly containing."""
    ranged = sorted(((r, n) for n in names if (r := _api_range(n))), key=lambda x: (x[0][0], -x[0][1]))
    out: dict[str, str] = {}
    widest: tuple[int, str] | None = None  # (hi, name) of the range reaching furthest so far
    for (_, hi), name in ranged:
        if widest is not None and widest[0] >= hi:
            out[name] = widest[1]
        else:
            widest = (hi, name)
    return out


def _live_names(names: list[str]) -> list[str]:
    parquet = [n for n in names if n.endswith(".parquet")]
    gone = _superseded(parquet)
    return sorted(n for n in parquet if n not in gone)


def live_files(part_dir: Path) -> list[Path]:
    """The event files of one month partition a reader should read: every ``.parquet`` file but merge
    sources still on disk (superseded by the merged file listed with them)."""
    try:
        names = os.listdir(part_dir)
    except FileNotFoundError:
        return []
    return [Path(part_dir) / n for n in _live_names(names)]


def _files(events_dir: Path) -> list[Path]:
    return [f for d in sorted(Path(events_dir).glob("month=*")) for f in live_files(d)]


def scan_events(events_dir: Path) -> pl.LazyFrame:
    """All stored events as a LazyFrame with :data:`EVENT_SCHEMA` (empty, typed, when there are none)."""
    files = _files(events_dir)
    if not files:
        return pl.LazyFrame(schema=EVENT_SCHEMA)
    return pl.scan_parquet(files, schema=EVENT_SCHEMA, hive_partitioning=False)


def _file_ids(path: Path) -> pl.Series:
    return pl.read_parquet(path, columns=["event_id"])["event_id"]


def stored_mask(
    part_dir: Path, ids: pl.Series, hashes: pl.Series | None = None, files: list[Path] | None = None
) -> pl.Series:
    """Per id: is it in a live file of the partition (``files``, default: listed now)? Exact: a hash hit
    is confirmed against the file. Call under :func:`writer_lock`: a file with no usable id index gets
    one written here."""
    hashes = event_id_hash(ids) if hashes is None else hashes
    h = hashes.to_numpy()
    present = np.zeros(ids.len(), dtype=bool)
    for path in live_files(part_dir) if files is None else files:
        index = _read_id_index(path)
        if index is None:
            stored = _file_ids(path)
            present |= ids.is_in(stored.implode()).to_numpy()
            _publish_id_index(path, event_id_hash(stored).to_numpy())
            continue
        if index.size == 0:
            continue
        pos = np.minimum(np.searchsorted(index, h), index.size - 1)
        maybe = (index[pos] == h) & ~present
        if maybe.any():
            idx = np.flatnonzero(maybe)
            exact = ids.gather(idx).is_in(_file_ids(path).implode()).to_numpy()
            present[idx[exact]] = True
    return pl.Series("stored", present)


def _publish_id_index(data_file: Path, hashes: np.ndarray) -> None:
    final = id_index_path(data_file)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    write_id_index(hashes, tmp)
    os.replace(tmp, final)


def _publish(part_dir: Path, name: str, frame: pl.DataFrame, hashes: np.ndarray) -> None:
    """Make ``frame`` visible as ``part_dir/name``: written aside, its id index first, then renamed."""
    final = part_dir / name
    tmp = final.with_name(final.name + TMP_SUFFIX)
    write_event_file(frame, tmp)
    _publish_id_index(final, hashes)
    os.replace(tmp, final)


def _next_api_number(names: list[str]) -> int:
    """One past the highest number of any API file in the partition, superseded ones included (so a
    number is never reused while a merge naming it exists)."""
    return 1 + max((r[1] for n in names if (r := _api_range(n))), default=0)


def _level(name: str) -> int:
    lo, hi = _api_range(name)
    width, level = hi - lo + 1, 0
    while width >= COMPACT_AT:
        width //= COMPACT_AT
        level += 1
    return level


def compact(part_dir: Path, names: list[str] | None = None) -> list[Path]:
    """Merge the partition's newest API files while more than :data:`COMPACT_AT` of them in a row share a
    level (cascading up the levels). ``names``: the partition's directory listing, if at hand. Call under
    :func:`writer_lock`. Returns the merged files written."""
    names = os.listdir(part_dir) if names is None else list(names)
    merged: list[Path] = []
    while True:
        api = sorted((n for n in _live_names(names) if _api_range(n)), key=_api_range)
        if len(api) <= COMPACT_AT:
            return merged
        level = _level(api[-1])
        run = api[-(COMPACT_AT + 1):]
        if any(_level(n) != level for n in run):
            return merged
        data = pl.concat([pl.read_parquet(part_dir / n) for n in run], how="vertical")
        name = f"api-{_api_range(run[0])[0]:09d}-{_api_range(run[-1])[1]:09d}.parquet"
        _publish(part_dir, name, data, event_id_hash(data["event_id"]).to_numpy())
        names.append(name)
        merged.append(part_dir / name)


def tidy(part_dir: Path, grace_s: float = SUPERSEDED_GRACE_S) -> None:
    """Delete what no reader needs any more: leftovers of writers that died (``.tmp``), merge sources
    superseded for more than ``grace_s`` seconds, and id indexes of missing files or of another hash
    function. Call under :func:`writer_lock`."""
    part_dir = Path(part_dir)
    try:
        names = os.listdir(part_dir)
    except FileNotFoundError:
        return
    now = time.time()
    data = {n for n in names if n.endswith(".parquet")}
    old_enough: dict[str, bool] = {}
    for name, merged in _superseded(sorted(data)).items():
        if merged not in old_enough:
            try:
                old_enough[merged] = now - (part_dir / merged).stat().st_mtime >= grace_s
            except FileNotFoundError:
                old_enough[merged] = False
        if old_enough[merged]:
            (part_dir / name).unlink(missing_ok=True)
            data.discard(name)
    for name in names:
        if name.endswith(TMP_SUFFIX):
            (part_dir / name).unlink(missing_ok=True)
        elif (m := _ID_INDEX.match(name)) and (m["tag"] != HASH_TAG or f"{m['stem']}.parquet" not in data):
            (part_dir / name).unlink(missing_ok=True)


def append_events(
    events_dir: Path, events: pl.DataFrame, ingest_id: int, lock_timeout: float | None = None
) -> tuple[int, int]:
    """Store ``events`` (columns of :data:`EVENT_SCHEMA` but ``ingest_id``), skipping event_ids already
    stored or repeated in ``events``; returns ``(inserted, already_present)``.

    Check and write happen under :func:`writer_lock`, waited for at most ``lock_timeout`` seconds (None:
    as long as it takes) before :class:`EventLogBusy`, with nothing stored. Each month's new events become
    one ``api-N-N.parquet`` file, renamed into place whole; the month is then compacted if it needs it
    (and, after a merge, :func:`tidy`-ed).
    """
    if events.height == 0:
        return 0, 0
    events = events.select(
        [pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items() if c != "ingest_id"]
    ).with_columns(
        pl.lit(ingest_id, dtype=pl.Int64).alias("ingest_id"),
        # An integer year*100+month: formatting every row's timestamp cost more than writing it.
        (pl.col("ts").dt.year() * 100 + pl.col("ts").dt.month()).alias("_month"),
    )
    unique = events.unique(subset="event_id", keep="first", maintain_order=True)
    inserted = 0
    with writer_lock(events_dir, timeout=lock_timeout):
        for (key,), part in unique.partition_by("_month", as_dict=True, maintain_order=True).items():
            part_dir = month_dir(events_dir, key)
            part_dir.mkdir(parents=True, exist_ok=True)
            names = os.listdir(part_dir)
            hashes = event_id_hash(part["event_id"])
            live = [part_dir / n for n in _live_names(names)]
            fresh = ~stored_mask(part_dir, part["event_id"], hashes, live)
            if not fresh.any():
                continue
            n = _next_api_number(names)
            name = f"api-{n:09d}-{n:09d}.parquet"
            _publish(part_dir, name, part.filter(fresh).drop("_month"), hashes.filter(fresh).to_numpy())
            inserted += int(fresh.sum())
            if compact(part_dir, [*names, name]):
                tidy(part_dir)  # after a merge only: clearing the directory costs a listing and a stat per source
    return inserted, events.height - inserted
