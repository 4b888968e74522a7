"""A resident ID number sent to the live API as an id (issue 10 items 5 and 15): 422 before anything is
stored or audited, and afterwards not one byte under the home holds it in clear. The subject-id rule is the
data contract's, so ids ingest accepts are exactly the ids the API serves."""

from __future__ import annotations

import urllib.parse

import httpx
import polars as pl
import pytest

from test_ingest_privacy import leaks
from data import contract
from data.registry import insert_rows
from yiwang.api.audit import list_audit
from yiwang.api.keys import create_key
from yiwang.api.server import run_api
from data.settings import load_settings
from yiwang.migrations import open_db

RESIDENT_ID = "310101199003071118"  # the number from the report (valid checksum)
MISTYPED_ID = "31010119900307111X"  # wrong check character: still personal data


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resident_ids")
    settings = load_settings(home=tmp / "home", id_hash_key="test-key", reminder_rules_file=tmp / "rules.yaml")
    db = open_db(settings.db_path)
    insert_rows(db.conn, "catalog", pl.DataFrame({
        "item_id": ["ITEM_A"], "name": ["事项"], "department": ["市民政局"], "audience": ["person"],
        "category": ["婚育"], "ingest_id": [0]}))
    _, key = create_key(db, "portal", ["admin"])
    with run_api(settings) as base_url, httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client, settings, db
    db.conn.close()


def _event(**over):
    return {"subject_id": "P0000001", "item_id": "ITEM_A", "action": "view", "ts": "2026-03-01T09:30:00", **over}


def _assert_nowhere(settings, db, *numbers):
    db.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    assert leaks(settings.home, list(numbers)) == {}


@pytest.mark.parametrize("number", [RESIDENT_ID, MISTYPED_ID])
@pytest.mark.parametrize("field", ["subject_id", "event_id", "item_id"])
def test_event_with_a_resident_id_is_422_and_stored_nowhere(live, field, number):
    client, settings, db = live
    audits_before = len(list_audit(db, limit=1_000_000))
    resp = client.post("/v1/events", json={"events": [_event(event_id="fine-1"), _event(**{field: number})]})
    assert resp.status_code == 422, resp.text
    assert number not in resp.text
    assert len(list_audit(db, limit=1_000_000)) == audits_before
    _assert_nowhere(settings, db, number)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/v1/subjects/{id}/preferences", {"personalisation": False, "channels": []}),
        ("GET", "/v1/subjects/{id}/profile", None),
        ("GET", "/v1/subjects/{id}/tags", None),
        ("GET", "/v1/subjects/{id}/feed", None),
        ("POST", "/v1/subjects/{id}/feed/ITEM_A/dismiss", None),
        ("POST", "/v1/subjects/P0000001/feed/{id}/dismiss", None),
        ("DELETE", "/v1/subjects/P0000001/tags/crowd.{id}", None),
        ("POST", "/v1/subjects/P0000001/tags/crowd.{id}/restore", None),
    ],
)
def test_resident_id_as_a_path_id_is_422_and_stored_nowhere(live, method, path, body):
    client, settings, db = live
    resp = client.request(method, path.format(id=RESIDENT_ID), json=body)
    assert resp.status_code == 422, resp.text
    _assert_nowhere(settings, db, RESIDENT_ID)


def test_a_good_event_still_goes_in(live):
    client, _, _ = live
    resp = client.post("/v1/events", json={"events": [_event(event_id="fine-2")]})
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("subject", ["P😀0001", "P 1", "x" * 65, RESIDENT_ID, "P1\n"])
def test_ids_the_contract_refuses_are_refused_by_the_api(live, subject):
    client, _, _ = live
    assert contract.subject_id_problem(subject) is not None
    assert client.post("/v1/events", json={"events": [_event(subject_id=subject)]}).status_code == 422
    path = "/v1/subjects/" + urllib.parse.quote(subject, safe="") + "/preferences"
    assert client.get(path).status_code in (404, 422)


@pytest.mark.parametrize("subject", ["P0000001", "E-12_ab", "1234567890", "110101000000000000"])
def test_ids_the_contract_accepts_are_accepted_by_the_api(live, subject):
    client, _, _ = live
    assert contract.subject_id_problem(subject) is None
    assert client.get(f"/v1/subjects/{subject}/preferences").status_code == 200


def test_a_denied_request_aimed_at_a_resident_id_audits_no_number(live):
    """Access is decided before the path is validated: the 403's audit record must not carry the number."""
    client, settings, db = live
    _, reader = create_key(db, "reader", ["feed:read"])
    resp = client.put(f"/v1/subjects/{RESIDENT_ID}/preferences", json={"personalisation": False, "channels": []},
                      headers={"Authorization": f"Bearer {reader}"})
    assert resp.status_code in (403, 422), resp.text
    _assert_nowhere(settings, db, RESIDENT_ID)


def test_a_request_id_shaped_like_a_resident_id_is_replaced_before_it_is_audited(live):
    """The portal's X-Request-Id goes into the audit log: one holding a resident ID number is not taken."""
    client, settings, db = live
    resp = client.post("/v1/events", json={"events": [_event(event_id="fine-3")]},
                       headers={"X-Request-Id": f"req-{RESIDENT_ID}"})
    assert resp.status_code == 200, resp.text
    assert RESIDENT_ID not in resp.headers["x-request-id"]
    _assert_nowhere(settings, db, RESIDENT_ID)
