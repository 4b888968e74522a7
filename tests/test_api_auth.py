"""Access control on every endpoint: 401 without a key, with an unknown or revoked key; 403 without the scope.

The scope table below is the contract; a /v1 route missing from it fails the test, so a new endpoint
cannot ship without a decision about who may call it.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest

from yiwang.api.app import create_app
from yiwang.api.keys import SCOPES, create_key, list_keys, revoke_key, stored_key, verify_key
from yiwang.api.server import run_api
from data.errors import Unauthenticated
from data.settings import load_settings
from yiwang.migrations import open_db

ROUTE_SCOPES = {
    ("GET", "/v1/subjects/{subject_id}/feed"): {"feed:read"},
    ("POST", "/v1/subjects/{subject_id}/feed/{item_id}/dismiss"): {"events:write"},
    ("GET", "/v1/subjects/{subject_id}/alerts"): {"feed:read"},
    ("POST", "/v1/alerts/{alert_id}/read"): {"events:write"},
    ("POST", "/v1/alerts/{alert_id}/dismiss"): {"events:write"},
    ("POST", "/v1/events"): {"events:write"},
    ("GET", "/v1/subjects/{subject_id}/profile"): {"profile:read"},
    ("GET", "/v1/subjects/{subject_id}/tags"): {"feed:read", "profile:read", "tags:write"},
    ("DELETE", "/v1/subjects/{subject_id}/tags/{code}"): {"tags:write"},
    ("POST", "/v1/subjects/{subject_id}/tags/{code}/restore"): {"tags:write"},
    ("GET", "/v1/subjects/{subject_id}/preferences"): {"feed:read", "events:write", "profile:read"},
    ("PUT", "/v1/subjects/{subject_id}/preferences"): {"events:write"},
    ("GET", "/v1/rules"): {"rules:write"},
    ("PUT", "/v1/rules"): {"rules:write"},
    ("POST", "/v1/rules/{rule_id}/dry-run"): {"rules:write"},
    ("GET", "/v1/models"): {"models:write"},
    ("POST", "/v1/models/{version}/promote"): {"models:write"},
}
PUBLIC = {("GET", "/healthz"), ("GET", "/metrics")}

PATH_VALUES = {
    "subject_id": "P0000001",
    "item_id": "ITEM1",
    "code": "life_event.marriage",
    "alert_id": "1",
    "rule_id": "rule1",
    "version": "v1",
}
BODIES = {
    ("POST", "/v1/events"): {
        "events": [{"subject_id": "P0000001", "item_id": "ITEM1", "action": "view", "ts": "2026-01-01T10:00:00"}]
    },
    ("PUT", "/v1/subjects/{subject_id}/preferences"): {"personalisation": False, "channels": ["in_app"]},
    ("PUT", "/v1/rules"): {"content": "rules: []\n"},
}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    # PUT /v1/rules writes the rules file: point it away from the repository's data/.
    settings = load_settings(home=tmp / "home", id_hash_key="test-key", reminder_rules_file=tmp / "rules.yaml")
    with run_api(settings) as base_url:
        db = open_db(settings.db_path)
        yield base_url, db
        db.conn.close()


def _routes():
    spec = create_app(load_settings(home="/nonexistent")).openapi()
    return [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]


def _url(path: str) -> str:
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    return path


def _call(client: httpx.Client, method: str, path: str, key: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    return client.request(method, _url(path), headers=headers, json=BODIES.get((method, path)))


def _assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, (resp.request.method, resp.request.url.path, resp.text)
    body = resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"]["request_id"] == resp.headers["x-request-id"]


def test_every_route_has_a_scope_decision():
    routes = set(_routes())
    assert routes - PUBLIC == set(ROUTE_SCOPES)


@pytest.mark.parametrize("method,path", sorted(ROUTE_SCOPES))
def test_missing_unknown_revoked_and_wrong_scope(live, method, path):
    base_url, db = live
    allowed = ROUTE_SCOPES[(method, path)]
    _, wrong = create_key(db, "wrong-scope", [s for s in SCOPES if s not in allowed and s != "admin"])
    revoked, revoked_key = create_key(db, "revoked", sorted(allowed))
    revoke_key(db, revoked.key_id)
    _, right = create_key(db, "right-scope", sorted(allowed)[:1])
    forged = right[:-4] + ("AAAA" if not right.endswith("AAAA") else "BBBB")
    with httpx.Client(base_url=base_url, timeout=10) as client:
        _assert_error(_call(client, method, path, None), 401, "unauthenticated")
        _assert_error(_call(client, method, path, "not-a-key"), 401, "unauthenticated")
        _assert_error(_call(client, method, path, forged), 401, "unauthenticated")
        _assert_error(_call(client, method, path, revoked_key), 401, "unauthenticated")
        _assert_error(_call(client, method, path, wrong), 403, "forbidden")
        # With the scope the request gets past access control (it may still fail later, e.g. 404/503).
        assert _call(client, method, path, right).status_code not in (401, 403)


def test_missing_key_announces_bearer(live):
    base_url, _ = live
    resp = httpx.get(f"{base_url}/v1/subjects/P1/feed", timeout=10)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"


def test_admin_holds_every_scope(live):
    base_url, db = live
    _, admin = create_key(db, "ops", ["admin"])
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for method, path in sorted(ROUTE_SCOPES):
            assert _call(client, method, path, admin).status_code not in (401, 403), (method, path)


def test_revocation_takes_effect_on_the_next_request(live):
    base_url, db = live
    record, key = create_key(db, "portal", ["feed:read"])
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.get("/v1/subjects/P1/preferences", headers=headers).status_code == 200
        revoke_key(db, record.key_id)
        _assert_error(client.get("/v1/subjects/P1/preferences", headers=headers), 401, "unauthenticated")


def test_keys_are_stored_hashed_and_shown_once(settings, db):
    record, key = create_key(db, "portal", ["feed:read", "events:write"])
    assert key.startswith(f"yw_{record.key_id}_") and len(key) > 50
    row = tuple(stored_key(db, record.key_id).values())
    assert key not in " ".join(str(v) for v in row)
    assert hashlib.sha256(key.encode()).hexdigest() in row
    assert verify_key(db.conn, key).scopes == {"feed:read", "events:write"}
    listed = list_keys(db)
    assert [k.key_id for k in listed] == [record.key_id]
    assert not hasattr(listed[0], "key_hash")
    with pytest.raises(Unauthenticated):
        verify_key(db.conn, key + "x")
