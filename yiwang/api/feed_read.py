"""The feed endpoint's fast path: the served, personalised feed of one subject as JSON bytes.

Most reads are the common case: a subject with a personalised feed in the served version. For those the
response is assembled from one indexed read of the subject's stored feed row, with each item's reasons
spliced in as the recommender's publisher stored them (cached per version: most reason lists are shared),
instead of being parsed into objects, validated and serialised again (that round trip cost more than the rest
of the request). Everything else (no feed published,
personalisation switched off, nothing left for the subject) returns ``None`` and goes through
``recommender.feeds.read_feed``, the one authority on feed semantics; tests/test_api_feed.py checks that the
two agree on every case the fast path serves.
"""

from __future__ import annotations

import json
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
_ITEMS_SQL = "SELECT items FROM feed_rows WHERE version = ? AND subject_id = ?"
_REASONS_SQL = "SELECT rid, reasons_json FROM feed_reasons WHERE version = ? AND rid IN ({})"
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
    """Model version, as-of and generation time per feed version, and its reason lists: fixed once written."""

    def __init__(self, max_reasons: int = 200_000) -> None:
        self._meta: dict[int, tuple[str, str, str]] = {}
        self._reasons: dict[int, dict[int, str]] = {}
        self._max_reasons = max_reasons

    def reasons(self, conn: sqlite3.Connection, version: int, rids: set[int]) -> dict[int, str] | None:
        """rid -> reasons JSON of ``version`` for every id asked, or ``None`` if some are gone (pruned)."""
        known = self._reasons.get(version)
        if known is None:
            # Keep the served version's texts only: once a new version is served the old ones are dead weight.
            self._reasons = {version: {}}
            known = self._reasons[version]
        out = {r: known[r] for r in rids if r in known}
        if len(out) < len(rids):
            missing = [r for r in rids if r not in out]
            found = dict(conn.execute(_REASONS_SQL.format(",".join("?" * len(missing))), (version, *missing)).fetchall())
            if len(found) < len(missing):
                return None
            if len(known) + len(found) > self._max_reasons:
                known.clear()
            known.update(found)
            out.update(found)
        return out

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
    row = conn.execute(_ITEMS_SQL, (version, subject_id)).fetchone()
    if row is None:
        return None  # nothing for this subject (or the version was pruned): read_feed decides
    rows = json.loads(row[0])
    if dismissed:
        gone = set(dismissed.split("\x1f"))
        rows = [e for e in rows if e["i"] not in gone]
    rows = rows[:limit]
    meta = versions.head(conn, version) if rows else None
    texts = versions.reasons(conn, version, {e["r"] for e in rows}) if meta is not None else None
    if meta is None or texts is None:
        # Nothing left for this subject, or the version was pruned between the reads: read_feed decides afresh.
        return None
    pairs = names.fragments(conn, [e["i"] for e in rows])
    # Ranks are renumbered after dismissals, as read_feed does.
    items = ",".join(
        f'{{"rank":{i},{pairs[e["i"]]},"score":{float(e["s"])!r},"reasons":{texts[e["r"]]}}}'
        for i, e in enumerate(rows, start=1)
    )
    model_version, as_of, generated_at = meta
    head = (
        f'{{"subject_id":{_str(subject_id)},"personalised":true,'
        f'"notice_zh":{_str(notice[0])},"notice_en":{_str(notice[1])},'
        f'"version":{version},"model_version":{_str(model_version)},"as_of":{_str(as_of)},'
        f'"generated_at":{_str(generated_at)},"items":['
    )
    return (head + items + "]}").encode()
