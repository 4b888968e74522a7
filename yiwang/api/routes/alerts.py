"""A subject's in-app alerts (提醒), and marking one read or dismissing it. Changes are audited."""

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
from yiwang.api.params import SubjectId, engine, plain

router = APIRouter(tags=["alerts"])

AlertId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Alert id from the subject's alert list")]


class Alerts(BaseModel):
    subject_id: str
    alerts: list[dict[str, Any]]


class AlertChange(BaseModel):
    alert_id: int
    status: str



@router.get("/v1/subjects/{subject_id}/alerts", response_model=Alerts, summary="The subject's in-app alerts")
def get_alerts(
    subject_id: SubjectId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("feed:read"))],
) -> Alerts:
    alerts = engine("notifier.outbox", "list_alerts")(db, subject_id)
    return Alerts(subject_id=subject_id, alerts=[jsonable_encoder(plain(a)) for a in alerts])


@router.post("/v1/alerts/{alert_id}/read", response_model=AlertChange, summary="Mark an alert read")
def read_alert(
    alert_id: AlertId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("events:write"))],
    request: Request,
) -> AlertChange:
    with audited(db, request, key, "alert.read", f"alert:{alert_id}"):
        engine("notifier.outbox", "mark_read")(db, alert_id)
    return AlertChange(alert_id=alert_id, status="read")


@router.post("/v1/alerts/{alert_id}/dismiss", response_model=AlertChange, summary="Dismiss an alert")
def dismiss_alert(
    alert_id: AlertId,
    db: Annotated[sqlite_utils.Database, Depends(get_db)],
    key: Annotated[ApiKey, Depends(require("events:write"))],
    request: Request,
) -> AlertChange:
    with audited(db, request, key, "alert.dismiss", f"alert:{alert_id}"):
        engine("notifier.outbox", "dismiss")(db, alert_id)
    return AlertChange(alert_id=alert_id, status="dismissed")
