"""Operators' reminder rules: read the rules in force, replace them, dry-run one. Changes are audited.

The rules in force live in the store home, never in the code checkout. The notifier validates a replacement
before writing it (by rename), so a broken file never replaces the rules in force; a validation failure is a 422
naming rule and line. Answers identify the rules by sha256 and time, never by a server path.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import sqlite_utils
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel, Field

from yiwang.api.audit import audited
from yiwang.api.auth import require
from yiwang.api.db import get_db
from yiwang.api.keys import ApiKey
import notifier
from yiwang.api.params import plain
from data.settings import TIMEZONE
from notifier.rules import install_rules, rule_to_dict, rules_in_force

router = APIRouter(prefix="/v1/rules", tags=["rules"])

RuleId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class RulesFile(BaseModel):
    content: str = Field(max_length=500_000, description="The whole reminder-rules YAML file")


class RulesInForce(BaseModel):
    source: str = Field(description="Where the rules in force come from: the home's rules file, the seed it starts "
                                    "from, or the snapshot kept when the file is broken (never a server path)")
    sha256: str = Field(description="sha256 of the rules text in force: what identifies this version")
    updated_at: str | None = Field(description="When these rules were put in force (UTC); null until first used")
    warning: str | None = Field(description="Why the home's rules file is not in force, if it is not")
    rules: list[dict[str, Any]]


def _in_force(ruleset) -> RulesInForce:
    return RulesInForce(source=ruleset.source, sha256=ruleset.sha256, updated_at=ruleset.updated_at,
                        warning=ruleset.warning, rules=[rule_to_dict(r) for r in ruleset.rules])


@router.get("", response_model=RulesInForce, summary="The reminder rules in force")
def get_rules(
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("rules:write"))],
    request: Request,
) -> RulesInForce:
    return _in_force(rules_in_force(request.app.state.settings, db))


@router.put("", response_model=RulesInForce, summary="Replace the reminder rules (validated first)")
def put_rules(
    body: RulesFile,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("rules:write"))],
    request: Request,
) -> RulesInForce:
    with audited(db, request, key, "rules.replace", None):
        ruleset = install_rules(request.app.state.settings, db, body.content, source=f"api:{key.key_id}")
    return _in_force(ruleset)


@router.post("/{rule_id}/dry-run", response_model=dict[str, Any], summary="Who a rule would alert, sending nothing")
def dry_run(
    rule_id: RuleId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("rules:write"))],
    request: Request,
    as_of: Annotated[date | None, Query(description="Evaluate as if today were this date (default today)")] = None,
) -> dict[str, Any]:
    when = as_of or datetime.now(ZoneInfo(TIMEZONE)).date()
    with audited(db, request, key, "rules.dry_run", rule_id):
        result = notifier.dry_run(request.app.state.settings, db, rule_id, when)
    return jsonable_encoder(plain(result))
