"""A subject's in-app alerts (提醒), and marking one read or dismissing it. Changes are audited.

Dismissing hides the alert from the list; the notifier keeps it in its outbox so it is never created again.
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
from notifier.outbox import dismiss, list_alerts, mark_read
from yiwang.api.params import SubjectId, plain

router = APIRouter(tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Alert id from the subject's alert list")]


class Alerts(BaseModel):
    subject_id: str
    alerts: list[dict[str, Any]]





@router.get("/v1/subjects/{subject_id}/alerts", response_model=Alerts, summary="The subject's in-app alerts")
def get_alerts(
    subject_id: SubjectId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("feed:read"))],
) -> Alerts:
    alerts = list_alerts(db, subject_id)
    return Alerts(subject_id=subject_id, alerts=[jsonable_encoder(plain(a)) for a in alerts])


@router.post("/v1/alerts/{alert_id}/read", response_model=dict[str, Any], summary="Mark an alert read; returns the alert")
def read_alert(
    alert_id: AlertId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("events:write"))],
    request: Request,
) -> dict[str, Any]:
    with audited(db, request, key, "alert.read", f"alert:{alert_id}"):
        alert = mark_read(db, alert_id)
    return jsonable_encoder(plain(alert))


@router.post("/v1/alerts/{alert_id}/dismiss", response_model=dict[str, Any], summary="Hide an alert from the list; returns the alert")
def dismiss_alert(
    alert_id: AlertId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("events:write"))],
    request: Request,
) -> dict[str, Any]:
    with audited(db, request, key, "alert.dismiss", f"alert:{alert_id}"):
        alert = dismiss(db, alert_id)
    return jsonable_encoder(plain(alert))
