"""Published feeds: versioned, flipped atomically, the last K kept, rollback, and the read path.

Publishing writes one ``feed_rows`` row per subject (its ranked items as compact JSON, each item naming its
reasons by id in ``feed_reasons``, where a version stores each distinct reason list once) while the version's
status is ``building``; one transaction then marks it ``published``, retires the previous one and moves
``serving_pointers['feed_version']``. Readers follow the pointer, so they see either the whole old feed or the
whole new one, never a mix.

Each version also holds the non-personalised lists (subject ids :data:`POPULAR_PREFIX` + audience): what a
citizen who switched personalisation off is shown, after eligibility, dismissals and completed once-only items
are taken out at read time (PIPL Art. 24; algorithm rules Art. 17: the switch takes effect at once).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from json.encoder import encode_basestring as _str  # C-accelerated; json.dumps per field cost more than SQL
from typing import Iterable

import polars as pl

from data.citizen import dismissed_items, feed_state, personalisation_on
from data.errors import NotFound, StateError
from data.facts import age_on, district_of_department
from data.registry import catalog_item_rules, catalog_names, registered_subject
from data.store import RunLock, dead_run

POINTER = "feed_version"
POPULAR_PREFIX = "~popular:"
NOTICE = {
    True: ("以下推荐由算法根据您的档案、标签、证照和办事记录生成；您可以在设置中关闭个性化推荐或删除标签。",
           "These recommendations are chosen by an algorithm from your profile, tags, licences and past use of "
           "services; you can switch personalisation off or delete tags in your settings."),
    False: ("您已关闭个性化推荐：以下为您可以办理的全市热门事项，未使用您的个人特征或办事记录排序。",
            "Personalisation is off: these are popular services you are eligible for, not ranked by your "
            "personal characteristics or history."),
    None: ("暂无为您生成的个性化推荐：以下为您可以办理的全市热门事项。",
           "No personalised feed has been generated for you yet: these are popular services you are eligible for."),
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def current_version(conn: sqlite3.Connection) -> int | None:
    value = read_pointer(conn, POINTER)
    return int(value) if value is not None else None


def read_pointer(conn: sqlite3.Connection, name: str) -> str | None:
    """The value of a serving pointer (``feed_version`` here, ``model_version`` for the trainer), if set."""
    row = conn.execute("SELECT value FROM serving_pointers WHERE name = ?", (name,)).fetchone()
    return row[0] if row else None


def set_pointer(conn: sqlite3.Connection, name: str, value: str) -> None:
    """Point ``name`` at ``value`` (committed at once)."""
    conn.execute(
        "INSERT INTO serving_pointers (name, value, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (name, value, _now()),
    )
    conn.commit()


@dataclass
class PublishSummary:
    version: int
    model_version: str
    as_of: str
    subjects: int
    rows: int
    removed_versions: list[int] = field(default_factory=list)


def publish(db, settings, chunks: Iterable[pl.DataFrame], model_version: str, as_of: date) -> PublishSummary:
    """Write a new feed version from frames (subject_id, rank, item_id, score, reasons_json) and flip to it.

    If writing fails the half-built version is removed and the served version is untouched.
    """
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM feed_versions").fetchone()[0]
        conn.execute(
            "INSERT INTO feed_versions (version, model_version, as_of, generated_at, status, subjects) "
            "VALUES (?, ?, ?, ?, 'building', 0)",
            (version, model_version, as_of.isoformat(), _now()),
        )
        # Held until the version is published or dropped: a 'building' version whose lock is free was left by a
        # dead process and is removed on the next open of the store (drop_dead_builds).
        build_lock = RunLock(settings.home, f"feed-build-{version}").acquire()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    rows = 0
    subjects = 0
    rid_of: dict[str, int] = {}  # reasons_json -> its id in this version's feed_reasons
    # Rows of a building version are invisible to readers until the flip, and a crash mid-way is cleaned up
    # by prune(): durability of each batch is not needed, only of the flip (which runs at the usual level).
    conn.execute("PRAGMA synchronous=OFF")
    try:
        for chunk in chunks:
            if chunk.height == 0:
                continue
            reasons_rows, feed_rows = _compact(chunk, rid_of)
            conn.execute("BEGIN")
            if reasons_rows:
                conn.executemany("INSERT INTO feed_reasons (version, rid, reasons_json) VALUES (?, ?, ?)",
                                 ((version, rid, text) for rid, text in reasons_rows))
            conn.executemany("INSERT INTO feed_rows (version, subject_id, items) VALUES (?, ?, ?)",
                             zip(itertools.repeat(version), *feed_rows))
            conn.execute("COMMIT")
            rows += chunk.height
            subjects += sum(1 for sid in feed_rows[0] if not sid.startswith(POPULAR_PREFIX))
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.execute("PRAGMA synchronous=NORMAL")
        _drop_version(conn, version)
        build_lock.release()
        raise
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE feed_versions SET status = 'retired' WHERE status = 'published'")
        conn.execute("UPDATE feed_versions SET status = 'published', subjects = ? WHERE version = ?", (subjects, version))
        conn.execute(
            "INSERT INTO serving_pointers (name, value, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            (POINTER, str(version), _now()),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        _drop_version(conn, version)
        build_lock.release()
        raise
    build_lock.release()
    removed = prune(conn, settings.feed_versions_kept)
    return PublishSummary(version, model_version, as_of.isoformat(), subjects, rows, removed)


def _compact(chunk: pl.DataFrame, rid_of: dict[str, int]) -> tuple[list[tuple[int, str]], tuple[list, list]]:
    """One chunk of (subject_id, rank, item_id, score, reasons_json) rows as one compact row per subject.

    Returns the reason lists new to this version (rid, text) and (subject_ids, items JSON) in subject order; a
    subject's items are ``[{"i": item_id, "s": score, "r": rid}, ...]`` in rank order. ``rid_of`` grows.
    """
    c = chunk.select("subject_id", "rank", "item_id", "score", "reasons_json")
    new: list[tuple[int, str]] = []
    # In order of first use, so that a version's rids do not depend on hash order.
    distinct = c["reasons_json"].unique(maintain_order=True)
    for text in distinct.to_list():
        if text not in rid_of:
            rid_of[text] = len(rid_of)
            new.append((rid_of[text], text))
    ids = pl.DataFrame({"reasons_json": distinct, "r": [rid_of[t] for t in distinct.to_list()]},
                       schema={"reasons_json": pl.String, "r": pl.Int64})
    per_subject = (
        c.join(ids, on="reasons_json", how="left")
        .sort("subject_id", "rank")
        .select(
            "subject_id",
            pl.struct(pl.col("item_id").alias("i"), pl.col("score").cast(pl.Float64).round(6).alias("s"), "r")
            .struct.json_encode().alias("e"),
        )
        .group_by("subject_id", maintain_order=True)
        .agg(pl.concat_str([pl.lit("["), pl.col("e").str.join(","), pl.lit("]")]).first().alias("items"))
    )
    return new, (per_subject["subject_id"].to_list(), per_subject["items"].to_list())


def _drop_version(conn: sqlite3.Connection, version: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM feed_rows WHERE version = ?", (version,))
    conn.execute("DELETE FROM feed_reasons WHERE version = ?", (version,))
    conn.execute("DELETE FROM feed_items WHERE version = ?", (version,))
    conn.execute("DELETE FROM feed_versions WHERE version = ?", (version,))
    conn.execute("COMMIT")


def drop_dead_builds(conn: sqlite3.Connection, home) -> list[int]:
    """Mark versions left 'building' by a publishing process that died (its build lock is free) 'failed' and
    remove their rows. The version row stays as a tombstone until :func:`prune` (a newer version exists then),
    so its number, and the name of its lock, are never given to another build."""
    dropped = []
    for (version,) in conn.execute("SELECT version FROM feed_versions WHERE status = 'building'").fetchall():
        with dead_run(home, f"feed-build-{version}") as dead:
            if not dead:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                # The lock is also free once a run has finished: only a version still building is dropped.
                if conn.execute("SELECT 1 FROM feed_versions WHERE version = ? AND status = 'building'",
                                (version,)).fetchone():
                    for table in ("feed_rows", "feed_reasons", "feed_items"):
                        conn.execute(f"DELETE FROM {table} WHERE version = ?", (version,))
                    conn.execute("UPDATE feed_versions SET status = 'failed' WHERE version = ?", (version,))
                    dropped.append(version)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
    return dropped


def prune(conn: sqlite3.Connection, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` finished versions (never the served one) and stale half-built ones."""
    served = current_version(conn)
    done = [v for (v,) in conn.execute(
        "SELECT version FROM feed_versions WHERE status IN ('published', 'retired') ORDER BY version DESC")]
    kept = set(done[:keep]) | ({served} if served is not None else set())
    building = [v for (v,) in conn.execute("SELECT version FROM feed_versions WHERE status = 'building'")]
    failed = [v for (v,) in conn.execute("SELECT version FROM feed_versions WHERE status = 'failed'")]
    latest = max(done + building, default=0)
    # A half-built version older than the newest finished one is a crashed run, never a concurrent one.
    victims = [v for v in done if v not in kept] + [v for v in building + failed if v < latest]
    for v in victims:
        _drop_version(conn, v)
    return sorted(victims)


def rollback(db) -> dict:
    """Serve the previous kept version again; the current one is retired. Returns {from, to}."""
    conn = db.conn
    current = current_version(conn)
    if current is None:
        raise StateError("no feed is published yet: nothing to roll back (run `yiwang recommend`)")
    row = conn.execute(
        "SELECT MAX(version) FROM feed_versions WHERE version < ? AND status IN ('published', 'retired')", (current,)
    ).fetchone()
    if row is None or row[0] is None:
        raise StateError(f"feed version {current} is the oldest kept version: there is nothing to roll back to")
    previous = int(row[0])
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE feed_versions SET status = 'retired' WHERE version = ?", (current,))
        conn.execute("UPDATE feed_versions SET status = 'published' WHERE version = ?", (previous,))
        conn.execute("UPDATE serving_pointers SET value = ?, updated_at = ? WHERE name = ?", (str(previous), _now(), POINTER))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return {"from": current, "to": previous}


def list_versions(db) -> list[dict]:
    cur = db.conn.execute(
        "SELECT version, model_version, as_of, generated_at, status, subjects FROM feed_versions ORDER BY version DESC")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


# -- the read path ---------------------------------------------------------------------------------


@dataclass
class FeedItem:
    rank: int
    item_id: str
    name: str
    score: float
    reasons: list[dict]


@dataclass
class Feed:
    subject_id: str
    personalised: bool
    notice_zh: str
    notice_en: str
    version: int
    model_version: str
    as_of: str
    generated_at: str
    items: list[FeedItem]

    def to_dict(self) -> dict:
        return asdict(self)


def read_feed(db, settings, subject_id: str, limit: int | None = None) -> Feed:
    """The subject's feed from the served version, honouring the personalisation switch and dismissals now."""
    conn = db.conn
    limit = limit or settings.feed_size
    if limit <= 0:
        raise StateError(f"limit must be positive, got {limit}")
    # One read transaction: pointer, items and preferences come from the same snapshot of the store.
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        return _read_feed(conn, settings, subject_id, limit)
    finally:
        if own and conn.in_transaction:
            conn.execute("COMMIT")


def _read_feed(conn, settings, subject_id: str, limit: int) -> Feed:
    version = current_version(conn)
    if version is None:
        raise StateError("no feed is published yet: run `yiwang train` and `yiwang recommend`")
    meta = conn.execute(
        "SELECT model_version, as_of, generated_at FROM feed_versions WHERE version = ?", (version,)).fetchone()
    model_version, as_of, generated_at = meta
    subject = registered_subject(conn, subject_id)
    dismissed = dismissed_items(conn, subject_id)
    personalised: bool | None = personalisation_on(conn, subject_id)
    rows: list = []
    if personalised:
        rows = [r for r in stored_feed(conn, version, subject_id) if r[1] not in dismissed]
        if not rows:
            if subject is None:
                raise NotFound(f"subject {subject_id!r} is neither in the registries nor in the served feed")
            personalised = None  # nothing generated for this subject yet: fall back, and say so
    if not personalised:
        if subject is None:
            raise NotFound(f"subject {subject_id!r} is not in the registries")
        rows = _non_personalised(conn, settings, version, subject, date.fromisoformat(as_of), dismissed)
    names = catalog_names(conn, [r[1] for r in rows[:limit]])
    items = [
        FeedItem(rank=i + 1, item_id=r[1], name=names.get(r[1], r[1]), score=float(r[2]), reasons=json.loads(r[3]))
        for i, r in enumerate(rows[:limit])
    ]
    zh, en = NOTICE[personalised]
    return Feed(subject_id, bool(personalised), zh, en, version, model_version, as_of, generated_at, items)


def stored_feed(conn, version: int, subject_id: str) -> list[tuple[int, str, float, str]]:
    """(rank, item_id, score, reasons_json) of one subject in one version, as published (empty if none)."""
    row = conn.execute("SELECT items FROM feed_rows WHERE version = ? AND subject_id = ?",
                       (version, subject_id)).fetchone()
    if row is None:
        return []
    items = json.loads(row[0])
    texts = reason_texts(conn, version, {e["r"] for e in items})
    return [(rank, e["i"], e["s"], texts[e["r"]]) for rank, e in enumerate(items, start=1)]


def reason_texts(conn, version: int, rids) -> dict[int, str]:
    """rid -> the reasons JSON list stored with ``version``."""
    rids = sorted(rids)
    if not rids:
        return {}
    q = f"SELECT rid, reasons_json FROM feed_reasons WHERE version = ? AND rid IN ({','.join('?' * len(rids))})"
    return dict(conn.execute(q, (version, *rids)).fetchall())


def version_rows(conn, version: int) -> pl.DataFrame:
    """Every (subject_id, rank, item_id, score, reasons_json) row of a version (checks and tools; not for serving)."""
    feeds = pl.DataFrame(conn.execute("SELECT subject_id, items FROM feed_rows WHERE version = ?", (version,)).fetchall(),
                         schema={"subject_id": pl.String, "items": pl.String}, orient="row")
    texts = pl.DataFrame(conn.execute("SELECT rid, reasons_json FROM feed_reasons WHERE version = ?", (version,)).fetchall(),
                         schema={"r": pl.Int64, "reasons_json": pl.String}, orient="row")
    dtype = pl.List(pl.Struct({"i": pl.String, "s": pl.Float64, "r": pl.Int64}))
    return (
        feeds.with_columns(pl.col("items").str.json_decode(dtype))
        .with_columns(pl.int_ranges(1, pl.col("items").list.len() + 1).alias("rank"))
        .explode("items", "rank").unnest("items")
        .join(texts, on="r", how="left", maintain_order="left")
        .select("subject_id", pl.col("rank").cast(pl.Int64), pl.col("i").alias("item_id"), pl.col("s").alias("score"),
                "reasons_json")
    )


def _non_personalised(conn, settings, version: int, subject: dict, as_of: date, dismissed: set[str]) -> list:
    """The popular list of the subject's audience, minus ineligible, dismissed and completed once-only items.

    The subject's attributes and records are used here only to take out what they may not or need not use,
    never to order the list.
    """
    from recommender.filters import eligibility_expr, item_conditions, with_item_conditions
    from data.eventlog import scan_events

    popular = stored_feed(conn, version, POPULAR_PREFIX + subject["kind"])
    if not popular:
        return []
    ids = [r[1] for r in popular]
    rules = catalog_item_rules(conn, ids)
    # Inner join on the catalogue, in rank order: an item gone from the catalogue is not offered.
    rows = [r + rules[r[1]] for r in popular if r[1] in rules]
    if not rows:
        return []
    df = pl.DataFrame(rows, orient="row", schema={
        "rank": pl.Int64, "item_id": pl.String, "score": pl.Float64, "reasons_json": pl.String, "audience": pl.String,
        "min_age": pl.Int64, "max_age": pl.Int64, "local_hukou_only": pl.Int64, "industries": pl.String,
        "department": pl.String, "once_per_subject": pl.Int64,
    })
    age = age_on(date.fromisoformat(subject["birth_date"]), as_of) if subject["birth_date"] else None
    founded = subject.get("founded_on")
    enterprise_age = age_on(date.fromisoformat(founded), as_of) if founded else None
    # Not personalised: the subject's own events never make an own-interest-only item eligible here.
    df = with_item_conditions(df, item_conditions(settings.data_dir)).with_columns(
        pl.lit(enterprise_age, dtype=pl.Int32).alias("enterprise_age_years"),
        pl.lit(False).alias("own_interest"),
        pl.lit(subject["kind"]).alias("kind"), pl.lit(age, dtype=pl.Int32).alias("age"),
        pl.lit(subject["local_hukou"], dtype=pl.Boolean).alias("local_hukou"),
        pl.lit(subject["industry"], dtype=pl.String).alias("industry"),
        pl.lit(subject["district"], dtype=pl.String).alias("district"),
        (pl.col("local_hukou_only") == 1).alias("local_hukou_only"),
        pl.col("industries").fill_null("").str.split("|").list.filter(pl.element() != "").alias("industry_list"),
        district_of_department(pl.col("department")).alias("item_district"),
    ).filter(eligibility_expr() & ~pl.col("item_id").is_in(list(dismissed)))
    once = df.filter(pl.col("once_per_subject") == 1)["item_id"]
    if once.len():
        done = (
            scan_events(settings.events_dir)
            .filter((pl.col("subject_id") == subject["subject_id"]) & (pl.col("action") == "complete")
                    & pl.col("item_id").is_in(once.implode()))
            .select("item_id").unique().collect()["item_id"]
        )
        df = df.filter(~pl.col("item_id").is_in(done.implode()))
    return df.select("rank", "item_id", "score", "reasons_json").rows()


# The API's fast read of the hottest request.
#
# Most feed reads are the common case: a subject with a personalised feed in the served version. For those the
# response is assembled from one indexed read of the subject's stored feed row, with each item's reasons spliced
# in as :func:`publish` stored them (cached per version: most reason lists are shared), instead of being parsed
# into objects, validated and serialised again (that round trip cost more than the rest of the request).
# Everything else (no feed published, personalisation switched off, nothing left for the subject) returns
# ``None`` and goes through :func:`read_feed`, the one authority on feed semantics; tests/test_api_feed.py checks
# that the two agree on every case the fast read serves.

# The subject's row in the served version (the pointer followed inside the statement).
_SERVED_ROW_SQL = (
    "SELECT version, items FROM feed_rows WHERE subject_id = ?1 AND version ="
    " (SELECT CAST(value AS INTEGER) FROM serving_pointers WHERE name = ?2)"
)
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
            names = catalog_names(conn)
            with self._lock:
                self._fragments = {i: _pair(i, n) for i, n in names.items()}
                self._loaded_at = time.monotonic()
        known = self._fragments
        missing = [i for i in item_ids if i not in known]
        if not missing:
            return known
        found = catalog_names(conn, missing)
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


def read_feed_fast(
    conn: sqlite3.Connection, subject_id: str, limit: int, names: ItemNames, versions: FeedVersions,
) -> bytes | None:
    """The JSON body of a personalised feed in the served version, or ``None`` when :func:`read_feed` must decide."""
    personalisation, dismissed = feed_state(conn, subject_id)
    if personalisation == 0:
        return None
    row = conn.execute(_SERVED_ROW_SQL, (subject_id, POINTER)).fetchone()
    if row is None:
        return None  # no feed served, nothing for this subject, or the version was pruned: read_feed decides
    version = row[0]
    rows = json.loads(row[1])
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
    notice = NOTICE[True]
    head = (
        f'{{"subject_id":{_str(subject_id)},"personalised":true,'
        f'"notice_zh":{_str(notice[0])},"notice_en":{_str(notice[1])},'
        f'"version":{version},"model_version":{_str(model_version)},"as_of":{_str(as_of)},'
        f'"generated_at":{_str(generated_at)},"items":['
    )
    return (head + items + "]}").encode()


def in_served_feed(conn: sqlite3.Connection, subject_id: str) -> bool:
    """True if the served version holds a feed row for the subject."""
    return conn.execute(
        "SELECT 1 FROM feed_rows WHERE subject_id = ?1 AND version ="
        " (SELECT CAST(value AS INTEGER) FROM serving_pointers WHERE name = ?2)", (subject_id, POINTER)).fetchone() is not None


def stored_versions(conn: sqlite3.Connection) -> dict[int, dict[str, int]]:
    """version -> {"rows": subject rows, "reasons": distinct reason lists} of every version holding data (checks
    and tools: what publish, prune and a failed run leave behind)."""
    out: dict[int, dict[str, int]] = {}
    for version, n in conn.execute("SELECT version, COUNT(*) FROM feed_rows GROUP BY version"):
        out.setdefault(version, {"rows": 0, "reasons": 0})["rows"] = n
    for version, n in conn.execute("SELECT version, COUNT(*) FROM feed_reasons GROUP BY version"):
        out.setdefault(version, {"rows": 0, "reasons": 0})["reasons"] = n
    return out
