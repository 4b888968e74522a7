"""The published 个性推荐 feed of one subject, and item-level "not interested" dismissals."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated

import sqlite_utils
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from yiwang.api.audit import audited
from yiwang.api.auth import require
from yiwang.api.db import get_db
from yiwang.api.errors import ServiceUnavailable
from yiwang.api.feed_read import personalised_feed_json
from yiwang.api.keys import ApiKey
from yiwang.api.params import ItemId, SubjectId, engine
from yiwang.errors import NotFound, StateError

router = APIRouter(prefix="/v1/subjects/{subject_id}/feed", tags=["feed"])


class Reason(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    source: str
    zh: str
    en: str
    ref: str | None = None


class FeedItem(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    rank: int
    item_id: str
    name: str | None = None
    score: float
    reasons: list[Reason]


class Feed(BaseModel):
    # Read straight from the recommender's dataclasses: dataclasses.asdict would deep-copy every reason.
    model_config = ConfigDict(from_attributes=True)

    subject_id: str
    personalised: bool = Field(description="false: a non-personalised list (switched off, or none generated yet)")
    notice_zh: str | None = Field(default=None, description="Plain notice that the list is algorithmic (Art. 16)")
    notice_en: str | None = None
    version: int | None
    model_version: str | None
    as_of: str | None = None
    generated_at: str | None
    items: list[FeedItem]


class Dismissal(BaseModel):
    subject_id: str
    item_id: str
    dismissed_at: str


@router.get("", response_model=Feed, summary="The subject's published feed with reasons")
async def get_feed(
    subject_id: SubjectId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("feed:read"))],
    request: Request,
    limit: Annotated[int | None, Query(ge=1, le=200, description="At most this many items")] = None,
) -> Response:
    settings = request.app.state.settings
    try:
        read_feed = engine("recommender.feeds", "read_feed")
    except ServiceUnavailable:
        feed = read_published_feed(db, subject_id, limit or settings.feed_size)
    else:
        notice = engine("recommender.feeds", "NOTICE")[True]
        # One indexed read of a WAL database (readers never wait for a publishing writer): cheaper on the
        # event loop than a hop to the threadpool, and this is the hottest route.
        state = request.app.state
        body = personalised_feed_json(db.conn, subject_id, limit or settings.feed_size, notice, state.item_names,
                                      state.feed_versions)
        if body is not None:
            return Response(body, media_type="application/json")
        # The other cases may filter against the event log (a Parquet scan): off the loop.
        feed = Feed.model_validate(await run_in_threadpool(read_feed, db, settings, subject_id, limit))
    # Validated once above; returning bytes spares FastAPI a second validation pass.
    return Response(feed.model_dump_json(), media_type="application/json")


def _personalisation_on(db: sqlite_utils.Database, subject_id: str) -> bool:
    row = db.conn.execute(
        "SELECT personalisation FROM subject_preferences WHERE subject_id = ?", (subject_id,)
    ).fetchone()
    return row is None or bool(row[0])


def read_published_feed(db: sqlite_utils.Database, subject_id: str, limit: int) -> Feed:
    """Where the recommender's read path is not deployed: the served version's items minus dismissals.

    Read in one statement.

    One statement means one snapshot: a publish flipping the pointer meanwhile is seen entirely or not at all.
    """
    if not _personalisation_on(db, subject_id):
        # The stored feed is personalised; serving it after a switch-off would break PIPL Art. 24.
        raise ServiceUnavailable("the non-personalised feed needs the recommender's read_feed, not yet deployed")
    rows = db.conn.execute(
        """
        SELECT v.version, v.model_version, v.generated_at, fi.rank, fi.item_id, fi.score, fi.reasons_json, c.name
        FROM serving_pointers p
        JOIN feed_versions v ON v.version = CAST(p.value AS INTEGER)
        LEFT JOIN feed_items fi ON fi.version = v.version AND fi.subject_id = ?
            AND NOT EXISTS (SELECT 1 FROM dismissals d WHERE d.subject_id = fi.subject_id AND d.item_id = fi.item_id)
        LEFT JOIN catalog c ON c.item_id = fi.item_id
        WHERE p.name = 'feed_version'
        ORDER BY fi.rank
        LIMIT ?
        """,
        (subject_id, limit),
    ).fetchall()
    if not rows:
        raise StateError("no feed version is published yet: run `yiwang recommend`")
    version, model_version, generated_at = rows[0][:3]
    items = [
        FeedItem(rank=r[3], item_id=r[4], score=r[5], reasons=json.loads(r[6]), name=r[7])
        for r in rows
        if r[3] is not None
    ]
    return Feed(
        subject_id=subject_id,
        personalised=True,
        version=version,
        model_version=model_version,
        generated_at=generated_at,
        items=items,
    )


@router.post(
    "/{item_id}/dismiss",
    response_model=Dismissal,
    summary="Not interested: the item leaves this subject's feed from the next read on",
)
def dismiss_item(
    subject_id: SubjectId,
    item_id: ItemId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("events:write"))],
    request: Request,
) -> Dismissal:
    with audited(db, request, key, "feed.dismiss", subject_id):
        if db.conn.execute("SELECT 1 FROM catalog WHERE item_id = ?", (item_id,)).fetchone() is None:
            raise NotFound(f"no catalogue item {item_id!r}")
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with db.conn:
            db.conn.execute(
                "INSERT OR IGNORE INTO dismissals (subject_id, item_id, dismissed_at) VALUES (?, ?, ?)",
                (subject_id, item_id, now),
            )
        row = db.conn.execute(
            "SELECT dismissed_at FROM dismissals WHERE subject_id = ? AND item_id = ?", (subject_id, item_id)
        ).fetchone()
    return Dismissal(subject_id=subject_id, item_id=item_id, dismissed_at=row[0])
