"""The event log stays a bounded number of files however many small batches the API appends, and merging
them never loses or doubles an event: not for a reader that listed files before the merge, not after a
writer died half-way through one."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl

from data import eventlog
from data.eventlog import append_events, live_files, month_dir, scan_events, tidy, writer_lock


def _batch(start: int, n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "event_id": [f"e{k}" for k in range(start, start + n)],
            "subject_id": "P1",
            "item_id": "I1",
            "action": "view",
            "ts": [datetime(2026, 10, 1 + k % 28, tzinfo=timezone.utc) for k in range(start, start + n)],
            "channel": "app",
        }
    )


def _stored_once(events_dir, n: int) -> None:
    ids = scan_events(events_dir).select("event_id").collect()["event_id"]
    assert ids.len() == n and ids.n_unique() == n


def test_many_small_posts_keep_the_file_count_bounded_and_ids_unique(tmp_path):
    events_dir = tmp_path / "events"
    posts, per_post = 3 * eventlog.COMPACT_AT + 5, 4
    most = 0
    for k in range(posts):
        assert append_events(events_dir, _batch(k * per_post, per_post), ingest_id=k + 1) == (per_post, 0)
        most = max(most, len(live_files(month_dir(events_dir, 202610))))
    assert most <= 2 * eventlog.COMPACT_AT  # 16 posts' files and up to 16 merges of 17, at this size
    _stored_once(events_dir, posts * per_post)

    # Every batch again, and a mix of old and new ids: only the new ones are stored.
    for k in range(posts):
        assert append_events(events_dir, _batch(k * per_post, per_post), ingest_id=1000 + k) == (0, per_post)
    assert append_events(events_dir, _batch(posts * per_post - 2, 4), ingest_id=2000) == (2, 2)
    _stored_once(events_dir, posts * per_post + 2)

    # Merge sources stay on disk for readers that listed them; past the grace period they go.
    part = month_dir(events_dir, 202610)
    assert len(list(part.glob("*.parquet"))) > len(live_files(part))
    with writer_lock(events_dir):
        tidy(part, grace_s=0)
    assert len(list(part.glob("*.parquet"))) == len(live_files(part)) <= 2 * eventlog.COMPACT_AT
    assert len(list(part.glob(f"*.h{eventlog.HASH_TAG}"))) == len(live_files(part))
    _stored_once(events_dir, posts * per_post + 2)


def test_a_reader_that_listed_files_before_a_merge_reads_each_event_once(tmp_path):
    events_dir = tmp_path / "events"
    for k in range(eventlog.COMPACT_AT):
        append_events(events_dir, _batch(k * 3, 3), ingest_id=k + 1)
    before = scan_events(events_dir)  # lists the files now, reads them later
    append_events(events_dir, _batch(999, 3), ingest_id=99)  # the 17th small file: they are merged
    part = month_dir(events_dir, 202610)
    assert len(live_files(part)) == 1
    with writer_lock(events_dir):
        tidy(part)  # within the grace period: the sources stay
    assert before.select("event_id").collect()["event_id"].n_unique() == eventlog.COMPACT_AT * 3
    _stored_once(events_dir, eventlog.COMPACT_AT * 3 + 3)


def test_a_merge_cut_short_neither_loses_nor_doubles_events(tmp_path):
    events_dir = tmp_path / "events"
    for k in range(eventlog.COMPACT_AT + 1):
        append_events(events_dir, _batch(k * 2, 2), ingest_id=k + 1)
    part = month_dir(events_dir, 202610)
    (merged,) = live_files(part)
    sources = sorted(p for p in part.glob("api-*.parquet") if p != merged)
    n = (eventlog.COMPACT_AT + 1) * 2

    # Died after writing the merged file aside, before renaming it: the sources are what counts.
    merged_aside = merged.with_name(merged.name + eventlog.TMP_SUFFIX)
    merged.rename(merged_aside)
    assert len(live_files(part)) == len(sources)
    _stored_once(events_dir, n)
    # Writers carry on; resent ids are still recognised, and the next merge clears the leftover.
    assert append_events(events_dir, _batch(0, 4), ingest_id=500) == (0, 4)
    assert append_events(events_dir, _batch(n, 2), ingest_id=501) == (2, 0)
    assert not merged_aside.exists() and len(live_files(part)) == 2
    _stored_once(events_dir, n + 2)

    # Died after a merge's rename, before any source was deleted (the state during the grace period
    # too): the merged file's name alone hides its sources.
    assert len(list(part.glob("api-*.parquet"))) > len(live_files(part))
    _stored_once(events_dir, n + 2)


def test_a_file_without_its_id_index_is_still_checked_exactly(tmp_path):
    """A log written before id indexes existed (or by another Polars version) is read in full once."""
    events_dir = tmp_path / "events"
    append_events(events_dir, _batch(0, 5), ingest_id=1)
    part = month_dir(events_dir, 202610)
    for index in part.glob("*.h*"):
        index.unlink()
    assert append_events(events_dir, _batch(3, 5), ingest_id=2) == (3, 2)
    assert len(list(part.glob(f"*.h{eventlog.HASH_TAG}"))) == 2
    _stored_once(events_dir, 8)
