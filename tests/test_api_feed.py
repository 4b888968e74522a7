"""GET /v1/subjects/{id}/feed on a live server: the served version, dismissals, the personalisation switch,
and no error while a new version is published under load."""

from __future__ import annotations

import json
import threading
from datetime import date
from pathlib import Path

import httpx
import polars as pl
import pytest

from data.citizen import dismissed_items
from data.registry import insert_rows
from recommender import feeds

from yiwang.api.keys import create_key
from yiwang.api.server import run_api
from data.settings import load_settings
from yiwang.migrations import open_db

ITEMS = [f"IT{i:03d}" for i in range(30)]
SUBJECTS = [f"P{i:07d}" for i in range(1, 41)]


def publish(db) -> int:
    """Publish the next version through the recommender's publisher; its items depend on its number."""
    version = max((v["version"] for v in feeds.list_versions(db)), default=0) + 1
    reasons = json.dumps([{"source": "popular", "zh": "热门事项", "en": "popular", "ref": None}])
    rows = [
        (s, r + 1, ITEMS[(r + version) % len(ITEMS)], 1.0 - r / 100, reasons)
        for s in SUBJECTS for r in range(10)
    ]
    rows += [("~popular:person", r + 1, ITEMS[-(r + 1)], 0.5, reasons) for r in range(5)]
    frame = pl.DataFrame(rows, orient="row", schema=["subject_id", "rank", "item_id", "score", "reasons_json"])
    settings = load_settings(home=_home(db), id_hash_key="test-key")
    assert feeds.publish(db, settings, [frame], "m-test", date(2026, 3, 1)).version == version
    return version


def _home(db) -> Path:
    return Path(db.conn.execute("PRAGMA database_list").fetchone()[2]).parent


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("feed")
    settings = load_settings(home=tmp / "home", id_hash_key="test-key", reminder_rules_file=tmp / "rules.yaml")
    db = open_db(settings.db_path)
    insert_rows(db.conn, "catalog", pl.DataFrame({
        "item_id": ITEMS, "name": [f"事项{i}" for i in ITEMS], "department": "市公安局", "audience": "person",
        "category": "出入境", "ingest_id": 0}))
    insert_rows(db.conn, "people", pl.DataFrame({
        "person_id": SUBJECTS, "birth_date": "1990-05-01", "gender": "F", "district": "静安区", "local_hukou": 1,
        "ingest_id": 0}))
    _, key = create_key(db, "portal", ["feed:read", "events:write"])
    with run_api(settings) as base_url, httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client, db
    db.conn.close()


def test_no_published_feed_is_409(live):
    client, _ = live
    resp = client.get(f"/v1/subjects/{SUBJECTS[0]}/feed")
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "state_error"


def test_feed_has_ranked_items_with_reasons_and_names(live):
    client, db = live
    assert publish(db) == 1
    resp = client.get(f"/v1/subjects/{SUBJECTS[0]}/feed", params={"limit": 5})
    assert resp.status_code == 200, resp.text
    feed = resp.json()
    assert feed["version"] == 1 and feed["personalised"] is True and feed["model_version"] == "m-test"
    assert [i["rank"] for i in feed["items"]] == [1, 2, 3, 4, 5]
    assert feed["items"][0]["item_id"] == ITEMS[1] and feed["items"][0]["name"] == f"事项{ITEMS[1]}"
    assert feed["items"][0]["reasons"][0]["zh"] == "热门事项"


@pytest.mark.parametrize("limit", [0, -1, 201, "x"])
def test_bad_limit_is_422(live, limit):
    client, _ = live
    resp = client.get(f"/v1/subjects/{SUBJECTS[0]}/feed", params={"limit": limit})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_request"


def test_dismissed_item_leaves_the_feed_at_the_next_read(live):
    client, db = live
    subject = SUBJECTS[1]
    first = client.get(f"/v1/subjects/{subject}/feed").json()["items"][0]["item_id"]
    resp = client.post(f"/v1/subjects/{subject}/feed/{first}/dismiss")
    assert resp.status_code == 200 and resp.json()["item_id"] == first
    assert client.post(f"/v1/subjects/{subject}/feed/{first}/dismiss").status_code == 200  # idempotent
    assert first not in [i["item_id"] for i in client.get(f"/v1/subjects/{subject}/feed").json()["items"]]
    assert dismissed_items(db.conn, subject) == {first}
    assert client.post(f"/v1/subjects/{subject}/feed/NOPE/dismiss").status_code == 404


def test_switching_personalisation_off_holds_from_the_next_read(live):
    client, _ = live
    subject = SUBJECTS[2]
    personal = {i["item_id"] for i in client.get(f"/v1/subjects/{subject}/feed").json()["items"]}
    resp = client.put(f"/v1/subjects/{subject}/preferences", json={"personalisation": False})
    assert resp.status_code == 200 and resp.json()["personalisation"] is False
    feed = client.get(f"/v1/subjects/{subject}/feed").json()
    assert feed["personalised"] is False
    assert {i["item_id"] for i in feed["items"]} == set(ITEMS[-5:])
    assert {i["item_id"] for i in feed["items"]} != personal
    client.put(f"/v1/subjects/{subject}/preferences", json={"personalisation": True})
    assert client.get(f"/v1/subjects/{subject}/feed").json()["personalised"] is True


def test_no_error_while_new_versions_are_published(live, tmp_path):
    client, db = live
    publish(db)
    writer_db = open_db(db.conn.execute("PRAGMA database_list").fetchone()[2])
    stop = threading.Event()
    published = []

    def publisher():
        while not stop.is_set() and len(published) < 10:
            published.append(publish(writer_db))

    thread = threading.Thread(target=publisher)
    thread.start()
    statuses, versions = [], set()
    try:
        while thread.is_alive() or len(statuses) < 50:
            resp = client.get(f"/v1/subjects/{SUBJECTS[3]}/feed")
            statuses.append(resp.status_code)
            body = resp.json()
            assert resp.status_code == 200, body
            versions.add(body["version"])
            # A reader sees one whole version: every item of it, none of another.
            assert len(body["items"]) == 10
            assert body["items"][0]["item_id"] == ITEMS[(0 + body["version"]) % len(ITEMS)]
            if len(statuses) > 2000:
                break
    finally:
        stop.set()
        thread.join()
        writer_db.conn.close()
    assert set(statuses) == {200}
    assert len(published) == 10 and len(versions) >= 2


def test_fast_path_agrees_with_read_feed(live):
    """The route serves the common case itself; recommender.feeds.read_feed is the authority it must match."""
    from recommender.feeds import FeedVersions, ItemNames, read_feed, read_feed_fast
    from yiwang.api.routes.feed import Feed

    client, db = live
    settings = load_settings(home=_home(db), id_hash_key="test-key")
    publish(db)
    subject = SUBJECTS[5]
    second = client.get(f"/v1/subjects/{subject}/feed").json()["items"][1]["item_id"]
    assert client.post(f"/v1/subjects/{subject}/feed/{second}/dismiss").status_code == 200
    names, versions = ItemNames(), FeedVersions()
    for who, limit in [(SUBJECTS[4], 20), (SUBJECTS[4], 3), (subject, 20), (subject, 1)]:
        fast = json.loads(read_feed_fast(db.conn, who, limit, names, versions))
        slow = Feed.model_validate(read_feed(db, settings, who, limit)).model_dump(mode="json")
        assert fast == slow
        assert fast == client.get(f"/v1/subjects/{who}/feed", params={"limit": limit}).json()
        if who == subject:
            assert second not in [i["item_id"] for i in fast["items"]]
    assert [i["rank"] for i in slow["items"]] == [1]
    # The cases the fast path leaves to read_feed.
    assert read_feed_fast(db.conn, "P_UNKNOWN", 20, names, versions) is None
    client.put(f"/v1/subjects/{subject}/preferences", json={"personalisation": False})
    assert read_feed_fast(db.conn, subject, 20, names, versions) is None


def test_fast_lane_and_fastapi_route_answer_alike(live):
    """The fast lane serves only the plain success case; an extra query parameter sends the same request
    through the FastAPI route, which must answer byte for byte the same."""
    client, db = live
    publish(db)
    for subject in SUBJECTS[6:9]:
        lane = client.get(f"/v1/subjects/{subject}/feed", params={"limit": 7})
        route = client.get(f"/v1/subjects/{subject}/feed", params={"limit": 7, "utm": "x"})
        assert lane.status_code == route.status_code == 200
        assert lane.json() == route.json()
        assert lane.headers["content-type"] == route.headers["content-type"] == "application/json"
        assert lane.headers["x-request-id"]
    assert client.get(f"/v1/subjects/{SUBJECTS[6]}/feed", params={"limit": "007"}).status_code == 200
    for bad in ("0", "201", "-1", "", "1e2"):
        resp = client.get(f"/v1/subjects/{SUBJECTS[6]}/feed", params={"limit": bad})
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_request", bad
    metrics = client.get("/metrics").text
    assert 'route="/v1/subjects/{subject_id}/feed",status="200"' in metrics
    assert 'route="/v1/subjects/{subject_id}/feed",status="422"' in metrics
