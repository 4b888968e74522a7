"""A small city built in a test store (real SQLite, real snapshots, real event log), shared by the recommender,
feed and seed-scenario tests."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl

from data.eventlog import append_events
from data.reference import load_catalog
from data.registry import insert_rows, write_snapshot

AS_OF = date(2026, 11, 20)
DISTRICTS = ["静安区", "浦东新区", "徐汇区"]
PERMIT_RENEWAL = "SH-CRJ-0002"
ONCE_ITEM = "SH-MZJ-0018"


def _insert(conn, table: str, df: pl.DataFrame) -> None:
    insert_rows(conn, table, df.with_columns(pl.lit(1).alias("ingest_id")))


def mini_city(settings, db, *, n_people: int = 300, n_ent: int = 40, seed: int = 7, as_of: date = AS_OF,
              tagged: bool = True) -> dict:
    """A small city: the real catalogue, people and enterprises, licences and a year of events with structure,
    profiled and tagged on ``as_of`` (as the nightly pipeline does before recommending) unless ``tagged`` is off.

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
    if tagged:
        from taggers import profile_and_tag

        profile_and_tag(settings, db, as_of)

    soon = [(h, e) for h, e in zip(lic["holder_id"], expiry) if 20 <= (e - as_of).days <= 40]
    return {"as_of": as_of, "people": people, "ents": ents, "licenses": lic, "permit_soon": soon, "events": ev,
            "catalog": cat}
