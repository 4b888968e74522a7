"""Operators' reminder rules: read the rules in force, replace them, dry-run one. Changes are audited.

A replacement is validated by the notifier before it is written, and written by rename, so a broken file
never replaces the rules in force.
"""

from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path as FsPath
from typing import Annotated, Any

import sqlite_utils
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field

from yiwang.api.audit import audited
from yiwang.api.auth import require
from yiwang.api.db import get_db
from yiwang.api.keys import ApiKey
from yiwang.api.params import engine, plain

router = APIRouter(prefix="/v1/rules", tags=["rules"])

RuleId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class RulesFile(BaseModel):
    content: str = Field(max_length=500_000, description="The whole reminder-rules YAML file")


class RulesInForce(BaseModel):
    path: str
    rules: list[dict[str, Any]]



def rules_path(settings) -> FsPath:
    return FsPath(settings.reminder_rules_file or FsPath(settings.data_dir) / "reminder_rules.yaml")


@router.get("", response_model=RulesInForce, summary="The reminder rules in force")
def get_rules(
    key: Annotated[ApiKey, Depends(require("rules:write"))],
    request: Request,
) -> RulesInForce:
    path = rules_path(request.app.state.settings)
    rules = engine("notifier.rules", "load_rules")(path)
    return RulesInForce(path=str(path), rules=[jsonable_encoder(plain(r)) for r in rules])


@router.put("", response_model=RulesInForce, summary="Replace the reminder rules (validated first)")
def put_rules(
    body: RulesFile,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("rules:write"))],
    request: Request,
) -> RulesInForce:
    path = rules_path(request.app.state.settings)
    load_rules = engine("notifier.rules", "load_rules")
    with audited(db, request, key, "rules.replace", path.name):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".rules-", suffix=".yaml", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(body.content)
            rules = load_rules(FsPath(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return RulesInForce(path=str(path), rules=[jsonable_encoder(plain(r)) for r in rules])


@router.post("/{rule_id}/dry-run", response_model=dict[str, Any], summary="Who a rule would alert, sending nothing")
def dry_run(
    rule_id: RuleId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("rules:write"))],
    request: Request,
    as_of: Annotated[date | None, Query(description="Evaluate as if today were this date")] = None,
) -> dict[str, Any]:
    settings = request.app.state.settings
    run = engine("notifier.rules", "dry_run")
    with audited(db, request, key, "rules.dry_run", rule_id):
        result = run(settings, db, rule_id, as_of or date.today())
    return jsonable_encoder(plain(result))
