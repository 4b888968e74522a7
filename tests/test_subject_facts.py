"""The shared subject facts (data.facts): one as-of cutoff, one age, named bands, one district list."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import polars as pl

from data import facts
from data.contract import DISTRICTS as CONTRACT_DISTRICTS
from data.reference import DISTRICTS, load_catalog
from recommender.candidates import cutoff
from recommender.models import weighted_interactions

AS_OF = date(2026, 11, 20)
UTC = timezone.utc


def test_as_of_day_ends_at_shanghai_midnight_in_utc():
    end = facts.end_of_as_of_day_utc(AS_OF)
    assert end == datetime(2026, 11, 20, 16, tzinfo=UTC)
    # The recommender, the profiler's event window and the contract's "future event" check use the same instant.
    assert cutoff(AS_OF) == end


def test_model_weights_cut_a_day_at_the_shanghai_day_end():
    """weighted_interactions given a date used to cut at the end of the UTC day, 8 hours after the Shanghai day
    ended: an event at 01:00 on 21 Nov in Shanghai (17:00 UTC on the 20th) counted as known on the 20th."""
    ev = pl.DataFrame({
        "subject_id": ["P1", "P1", "P2"],
        "item_id": ["A", "B", "A"],
        "action": ["view", "view", "view"],
        "ts": [datetime(2026, 11, 20, 15, 59, 59, tzinfo=UTC),   # 23:59:59 on the 20th in Shanghai: known
               datetime(2026, 11, 20, 16, 0, tzinfo=UTC),        # 00:00 on the 21st in Shanghai: not yet
               datetime(2026, 11, 20, 17, 0, tzinfo=UTC)],       # 01:00 on the 21st in Shanghai: not yet
    }, schema_overrides={"ts": pl.Datetime("us", "UTC")})
    ia = weighted_interactions(ev, {"view": 1.0}, None, AS_OF)
    assert ia.subject_ids.tolist() == ["P1"] and ia.item_ids.tolist() == ["A"]
    # A datetime as_of is taken as given, inclusive.
    at = weighted_interactions(ev, {"view": 1.0}, None, datetime(2026, 11, 20, 16, 0, tzinfo=UTC))
    assert at.subject_ids.tolist() == ["P1"] and at.item_ids.tolist() == ["A", "B"]


def test_age_counts_completed_years_and_leap_birthdays():
    births = pl.DataFrame({"b": [date(2000, 11, 20), date(2000, 11, 21), date(2008, 2, 29), None]})
    ages = births.select(facts.age_years("b", AS_OF).alias("age"))["age"].to_list()
    assert ages == [26, 25, 18, None]
    assert [facts.age_on(b, AS_OF) for b in births["b"].drop_nulls()] == ages[:3]
    assert facts.age_on(date(2008, 2, 29), date(2027, 2, 28)) == 18
    assert facts.age_on(date(2008, 2, 29), date(2027, 3, 1)) == 19


def test_the_two_age_bandings_are_named_and_distinct():
    ages = pl.DataFrame({"a": [0, 5, 6, 13, 14, 17, 18, 24, 25, 34, 35, 44, 45, 59, 60, 69, 70, 101]})
    out = ages.with_columns(profile=facts.profile_age_band(pl.col("a")),
                            popularity=facts.popularity_age_band(pl.col("a")))
    assert out["profile"].to_list() == ["0-5", "0-5", "6-13", "6-13", "14-17", "14-17", "18-34", "18-34", "18-34",
                                        "18-34", "35-59", "35-59", "35-59", "35-59", "60+", "60+", "60+", "60+"]
    assert out["popularity"].to_list() == ["0-5", "0-5", "6-13", "6-13", "14-17", "14-17", "18-24", "18-24",
                                           "25-34", "25-34", "35-44", "35-44", "45-59", "45-59", "60-69", "60-69",
                                           "70+", "70+"]
    sizes = pl.DataFrame({"n": [0, 9, 10, 99, 100, 999, 1000, 50_000]})
    assert sizes.select(facts.enterprise_size_band(pl.col("n")).alias("band"))["band"].to_list() == [
        "micro", "micro", "small", "small", "medium", "medium", "large", "large"]


def test_one_district_list_matches_the_catalogue_departments(settings):
    assert len(DISTRICTS) == 16 and CONTRACT_DISTRICTS is DISTRICTS and facts.DISTRICTS is DISTRICTS
    cat = load_catalog(settings.data_dir)
    run = cat.select(facts.district_of_department(pl.col("department")).alias("d"))["d"].drop_nulls().unique()
    assert set(run.to_list()) == set(DISTRICTS)


def test_latest_licence_per_type_ignores_renewed_and_open_ended():
    lic = pl.DataFrame({
        "holder_id": ["P1", "P1", "P2", "P2", "P3"],
        "license_type": ["permit", "permit", "permit", "permit", "permit"],
        "expires_on": [date(2026, 12, 1), date(2036, 12, 1), date(2026, 12, 1), None, date(2027, 1, 1)],
    })
    out = facts.latest_licence_per_type(lic).collect().sort("holder_id")
    assert out.rows() == [("P1", "permit", date(2036, 12, 1)), ("P3", "permit", date(2027, 1, 1))]
    assert facts.end_of_as_of_day_utc(AS_OF) - facts.end_of_as_of_day_utc(AS_OF - timedelta(days=1)) == timedelta(1)
