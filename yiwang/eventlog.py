"""The append-only interaction log: Parquet files partitioned by month under ``HOME/events``.

Layout: ``HOME/events/month=YYYY-MM/part-<ingest_id>-<n>.parquet``. Every file has exactly
:data:`EVENT_SCHEMA`. Batch jobs read it with :func:`scan_events` (a Polars LazyFrame); writers go
through :func:`append_events`, which never stores an ``event_id`` twice.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import polars as pl

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


def _files(events_dir: Path) -> list[Path]:
    return sorted(Path(events_dir).glob("month=*/*.parquet"))


def scan_events(events_dir: Path) -> pl.LazyFrame:
    """All stored events as a LazyFrame with :data:`EVENT_SCHEMA` (empty, typed, when there are none)."""
    files = _files(events_dir)
    if not files:
        return pl.LazyFrame(schema=EVENT_SCHEMA)
    return pl.scan_parquet(files, schema=EVENT_SCHEMA, hive_partitioning=False)


def append_events(events_dir: Path, events: pl.DataFrame, ingest_id: int) -> tuple[int, int]:
    """Store ``events`` (columns of :data:`EVENT_SCHEMA` but ``ingest_id``), skipping event_ids already stored.

    Returns ``(inserted, already_present)``. Each month partition is written to a temporary name and
    renamed into place, so a reader never sees a half-written file.
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
    inserted = already = 0
    keys = events["_month"].unique()
    parts = (
        [((keys[0],), events)]
        if keys.len() == 1
        else events.partition_by("_month", as_dict=True, maintain_order=True).items()
    )
    for (key,), part in parts:
        part_dir = Path(events_dir) / f"month={key // 100:04d}-{key % 100:02d}"
        existing = sorted(part_dir.glob("*.parquet"))
        fresh = part
        if existing:
            seen = pl.scan_parquet(existing).select("event_id")
            fresh = part.lazy().join(seen, on="event_id", how="anti").collect()
        already += part.height - fresh.height
        if fresh.height == 0:
            continue
        part_dir.mkdir(parents=True, exist_ok=True)
        final = part_dir / f"part-{ingest_id:06d}-{uuid.uuid4().hex[:12]}.parquet"
        tmp = final.with_suffix(".parquet.tmp")
        fresh.drop("_month").write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, final)
        inserted += fresh.height
    return inserted, already
