"""What may never be recommended: ineligible items, once-only items already completed, dismissed items.

Eligibility is one Polars expression (:func:`eligibility_expr`) over a frame holding the subject's attributes
(kind, age, local_hukou, industry, district, enterprise_age_years), the item's rules (audience, min_age, max_age,
local_hukou_only, industry_list, item_district, min_enterprise_age_years, own_interest_only) and whether the
subject showed interest in the item (own_interest); the batch feed and the read-time non-personalised list use the
same expression, so they cannot disagree.

Rules, in the catalogue's terms:
- audience: a person gets person items, an enterprise enterprise items; a subject known only from the event log
  ("unknown") may get either, but only items with no rule that needs an attribute we do not have;
- min_age / max_age (inclusive) need a known age; local_hukou_only needs local hukou;
- industries (GB/T 4754 letters) restrict enterprise items to enterprises of those industries;
- a district-run item (its department is a district's) is offered to subjects of that district only.

and in the terms of ``data/item_conditions.csv`` (what the catalogue lacks, joined by :func:`with_item_conditions`):
- its min_age / max_age tighten the catalogue's (居民身份证首次申领: at most 17);
- min_enterprise_age_years needs an enterprise founded at least that many years before as_of (老字号认定: 50);
- own_interest_only items (涉外 / 涉港澳台居民婚姻登记: the registries do not hold the partner's nationality) need
  the subject's own events on that very item in the last ``candidates.recent_days`` days; tags, popularity and
  neighbours alone never make them eligible, and the non-personalised list never offers them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from data.reference import ITEM_CONDITIONS_FILE, ITEM_CONDITIONS_SCHEMA, load_item_conditions

if TYPE_CHECKING:
    from recommender.candidates import World


def item_conditions(data_dir) -> pl.DataFrame:
    """The reference item conditions (empty if the data folder has no conditions file)."""
    if not (Path(data_dir) / ITEM_CONDITIONS_FILE).exists():
        return pl.DataFrame(schema=ITEM_CONDITIONS_SCHEMA)
    return load_item_conditions(data_dir)


def with_item_conditions(items: pl.DataFrame, conditions: pl.DataFrame) -> pl.DataFrame:
    """``items`` (item_id, min_age, max_age, ...) with the conditions applied: ages tightened (the stricter bound
    wins), and min_enterprise_age_years and own_interest_only added. Items without a condition are unchanged."""
    cond = conditions.select(
        "item_id", pl.col("min_age").alias("_cond_min_age"), pl.col("max_age").alias("_cond_max_age"),
        "min_enterprise_age_years", "own_interest_only",
    )
    return (
        items.join(cond, on="item_id", how="left", maintain_order="left")
        .with_columns(
            pl.max_horizontal("min_age", "_cond_min_age").cast(items.schema["min_age"]).alias("min_age"),
            pl.min_horizontal("max_age", "_cond_max_age").cast(items.schema["max_age"]).alias("max_age"),
            pl.col("own_interest_only").fill_null(False),
        )
        .drop("_cond_min_age", "_cond_max_age")
    )


def eligibility_expr() -> pl.Expr:
    kind, age = pl.col("kind"), pl.col("age")
    audience_ok = (kind == pl.col("audience")) | (kind == "unknown")
    age_ok = (pl.col("min_age").is_null() | (age.is_not_null() & (age >= pl.col("min_age")))) & (
        pl.col("max_age").is_null() | (age.is_not_null() & (age <= pl.col("max_age")))
    )
    hukou_ok = ~pl.col("local_hukou_only").fill_null(False) | pl.col("local_hukou").fill_null(False)
    industry_ok = (
        (pl.col("industry_list").list.len().fill_null(0) == 0)
        | (kind == "person")
        | pl.col("industry_list").list.contains(pl.col("industry")).fill_null(False)
    )
    district_ok = (
        pl.col("item_district").is_null() | pl.col("district").is_null() | (pl.col("item_district") == pl.col("district"))
    )
    ent_age = pl.col("enterprise_age_years")
    founded_ok = pl.col("min_enterprise_age_years").is_null() | (
        ent_age.is_not_null() & (ent_age >= pl.col("min_enterprise_age_years")))
    interest_ok = ~pl.col("own_interest_only").fill_null(False) | pl.col("own_interest").fill_null(False)
    return (audience_ok & age_ok & hukou_ok & industry_ok & district_ok & founded_ok & interest_ok).fill_null(False)


SUBJECT_COLS = ["kind", "age", "local_hukou", "industry", "district", "enterprise_age_years"]
ITEM_COLS = ["audience", "min_age", "max_age", "local_hukou_only", "industry_list", "item_district",
             "min_enterprise_age_years", "own_interest_only"]


def eligible(cands: pl.DataFrame, world: World) -> pl.DataFrame:
    """Keep the candidate rows (sidx, iidx, ...) whose subject may use the item."""
    subj = world.subjects.select("sidx", *SUBJECT_COLS)
    items = world.items.select("iidx", *ITEM_COLS)
    interest = world.interest.select("sidx", "iidx", pl.lit(True).alias("own_interest"))
    mask = (
        cands.select("sidx", "iidx")
        .join(subj, on="sidx", how="left", maintain_order="left")
        .join(items, on="iidx", how="left", maintain_order="left")
        .join(interest, on=["sidx", "iidx"], how="left", maintain_order="left")
        .select(eligibility_expr())
        .to_series()
    )
    return cands.filter(mask)


def completed_once(world: World) -> pl.DataFrame:
    """(sidx, iidx) of once-per-subject items the subject already completed."""
    once = world.items.filter(pl.col("once_per_subject")).select("iidx")
    return world.inter.filter(pl.col("completed")).select("sidx", "iidx").join(once, on="iidx")


def read_dismissals(conn: sqlite3.Connection) -> pl.DataFrame:
    """(subject_id, item_id) the citizens dismissed."""
    from data.citizen import all_dismissals

    return all_dismissals(conn)


def dismissed(world: World, conn: sqlite3.Connection) -> pl.DataFrame:
    """(sidx, iidx) of dismissed items, in the world's indices."""
    return (
        read_dismissals(conn)
        .join(world.subjects.select("subject_id", "sidx"), on="subject_id")
        .join(world.items.select("item_id", "iidx"), on="item_id")
        .select("sidx", "iidx")
    )


def apply_filters(cands: pl.DataFrame, world: World, blocked: pl.DataFrame) -> pl.DataFrame:
    """Eligibility, then remove ``blocked`` pairs (completed once-only items and dismissals, see :func:`blocked_pairs`)."""
    out = eligible(cands, world)
    if blocked.height:
        out = out.join(blocked, on=["sidx", "iidx"], how="anti")
    return out


def blocked_pairs(world: World, conn: sqlite3.Connection | None) -> pl.DataFrame:
    """Pairs never to show: once-only items already completed, plus dismissals when a store is given."""
    parts = [completed_once(world)]
    if conn is not None:
        parts.append(dismissed(world, conn))
    return pl.concat([p.select(pl.col("sidx").cast(pl.UInt32), pl.col("iidx").cast(pl.UInt32)) for p in parts]).unique()
