"""The published OpenAPI document: FastAPI's, plus the bearer scheme and each route's scopes.

Access control is one plain dependency (:func:`yiwang.api.auth.require`), so the document learns which
routes it guards, and with which scopes, from that dependency rather than from fastapi.security.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

SCHEME = "bearerAuth"


def _scopes(dependant) -> tuple[str, ...] | None:
    for dep in dependant.dependencies:
        scopes = getattr(dep.call, "scopes", None)
        if scopes is not None:
            return scopes
        found = _scopes(dep)
        if found is not None:
            return found
    return None


def document(app: FastAPI, routers) -> dict:
    if app.openapi_schema is None:
        spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        spec.setdefault("components", {})["securitySchemes"] = {
            SCHEME: {"type": "http", "scheme": "bearer", "description": "An API key from `yiwang keys create`."}
        }
        # The routers' own routes carry the final paths (the app adds no prefix when including them).
        for route in (r for router in routers for r in router.routes):
            if not isinstance(route, APIRoute) or not route.include_in_schema:
                continue
            scopes = _scopes(route.dependant)
            if scopes is None:
                continue
            for method in route.methods:
                op = spec["paths"][route.path_format][method.lower()]
                op["security"] = [{SCHEME: []}]
                op["x-scopes"] = list(scopes)
                needs = " or ".join(f"`{s}`" for s in scopes)
                op["description"] = (op.get("description", "") + f"\n\nRequires an API key with {needs} (or `admin`).").strip()
                op.setdefault("responses", {}).update({
                    "401": {"description": "Missing, unknown or revoked API key"},
                    "403": {"description": "The key lacks the scope"},
                })
        app.openapi_schema = spec
    return app.openapi_schema
