"""calendar: a yearly window (MM-DD to MM-DD), e.g. the enterprise annual report from 01-01 to 06-30."""

from __future__ import annotations

import re
from datetime import date
from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import ValidationInfo, field_validator

from notifier.kinds.base import RuleBase, StrictModel, audience_filter, finish

_MMDD = re.compile(r"^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")


class Window(StrictModel):
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _mmdd(cls, value: str, info: ValidationInfo) -> str:
        if not _MMDD.match(value):
            raise ValueError(f"window {info.field_name} must be MM-DD (e.g. 06-30), got {value!r}")
        if info.field_name == "end" and "start" in info.data and value < info.data["start"]:
            raise ValueError("window end must not come before its start within the year")
        return value


class Calendar(RuleBase):
    kind: Literal["calendar"]
    window: Window
    existing_before_window: bool = False

    MESSAGE_FIELDS: ClassVar[frozenset[str]] = frozenset({"year", "window_start", "window_end"})
    FLAT_DEFAULTS: ClassVar[dict[str, Any]] = {"window_start": "", "window_end": "", "existing_before_window": False}

    @property
    def window_start(self) -> str:
        return self.window.start

    @property
    def window_end(self) -> str:
        return self.window.end

    def query(self, inp) -> tuple[pl.LazyFrame, pl.LazyFrame]:
        rule = self
        year = inp.as_of.year
        start = date.fromisoformat(f"{year}-{rule.window_start}")
        end = date.fromisoformat(f"{year}-{rule.window_end}")
        subjects = inp.subjects(rule.audience.subject_type)
        if rule.existing_before_window and rule.audience.subject_type == "enterprise":
            subjects = subjects.filter(pl.col("founded_on") < pl.lit(start))
        if not start <= inp.as_of <= end:
            subjects = subjects.filter(pl.lit(False))
        live = audience_filter(rule, inp, subjects.select("subject_id", "district"))
        live_keys = live.select("subject_id", pl.lit(str(year)).alias("object_id"))
        due = live.with_columns(
            pl.lit(str(year)).alias("object_id"),
            pl.lit(str(year)).alias("year"),
            pl.lit(start.isoformat()).alias("stage"),
            pl.lit(0, dtype=pl.Int64).alias("stage_order"),
            pl.lit(start.isoformat()).alias("window_start"),
            pl.lit(end.isoformat()).alias("window_end"),
            pl.lit(end.isoformat()).alias("cause_date"),
        )
        return finish(rule, inp, due, ["year", "window_start", "window_end"]), live_keys
