"""API keys: created with scopes, shown once, stored as a sha256 hash, revocable.

A key reads ``yw_<key_id>_<secret>``. The key id is public (lists, audit log); the secret is 256 bits
from :mod:`secrets`, so a plain sha256 is enough (no password stretching needed for random keys) and the
lookup by key id followed by a constant-time hash compare leaks nothing through timing.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlite_utils

from data.errors import NotFound, StateError, Unauthenticated, YiwangError

SCOPES = ("feed:read", "events:write", "profile:read", "tags:write", "rules:write", "models:write", "admin")
ADMIN = "admin"

_KEY_RE = re.compile(r"^yw_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class UnknownScope(YiwangError):
    """A scope name outside :data:`SCOPES` was asked for."""

    exit_code = 2
    http_status = 422
    code = "unknown_scope"


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scopes: frozenset[str]
    created_at: str
    revoked_at: str | None

    def allows(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _row_to_key(row: dict) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        name=row["name"],
        scopes=frozenset(row["scopes"].split()),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


def create_key(db: sqlite_utils.Database, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Create a key; returns the record and the full key, which is never retrievable again."""
    wanted = sorted(set(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise UnknownScope(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not wanted:
        raise UnknownScope(f"a key needs at least one scope; known: {', '.join(SCOPES)}")
    if not name.strip():
        raise UnknownScope("a key needs a non-empty name (the system or team holding it)")
    key_id = secrets.token_hex(6)
    full = f"yw_{key_id}_{secrets.token_urlsafe(32)}"
    created = _now()
    db["api_keys"].insert({"key_id": key_id, "name": name.strip(), "key_hash": _hash(full),
                           "scopes": " ".join(wanted), "created_at": created})
    return ApiKey(key_id, name.strip(), frozenset(wanted), created, None), full


def list_keys(db: sqlite_utils.Database) -> list[ApiKey]:
    rows = db["api_keys"].rows_where(select="key_id, name, scopes, created_at, revoked_at",
                                     order_by="created_at, key_id")
    return [_row_to_key(r) for r in rows]


def stored_key(db: sqlite_utils.Database, key_id: str) -> dict | None:
    """A key's record exactly as stored (its hash, never the key): what an audit of the store sees."""
    return next(db.query("SELECT * FROM api_keys WHERE key_id = ?", [key_id]), None)


def revoke_key(db: sqlite_utils.Database, key_id: str) -> ApiKey:
    """Revoke a key at once; revoking twice is an error so scripts notice a typo'd id."""
    try:
        row = db["api_keys"].get(key_id)
    except sqlite_utils.db.NotFoundError:
        raise NotFound(f"no API key {key_id!r}") from None
    if row["revoked_at"]:
        raise StateError(f"API key {key_id} was already revoked at {row['revoked_at']}")
    revoked_at = _now()
    db["api_keys"].update(key_id, {"revoked_at": revoked_at})
    return _row_to_key({**row, "revoked_at": revoked_at})


def verify_key(conn, presented: str) -> ApiKey:
    """The active key matching ``presented``, else :class:`Unauthenticated` (same message for every failure).

    Runs on every authenticated request (the feed fast lane's too), so it is one prepared statement on the raw
    connection; the operator-side functions above go through sqlite-utils' table API.
    """
    match = _KEY_RE.match(presented or "")
    row = None
    if match:
        row = conn.execute(
            "SELECT key_id, name, key_hash, scopes, created_at, revoked_at FROM api_keys WHERE key_id = ?",
            (match.group(1),),
        ).fetchone()
    # Hash and compare even when the id is unknown so timing does not reveal which ids exist.
    stored = row[2] if row else "0" * 64
    ok = hmac.compare_digest(_hash(presented or ""), stored) and row is not None
    if not ok:
        raise Unauthenticated("invalid API key")
    if row[5]:
        exc = Unauthenticated("API key revoked")
        exc.key_id = row[0]  # a genuine key, revoked: its holder is known, so the attempt can be audited
        raise exc
    return ApiKey(row[0], row[1], frozenset(row[3].split()), row[4], row[5])
