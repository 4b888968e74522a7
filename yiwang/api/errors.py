"""The one error shape: ``{"error": {"code", "message", "request_id"}}`` for every 4xx and 5xx.

Handlers here cover yiwang's own errors (by their ``http_status``/``code``), FastAPI's validation errors
and Starlette's HTTP errors (404 no route, 405 wrong method); :mod:`yiwang.api.middleware` produces the
same shape for 413 and for unexpected exceptions (500).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from data.errors import YiwangError

HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "state_error",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}


class PayloadTooLarge(YiwangError):
    """A request carries more than the configured limit (bytes or events)."""

    exit_code = 2
    http_status = 413
    code = "payload_too_large"


def request_id_of(scope_or_request: Any) -> str:
    scope = getattr(scope_or_request, "scope", scope_or_request)
    return scope.get("state", {}).get("request_id", "-")


def error_body(code: str, message: str, request_id: str, details: list | None = None) -> dict:
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int, code: str, message: str, request_id: str, details: list | None = None, headers=None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, request_id, details), status_code=status, headers=headers)


async def _yiwang_error(request: Request, exc: YiwangError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    details = getattr(exc, "details", None)
    return error_response(exc.http_status, exc.code, str(exc), request_id_of(request), details, headers=headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Echo where and why, never the rejected input itself: it may carry personal data.
    details = [
        {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))}
        for err in exc.errors()[:50]
    ]
    return error_response(422, "invalid_request", "request failed validation", request_id_of(request), details)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    headers = exc.headers
    if exc.status_code == 405:
        # Starlette names only the methods of the first route matching the path; a path served by several
        # routes (GET and PUT /v1/rules) has them all.
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request.app, request.url.path))}
    return error_response(exc.status_code, code, message, request_id_of(request), headers=headers)


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    methods: set[str] = set()
    for route in _leaf_routes(app.router.routes):
        route_methods = getattr(route, "methods", None)
        regex = getattr(route, "path_regex", None)
        if route_methods and regex is not None and regex.match(path):
            methods |= set(route_methods)
    return sorted(methods)


def _leaf_routes(routes):
    for route in routes:
        # FastAPI keeps an included router as one entry; its routes carry their final paths (no prefix added).
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _leaf_routes(included.routes)
        else:
            yield route


def install(app: FastAPI) -> None:
    app.add_exception_handler(YiwangError, _yiwang_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
