"""A batch of interactions from the portal, validated by the ingest contract, appended to the event log.

All or nothing: one bad event rejects the batch (422 naming each bad event by index, field and the same
reason codes ingest quarantines with) so the portal can fix and resend; resending is safe because the log
skips event_ids it already holds, and events sent without an id get the id ingest would derive. Subjects
outside the registries are accepted: portal users need not be in the population or legal-person registry.

Every writer of the event log, in every process (other API servers on the same home, a running ingest),
checks and publishes event ids under one cross-process lock (:func:`data.eventlog.writer_lock`), so an
event_id is stored once whichever server or ingest got it first. A post waits for that lock at most
:data:`~data.eventlog.API_LOCK_TIMEOUT_S` seconds (an ingest holds it only while committing a file, not
while reading it) and otherwise answers 503 with ``Retry-After``, having stored nothing: the portal
backend resends the same batch, as it would after a network error.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import polars as pl
import sqlite_utils
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from data import contract
from yiwang.api.audit import audited
from yiwang.api.auth import require
from yiwang.api.db import get_db
from yiwang.api.errors import PayloadTooLarge
from yiwang.api.keys import ApiKey
from data.errors import ContractError
from data.eventlog import (
    ACTIONS,
    API_LOCK_TIMEOUT_S,
    CHANNELS,
    RETRY_AFTER_S,
    EventLogBusy,
    append_events,
    derived_event_id,
)
from data.registry import close_ingest, known_items, open_ingest
from data.settings import TIMEZONE

router = APIRouter(prefix="/v1/events", tags=["events"])


class EventIn(BaseModel):
    # Extra fields never make an event fail, as in the data contract.
    model_config = ConfigDict(extra="ignore")

    event_id: str | None = Field(default=None, min_length=1, max_length=128)
    # The contract's subject-id rule; a resident-ID-shaped id (or event_id, item_id) is refused by the
    # contract's rules in _validate, before anything is stored or audited.
    subject_id: str = Field(
        min_length=1, max_length=contract.SUBJECT_ID_MAX_LENGTH, pattern=contract.SUBJECT_ID_PATTERN,
        description=contract.SUBJECT_ID_RULE,
    )
    item_id: str = Field(min_length=1, max_length=64)
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    ts: str = Field(
        max_length=40,
        description="ISO-8601 (YYYY-MM-DD[T ]HH:MM:SS[.ffffff][Z|+HH:MM]); without offset it is Asia/Shanghai time; "
        "not after today",
        json_schema_extra={"format": "date-time"},
    )
    channel: Literal[CHANNELS] | None = None  # type: ignore[valid-type]


class EventBatch(BaseModel):
    events: list[EventIn] = Field(min_length=1)


class EventsAccepted(BaseModel):
    received: int = Field(description="Events in the request")
    inserted: int = Field(description="Events newly stored")
    duplicates: int = Field(description="Events whose event_id was already stored or repeated in the request")
    ingest_id: int


class RejectedEvent(ContractError):
    """One or more events in a batch break the contract; the batch is stored not at all."""

    def __init__(self, problems: list[dict]):
        self.details = problems
        shown = "; ".join(f"events[{p['index']}].{p['field']}: {p['reason']}" for p in problems[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{len(problems)} invalid event(s): {shown}{more}")


@router.post("", response_model=EventsAccepted, summary="Append a batch of interactions (idempotent on event_id)")
def post_events(
    batch: EventBatch,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("events:write"))],
    request: Request,
) -> EventsAccepted:
    settings = request.app.state.settings
    if len(batch.events) > settings.api_max_events_per_request:
        raise PayloadTooLarge(
            f"{len(batch.events)} events in one request; the limit is {settings.api_max_events_per_request}"
        )
    frame = _validate(db, batch.events)
    unique = frame.unique(subset="event_id", keep="first", maintain_order=True)
    ingest_id = _open_ingest(db, key)
    try:
        with audited(db, request, key, "events.append", f"ingest:{ingest_id}"):
            try:
                inserted, already = append_events(
                    settings.events_dir, unique, ingest_id, lock_timeout=API_LOCK_TIMEOUT_S
                )
            except BaseException:
                _close_ingest(db, ingest_id, "failed", {"received": frame.height})
                raise
            summary = {"received": frame.height, "inserted": inserted, "duplicates": frame.height - inserted}
            _close_ingest(db, ingest_id, "done", summary)
    except EventLogBusy as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    return EventsAccepted(ingest_id=ingest_id, **summary)


def _validate(db: sqlite_utils.Database, events: list[EventIn]) -> pl.DataFrame:
    """The events as :data:`data.eventlog.EVENT_SCHEMA` columns, or :class:`RejectedEvent`."""
    raw = pl.DataFrame(
        [e.model_dump(include={"event_id", "subject_id", "item_id", "action", "ts", "channel"}) for e in events],
        schema={c: pl.String for c in ("event_id", "subject_id", "item_id", "action", "ts", "channel")},
    )
    today = datetime.now(ZoneInfo(TIMEZONE)).date()
    known = pl.Series("item_id", sorted(_known_items(db, {e.item_id for e in events})), dtype=pl.String)
    ctx = contract.Context(as_of=today, known_items=known, keep_unknown_subjects=True)
    checked = contract.validate(contract.EVENTS, raw, ctx).with_row_index("_index")
    bad = checked.filter(pl.col("_reason").is_not_null())
    if bad.height:
        raise RejectedEvent(
            [{"index": r["_index"], "field": r["_field"], "reason": r["_reason"]}
             for r in bad.select("_index", "_field", "_reason").to_dicts()]
        )
    return checked.select(
        "event_id", "subject_id", "item_id", "action", pl.col("_p_ts").alias("ts"), "channel"
    ).with_columns(pl.coalesce(pl.col("event_id"), derived_event_id()).alias("event_id"))


def _known_items(db: sqlite_utils.Database, item_ids: set[str]) -> set[str]:
    return known_items(db.conn, item_ids)


def _open_ingest(db: sqlite_utils.Database, key: ApiKey) -> int:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return open_ingest(db.conn, f"api:{key.key_id}", now)


def _close_ingest(db: sqlite_utils.Database, ingest_id: int, status: str, summary: dict) -> None:
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    close_ingest(db.conn, ingest_id, now, status, json.dumps(summary))
