"""The app factory: ``create_app(settings)`` builds the FastAPI app; the store opens and closes in its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from yiwang.api import errors
from yiwang.api.db import ConnectionPool
from yiwang.api.fastlane import FeedFastLane
from yiwang.api.feed_read import FeedVersions, ItemNames
from yiwang.api.metrics import Metrics
from yiwang.api.middleware import EdgeMiddleware
from yiwang.api.openapi import document
from yiwang.api.routes import ROUTERS
from yiwang.settings import Settings

DESCRIPTION = """\
Feeds (个性推荐), alerts, events, profiles and tags of the one-network portal.

Send an API key as `Authorization: Bearer <key>` (create one with `yiwang keys create`).
Recommendations are algorithmic: each item carries its reasons, and a citizen can switch
personalisation off (`PUT /v1/subjects/{id}/preferences`) or delete a tag used to recommend.
Every error has the shape `{"error": {"code", "message", "request_id"}}`.
"""


def create_app(settings: Settings) -> FastAPI:
    pool = ConnectionPool(settings.db_path)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.migrate()
        try:
            yield
        finally:
            pool.close()

    app = FastAPI(
        title="yiwang API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.pool = pool
    app.state.metrics = metrics
    app.state.item_names = names = ItemNames()
    app.state.feed_versions = versions = FeedVersions()
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    # Added first, so it sits inside the edge: request ids, metrics and the pool apply to it too.
    app.add_middleware(FeedFastLane, pool=pool, names=names, versions=versions, feed_size=settings.feed_size)
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.api_max_body_bytes, metrics=metrics, pool=pool)
    app.openapi = lambda: document(app, ROUTERS)  # type: ignore[method-assign]
    return app
