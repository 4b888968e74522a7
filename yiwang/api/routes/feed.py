"""The published 个性推荐 feed of one subject, and item-level "not interested" dismissals."""

from __future__ import annotations

from typing import Annotated

import sqlite_utils
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from yiwang.api.audit import audited
from yiwang.api.auth import require
from yiwang.api.db import get_db
from yiwang.api.keys import ApiKey
from yiwang.api.params import ItemId, SubjectId
from data.citizen import dismiss
from data.errors import NotFound
from data.registry import catalog_item_exists, is_registered
from recommender.feeds import in_served_feed, read_feed, read_feed_fast

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
    name: str
    score: float
    reasons: list[Reason]


class Feed(BaseModel):
    # Read straight from the recommender's dataclasses: dataclasses.asdict would deep-copy every reason.
    model_config = ConfigDict(from_attributes=True)

    subject_id: str
    personalised: bool = Field(description="false: a non-personalised list (switched off, or none generated yet)")
    notice_zh: str = Field(description="Plain notice that the list is chosen by an algorithm (Art. 16)")
    notice_en: str
    version: int = Field(description="The published feed version served")
    model_version: str
    as_of: str
    generated_at: str
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
    state = request.app.state
    # Two indexed reads of a WAL database (readers never wait for a publishing writer): cheaper on the event
    # loop than a hop to the threadpool, and this is the hottest route.
    body = read_feed_fast(db.conn, subject_id, limit or state.settings.feed_size, state.item_names,
                          state.feed_versions)
    if body is None:
        # The other cases may filter against the event log (a Parquet scan): off the loop.
        feed = Feed.model_validate(await run_in_threadpool(read_feed, db, state.settings, subject_id, limit))
        # Validated once here; returning bytes spares FastAPI a second validation pass.
        body = feed.model_dump_json().encode()
    return Response(body, media_type="application/json")


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
        # The subjects a feed read does not answer 404 for (recommender.feeds.read_feed): in a registry, or in the
        # served version. A dismissal for any other subject is 404 too, rather than stored for a feed that cannot
        # exist.
        if not (is_registered(db.conn, subject_id) or in_served_feed(db.conn, subject_id)):
            raise NotFound(f"subject {subject_id!r} is neither in the registries nor in the served feed")
        if not catalog_item_exists(db.conn, item_id):
            raise NotFound(f"no catalogue item {item_id!r}")
        dismissed_at = dismiss(db.conn, subject_id, item_id)
    return Dismissal(subject_id=subject_id, item_id=item_id, dismissed_at=dismissed_at)
