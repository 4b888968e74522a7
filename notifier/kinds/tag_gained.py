"""tag_gained: a subject gained a tag (e.g. life_event.birth) within the last ``within_days`` days."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import ValidationInfo, field_validator

from notifier.kinds.base import RuleBase, audience_filter, check_tag, finish


class TagGained(RuleBase):
    kind: Literal["tag_gained"]
    tag: str
    within_days: int = 30

    MESSAGE_FIELDS: ClassVar[frozenset[str]] = frozenset({"tag_code", "tag_name_zh", "tag_name_en", "tag_date"})
    FLAT_DEFAULTS: ClassVar[dict[str, Any]] = {"tag": "", "within_days": 30}

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str, info: ValidationInfo) -> str:
        check_tag(value, info)
        return value

    @field_validator("within_days")
    @classmethod
    def _within(cls, value: int) -> int:
        if value < 0:
            raise ValueError("within_days must be 0 or more")
        return value

    def query(self, inp) -> tuple[pl.LazyFrame, pl.LazyFrame]:
        rule = self
        tags = inp.tags({rule.tag}).filter(pl.col("code") == rule.tag)
        subjects = inp.subjects(rule.audience.subject_type).select("subject_id", "district")
        live = audience_filter(rule, inp, tags.join(subjects, on="subject_id", how="inner"))
        live_keys = live.select("subject_id", pl.col("code").alias("object_id"))
        since = pl.lit(inp.as_of) - pl.duration(days=rule.within_days)
        due = (
            live.filter(pl.col("valid_from").is_not_null() & pl.col("valid_from").is_between(since, pl.lit(inp.as_of)))
            .join(inp.tag_names.lazy(), left_on="code", right_on="tag_code", how="left")
            .with_columns(
                pl.col("code").alias("object_id"),
                pl.col("code").alias("tag_code"),
                pl.col("valid_from").cast(pl.String).alias("stage"),
                pl.lit(0, dtype=pl.Int64).alias("stage_order"),
                pl.col("valid_from").cast(pl.String).alias("tag_date"),
                pl.col("valid_from").cast(pl.String).alias("cause_date"),
                pl.col("tag_name_zh").fill_null(pl.col("code")),
                pl.col("tag_name_en").fill_null(pl.col("code")),
            )
        )
        return finish(rule, inp, due, ["tag_code", "tag_name_zh", "tag_name_en", "tag_date"]), live_keys
