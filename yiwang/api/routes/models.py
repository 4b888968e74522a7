"""Trained recommender models: list the versions on disk, promote one to serve from the next `recommend` on.

Promotions are audited.
"""

from __future__ import annotations

from typing import Annotated, Any

import sqlite_utils
from fastapi import APIRouter, Depends, Path, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel

from yiwang.api.audit import audited
from yiwang.api.auth import require
from yiwang.api.db import get_db
from yiwang.api.keys import ApiKey
from recommender import training
from yiwang.api.params import plain

router = APIRouter(prefix="/v1/models", tags=["models"])

ModelVersion = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]


class Models(BaseModel):
    models: list[dict[str, Any]]


class Promoted(BaseModel):
    version: str
    promoted: bool



@router.get("", response_model=Models, summary="Model versions on disk with their config and metrics")
def get_models(
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("models:write"))],
    request: Request,
) -> Models:
    models = training.list_models(request.app.state.settings, db)
    return Models(models=[jsonable_encoder(plain(m)) for m in models])


@router.post("/{version}/promote", response_model=Promoted, summary="Serve this model version from now on")
def promote(
    version: ModelVersion,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("models:write"))],
    request: Request,
) -> Promoted:
    with audited(db, request, key, "model.promote", version):
        training.promote(request.app.state.settings, db, version)
    return Promoted(version=version, promoted=True)
