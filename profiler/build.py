"""The profile batch as Polars expressions over LazyFrames: one row per subject, no per-row Python.

Each ``*_exprs`` function returns expressions that the frame builders compose in a single ``with_columns`` or
``agg`` per pass. The builders take LazyFrames (or DataFrames: both give identical output) so that tests can feed
small frames and the batch can feed the Parquet snapshots and the event log.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl

from data.facts import age_years, end_of_as_of_day_utc, enterprise_size_band, profile_age_band

WINDOWS = (7, 30, 180)
BEHAVIOUR_ACTIONS = {"views": ("view",), "applies": ("apply", "complete")}
EXPIRING_WITHIN_DAYS = 90
CHILD_MAX_AGE = 17  # "children" of a person: household members under 18 at least PARENT_GAP years younger
PARENT_GAP_YEARS = 15

def lazy(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


# -- persons -------------------------------------------------------------------------------------------------------


def person_attribute_exprs(as_of: date) -> list[pl.Expr]:
    age = age_years("birth_date", as_of)
    return [
        pl.col("person_id").alias("subject_id"),
        pl.lit("person").alias("subject_type"),
        age.alias("age"),
        profile_age_band(age).alias("age_band"),
    ]


def child_relation() -> pl.Expr:
    """Member m could be a child of person p (one row per pair): a minor at least PARENT_GAP_YEARS younger."""
    return (pl.col("m_age") <= CHILD_MAX_AGE) & (pl.col("age") - pl.col("m_age") >= PARENT_GAP_YEARS)


def household_agg_exprs() -> list[pl.Expr]:
    """Aggregates over the *other* members of a person's household (one row per member pair)."""
    is_child = child_relation() & ~pl.col("is_grandparent")
    return [
        (pl.len().cast(pl.Int32) + 1).alias("household_size"),
        is_child.sum().cast(pl.Int32).alias("n_children"),
        (is_child & (pl.col("m_age") < 6)).sum().cast(pl.Int32).alias("n_children_under_6"),
        pl.col("m_age").filter(is_child).sort().alias("children_ages"),
        pl.col("m_age").filter(is_child).min().alias("youngest_child_age"),
        pl.col("m_birth").filter(is_child).max().alias("youngest_child_birth_date"),
        # Newest member regardless of parenthood: a newborn sibling is news to the whole household.
        pl.col("m_birth").max().alias("newest_member_birth_date"),
        (pl.col("m_age") >= 60).sum().cast(pl.Int32).alias("n_elderly_in_household"),
        # Rules ask questions about individual members ("a child turning 6 by 1 Sept"), so keep them, oldest first.
        pl.struct(
            pl.col("m_birth").alias("birth_date"),
            pl.col("m_gender").alias("gender"),
            pl.col("m_age").alias("age"),
            is_child.alias("child"),
        )
        .sort_by(pl.col("m_birth"))
        .alias("household_members"),
    ]


def person_frame(people: pl.LazyFrame | pl.DataFrame, as_of: date) -> pl.LazyFrame:
    """Registry attributes plus age, age band and household composition, one row per person."""
    base = lazy(people).with_columns(person_attribute_exprs(as_of))
    members = base.filter(pl.col("household_id").is_not_null()).select(
        "household_id", pl.col("person_id").alias("m_id"), pl.col("birth_date").alias("m_birth"),
        pl.col("gender").alias("m_gender"), pl.col("age").alias("m_age"),
    )
    # The registry has households but no relationships. Three generations share many homes, and a
    # grandparent must not be taken for a newborn's parent: p is of the grandparent generation when some
    # member is at least PARENT_GAP_YEARS younger than p and has a minor child of their own.
    pairs = (
        base.filter(pl.col("household_id").is_not_null())
        .select("person_id", "household_id", "age")
        .join(members, on="household_id", how="inner")
        .filter(pl.col("m_id") != pl.col("person_id"))
    )
    has_minor_child = pairs.group_by("person_id").agg(child_relation().any().alias("m_has_minor_child"))
    grandparent = (
        pairs.join(has_minor_child.rename({"person_id": "m_id"}), on="m_id", how="left")
        .group_by("person_id")
        .agg(
            (pl.col("m_has_minor_child") & (pl.col("age") - pl.col("m_age") >= PARENT_GAP_YEARS)).any().alias("is_grandparent")
        )
    )
    household = pairs.join(grandparent, on="person_id", how="left").group_by("person_id").agg(household_agg_exprs())
    return (
        base.join(household, on="person_id", how="left")
        .with_columns(
            pl.col("household_size").fill_null(1),
            pl.col("n_children").fill_null(0),
            pl.col("n_children_under_6").fill_null(0),
            pl.col("n_elderly_in_household").fill_null(0),
            pl.col("children_ages").fill_null(pl.lit([], pl.List(pl.Int32))),
        )
        .drop("person_id")
    )


# -- enterprises ---------------------------------------------------------------------------------------------------


def enterprise_attribute_exprs(as_of: date) -> list[pl.Expr]:
    return [
        pl.col("enterprise_id").alias("subject_id"),
        pl.lit("enterprise").alias("subject_type"),
        (pl.lit(as_of) - pl.col("founded_on")).dt.total_days().cast(pl.Int32).alias("business_age_days"),
        age_years("founded_on", as_of).alias("business_age_years"),
        enterprise_size_band(pl.col("employees")).alias("size_band"),
    ]


def enterprise_frame(enterprises: pl.LazyFrame | pl.DataFrame, as_of: date) -> pl.LazyFrame:
    return lazy(enterprises).with_columns(enterprise_attribute_exprs(as_of)).drop("enterprise_id")


# -- licences ------------------------------------------------------------------------------------------------------


def licence_agg_exprs(as_of: date) -> list[pl.Expr]:
    valid = pl.col("expires_on").is_null() | (pl.col("expires_on") >= pl.lit(as_of))
    return [
        valid.sum().cast(pl.Int32).alias("n_licenses"),
        pl.col("license_type").filter(valid).unique().sort().alias("license_types"),
    ]


def expiring_agg_exprs() -> list[pl.Expr]:
    return [
        pl.len().cast(pl.Int32).alias("n_expiring_90d"),
        pl.col("expires_on").min().alias("next_expiry"),
        pl.struct("license_type", "expires_on").sort_by(pl.col("expires_on")).alias("expiring_licenses"),
    ]


def licence_frame(licenses: pl.LazyFrame | pl.DataFrame, as_of: date) -> pl.LazyFrame:
    """Licence summary per holder; licences issued after ``as_of`` do not exist yet."""
    issued = lazy(licenses).filter(pl.col("issued_on") <= pl.lit(as_of))
    # Few licences expire within 90 days: summarise them apart instead of filtering inside every group.
    expiring = (
        issued.filter(pl.col("expires_on").is_between(pl.lit(as_of), pl.lit(as_of + timedelta(days=EXPIRING_WITHIN_DAYS))))
        .group_by("holder_id")
        .agg(expiring_agg_exprs())
    )
    return (
        issued.group_by("holder_id")
        .agg(licence_agg_exprs(as_of))
        .join(expiring, on="holder_id", how="left")
        .with_columns(
            pl.col("n_expiring_90d").fill_null(0),
            pl.col("expiring_licenses").fill_null(pl.lit([], pl.List(pl.Struct({"license_type": pl.String, "expires_on": pl.Date})))),
        )
        .rename({"holder_id": "subject_id"})
    )


# -- behaviour -----------------------------------------------------------------------------------------------------


def window_starts(as_of: date) -> dict[int, datetime]:
    end = end_of_as_of_day_utc(as_of)
    return {w: end - timedelta(days=w) for w in WINDOWS}


def behaviour_count_exprs(as_of: date) -> list[pl.Expr]:
    starts = window_starts(as_of)
    out = []
    for name, actions in BEHAVIOUR_ACTIONS.items():
        for w, start in starts.items():
            out.append(
                (pl.col("action").is_in(actions) & (pl.col("ts") >= pl.lit(start))).sum().cast(pl.Int32).alias(f"{name}_{w}d")
            )
    return out


def events_until(events: pl.LazyFrame | pl.DataFrame, as_of: date) -> pl.LazyFrame:
    return lazy(events).filter(pl.col("ts") < pl.lit(end_of_as_of_day_utc(as_of)))


def behaviour_frames(
    events: pl.LazyFrame | pl.DataFrame, catalog: pl.LazyFrame | pl.DataFrame, as_of: date
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """(per-subject totals and last activity, per-subject breakdown lists by category and department)."""
    ev = events_until(events, as_of).select("subject_id", "item_id", "action", "ts")
    start = window_starts(as_of)[max(WINDOWS)]
    counts = behaviour_count_exprs(as_of)
    count_cols = [e.meta.output_name() for e in counts]
    # Window counts only need the last 180 days: conditional sums run over that slice, once, at the finest
    # grain (subject, category, department), and everything else is rolled up from it. Only the last
    # activity and the lifetime total read every event.
    recent = ev.filter(pl.col("ts") >= pl.lit(start)).join(
        lazy(catalog).select("item_id", "category", "department"), on="item_id", how="left"
    )
    fine = recent.group_by("subject_id", "category", "department").agg(counts)
    lifetime = ev.group_by("subject_id").agg(
        pl.col("ts").max().alias("last_activity"), pl.len().cast(pl.Int32).alias("events_total")
    )
    totals = lifetime.join(
        fine.group_by("subject_id").agg([pl.col(c).sum() for c in count_cols]), on="subject_id", how="left"
    )

    def breakdown(key: str, alias: str) -> pl.LazyFrame:
        # Ordered by key inside each subject's list: no global sort of the (subject, key) rows.
        return (
            fine.group_by("subject_id", key)
            .agg([pl.col(c).sum() for c in count_cols])
            .group_by("subject_id")
            .agg(pl.struct(pl.col(key).alias("key"), *count_cols).sort_by(pl.col(key)).alias(alias))
        )

    per_key = breakdown("category", "by_category").join(breakdown("department", "by_department"), on="subject_id", how="full", coalesce=True)
    return totals, per_key


# -- the whole profile ---------------------------------------------------------------------------------------------

PERSON_SENSITIVE_FIELDS = ("low_income", "disability")
PERSON_FIELDS = (
    "birth_date", "gender", "district", "local_hukou", "marital_status", "household_id", "occupation", "low_income",
    "disability", "age", "age_band", "household_size", "n_children", "n_children_under_6", "children_ages",
    "youngest_child_age", "youngest_child_birth_date", "newest_member_birth_date", "n_elderly_in_household",
    "household_members", "n_enterprises_represented", "is_legal_rep",
)
ENTERPRISE_FIELDS = (
    "name", "industry", "founded_on", "employees", "uscc", "legal_rep_id", "business_age_days", "business_age_years",
    "size_band",
)
ID_FIELDS = ("id_hash",)  # never leaves the store, not even in a profile


def profile_frame(
    people: pl.LazyFrame | pl.DataFrame,
    enterprises: pl.LazyFrame | pl.DataFrame,
    licenses: pl.LazyFrame | pl.DataFrame,
    events: pl.LazyFrame | pl.DataFrame,
    catalog: pl.LazyFrame | pl.DataFrame,
    as_of: date,
) -> pl.LazyFrame:
    """Every subject's profile as one lazy plan.

    Subjects are persons, enterprises, and ids seen only in events (``subject_type = "unknown"``, a
    behaviour-only profile). A person id that also appears as an enterprise is kept as the person.
    """
    reps = (
        lazy(enterprises)
        .filter(pl.col("legal_rep_id").is_not_null())
        .group_by("legal_rep_id")
        .agg(pl.len().cast(pl.Int32).alias("n_enterprises_represented"))
        .rename({"legal_rep_id": "subject_id"})
    )
    persons = (
        person_frame(people, as_of)
        .drop(*ID_FIELDS)
        .join(reps, on="subject_id", how="left")
        .with_columns(
            pl.col("n_enterprises_represented").fill_null(0),
            (pl.col("n_enterprises_represented").fill_null(0) > 0).alias("is_legal_rep"),
        )
    )
    firms = enterprise_frame(enterprises, as_of).rename({"district": "e_district"})
    totals, per_key = behaviour_frames(events, catalog, as_of)
    # Who is registered is read from the id columns themselves: asking the built frames for their ids would
    # make the plan build (some of) them twice.
    person_ids = lazy(people).select(pl.col("person_id").alias("subject_id"))
    registry_ids = pl.concat([person_ids, lazy(enterprises).select(pl.col("enterprise_id").alias("subject_id"))])
    registry = pl.concat([persons, firms.join(person_ids, on="subject_id", how="anti")], how="diagonal_relaxed")
    registry = registry.with_columns(pl.coalesce("district", "e_district").alias("district")).drop("e_district")
    unknown = (
        totals.select("subject_id")
        .join(registry_ids, on="subject_id", how="anti")
        .with_columns(pl.lit("unknown").alias("subject_type"))
    )
    subjects = pl.concat([registry, unknown], how="diagonal_relaxed")
    count_cols = [e.meta.output_name() for e in behaviour_count_exprs(as_of)]
    # Sorted before the joins, which keep that order: sorting the joined frame would move every nested column
    # (members, breakdowns) once more.
    return (
        subjects.sort("subject_id")
        .join(licence_frame(licenses, as_of), on="subject_id", how="left", maintain_order="left")
        .join(totals, on="subject_id", how="left", maintain_order="left")
        .join(per_key, on="subject_id", how="left", maintain_order="left")
        .with_columns(
            pl.lit(as_of).alias("as_of"),
            pl.col("n_licenses").fill_null(0),
            pl.col("n_expiring_90d").fill_null(0),
            pl.col("license_types").fill_null(pl.lit([], pl.List(pl.String))),
            pl.col("events_total").fill_null(0),
            *[pl.col(c).fill_null(0) for c in count_cols],
        )
    )
