"""Who is calling and may they: ``Authorization: Bearer <key>`` checked against the hashed keys in the store.

``require(scope, ...)`` is the dependency every protected route declares; it answers 401 for a missing,
unknown or revoked key and 403 for a key without any of the named scopes (``admin`` holds every scope).
A 403, and a 401 for a revoked key, are audited (key id, the operation, the subject it aimed at, outcome
``denied``): a key probing for what it may not read is what the audit log is for.
The OpenAPI document lists each route's scopes (see :func:`yiwang.api.openapi.document`).
"""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from yiwang.api.audit import record
from yiwang.api.db import request_db
from yiwang.api.errors import request_id_of
from yiwang.api.keys import SCOPES, ApiKey, verify_key
from data.errors import PermissionDenied, Unauthenticated


def require(*scopes: str):
    """A dependency admitting keys that hold any one of ``scopes``."""
    for scope in scopes:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")

    # Runs on the event loop: one primary-key lookup, cheaper than a hop to the threadpool. The header is
    # read here rather than through fastapi.security so the hottest route resolves one dependency, not three.
    async def dependency(request: Request) -> ApiKey:
        try:
            key = authorised_key(request_db(request).conn, request.headers.get("authorization"), scopes)
        except (Unauthenticated, PermissionDenied) as exc:
            # A revoked key still in use, or one lacking the scope, is worth an audit record; an unknown key
            # names nobody to record.
            denied_key_id = getattr(exc, "key_id", None)
            if denied_key_id is not None:
                await _audit_denial(request, denied_key_id)
            raise
        request.state.api_key_id = key.key_id
        return key

    dependency.__name__ = "require_" + "_or_".join(s.replace(":", "_") for s in scopes)
    dependency.scopes = scopes  # type: ignore[attr-defined]
    return dependency


def authorised_key(conn, authorization: str | None, scopes: tuple[str, ...]) -> ApiKey:
    """The key an ``Authorization: Bearer <key>`` header carries, if it is active and holds one of ``scopes``.

    Raises :class:`Unauthenticated` (``key_id`` set when the key is known but revoked) or
    :class:`PermissionDenied` (``key_id`` set). Both the routes and the feed fast lane decide access here.
    """
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    key = verify_key(conn, credentials.strip())
    if not any(key.allows(s) for s in scopes):
        denied = PermissionDenied(f"this API key lacks the scope {' or '.join(scopes)}")
        denied.key_id = key.key_id  # type: ignore[attr-defined]
        raise denied
    return key


# The path parameter naming what a request acts on, in the order the audit log's ``subject`` prefers them.
_SUBJECT_PARAMS = ("subject_id", "alert_id", "rule_id", "version")
# Access is decided before the path is validated: only a value an id could be goes into the log, and never
# one shaped like a resident ID number (15 or more digits in a row).
_LOGGABLE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_ID_NUMBER_SHAPED = re.compile(r"[0-9]{15}")


async def _audit_denial(request: Request, key_id: str) -> None:
    # A write may wait on a batch holding the store's write lock: off the event loop, as the routes' writes are.
    await run_in_threadpool(record, request_db(request), key_id, _operation(request), _audit_subject(request),
                            "denied", request_id_of(request))


def _operation(request: Request) -> str:
    """The method and route template, e.g. ``GET /v1/subjects/{subject_id}/profile``: no ids in it."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', 'unmatched')}"


def _audit_subject(request: Request) -> str | None:
    for name in _SUBJECT_PARAMS:
        value = request.path_params.get(name)
        if value is not None:
            value = str(value)
            if _LOGGABLE.match(value) and not _ID_NUMBER_SHAPED.search(value):
                return value
            return "(invalid id)"
    return None
