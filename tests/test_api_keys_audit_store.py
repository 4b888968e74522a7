"""API keys and the audit log in a real store: what the operator-side functions write and read back."""

from __future__ import annotations

import pytest

from data.errors import NotFound, StateError, Unauthenticated
from yiwang.api.audit import list_audit, record
from yiwang.api.keys import create_key, list_keys, revoke_key, stored_key, verify_key


def test_keys_are_listed_revoked_once_and_unknown_ids_named(db):
    portal, portal_key = create_key(db, "  portal  ", ["feed:read", "events:write", "feed:read"])
    ops, _ = create_key(db, "ops", ["admin"])
    assert portal.name == "portal" and portal.scopes == {"feed:read", "events:write"}
    stored = stored_key(db, portal.key_id)
    assert portal_key not in stored["key_hash"] and stored["scopes"] == "events:write feed:read"

    assert {k.key_id for k in list_keys(db)} == {portal.key_id, ops.key_id}
    assert verify_key(db.conn, portal_key) == portal

    revoked = revoke_key(db, portal.key_id)
    assert revoked.revoked_at and [k.revoked_at for k in list_keys(db) if k.key_id == portal.key_id] == [
        revoked.revoked_at]
    with pytest.raises(Unauthenticated, match="revoked"):
        verify_key(db.conn, portal_key)
    with pytest.raises(StateError, match=f"{portal.key_id} was already revoked"):
        revoke_key(db, portal.key_id)
    with pytest.raises(NotFound, match="no API key 'ffffffffffff'"):
        revoke_key(db, "ffffffffffff")
    assert not db.conn.in_transaction


def test_audit_lists_newest_first_by_subject_and_key(db):
    for i, (key_id, subject) in enumerate([("k1", "P1"), ("k2", "P1"), ("k1", "P2"), ("k1", "P1")]):
        record(db, key_id, "profile.read", subject, "ok", f"req-{i}")
    assert [r["request_id"] for r in list_audit(db)] == ["req-3", "req-2", "req-1", "req-0"]
    assert [r["request_id"] for r in list_audit(db, subject="P1")] == ["req-3", "req-1", "req-0"]
    assert [r["request_id"] for r in list_audit(db, key_id="k1")] == ["req-3", "req-2", "req-0"]
    assert [r["request_id"] for r in list_audit(db, subject="P1", key_id="k1", limit=1)] == ["req-3"]
    assert set(list_audit(db)[0]) == {"at", "key_id", "action", "subject", "outcome", "request_id"}
