"""The citizen's switches: personalisation on/off (PIPL Art. 24) and delivery channels.

Switching off is read by the feed at request time, so it holds from the very next read, not the next batch.
"""

from __future__ import annotations

from typing import Annotated, Literal

import sqlite_utils
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, field_validator

from data.citizen import read_preferences, write_preferences
from yiwang.api.audit import audited
from yiwang.api.auth import require
from yiwang.api.db import get_db
from yiwang.api.keys import ApiKey
from yiwang.api.params import SubjectId

router = APIRouter(prefix="/v1/subjects/{subject_id}/preferences", tags=["preferences"])

Channel = Literal["in_app", "webhook"]


class PreferencesIn(BaseModel):
    personalisation: bool = Field(description="false = no recommendation based on personal characteristics")
    channels: list[Channel] = Field(default=["in_app"], min_length=1, max_length=2)

    @field_validator("channels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("channels must not repeat")
        return v


class Preferences(PreferencesIn):
    subject_id: str
    updated_at: str | None = Field(description="null = never set (the defaults apply)")


@router.get("", response_model=Preferences, summary="The subject's preferences (defaults if never set)")
def get_preferences(
    subject_id: SubjectId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("feed:read", "events:write", "profile:read"))],
) -> Preferences:
    return _read(db, subject_id)


@router.put("", response_model=Preferences, summary="Set personalisation and channels; effective on the next read")
def put_preferences(
    subject_id: SubjectId,
    body: PreferencesIn,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("events:write"))],
    request: Request,
) -> Preferences:
    action = "preferences.personalisation_on" if body.personalisation else "preferences.personalisation_off"
    with audited(db, request, key, action, subject_id):
        write_preferences(db.conn, subject_id, body.personalisation, body.channels)
    return _read(db, subject_id)


def _read(db: sqlite_utils.Database, subject_id: str) -> Preferences:
    p = read_preferences(db.conn, subject_id)
    return Preferences(subject_id=subject_id, personalisation=p.personalisation, channels=p.channels,
                       updated_at=p.updated_at)
