"""The feed endpoint's fast path: the served, personalised feed of one subject as JSON bytes.

Most reads are the common case: a subject with a personalised feed in the served version. For those the
response is assembled from two indexed reads, with each item's stored ``reasons_json`` spliced in as the
recommender's publisher wrote it, instead of being parsed into objects, validated and serialised again
(that round trip cost more than the rest of the request). Everything else (no feed published,
personalisation switched off, nothing left for the subject) returns ``None`` and goes through
``recommender.feeds.read_feed``, the one authority on feed semantics; tests/test_api_feed.py checks that the
two agree on every case the fast path serves.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from json.encoder import encode_basestring as _str  # C-accelerated; json.dumps per field cost more than SQL

# The subject's switch and dismissals, and the served version, in one statement.
_STATE_SQL = """
SELECT (SELECT personalisation FROM subject_preferences WHERE subject_id = ?1),
       (SELECT group_concat(item_id, char(31)) FROM dismissals WHERE subject_id = ?1),
       (SELECT value FROM serving_pointers WHERE name = 'feed_version')
"""
_ITEMS_SQL = "SELECT item_id, score, reasons_json FROM feed_items WHERE version = ? AND subject_id = ? ORDER BY rank"
_META_SQL = "SELECT model_version, as_of, generated_at FROM feed_versions WHERE version = ?"


class ItemNames:
    """Catalogue item names, reloaded at most every ``ttl_s`` seconds (the catalogue changes at ingest).

    A name edited by an ingest shows within ``ttl_s``; an item added since the last load is looked up at once.
    """

    def __init__(self, ttl_s: float = 60.0):
        self.ttl_s = ttl_s
        self._fragments: dict[str, str] = {}
        self._loaded_at = float("-inf")
        self._lock = threading.Lock()

    def fragments(self, conn: sqlite3.Connection, item_ids: list[str]) -> dict[str, str]:
        """``item_id`` -> the pre-encoded ``"item_id":…,"name":…`` pair, for every id asked."""
        if time.monotonic() - self._loaded_at > self.ttl_s:
            rows = conn.execute("SELECT item_id, name FROM catalog").fetchall()
            with self._lock:
                self._fragments = {i: _pair(i, n) for i, n in rows}
                self._loaded_at = time.monotonic()
        known = self._fragments
        missing = [i for i in item_ids if i not in known]
        if not missing:
            return known
        marks = ",".join("?" * len(missing))
        found = dict(conn.execute(f"SELECT item_id, name FROM catalog WHERE item_id IN ({marks})", missing).fetchall())
        # An item missing from the catalogue shows its id as its name, as read_feed does.
        return {**known, **{i: _pair(i, found.get(i, i)) for i in missing}}


def _pair(item_id: str, name: str | None) -> str:
    return f'"item_id":{_str(item_id)},"name":{_str(name if name is not None else item_id)}'


class FeedVersions:
    """Model version, as-of and generation time per feed version: fixed once a version is written."""

    def __init__(self) -> None:
        self._meta: dict[int, tuple[str, str, str]] = {}

    def head(self, conn: sqlite3.Connection, version: int) -> tuple[str, str, str] | None:
        meta = self._meta.get(version)
        if meta is None:
            row = conn.execute(_META_SQL, (version,)).fetchone()
            if row is None:
                return None
            meta = self._meta[version] = tuple(row)
        return meta


def personalised_feed_json(
    conn: sqlite3.Connection, subject_id: str, limit: int, notice: tuple[str, str], names: ItemNames,
    versions: FeedVersions,
) -> bytes | None:
    """The response body for a personalised feed, or ``None`` when ``read_feed`` must decide."""
    personalisation, dismissed, pointer = conn.execute(_STATE_SQL, (subject_id,)).fetchone()
    if pointer is None or personalisation == 0:
        return None
    version = int(pointer)
    rows = conn.execute(_ITEMS_SQL, (version, subject_id)).fetchall()
    if dismissed:
        gone = set(dismissed.split("\x1f"))
        rows = [r for r in rows if r[0] not in gone]
    rows = rows[:limit]
    meta = versions.head(conn, version) if rows else None
    if meta is None:
        # Nothing for this subject, or the version was pruned between the two reads: read_feed decides afresh.
        return None
    pairs = names.fragments(conn, [r[0] for r in rows])
    # Ranks are renumbered after dismissals, as read_feed does.
    items = ",".join(
        f'{{"rank":{i},{pairs[item_id]},"score":{float(score)!r},"reasons":{reasons}}}'
        for i, (item_id, score, reasons) in enumerate(rows, start=1)
    )
    model_version, as_of, generated_at = meta
    head = (
        f'{{"subject_id":{_str(subject_id)},"personalised":true,'
        f'"notice_zh":{_str(notice[0])},"notice_en":{_str(notice[1])},'
        f'"version":{version},"model_version":{_str(model_version)},"as_of":{_str(as_of)},'
        f'"generated_at":{_str(generated_at)},"items":['
    )
    return (head + items + "]}").encode()
