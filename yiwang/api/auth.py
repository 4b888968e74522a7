"""Who is calling and may they: ``Authorization: Bearer <key>`` checked against the hashed keys in the store.

``require(scope, ...)`` is the dependency every protected route declares; it answers 401 for a missing,
unknown or revoked key and 403 for a key without any of the named scopes (``admin`` holds every scope).
The OpenAPI document lists each route's scopes (see :func:`yiwang.api.openapi.document`).
"""

from __future__ import annotations

from fastapi import Request

from yiwang.api.db import request_db
from yiwang.api.keys import SCOPES, ApiKey, verify_key
from yiwang.errors import PermissionDenied, Unauthenticated


def require(*scopes: str):
    """A dependency admitting keys that hold any one of ``scopes``."""
    for scope in scopes:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")

    # Runs on the event loop: one primary-key lookup, cheaper than a hop to the threadpool. The header is
    # read here rather than through fastapi.security so the hottest route resolves one dependency, not three.
    async def dependency(request: Request) -> ApiKey:
        scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
        key = verify_key(request_db(request).conn, credentials.strip())
        if not any(key.allows(s) for s in scopes):
            raise PermissionDenied(f"this API key lacks the scope {' or '.join(scopes)}")
        request.state.api_key_id = key.key_id
        return key

    dependency.__name__ = "require_" + "_or_".join(s.replace(":", "_") for s in scopes)
    dependency.scopes = scopes  # type: ignore[attr-defined]
    return dependency
