"""The API's edge, as one plain ASGI middleware: request id, body-size limit, body-read timeout, metrics, the 500
shape, and giving the request's store connection back to the pool.

Plain ASGI rather than ``BaseHTTPMiddleware`` keeps the per-request overhead small (the feed endpoint is
benchmarked against a trivial one) and lets a body limit apply while the body streams in, so a chunked
upload without Content-Length is cut off too.

uvicorn has no timeout for a request body that stops arriving (a Content-Length larger than the bytes sent
would hold the connection and the request's store connection forever), so the body is read here under one:
a 400 and a closed connection when no byte comes for ``body_timeout_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid

from data import contract
from yiwang.api.db import STATE_KEY, ConnectionPool
from yiwang.api.errors import error_body
from yiwang.api.metrics import Metrics

log = logging.getLogger("yiwang.api")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# Seconds a request body may go without a byte arriving; a client on a slow link still sends within this.
BODY_TIMEOUT_S = 5.0


class BodyRefused(Exception):
    """The request body was refused while streaming in; the error response has gone out already."""


class BodyTooLarge(BodyRefused):
    """The request body passed the configured limit while streaming in."""


class BodyIncomplete(BodyRefused):
    """The request body stopped arriving before its end."""


class EdgeMiddleware:
    def __init__(self, app, *, max_body_bytes: int, metrics: Metrics, pool: ConnectionPool,
                 body_timeout_s: float = BODY_TIMEOUT_S):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.metrics = metrics
        self.pool = pool

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = False
        # Once the 413 is sent mid-body, whatever the app answers after is dropped: FastAPI turns any
        # failure while reading the body into its own 400, which must not follow our response.
        answered = False

        async def send_wrapper(message):
            nonlocal status, started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode())]
            await send(message)

        received = 0
        body_done = False

        async def receive_wrapper():
            nonlocal received, answered, body_done
            if body_done or started:
                # Past the body, a receive waits for the client to disconnect: no deadline for that.
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:
                if not answered:
                    text = (f"request body incomplete: no byte arrived for {self.body_timeout_s:g} s "
                            "(is Content-Length larger than the body sent?)")
                    await self._error(send_wrapper, 400, "bad_request", text, request_id, close=True)
                    answered = True
                raise BodyIncomplete from None
            if message["type"] == "http.request":
                body_done = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    if not started and not answered:
                        await self._error(send_wrapper, 413, "payload_too_large", self._too_large(), request_id)
                        answered = True
                    raise BodyTooLarge
            return message

        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                await self._error(send_wrapper, 413, "payload_too_large", self._too_large(), request_id)
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except BodyRefused:
            pass  # the 413 or 400 went out when the body was refused
        except Exception as exc:
            # Log the class and request id only: messages and tracebacks can carry request data.
            log.error("unhandled %s in %s %s request_id=%s", type(exc).__name__, scope["method"],
                      _route(scope), request_id)
            if not started:
                await self._error(send_wrapper, 500, "internal_error", "internal error", request_id)
        finally:
            db = scope["state"].pop(STATE_KEY, None)
            if db is not None:
                self.pool.release(db)
            elapsed = time.perf_counter() - start
            self.metrics.observe(scope["method"], _route(scope), status, elapsed)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s %s %s %.1fms request_id=%s", scope["method"], _route(scope), status,
                          elapsed * 1000, request_id)

    def _too_large(self) -> str:
        return f"request body larger than {self.max_body_bytes} bytes"

    @staticmethod
    async def _error(send, status: int, code: str, message: str, request_id: str, close: bool = False) -> None:
        body = json.dumps(error_body(code, message, request_id)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            # The rest of the body may still come: the connection cannot carry another request.
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _request_id(scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            # The request id is audited: one carrying a resident ID number is replaced like a malformed one.
            if _REQUEST_ID_RE.match(candidate) and contract.mask_resident_ids_text(candidate) == candidate:
                return candidate
            break
    return uuid.uuid4().hex


def _content_length(scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _route(scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
