"""The app factory: ``create_app(settings)`` builds the FastAPI app; the store opens and closes in its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from yiwang.api import errors
from yiwang.api.db import ConnectionPool
from yiwang.api.fastlane import FeedFastLane
from recommender.feeds import FeedVersions, ItemNames
from yiwang.api.metrics import Metrics
from yiwang.api.middleware import BODY_TIMEOUT_S, EdgeMiddleware
from yiwang.api.openapi import document
from yiwang.api.routes import ROUTERS
from data.settings import Settings

DESCRIPTION = """\
Feeds (个性推荐), alerts, events, profiles and tags of the one-network portal.

Send an API key as `Authorization: Bearer <key>` (create one with `yiwang keys create`).
Recommendations are algorithmic: each item carries its reasons, and a citizen can switch
personalisation off (`PUT /v1/subjects/{id}/preferences`) or delete a tag used to recommend.
Every error has the shape `{"error": {"code", "message", "request_id"}}`.
"""


# Swagger UI's files, shipped by the fastapi-offline package: /docs works with no route to a CDN.
DOCS_ASSETS = "/docs/assets"


def create_app(settings: Settings, *, body_timeout_s: float = BODY_TIMEOUT_S) -> FastAPI:
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
        docs_url=None,
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
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.api_max_body_bytes, metrics=metrics, pool=pool,
                       body_timeout_s=body_timeout_s)
    _mount_docs(app)
    app.openapi = lambda: document(app, ROUTERS)  # type: ignore[method-assign]
    return app


def _mount_docs(app: FastAPI) -> None:
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - docs",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )
