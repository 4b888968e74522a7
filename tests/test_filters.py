"""Eligibility, once-only and dismissal filters: what may never be recommended."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from recommender import candidates as C
from recommender.filters import apply_filters, blocked_pairs, eligibility_expr, eligible
from recommender.config import load_config
from cities import mini_city
from data.citizen import dismiss


def _pairs(subject: dict, item: dict) -> pl.DataFrame:
    row = {
        "kind": subject.get("kind", "person"), "age": subject.get("age"), "local_hukou": subject.get("local_hukou"),
        "industry": subject.get("industry"), "district": subject.get("district"),
        "audience": item.get("audience", "person"), "min_age": item.get("min_age"), "max_age": item.get("max_age"),
        "local_hukou_only": item.get("local_hukou_only", False), "industry_list": item.get("industry_list", []),
        "item_district": item.get("item_district"),
        "enterprise_age_years": subject.get("enterprise_age_years"), "own_interest": subject.get("own_interest"),
        "min_enterprise_age_years": item.get("min_enterprise_age_years"),
        "own_interest_only": item.get("own_interest_only", False),
    }
    return pl.DataFrame([row], schema={
        "kind": pl.String, "age": pl.Int32, "local_hukou": pl.Boolean, "industry": pl.String, "district": pl.String,
        "audience": pl.String, "min_age": pl.Int64, "max_age": pl.Int64, "local_hukou_only": pl.Boolean,
        "industry_list": pl.List(pl.String), "item_district": pl.String,
        "enterprise_age_years": pl.Int32, "own_interest": pl.Boolean, "min_enterprise_age_years": pl.Int64,
        "own_interest_only": pl.Boolean,
    })


OLD_BRAND_RULE = {"audience": "enterprise", "min_enterprise_age_years": 50}


def ok(subject: dict, item: dict) -> bool:
    return bool(_pairs(subject, item).select(eligibility_expr()).item())


@pytest.mark.parametrize("subject,item,expected", [
    ({"kind": "person", "age": 30}, {"audience": "person"}, True),
    ({"kind": "person", "age": 30}, {"audience": "enterprise"}, False),
    ({"kind": "enterprise", "industry": "I"}, {"audience": "person"}, False),
    ({"kind": "person", "age": 59}, {"min_age": 60}, False),
    ({"kind": "person", "age": 60}, {"min_age": 60}, True),
    ({"kind": "person", "age": 19}, {"max_age": 18}, False),
    ({"kind": "person", "age": 18}, {"max_age": 18}, True),
    ({"kind": "person", "age": 30, "local_hukou": False}, {"local_hukou_only": True}, False),
    ({"kind": "person", "age": 30, "local_hukou": True}, {"local_hukou_only": True}, True),
    ({"kind": "enterprise", "industry": "I"}, {"audience": "enterprise", "industry_list": ["H", "I"]}, True),
    ({"kind": "enterprise", "industry": "C"}, {"audience": "enterprise", "industry_list": ["H", "I"]}, False),
    ({"kind": "person", "age": 30, "district": "静安区"}, {"item_district": "浦东新区"}, False),
    ({"kind": "person", "age": 30, "district": "静安区"}, {"item_district": "静安区"}, True),
    # behaviour-only subjects: either audience, but nothing whose rule needs an attribute we lack
    ({"kind": "unknown"}, {"audience": "enterprise"}, True),
    ({"kind": "unknown"}, {"min_age": 60}, False),
    ({"kind": "unknown"}, {"local_hukou_only": True}, False),
    ({"kind": "unknown"}, {"audience": "enterprise", "industry_list": ["I"]}, False),
    # conditions from data/item_conditions.csv: enterprise age, and interest shown by the subject's own events
    ({"kind": "enterprise", "enterprise_age_years": 0}, OLD_BRAND_RULE, False),
    ({"kind": "enterprise", "enterprise_age_years": 49}, OLD_BRAND_RULE, False),
    ({"kind": "enterprise", "enterprise_age_years": 50}, OLD_BRAND_RULE, True),
    ({"kind": "enterprise"}, OLD_BRAND_RULE, False),
    ({"kind": "unknown"}, OLD_BRAND_RULE, False),
    ({"kind": "person", "age": 30}, {"own_interest_only": True}, False),
    ({"kind": "person", "age": 30, "own_interest": True}, {"own_interest_only": True}, True),
    ({"kind": "unknown", "own_interest": True}, {"own_interest_only": True}, True),
])
def test_eligibility_rules(subject, item, expected):
    assert ok(subject, item) is expected


@hsettings(max_examples=60, deadline=None)
@given(age=st.integers(0, 110), lo=st.one_of(st.none(), st.integers(0, 100)), hi=st.one_of(st.none(), st.integers(0, 100)))
def test_age_range_is_inclusive_and_exact(age, lo, hi):
    expected = (lo is None or age >= lo) and (hi is None or age <= hi)
    assert ok({"kind": "person", "age": age}, {"min_age": lo, "max_age": hi}) is expected


@pytest.fixture
def world(settings, db):
    city = mini_city(settings, db, n_people=200, n_ent=30)
    return C.build_world(settings, db, load_config(settings), city["as_of"])


def test_no_ineligible_pair_survives_on_the_whole_catalogue(world):
    # every subject x every item: the survivors must satisfy each rule, checked here independently
    pairs = world.subjects.select("sidx").join(world.items.select("iidx"), how="cross")
    kept = eligible(pairs, world)
    assert 0 < kept.height < pairs.height
    j = kept.join(world.subjects, on="sidx").join(world.items, on="iidx")
    assert (j["kind"] == j["audience"]).all()
    assert j.filter(pl.col("min_age").is_not_null() & (pl.col("age") < pl.col("min_age"))).height == 0
    assert j.filter(pl.col("max_age").is_not_null() & (pl.col("age") > pl.col("max_age"))).height == 0
    assert j.filter(pl.col("local_hukou_only") & ~pl.col("local_hukou").fill_null(False)).height == 0
    assert j.filter(pl.col("item_district").is_not_null() & (pl.col("item_district") != pl.col("district"))).height == 0
    bad_industry = j.filter((pl.col("industry_list").list.len() > 0) & ~pl.col("industry_list").list.contains(pl.col("industry")))
    assert bad_industry.height == 0


def test_completed_once_only_and_dismissed_items_are_blocked(settings, db, world):
    once = world.items.filter(pl.col("once_per_subject")).head(1)
    sidx = world.subjects.filter(pl.col("kind") == "person")["sidx"][0]
    sid = world.subjects.filter(pl.col("sidx") == sidx)["subject_id"][0]
    # a completion of a once-only item and a dismissal of an ordinary one
    inter = pl.DataFrame({"sidx": [sidx], "iidx": [once["iidx"][0]], "completed": [True]},
                         schema={"sidx": pl.UInt32, "iidx": pl.UInt32, "completed": pl.Boolean})
    world.inter = pl.concat([world.inter, inter], how="diagonal_relaxed")
    other = world.items.filter(~pl.col("once_per_subject") & (pl.col("audience") == "person")
                               & pl.col("min_age").is_null() & pl.col("max_age").is_null()
                               & ~pl.col("local_hukou_only") & pl.col("item_district").is_null()
                               & (pl.col("industry_list").list.len() == 0)).head(1)
    dismiss(db.conn, sid, other["item_id"][0])
    blocked = blocked_pairs(world, db.conn)
    cands = pl.DataFrame({"sidx": [sidx, sidx], "iidx": [once["iidx"][0], other["iidx"][0]]},
                         schema={"sidx": pl.UInt32, "iidx": pl.UInt32})
    assert apply_filters(cands, world, blocked).height == 0
    # without the store (training), dismissals are not applied but the completion still is
    assert apply_filters(cands, world, blocked_pairs(world, None))["iidx"].to_list() == [other["iidx"][0]]
