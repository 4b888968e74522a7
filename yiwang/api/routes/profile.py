"""One subject's profile (一人一档 / 一企一档), for callers holding profile:read; every read is audited."""

from __future__ import annotations

from typing import Annotated, Any

import sqlite_utils
from fastapi import APIRouter, Depends, Request
from fastapi.encoders import jsonable_encoder

from yiwang.api.audit import audited
from yiwang.api.auth import require
from yiwang.api.db import get_db
from yiwang.api.keys import ApiKey
from yiwang.api.params import SubjectId, plain
from data.errors import NotFound
from profiler import read_profile

router = APIRouter(prefix="/v1/subjects/{subject_id}/profile", tags=["profile"])


@router.get("", response_model=dict[str, Any], summary="The subject's profile: attributes, licences, behaviour")
def get_profile(
    subject_id: SubjectId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("profile:read"))],
    request: Request,
) -> dict[str, Any]:
    with audited(db, request, key, "profile.read", subject_id):
        # The whole profile, sensitive fields too: this route is for profile:read holders only.
        profile = read_profile(db, subject_id, include_sensitive=True)
        if profile is None:
            raise NotFound(f"no profile for subject {subject_id}")
    return jsonable_encoder(plain(profile))
