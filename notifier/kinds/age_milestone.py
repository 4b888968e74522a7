"""age_milestone: a person (or, with ``notify: household_adults``, the adults of their household) reaches an age."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import field_validator

from notifier.kinds.base import Audience, RuleBase, audience_filter, finish

NOTIFY = ("self", "household_adults")


class AgeMilestone(RuleBase):
    kind: Literal["age_milestone"]
    age: int
    notify: str = "self"
    days_before: int = 0
    days_after: int = 60

    MESSAGE_FIELDS: ClassVar[frozenset[str]] = frozenset({"age", "member_id", "birthday", "milestone_date"})
    FLAT_DEFAULTS: ClassVar[dict[str, Any]] = {"age": 0, "notify": "self", "days_before": 0, "days_after": 60}

    @field_validator("audience")
    @classmethod
    def _persons(cls, value: Audience) -> Audience:
        if value.subject_type != "person":
            raise ValueError("age milestones apply to persons: set audience.subject_type: person")
        return value

    @field_validator("age")
    @classmethod
    def _age(cls, value: int) -> int:
        if not 0 < value < 130:
            raise ValueError(f"age must be between 1 and 129, got {value}")
        return value

    @field_validator("notify")
    @classmethod
    def _notify(cls, value: str) -> str:
        if value not in NOTIFY:
            raise ValueError(f"notify must be one of {', '.join(NOTIFY)}, got {value!r}")
        return value

    @field_validator("days_before", "days_after")
    @classmethod
    def _days(cls, value: int) -> int:
        if value < 0:
            raise ValueError("days must be 0 or more")
        return value

    def query(self, inp) -> tuple[pl.LazyFrame, pl.LazyFrame]:
        rule = self
        as_of = inp.as_of
        people = inp.subjects("person")
        milestone = pl.col("birth_date").dt.offset_by(f"{rule.age}y")
        lo = pl.lit(as_of) - pl.duration(days=rule.days_after)
        hi = pl.lit(as_of) + pl.duration(days=rule.days_before)
        # Candidates: people whose milestone falls in [as_of - days_after, as_of + days_before].
        members = (
            people.filter(pl.col("birth_date").is_not_null())
            .with_columns(milestone.alias("milestone"))
            .filter(pl.col("milestone").is_between(lo, hi))
            .select(pl.col("subject_id").alias("member_id"), "birth_date", "milestone", "household_id", "district")
        )
        if rule.notify == "self":
            frame = members.with_columns(pl.col("member_id").alias("subject_id"))
        else:
            adult = pl.col("birth_date").dt.offset_by("18y") <= pl.lit(as_of)
            adults = people.filter(adult & pl.col("household_id").is_not_null()).select(
                "subject_id", "household_id", "district"
            )
            frame = members.filter(pl.col("household_id").is_not_null()).drop("district").join(
                adults, on="household_id", how="inner"
            )
        live = audience_filter(rule, inp, frame)
        live_keys = live.select("subject_id", pl.col("member_id").alias("object_id"))
        due = live.with_columns(
            pl.col("member_id").alias("object_id"),
            pl.lit(str(rule.age)).alias("stage"),
            pl.lit(0, dtype=pl.Int64).alias("stage_order"),
            pl.lit(str(rule.age)).alias("age"),
            pl.col("birth_date").cast(pl.String).alias("birthday"),
            pl.col("milestone").cast(pl.String).alias("milestone_date"),
            pl.col("milestone").cast(pl.String).alias("cause_date"),
        )
        return finish(rule, inp, due, ["age", "member_id", "birthday", "milestone_date"]), live_keys
