"""Candidate sources on a small city built in the test store (real SQLite, real snapshots, real event log).

:func:`cities.mini_city` builds the city; test_filters / test_ranker / test_feeds / test_seed_scenario share it.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from recommender import candidates as C
from recommender.config import load_config
from data.registry import insert_rows, write_snapshot

from cities import PERMIT_RENEWAL, mini_city



@pytest.fixture
def city(settings, db):
    return mini_city(settings, db)


@pytest.fixture
def cfg(settings):
    return load_config(settings)


@pytest.fixture
def world(settings, db, city, cfg):
    return C.build_world(settings, db, cfg, city["as_of"])


def test_world_shapes_and_ages(world, city):
    assert world.n_subjects == city["people"].height + city["ents"].height
    assert world.n_items == city["catalog"].height
    p = world.subjects.filter(pl.col("kind") == "person")
    assert p["age"].min() >= 0 and p["age"].max() <= 90
    assert set(world.subjects["kind"].unique()) == {"person", "enterprise"}
    # the world never sees events after as_of
    assert world.inter["last_ts"].max() < C.cutoff(city["as_of"])


def test_renewal_source_names_the_expiring_permit(world, city):
    holder, expiry = city["permit_soon"][0]
    sidx = world.subjects.filter(pl.col("subject_id") == holder)["sidx"]
    r = C.renewal_candidates(world, sidx, window_days=90, grace_days=60, k=10)
    item = world.items.filter(pl.col("item_id") == PERMIT_RENEWAL)["iidx"][0]
    row = r.filter(pl.col("iidx") == item)
    assert row.height == 1
    assert row["license_expires_on"][0] == expiry
    assert row["f_expiry_days"][0] == (expiry - city["as_of"]).days
    # endorsements also touch the permit but are not THE renewal item, so they are not offered as renewals
    assert set(world.items.filter(pl.col("iidx").is_in(r["iidx"].implode()))["item_id"]) == {PERMIT_RENEWAL}


def test_renewal_source_ignores_far_expiry(world, city):
    far = [h for h, e in zip(city["licenses"]["holder_id"], city["licenses"]["expires_on"])
           if date.fromisoformat(e) > city["as_of"] + timedelta(days=400)]
    sidx = world.subjects.filter(pl.col("subject_id").is_in(far[:20]))["sidx"]
    assert C.renewal_candidates(world, sidx, 90, 60, 10).height == 0


def test_tag_source_matches_declared_crowd(world):
    elderly = world.tags.filter(pl.col("code") == "crowd.elderly")["sidx"].head(5)
    assert elderly.len() > 0
    t = C.tag_candidates(world, elderly, k=30, pop=C.popularity(world)["global"])
    declared = world.item_tags.filter(pl.col("code") == "crowd.elderly")["iidx"]
    assert t.height > 0
    assert t.filter(pl.col("tag_code") == "crowd.elderly")["iidx"].is_in(declared.implode()).all()
    assert t.group_by("sidx").len()["len"].max() <= 30


def test_popular_source_gives_a_full_list_without_history(settings, db, city, cfg):
    # a person registered with no events at all still gets popular candidates of every kind of group
    insert_rows(db.conn, "people", pl.DataFrame({"person_id": ["P999999"], "birth_date": "1950-03-01", "gender": "F",
                                                 "district": "静安区", "local_hukou": 1, "ingest_id": 1}))
    write_snapshot(settings.home, "people", db.conn)
    w = C.build_world(settings, db, cfg, city["as_of"])
    sidx = w.subjects.filter(pl.col("subject_id") == "P999999")["sidx"]
    tables = C.source_tables(w, cfg)
    cands = C.candidates(w, tables, cfg, sidx)
    assert cands.height >= cfg["candidates"]["popular_per_group"]
    groups = set(cands["pop_group"].drop_nulls().str.split(":").list.first())
    assert {"district", "band"} <= groups
    assert cands["src_hist"].is_null().all()  # no history, no history source


def test_neighbours_are_symmetric_cosine(world):
    nb = C.item_neighbours(world, per_item=5)
    assert nb["sim"].max() <= 1.0 + 1e-5 and nb["sim"].min() > 0
    assert (nb["iidx"] != nb["nbr"]).all()
    assert nb.group_by("iidx").len()["len"].max() <= 5


def test_candidates_have_every_feature_and_unique_pairs(world, cfg):
    tables = C.source_tables(world, cfg)
    sidx = world.subjects["sidx"].head(50)
    f = C.add_features(world, tables, C.candidates(world, tables, cfg, sidx))
    assert f.select(pl.struct("sidx", "iidx").is_duplicated().any()).item() is False
    X = C.feature_matrix(f)
    assert X.shape == (f.height, len(C.FEATURES))
    assert set(f["sidx"].unique()) == set(sidx)
