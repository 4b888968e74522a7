"""A fast lane for the hottest request: an authorised ``GET /v1/subjects/{id}/feed`` served without FastAPI.

FastAPI's per-request machinery (routing, dependency solving, parameter validation) cost more than the
feed read itself. This ASGI layer answers only the plain success case: a well-formed path and ``limit``,
a valid active key holding feed:read, and a personalised feed in the served version
(:func:`recommender.feeds.read_feed_fast`). Anything else (no or bad key, wrong scope, odd
parameters, personalisation off, no feed) passes through untouched to the FastAPI route, which then
decides and answers, errors included, exactly as if this layer did not exist.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from data.errors import YiwangError
from recommender.feeds import FeedVersions, ItemNames, read_feed_fast
from yiwang.api.auth import authorised_key
from yiwang.api.db import STATE_KEY, ConnectionPool

FEED_ROUTE = "/v1/subjects/{subject_id}/feed"
_PATH = re.compile(r"^/v1/subjects/([A-Za-z0-9_-]{1,64})/feed$")
_LIMIT = re.compile(r"^[1-9][0-9]{0,2}$")


class _Route:
    """Stands in for the matched route so metrics label the request by its template."""

    path = FEED_ROUTE


class FeedFastLane:
    def __init__(self, app, *, pool: ConnectionPool, names: ItemNames, versions: FeedVersions, feed_size: int):
        self.app = app
        self.pool = pool
        self.names = names
        self.versions = versions
        self.feed_size = feed_size

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _PATH.match(scope["path"])
            if match:
                body = self._try(scope, match.group(1))
                if body is not None:
                    scope["route"] = _Route
                    await send({
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())],
                    })
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)

    def _try(self, scope, subject_id: str) -> bytes | None:
        limit = self._limit(scope.get("query_string", b""))
        if limit is None:
            return None
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        if not authorization:
            return None
        state = scope.setdefault("state", {})
        db = state.get(STATE_KEY)
        if db is None:
            db = state[STATE_KEY] = self.pool.acquire()  # given back by the edge middleware
        try:
            key = authorised_key(db.conn, authorization, ("feed:read",))
        except YiwangError:
            return None  # the route answers, and audits, the denial
        state["api_key_id"] = key.key_id
        return read_feed_fast(db.conn, subject_id, limit, self.names, self.versions)

    def _limit(self, query_string: bytes) -> int | None:
        if not query_string:
            return self.feed_size
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
        if len(pairs) != 1 or pairs[0][0] != "limit" or not _LIMIT.match(pairs[0][1]):
            return None
        limit = int(pairs[0][1])
        return limit if limit <= 200 else None
