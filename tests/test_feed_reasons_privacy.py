"""Feed reasons never reveal a sensitive tag (crowd.hardship, crowd.disabled) to a reader without the profile scope.

A small city where some residents hold a sensitive tag (and use the services of their crowd, so that both the tag
source and popularity-within-crowd pick items for them) is trained and published, then read as the portal reads
it: a feed:read key against a live server on loopback, and `yiwang feed --json`. The reasons of tagged residents
must be indistinguishable from everyone else's: no code, no name, no text or ref that only they receive.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone

import httpx
import numpy as np
import polars as pl
import pytest

import recommender
from cities import mini_city
from yiwang.api.keys import create_key
from yiwang.api.server import run_api
from data.eventlog import append_events
from data.reference import load_taxonomy
from data.settings import load_settings
from taggers.store import TAG_COLUMNS, replace_tags
from yiwang.migrations import open_db

SENSITIVE = ("crowd.hardship", "crowd.disabled")
# Reasons that echo the subject's own records or behaviour (a licence expiry, an item they looked at) are
# personal by nature; every other reason must be one that subjects without a sensitive tag also receive.
OWN_RECORD_SOURCES = {"licence", "history", "similar_item"}


def _tag_rows(people: pl.DataFrame, as_of, rng) -> tuple[list[tuple], dict[str, set[str]]]:
    """Tags as the tagger writes them: registry crowds and occupations for all, sensitive ones for some."""
    rows, holders = [], {c: set() for c in SENSITIVE}

    def add(sid, code, sensitive=0):
        rows.append((sid, code, code.split(".")[0], 0.9, "test", "证据", "evidence", "2026-01-01", None, sensitive,
                     as_of.isoformat()))

    for sid, birth, hukou, occ in people.select("person_id", "birth_date", "local_hukou", "occupation").iter_rows():
        age = as_of.year - int(birth[:4])
        if age >= 60:
            add(sid, "crowd.elderly")
        if age < 14:
            add(sid, "crowd.child")
        if not hukou:
            add(sid, "crowd.non_local")
        if occ:
            add(sid, f"occupation.{occ}")
        for code in SENSITIVE:
            if age >= 18 and rng.random() < 0.15:
                add(sid, code, 1)
                holders[code].add(sid)
    return rows, holders


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reasons_privacy")
    s = load_settings(home=tmp / "home", id_hash_key="test-key", reminder_rules_file=tmp / "rules.yaml")
    db = open_db(s.db_path)
    c = mini_city(s, db, n_people=240, n_ent=20, tagged=False)  # tagged below, with sensitive tags
    as_of = c["as_of"]
    rng = np.random.default_rng(11)
    rows, holders = _tag_rows(c["people"], as_of, rng)
    replace_tags(db, pl.DataFrame(rows, schema=list(TAG_COLUMNS), orient="row").with_columns(
        [pl.col(c).cast(pl.String).str.to_date("%Y-%m-%d") for c in ("valid_from", "valid_until", "as_of")]
        + [pl.col("sensitive").cast(pl.Boolean)]))
    # Tagged residents use the services declared for their crowd, and a few common ones more than others do:
    # popularity within their crowd then picks items for them too.
    cat = c["catalog"]
    common = c["events"].group_by("item_id").len().sort("len", descending=True)["item_id"].to_list()[5:15]
    start = datetime.combine(as_of - timedelta(days=60), datetime.min.time(), tzinfo=timezone.utc)
    ev = []
    for code, sids in holders.items():
        declared = cat.filter(pl.col("crowds").fill_null("").str.contains(code, literal=True))["item_id"].to_list()
        for sid in sorted(sids):
            for it in list(rng.choice(declared, 3)) + list(rng.choice(common, 4)):
                ev.append((sid, it, "apply", start + timedelta(days=float(rng.uniform(0, 55)))))
    frame = pl.DataFrame(ev, schema={"subject_id": pl.String, "item_id": pl.String, "action": pl.String,
                                     "ts": pl.Datetime("us", "UTC")}, orient="row")
    frame = frame.with_columns(pl.format("s{}", pl.int_range(pl.len())).alias("event_id"),
                               pl.lit("app").alias("channel"))
    append_events(s.events_dir, frame, 2)
    recommender.train(s, db, as_of)
    recommender.recommend(s, db, as_of)
    _, key = create_key(db, "portal", ["feed:read"])
    tagged = holders["crowd.hardship"] | holders["crowd.disabled"]
    yield s, db, key, tagged, c["people"]["person_id"].to_list()
    db.conn.close()


def _forbidden_words(settings) -> list[str]:
    """Every way a sensitive tag could be spelled: code, bare name, zh and en display names."""
    tax = load_taxonomy(settings.data_dir).filter(pl.col("sensitive"))
    words = []
    for code, zh, en in tax.select("code", "name_zh", "name_en").iter_rows():
        words += [code, code.split(".", 1)[1], zh, en]
    return words


def _check(feeds: dict[str, list[dict]], tagged: set[str], words: list[str]) -> None:
    """No sensitive word in a tag or popularity reason, and nothing only tagged subjects receive."""
    others_reasons: set[str] = set()
    tagged_reasons: dict[str, str] = {}
    n_tagged_items = 0
    for sid, items in feeds.items():
        for item in items:
            n_tagged_items += sid in tagged
            for r in item["reasons"]:
                assert set(r) == {"source", "zh", "en", "ref"}, r
                text = json.dumps(r, ensure_ascii=False)
                if r["source"] in OWN_RECORD_SOURCES:
                    # These may quote an item's name (残疾人证办理) but never a tag code.
                    assert not any(w in (r["ref"] or "") for w in words if "." in w or w.isascii()), (sid, r)
                    continue
                lowered = text.lower()
                assert not any(w.lower() in lowered for w in words), (sid, r)
                if sid in tagged:
                    tagged_reasons.setdefault(text, sid)
                else:
                    others_reasons.add(text)
    assert n_tagged_items > 0 and others_reasons
    only_tagged = {t: sid for t, sid in tagged_reasons.items() if t not in others_reasons}
    assert not only_tagged, f"reasons only subjects with a sensitive tag receive: {only_tagged}"


def test_feed_reasons_over_http_do_not_reveal_sensitive_tags(city):
    s, db, key, tagged, people = city
    assert len(tagged) >= 20
    with run_api(s) as base_url, httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"},
                                              timeout=30) as client:
        feeds = {}
        for sid in people:
            resp = client.get(f"/v1/subjects/{sid}/feed", params={"limit": 20})
            assert resp.status_code == 200, resp.text
            assert resp.json()["personalised"] is True
            feeds[sid] = resp.json()["items"]
    _check(feeds, tagged, _forbidden_words(s))


def test_stored_reason_lists_hold_no_sensitive_code(city):
    """Every read path (API fast lane, read_feed, CLI, tools) serves what is stored: nothing to leak there."""
    s, db, *_ = city
    from recommender.feeds import stored_versions, version_rows

    stored = [t for v in stored_versions(db.conn) for t in version_rows(db.conn, v)["reasons_json"].unique()]
    assert stored
    assert not [t for t in stored if any(code in t for code in SENSITIVE)]


def test_cli_feed_json_does_not_reveal_sensitive_tags(city, monkeypatch, capsys):
    from yiwang.cli import main

    s, db, key, tagged, people = city
    feeds = {}
    for sid in sorted(tagged)[:8] + [p for p in people if p not in tagged][:8]:
        monkeypatch.setattr(sys, "argv", ["yiwang", "--home", str(s.home), "feed", sid, "--limit", "20", "--json"])
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, capsys.readouterr().err
        feeds[sid] = json.loads(capsys.readouterr().out)["items"]
    words = _forbidden_words(s)
    for sid, items in feeds.items():
        for item in items:
            for r in item["reasons"]:
                if r["source"] not in OWN_RECORD_SOURCES:
                    assert not any(w.lower() in json.dumps(r, ensure_ascii=False).lower() for w in words), (sid, r)
                assert not any(code in (r["ref"] or "") for code in SENSITIVE), (sid, r)


OLD_REASONS = {
    # As versions published before the fix stored them.
    "P0000001": [
        {"source": "licence", "zh": "您的往来港澳通行证将于2026-12-20到期", "en": "Your permit expires on 2026-12-20",
         "ref": "hk_macau_permit@2026-12-20"},
        {"source": "tag", "zh": "根据您的情况，您可能符合此项服务的条件",
         "en": "Based on your situation you may be eligible for this service", "ref": "crowd.hardship"},
        {"source": "popular", "zh": "在与您情况相似的人群中很受欢迎", "en": "Popular with people in a situation like yours",
         "ref": "crowd:crowd.disabled"},
    ],
    "P0000002": [
        {"source": "tag", "zh": "因为您属于「老年人」", "en": "Because you are in the group 'Elderly'",
         "ref": "crowd.elderly"},
        {"source": "popular", "zh": "在静安区很受欢迎", "en": "Popular in Jing'an", "ref": "district:静安区"},
    ],
}
GLOBAL = {"source": "popular", "zh": "全市热门事项", "en": "Popular across the city", "ref": "global:"}


def test_feed_stored_before_the_fix_is_served_without_sensitive_tags(tmp_path):
    """A store upgraded in place: its kept versions are rewritten on open, before any server reads them."""
    from datetime import date

    from data.registry import insert_rows
    from recommender.feeds import publish

    s = load_settings(home=tmp_path / "home", id_hash_key="test-key", reminder_rules_file=tmp_path / "rules.yaml")
    db = open_db(s.db_path)
    insert_rows(db.conn, "catalog", pl.DataFrame({"item_id": ["IT1"], "name": "事项1", "department": "市公安局",
                                                  "audience": "person", "category": "出入境", "ingest_id": 0}))
    insert_rows(db.conn, "people", pl.DataFrame({"person_id": list(OLD_REASONS), "birth_date": "1950-05-01",
                                                 "gender": "F", "district": "静安区", "local_hukou": 1, "ingest_id": 0}))
    # A version stored as the publisher wrote it before the fix (its reasons name sensitive tags).
    frame = pl.DataFrame([(sid, 1, "IT1", 1.0, json.dumps(r, ensure_ascii=False, separators=(",", ":")))
                          for sid, r in OLD_REASONS.items()], orient="row",
                         schema=["subject_id", "rank", "item_id", "score", "reasons_json"])
    assert publish(db, s, [frame], "m-old", date(2026, 11, 20)).version == 1
    with db.conn:
        # The store as it was before the migration that cleans stored reasons existed.
        db.conn.execute("DELETE FROM _migrations WHERE name = ?",
                        ("recommender_0003_reasons_without_sensitive_tags",))
    db.conn.close()
    db = open_db(s.db_path)
    _, key = create_key(db, "portal", ["feed:read"])
    with run_api(s) as base_url, httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"},
                                              timeout=30) as client:
        served = {sid: client.get(f"/v1/subjects/{sid}/feed").json()["items"][0]["reasons"] for sid in OLD_REASONS}
    db.conn.close()
    assert served["P0000001"] == [OLD_REASONS["P0000001"][0], GLOBAL]
    assert served["P0000002"] == OLD_REASONS["P0000002"]
