"""A subject's tags with their evidence, and the citizen's right to delete and restore them (Art. 17).

Sensitive tags (hardship, disability) are listed only to keys holding profile:read. Every read and
every change is audited.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlite_utils
from fastapi import APIRouter, Depends, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from yiwang.api.audit import audited
from yiwang.api.auth import require
from yiwang.api.db import get_db
from yiwang.api.keys import ApiKey
from taggers import store as tag_store
from yiwang.api.params import SubjectId, TagCode, plain

router = APIRouter(prefix="/v1/subjects/{subject_id}/tags", tags=["tags"])


class Tags(BaseModel):
    subject_id: str
    include_sensitive: bool
    tags: list[dict[str, Any]]


class TagChange(BaseModel):
    subject_id: str
    code: str
    status: str



@router.get("", response_model=Tags, summary="The subject's tags in force, each with its evidence")
def get_tags(
    subject_id: SubjectId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("feed:read", "profile:read", "tags:write"))],
    request: Request,
) -> Tags:
    include_sensitive = key.allows("profile:read")
    with audited(db, request, key, "tags.read", subject_id):
        tags = tag_store.list_tags(db, subject_id, include_sensitive=include_sensitive)
    return Tags(subject_id=subject_id, include_sensitive=include_sensitive,
                tags=[jsonable_encoder(plain(t)) for t in tags])


@router.delete("/{code}", response_model=TagChange, summary="Delete a tag; later batches do not bring it back")
def delete_tag(
    subject_id: SubjectId,
    code: TagCode,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("tags:write"))],
    request: Request,
) -> TagChange:
    with audited(db, request, key, "tag.delete", subject_id):
        tag_store.delete_tag(db, subject_id, code)
    return TagChange(subject_id=subject_id, code=code, status="deleted")


@router.post("/{code}/restore", response_model=TagChange, summary="Undo a deletion; the next batch may tag again")
def restore_tag(
    subject_id: SubjectId,
    code: TagCode,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("tags:write"))],
    request: Request,
) -> TagChange:
    with audited(db, request, key, "tag.restore", subject_id):
        tag_store.restore_tag(db, subject_id, code)
    return TagChange(subject_id=subject_id, code=code, status="restored")
