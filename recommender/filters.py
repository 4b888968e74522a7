"""What may never be recommended: ineligible items, once-only items already completed, dismissed items.

Eligibility is one Polars expression (:func:`eligibility_expr`) over a frame holding the subject's attributes
(kind, age, local_hukou, industry, district) and the item's rules (audience, min_age, max_age, local_hukou_only,
industry_list, item_district); the batch feed and the read-time non-personalised list use the same expression,
so they cannot disagree.

Rules, in the catalogue's terms:
- audience: a person gets person items, an enterprise enterprise items; a subject known only from the event log
  ("unknown") may get either, but only items with no rule that needs an attribute we do not have;
- min_age / max_age (inclusive) need a known age; local_hukou_only needs local hukou;
- industries (GB/T 4754 letters) restrict enterprise items to enterprises of those industries;
- a district-run item (its department is a district's) is offered to subjects of that district only.
"""

from __future__ import annotations

import sqlite3

import polars as pl

from recommender.candidates import World


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
    return (audience_ok & age_ok & hukou_ok & industry_ok & district_ok).fill_null(False)


SUBJECT_COLS = ["kind", "age", "local_hukou", "industry", "district"]
ITEM_COLS = ["audience", "min_age", "max_age", "local_hukou_only", "industry_list", "item_district"]


def eligible(cands: pl.DataFrame, world: World) -> pl.DataFrame:
    """Keep the candidate rows (sidx, iidx, ...) whose subject may use the item."""
    subj = world.subjects.select("sidx", *SUBJECT_COLS)
    items = world.items.select("iidx", *ITEM_COLS)
    mask = (
        cands.select("sidx", "iidx")
        .join(subj, on="sidx", how="left", maintain_order="left")
        .join(items, on="iidx", how="left", maintain_order="left")
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
