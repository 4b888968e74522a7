"""Who is calling and may they: ``Authorization: Bearer <key>`` checked against the hashed keys in the store.

``require(scope, ...)`` is the dependency every protected route declares; it answers 401 for a missing,
unknown or revoked key and 403 for a key without any of the named scopes (``admin`` holds every scope).
"""

from __future__ import annotations

from typing import Annotated

import sqlite_utils
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from yiwang.api.db import get_db
from yiwang.api.keys import SCOPES, ApiKey, verify_key
from yiwang.errors import PermissionDenied, Unauthenticated

_bearer = HTTPBearer(auto_error=False, description="An API key created with `yiwang keys create`.")


def require(*scopes: str):
    """A dependency admitting keys that hold any one of ``scopes``."""
    for scope in scopes:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")

    # Runs on the event loop: one primary-key lookup, cheaper than a hop to the threadpool.
    async def dependency(
        request: Request,
        db: Annotated[sqlite_utils.Database, Depends(get_db)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
        key = verify_key(db.conn, credentials.credentials)
        if not any(key.allows(s) for s in scopes):
            raise PermissionDenied(f"this API key lacks the scope {' or '.join(scopes)}")
        request.state.api_key_id = key.key_id
        return key

    dependency.__name__ = "require_" + "_or_".join(s.replace(":", "_") for s in scopes)
    return dependency
