"""The published OpenAPI document: FastAPI's, plus the bearer scheme and each route's scopes.

Access control is one plain dependency (:func:`yiwang.api.auth.require`), so the document learns which
routes it guards, and with which scopes, from that dependency rather than from fastapi.security.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

SCHEME = "bearerAuth"
ERROR_REF = {"$ref": "#/components/schemas/Error"}

# The one error shape every 4xx and 5xx has (yiwang.api.errors), FastAPI's 422 and uvicorn's 400 included.
ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string", "description": "Machine-readable, e.g. not_found, invalid_request"},
                "message": {"type": "string", "description": "What went wrong, for a person"},
                "request_id": {"type": "string", "description": "Also in the X-Request-ID header and the logs"},
                "details": {
                    "type": "array",
                    "description": "Validation failures (422): where and why, never the rejected input",
                    "items": {
                        "type": "object",
                        "properties": {
                            "loc": {"type": "array", "items": {"type": "string"}},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}

# Responses any operation can give, whatever its route does.
EVERY_OPERATION = {
    "400": "Malformed HTTP, or a request body that stopped arriving before its Content-Length",
    "413": "The request body is larger than the configured limit",
    "500": "Unexpected failure (details only in the server log, by request id)",
    "default": "Any other error (e.g. 409 nothing published yet, 503 the event log stayed busy), in the same shape",
}


def _error_response(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": ERROR_REF}}}


def _declare_errors(spec: dict) -> None:
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for path, ops in spec.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            for status, description in EVERY_OPERATION.items():
                responses.setdefault(status, _error_response(description))
            if "422" in responses:
                responses["422"] = _error_response("The request failed validation (`details` says where)")
            if "{" in path:
                responses.setdefault("404", _error_response("No such subject, item, alert, rule or version"))
    # FastAPI's own validation-error schemas describe a body this API never sends.
    text = str(spec["paths"])
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{unused}'" not in text:
            schemas.pop(unused, None)


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
                    "401": _error_response("Missing, unknown or revoked API key"),
                    "403": _error_response("The key lacks the scope (the attempt is audited)"),
                })
        _declare_errors(spec)
        app.openapi_schema = spec
    return app.openapi_schema
