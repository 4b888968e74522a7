"""Candidate sources on a small city built in the test store (real SQLite, real snapshots, real event log).

:func:`mini_city` is shared with test_filters / test_ranker / test_feeds (imported from here).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from recommender import candidates as C
from recommender.config import load_config
from yiwang.eventlog import append_events
from yiwang.reference import load_catalog
from yiwang.registry import write_snapshot

AS_OF = date(2026, 11, 20)
DISTRICTS = ["静安区", "浦东新区", "徐汇区"]
PERMIT_RENEWAL = "SH-CRJ-0002"
ONCE_ITEM = "SH-MZJ-0018"


def _insert(conn, table: str, df: pl.DataFrame) -> None:
    cols = df.columns + ["ingest_id"]
    conn.executemany(
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [r + (1,) for r in df.iter_rows()],
    )


def mini_city(settings, db, *, n_people: int = 300, n_ent: int = 40, seed: int = 7, as_of: date = AS_OF) -> dict:
    """A small city: the real catalogue, people and enterprises, licences and a year of events with structure.

    Behaviour: everyone browses popular items of their audience; the elderly favour items declared for the elderly;
    people whose HK/Macau permit nears expiry apply for its renewal; enterprises use items of their industry.
    Returns handles for assertions (a permit holder near expiry, the as_of date).
    """
    rng = np.random.default_rng(seed)
    conn = db.conn
    cat = load_catalog(settings.data_dir)
    cat_db = cat.with_columns([pl.col(c).cast(pl.Int64) for c in ("once_per_subject", "local_hukou_only")])
    _insert(conn, "catalog", cat_db)

    ages = rng.integers(1, 90, n_people)
    births = [as_of.replace(year=as_of.year - int(a)) - timedelta(days=int(rng.integers(1, 300))) for a in ages]
    people = pl.DataFrame({
        "person_id": [f"P{i:06d}" for i in range(n_people)],
        "birth_date": [b.isoformat() for b in births],
        "gender": rng.choice(["M", "F"], n_people).tolist(),
        "district": rng.choice(DISTRICTS, n_people).tolist(),
        "local_hukou": (rng.random(n_people) < 0.8).astype(int).tolist(),
        "occupation": rng.choice(["teacher", "driver", "", "", ""], n_people).tolist(),
    })
    _insert(conn, "people", people)
    ents = pl.DataFrame({
        "enterprise_id": [f"E{i:05d}" for i in range(n_ent)],
        "name": [f"企业{i}" for i in range(n_ent)],
        "industry": rng.choice(["I", "H", "C"], n_ent).tolist(),
        "district": rng.choice(DISTRICTS, n_ent).tolist(),
        "founded_on": "2015-01-01",
        "employees": rng.integers(1, 500, n_ent).tolist(),
    })
    _insert(conn, "enterprises", ents)
    adults = people.filter(pl.Series(ages >= 18))["person_id"].to_list()
    expiry = [as_of + timedelta(days=int(d)) for d in rng.integers(-200, 3000, len(adults))]
    lic = pl.DataFrame({
        "license_id": [f"L{i:06d}" for i in range(len(adults))],
        "holder_id": adults,
        "license_type": "hk_macau_permit",
        "issued_on": [(e - timedelta(days=3650)).isoformat() for e in expiry],
        "expires_on": [e.isoformat() for e in expiry],
    })
    _insert(conn, "licenses", lic)
    conn.commit()
    for t in ("people", "enterprises", "licenses", "catalog"):
        write_snapshot(settings.home, t, conn)

    person_items = cat.filter((pl.col("audience") == "person") & pl.col("min_age").is_null()
                              & pl.col("max_age").is_null() & ~pl.col("local_hukou_only")
                              & ~pl.col("department").str.contains("区"))["item_id"].to_list()[:300]
    elderly_items = cat.filter(pl.col("crowds").fill_null("").str.contains("crowd.elderly"))["item_id"].to_list()
    ent_items = cat.filter((pl.col("audience") == "enterprise") & pl.col("industries").is_null())["item_id"].to_list()[:150]
    zipf_p = 1.0 / np.arange(1, len(person_items) + 1) ** 1.1
    zipf_p /= zipf_p.sum()
    zipf_e = 1.0 / np.arange(1, len(ent_items) + 1) ** 1.1
    zipf_e /= zipf_e.sum()
    start = datetime.combine(as_of - timedelta(days=365), datetime.min.time(), tzinfo=timezone.utc)
    rows = []
    actions = np.array(["view", "click", "favorite", "consult", "apply", "complete"])
    act_p = np.array([0.4, 0.25, 0.05, 0.05, 0.15, 0.10])
    for i, pid in enumerate(people["person_id"]):
        n = int(rng.integers(3, 25))
        its = list(rng.choice(person_items, n, p=zipf_p))
        if ages[i] >= 60 and elderly_items:
            its += list(rng.choice(elderly_items, 6))
        for it in its:
            rows.append((pid, it, rng.choice(actions, p=act_p), start + timedelta(days=float(rng.uniform(0, 365)))))
    for eid in ents["enterprise_id"]:
        for it in rng.choice(ent_items, int(rng.integers(3, 20)), p=zipf_e):
            rows.append((eid, it, rng.choice(actions, p=act_p), start + timedelta(days=float(rng.uniform(0, 365)))))
    # A popular once-only item (foreign marriage registration, 20+): many adults look, some complete it.
    for i, pid in enumerate(people["person_id"]):
        u = rng.random()
        if ages[i] >= 25 and u < 0.6:
            t = start + timedelta(days=float(rng.uniform(0, 360)))
            rows.append((pid, ONCE_ITEM, "view", t))
            if u < 0.3:
                rows.append((pid, ONCE_ITEM, "complete", t + timedelta(hours=1)))
    # Renewals: permits that expired in the past year were renewed around their expiry.
    for pid, exp in zip(lic["holder_id"], expiry):
        if as_of - timedelta(days=200) < exp < as_of and rng.random() < 0.7:
            t = datetime.combine(exp - timedelta(days=20), datetime.min.time(), tzinfo=timezone.utc)
            rows.append((pid, PERMIT_RENEWAL, "view", t))
            rows.append((pid, PERMIT_RENEWAL, "apply", t + timedelta(days=1)))
    ev = pl.DataFrame(rows, schema={"subject_id": pl.String, "item_id": pl.String, "action": pl.String,
                                    "ts": pl.Datetime("us", "UTC")}, orient="row")
    ev = ev.with_columns(pl.format("e{}", pl.int_range(pl.len())).alias("event_id"), pl.lit("app").alias("channel"))
    append_events(settings.events_dir, ev, 1)

    soon = [(h, e) for h, e in zip(lic["holder_id"], expiry) if 20 <= (e - as_of).days <= 40]
    return {"as_of": as_of, "people": people, "ents": ents, "licenses": lic, "permit_soon": soon, "events": ev,
            "catalog": cat}


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
    db.conn.execute(
        "INSERT INTO people (person_id, birth_date, gender, district, local_hukou, ingest_id) "
        "VALUES ('P999999', '1950-03-01', 'F', '静安区', 1, 1)")
    db.conn.commit()
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
