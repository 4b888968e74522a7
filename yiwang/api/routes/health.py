"""Liveness and metrics: unauthenticated, for load balancers and Prometheus scrapers."""

from __future__ import annotations

from typing import Annotated, Literal

import sqlite_utils
from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from yiwang.api.db import get_db

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"]


@router.get("/healthz", response_model=Health, summary="Liveness: the store answers")
async def healthz(db: Annotated[sqlite_utils.Database, Depends(get_db)]) -> Health:
    db.conn.execute("SELECT 1").fetchone()
    return Health(status="ok")


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Request counts and latency by route and status (Prometheus text format)",
)
def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.app.state.metrics.render(), media_type="text/plain; version=0.0.4")
