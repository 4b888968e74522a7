"""The shared vocabulary of subject facts: what "as of a day", an age, a band, a district and a current licence mean.

Every engine computes these the same way by using this module:

- **The as-of cutoff.** Events carry UTC timestamps; the city's day is the Asia/Shanghai day. What is known "as of"
  a day is everything strictly before the first instant of the next Shanghai day, expressed in UTC
  (:func:`end_of_as_of_day_utc`): for 2026-11-20 that is 2026-11-20T16:00:00Z. Events at or after it are future.
- **Age** in completed years on a day; someone born on 29 February counts a year older on 1 March in common years.
- **Age bands**, two concepts with their own names: :data:`PROFILE_AGE_BANDS` (six, coarse on purpose: fine
  enough for targeting, too coarse to re-identify anyone) labels a profile; :data:`POPULARITY_AGE_BANDS` (nine,
  edges on the catalogue's age rules: 6 school, 14 child, 60 elderly) groups people for popularity.
- **Enterprise size bands** by employees (:data:`ENTERPRISE_SIZE_BANDS`).
- **Districts**: Shanghai's sixteen, as :data:`data.reference.DISTRICTS` lists them.
- **The latest licence per type**: once a holder has a later licence of a type, the earlier one no longer counts.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import polars as pl

from data.reference import DISTRICT_NAMES_EN, DISTRICTS
from data.settings import TIMEZONE

__all__ = [
    "DISTRICTS", "DISTRICT_NAMES_EN", "ENTERPRISE_SIZE_BANDS", "POPULARITY_AGE_BANDS", "PROFILE_AGE_BANDS",
    "age_on", "age_years", "band_expr", "district_of_department", "end_of_as_of_day_utc", "enterprise_size_band",
    "latest_licence_per_type", "popularity_age_band", "profile_age_band",
]

_UTC = ZoneInfo("UTC")


def end_of_as_of_day_utc(as_of: date) -> datetime:
    """The first instant after ``as_of`` in Asia/Shanghai, in UTC: events at or after it are not known on ``as_of``."""
    local = datetime.combine(as_of + timedelta(days=1), time(0), tzinfo=ZoneInfo(TIMEZONE))
    return local.astimezone(_UTC)


def age_years(birth: str | pl.Expr, as_of: date) -> pl.Expr:
    """Completed years at ``as_of`` of a date column (a 29 Feb birthday counts from 1 Mar in common years)."""
    b = pl.col(birth) if isinstance(birth, str) else birth
    before_birthday = (b.dt.month().cast(pl.Int32) * 100 + b.dt.day().cast(pl.Int32)) > (as_of.month * 100 + as_of.day)
    return (pl.lit(as_of.year, pl.Int32) - b.dt.year().cast(pl.Int32) - before_birthday.cast(pl.Int32)).cast(pl.Int32)


def age_on(birth: date, as_of: date) -> int:
    """:func:`age_years` of one birth date."""
    return as_of.year - birth.year - ((birth.month, birth.day) > (as_of.month, as_of.day))


# (lowest, highest, label), both ends included.
PROFILE_AGE_BANDS = [(0, 5, "0-5"), (6, 13, "6-13"), (14, 17, "14-17"), (18, 34, "18-34"), (35, 59, "35-59"),
                     (60, 200, "60+")]
ENTERPRISE_SIZE_BANDS = [(0, 9, "micro"), (10, 99, "small"), (100, 999, "medium"), (1000, 10**9, "large")]
# Open-ended at both ends: an age below the first edge is in the first band, any other in the last.
POPULARITY_AGE_BANDS = [(None, 5, "0-5"), (6, 13, "6-13"), (14, 17, "14-17"), (18, 24, "18-24"), (25, 34, "25-34"),
                        (35, 44, "35-44"), (45, 59, "45-59"), (60, 69, "60-69"), (70, None, "70+")]


def band_expr(value: pl.Expr, bands) -> pl.Expr:
    """The label of the (lowest, highest, label) band holding ``value``; null outside every band."""
    expr = pl.when(value.is_null()).then(pl.lit(None, pl.String))
    for lo, hi, name in bands:
        expr = expr.when(value.is_between(lo, hi)).then(pl.lit(name))
    return expr.otherwise(pl.lit(None, pl.String))


def profile_age_band(age: pl.Expr) -> pl.Expr:
    return band_expr(age, PROFILE_AGE_BANDS)


def enterprise_size_band(employees: pl.Expr) -> pl.Expr:
    return band_expr(employees, ENTERPRISE_SIZE_BANDS)


def popularity_age_band(age: pl.Expr) -> pl.Expr:
    """The popularity group of an age: below 6 is "0-5", from 70 (and an unknown age) "70+"."""
    first, *middle, last = POPULARITY_AGE_BANDS
    expr = pl.when(age <= first[1]).then(pl.lit(first[2]))
    for _, hi, label in middle:
        expr = expr.when(age <= hi).then(pl.lit(label))
    return expr.otherwise(pl.lit(last[2]))


def district_of_department(department: pl.Expr) -> pl.Expr:
    """The district of a district-run item (its department starts with the district's name), else null."""
    return department.str.extract("^(" + "|".join(DISTRICTS) + ")", 1)


def latest_licence_per_type(licences: pl.LazyFrame | pl.DataFrame, holder: str = "holder_id") -> pl.LazyFrame:
    """(holder, license_type, expires_on) of each holder's latest licence of each type that expires.

    A holder with an open-ended licence (no expiry) of a type has nothing of that type to renew: the type is left out.
    """
    return (
        licences.lazy()
        .group_by(holder, "license_type")
        .agg(pl.col("expires_on").max(), pl.col("expires_on").is_null().any().alias("_open_ended"))
        .filter(~pl.col("_open_ended"))
        .drop("_open_ended")
    )
