"""POST /v1/events against a live server: contract validation, idempotency, limits, the event log, audit."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import polars as pl
import pytest

from yiwang.api.audit import list_audit
from yiwang.api.keys import create_key
from yiwang.api.server import run_api
from data.eventlog import scan_events
from data.registry import ingest_record, insert_rows
from data.settings import load_settings
from yiwang.migrations import open_db

ITEMS = ("ITEM_A", "ITEM_B")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("events")
    settings = load_settings(home=tmp / "home", id_hash_key="test-key", reminder_rules_file=tmp / "rules.yaml",
                             api_max_events_per_request=50, api_max_body_bytes=20_000)
    db = open_db(settings.db_path)
    insert_rows(db.conn, "catalog", pl.DataFrame({"item_id": ITEMS, "name": [f"事项 {i}" for i in ITEMS],
                                                  "department": "市民政局", "audience": "person", "category": "婚育",
                                                  "ingest_id": 0}))
    _, key = create_key(db, "portal", ["events:write"])
    with run_api(settings) as base_url, httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client, settings, db
    db.conn.close()


def _event(**over):
    return {"subject_id": "P0000001", "item_id": "ITEM_A", "action": "view", "ts": "2026-03-01T09:30:00", **over}


def _stored(settings) -> pl.DataFrame:
    return scan_events(settings.events_dir).collect()


def test_batch_is_stored_once_and_resending_adds_nothing(live):
    client, settings, _ = live
    batch = {"events": [_event(event_id="e-1"), _event(event_id="e-2", action="apply", channel="app")]}
    first = client.post("/v1/events", json=batch)
    assert first.status_code == 200, first.text
    assert first.json() | {"ingest_id": 0} == {"received": 2, "inserted": 2, "duplicates": 0, "ingest_id": 0}
    again = client.post("/v1/events", json=batch)
    assert again.json()["inserted"] == 0 and again.json()["duplicates"] == 2
    stored = _stored(settings).filter(pl.col("event_id").is_in(["e-1", "e-2"]))
    assert stored.height == 2
    assert stored.filter(pl.col("event_id") == "e-2")["channel"].to_list() == ["app"]


def test_naive_time_is_shanghai_and_offsets_are_honoured(live):
    client, settings, _ = live
    resp = client.post("/v1/events", json={"events": [
        _event(event_id="tz-naive", ts="2026-03-02T08:00:00"),
        _event(event_id="tz-utc", ts="2026-03-02T08:00:00Z"),
    ]})
    assert resp.status_code == 200, resp.text
    got = dict(_stored(settings).filter(pl.col("event_id").str.starts_with("tz-")).select("event_id", "ts").rows())
    assert got["tz-naive"] == datetime(2026, 3, 2, 0, 0, tzinfo=timezone.utc)
    assert got["tz-utc"] == datetime(2026, 3, 2, 8, 0, tzinfo=timezone.utc)


def test_events_without_id_get_a_derived_id_so_retries_are_idempotent(live):
    client, settings, _ = live
    batch = {"events": [_event(subject_id="P0000077", ts="2026-03-03 10:00:00")]}
    assert client.post("/v1/events", json=batch).json()["inserted"] == 1
    assert client.post("/v1/events", json=batch).json()["inserted"] == 0
    ids = _stored(settings).filter(pl.col("subject_id") == "P0000077")["event_id"].to_list()
    assert len(ids) == 1 and ids[0].startswith("d:")


def test_repeats_inside_one_batch_count_as_duplicates(live):
    client, _, _ = live
    resp = client.post("/v1/events", json={"events": [_event(event_id="dup-1"), _event(event_id="dup-1")]})
    assert resp.json()["inserted"] == 1 and resp.json()["duplicates"] == 1


def test_unregistered_subjects_are_accepted(live):
    client, settings, _ = live
    resp = client.post("/v1/events", json={"events": [_event(event_id="anon-1", subject_id="PORTAL_USER_9")]})
    assert resp.status_code == 200
    assert _stored(settings).filter(pl.col("event_id") == "anon-1").height == 1


def test_one_bad_event_rejects_the_batch_naming_index_field_and_reason(live):
    client, settings, _ = live
    tomorrow = (datetime.now(timezone(timedelta(hours=8))) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S")
    resp = client.post("/v1/events", json={"events": [
        _event(event_id="ok-but-rolled-back"),
        _event(event_id="bad-item", item_id="NO_SUCH_ITEM"),
        _event(event_id="bad-ts", ts="yesterday"),
        _event(event_id="future", ts=tomorrow),
    ]})
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "contract_error"
    assert {(d["index"], d["field"], d["reason"]) for d in error["details"]} == {
        (1, "item_id", "unknown_item"), (2, "ts", "bad_timestamp"), (3, "ts", "ts_after_as_of"),
    }
    assert _stored(settings).filter(pl.col("event_id") == "ok-but-rolled-back").height == 0


@pytest.mark.parametrize("event", [
    _event(action="like"), _event(channel="fax"), _event(subject_id=""), {"subject_id": "P1"},
])
def test_schema_violations_are_422(live, event):
    client, _, _ = live
    resp = client.post("/v1/events", json={"events": [event]})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_request"


def test_too_many_events_is_413(live):
    client, _, _ = live
    resp = client.post("/v1/events", json={"events": [_event(event_id=f"n{i}") for i in range(51)]})
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"


def test_too_many_bytes_is_413_with_or_without_content_length(live):
    client, _, _ = live
    big = b'{"events": [' + b",".join([b'{"subject_id": "P1", "item_id": "ITEM_A", "action": "view", '
                                      b'"ts": "2026-01-01T00:00:00"}'] * 400) + b"]}"
    assert len(big) > 20_000
    resp = client.post("/v1/events", content=big, headers={"Content-Type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"

    def chunks():
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    streamed = client.post("/v1/events", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("body", [b"{", b"not json", b"[]", b'{"events": []}', b'{"events": "x"}', b"\xff\xfe"])
def test_malformed_bodies_are_4xx_with_the_error_shape(live, body):
    client, _, _ = live
    resp = client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500
    assert set(resp.json()["error"]) >= {"code", "message", "request_id"}


def test_appends_are_audited_and_recorded_as_api_ingests(live):
    client, _, db = live
    resp = client.post("/v1/events", json={"events": [_event(event_id="audit-1")]})
    ingest_id = resp.json()["ingest_id"]
    row = ingest_record(db.conn, ingest_id)
    assert row["source"].startswith("api:") and row["status"] == "done"
    audit = [(r["action"], r["outcome"], r["request_id"]) for r in list_audit(db, subject=f"ingest:{ingest_id}")]
    assert audit == [("events.append", "ok", resp.headers["x-request-id"])]
