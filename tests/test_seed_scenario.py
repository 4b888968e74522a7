"""Seed scenario 1, end to end: a resident whose HK/Macau permit expires in 30 days gets exactly one 30-day alert
linking to the renewal item, and that item is in the top 3 of her feed with the expiry date as its reason; when the
next export shows the permit renewed, the pending alert is cancelled and the item leaves the top of the feed."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import polars as pl
import pytest

import recommender
from notifier import deliver, evaluate_alerts
from notifier.outbox import list_alerts, stored_alerts
from testsupport.registries import put_rows
from recommender.feeds import read_feed
from cities import mini_city
from data.settings import load_settings
from yiwang.migrations import open_db

SEED = "P777777"
RENEWAL = "SH-CRJ-0002"  # 往来港澳通行证换发: the catalogue item whose renews_license is hk_macau_permit


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A small city with a trained model, plus the seed resident (静安区) whose permit expires in 30 days."""
    home = tmp_path_factory.mktemp("seed") / "home"
    s = load_settings(home=home, id_hash_key="test-key")
    db = open_db(s.db_path)
    city = mini_city(s, db, n_people=300, n_ent=30)
    as_of = city["as_of"]
    put_rows(s, db, "people", [{"person_id": SEED, "birth_date": "1990-05-01", "district": "静安区"}])
    put_rows(s, db, "licenses", [{"license_id": "LSEED1", "holder_id": SEED, "license_type": "hk_macau_permit",
                                  "issued_on": as_of - timedelta(days=3620), "expires_on": as_of + timedelta(days=30)}])
    recommender.train(s, db, as_of)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()
    return home, as_of


@pytest.fixture
def city(built, tmp_path):
    home, as_of = built
    shutil.copytree(home, tmp_path / "home")
    s = load_settings(home=tmp_path / "home", id_hash_key="test-key")
    db = open_db(s.db_path)
    yield s, db, as_of
    db.conn.close()


def seed_alerts(db):
    return (stored_alerts(db.conn).filter(pl.col("subject_id") == SEED)
            .select("alert_id", "stage", "status", "item_ids", "message_zh").rows())


def renew(s, db, as_of):
    """The next export: a new permit for the same resident with a later expiry."""
    put_rows(s, db, "licenses", [{"license_id": "LSEED2", "holder_id": SEED, "license_type": "hk_macau_permit",
                                  "issued_on": as_of, "expires_on": as_of + timedelta(days=3650)}])


def test_alert_half(city):
    s, db, as_of = city
    expiry = (as_of + timedelta(days=30)).isoformat()
    evaluate_alerts(s, db, as_of)
    evaluate_alerts(s, db, as_of)  # a rerun adds nothing
    [(alert_id, stage, status, items, message)] = seed_alerts(db)
    assert (stage, status, json.loads(items)) == ("30", "pending", [RENEWAL])
    assert expiry in message and "往来港澳通行证换发" in message
    renew(s, db, as_of)
    summary = evaluate_alerts(s, db, as_of + timedelta(days=1))
    assert summary.cancelled >= 1
    assert seed_alerts(db)[0][2] == "cancelled"
    deliver(s, db)
    assert list_alerts(db, SEED) == []


def test_feed_half(city):
    s, db, as_of = city
    expiry = (as_of + timedelta(days=30)).isoformat()
    evaluate_alerts(s, db, as_of)
    recommender.recommend(s, db, as_of)
    feed = read_feed(db, s, SEED, 10)
    assert RENEWAL in [i.item_id for i in feed.items[:3]]
    item = next(i for i in feed.items if i.item_id == RENEWAL)
    assert expiry in item.reasons[0]["zh"] and expiry in item.reasons[0]["en"]
    # The alert and the feed point at the same renewal item.
    assert json.loads(seed_alerts(db)[0][3]) == [RENEWAL]

    renew(s, db, as_of)
    evaluate_alerts(s, db, as_of + timedelta(days=1))
    recommender.recommend(s, db, as_of + timedelta(days=1))
    assert seed_alerts(db)[0][2] == "cancelled"
    after = read_feed(db, s, SEED, 10)
    assert RENEWAL not in [i.item_id for i in after.items[:3]]
