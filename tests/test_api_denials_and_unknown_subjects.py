"""Issue 10, item 15, on a live server: a denied request is audited like any other, and a subject the feed does
not know is 404 for dismissals as for the feed itself."""

from __future__ import annotations

import httpx
import polars as pl
import pytest

from yiwang.api.audit import list_audit
from yiwang.api.keys import create_key
from yiwang.api.server import run_api
from data.citizen import dismissed_items
from data.registry import insert_rows
from data.settings import load_settings
from yiwang.migrations import open_db

KNOWN = "P0000001"
ITEM = "IT001"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("denials")
    settings = load_settings(home=tmp / "home", id_hash_key="test-key", reminder_rules_file=tmp / "rules.yaml")
    db = open_db(settings.db_path)
    insert_rows(db.conn, "catalog", pl.DataFrame({"item_id": [ITEM], "name": "事项", "department": "市公安局",
                                                  "audience": "person", "category": "出入境", "ingest_id": 0}))
    insert_rows(db.conn, "people", pl.DataFrame({"person_id": [KNOWN], "birth_date": "1990-05-01", "gender": "F",
                                                 "district": "静安区", "local_hukou": 1, "ingest_id": 0}))
    reader, reader_key = create_key(db, "feed-only", ["feed:read"])
    _, writer_key = create_key(db, "portal", ["feed:read", "events:write"])
    with run_api(settings) as base_url:
        yield base_url, db, (reader.key_id, reader_key), writer_key
    db.conn.close()


@pytest.mark.parametrize("method,path,subject", [
    ("GET", "/v1/subjects/P0000001/profile", "P0000001"),
    ("DELETE", "/v1/subjects/P0000001/tags/life_event.marriage", "P0000001"),
    ("POST", "/v1/subjects/P0000001/feed/IT001/dismiss", "P0000001"),
    ("GET", "/v1/models", None),
])
def test_every_denial_is_audited_with_key_action_subject(live, method, path, subject):
    base_url, db, (reader_id, reader_key), _ = live
    resp = httpx.request(method, base_url + path, headers={"Authorization": f"Bearer {reader_key}"}, timeout=10)
    assert resp.status_code == 403, resp.text
    request_id = resp.headers["x-request-id"]
    records = [r for r in list_audit(db, key_id=reader_id, limit=50) if r["request_id"] == request_id]
    assert len(records) == 1, records
    record = records[0]
    assert record["outcome"] == "denied"
    assert record["subject"] == subject
    # The action names the operation by its route template, never by the raw path with its ids.
    assert record["action"].startswith(method + " /v1/")
    assert "P0000001" not in record["action"] and "IT001" not in record["action"]


def test_a_denied_id_shaped_path_value_is_not_written_to_the_audit_log(live):
    base_url, db, (reader_id, reader_key), _ = live
    id_number = "310101199003071118"
    resp = httpx.get(f"{base_url}/v1/subjects/{id_number}/profile", headers={"Authorization": f"Bearer {reader_key}"},
                     timeout=10)
    assert resp.status_code in (403, 422)
    records = list_audit(db, limit=1_000_000)
    assert not [r for r in records if id_number in f"{r['subject'] or ''}{r['action']}"]


def test_dismiss_for_an_unknown_subject_is_404_like_its_feed(live):
    base_url, db, _, writer_key = live
    headers = {"Authorization": f"Bearer {writer_key}"}
    unknown = "P9999999"
    resp = httpx.post(f"{base_url}/v1/subjects/{unknown}/feed/{ITEM}/dismiss", headers=headers, timeout=10)
    assert resp.status_code == 404, resp.text
    assert resp.json()["error"]["code"] == "not_found"
    assert dismissed_items(db.conn, unknown) == set()


def test_dismiss_for_a_registered_subject_still_works(live):
    base_url, db, _, writer_key = live
    resp = httpx.post(f"{base_url}/v1/subjects/{KNOWN}/feed/{ITEM}/dismiss",
                      headers={"Authorization": f"Bearer {writer_key}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["item_id"] == ITEM


def test_a_revoked_key_still_in_use_is_audited(live):
    base_url, db, _, _ = live
    from yiwang.api.keys import revoke_key

    revoked, revoked_key = create_key(db, "old-portal", ["profile:read"])
    revoke_key(db, revoked.key_id)
    resp = httpx.get(f"{base_url}/v1/subjects/{KNOWN}/profile", headers={"Authorization": f"Bearer {revoked_key}"},
                     timeout=10)
    assert resp.status_code == 401
    records = list_audit(db, key_id=revoked.key_id)
    assert [(r["outcome"], r["subject"], r["request_id"]) for r in records] == [
        ("denied", KNOWN, resp.headers["x-request-id"])]
