"""licence_expiry: a ladder of notices before a licence expires (90, 30, 7 days...), linked to its renewal item."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import polars as pl
from pydantic import ValidationInfo, field_validator

from notifier.kinds.base import RuleBase, audience_filter, finish, reference, word_list


class LicenceExpiry(RuleBase):
    kind: Literal["licence_expiry"]
    licence_types: tuple[str, ...]
    stages_days: tuple[int, ...]  # descending: 90, 30, 7
    renewal_item: str = "auto"

    MESSAGE_FIELDS: ClassVar[frozenset[str]] = frozenset({
        "license_id", "license_type", "licence_name_zh", "licence_name_en", "expires_on", "days_left", "stage",
        "item_id", "item_name", "expiry_zh", "expiry_en",
    })
    FLAT_DEFAULTS: ClassVar[dict[str, Any]] = {"licence_types": (), "stages_days": (), "renewal_item": "auto"}

    @field_validator("licence_types", mode="before")
    @classmethod
    def _licence_types(cls, value: Any, info: ValidationInfo) -> tuple:
        out = word_list(value, "licence_types", required=True)
        ref = reference(info)
        for t in out:
            if ref is not None and ref.licence_types and t not in ref.licence_types:
                raise ValueError(f"unknown licence type {t!r} (see data/license_types.csv)")
        return out

    @field_validator("stages_days", mode="before")
    @classmethod
    def _stages(cls, value: Any) -> tuple:
        out = word_list(value, "stages_days", item_type=int, required=True)
        if any(s < 0 for s in out):
            raise ValueError("stages_days must be 0 or more days before expiry")
        return tuple(sorted(out, reverse=True))

    @field_validator("renewal_item")
    @classmethod
    def _renewal(cls, renewal: str, info: ValidationInfo) -> str:
        ref = reference(info)
        types = info.data.get("licence_types")
        if ref is None or not ref.items or types is None:
            return renewal
        if renewal == "auto":
            missing = [t for t in types if t not in set(ref.items.values())]
            if missing:
                raise ValueError(f"renewal_item auto: no catalogue item renews {missing[0]!r}")
        elif renewal not in ref.items:
            raise ValueError(f"renewal item {renewal!r} is not in the catalogue")
        elif ref.items[renewal] not in types:
            raise ValueError(f"item {renewal!r} renews {ref.items[renewal] or 'no licence'!r}, not {' / '.join(types)}")
        return renewal

    @classmethod
    def prepare(cls, inp, rules: list[LicenceExpiry]) -> None:
        # current_licences is computed once for all licence rules: it reads every type and the longest ladder.
        inp.licence_types = {t for r in rules for t in r.licence_types}
        inp.licence_max_stage = max((r.stages_days[0] for r in rules), default=0)

    def query(self, inp) -> tuple[pl.LazyFrame, pl.LazyFrame]:
        rule = self
        as_of = inp.as_of
        lic = inp.current_licences(inp.licence_types).filter(
            pl.col("license_type").is_in(list(rule.licence_types))
            & (pl.col("holder_type") == rule.audience.subject_type)
        )
        live = audience_filter(rule, inp, lic)
        live_keys = live.select("subject_id", pl.col("license_id").alias("object_id"))

        days_left = (pl.lit(as_of) - pl.col("expires_on")).dt.total_days().neg()
        ascending = sorted(rule.stages_days)
        stage_expr = pl.when(days_left <= ascending[0]).then(pl.lit(ascending[0]))
        for s in ascending[1:]:
            stage_expr = stage_expr.when(days_left <= s).then(pl.lit(s))
        order = {s: i for i, s in enumerate(rule.stages_days)}  # stages_days is descending: 90 -> 0, 7 -> 2
        due = (
            live.with_columns(days_left.alias("days_left"))
            .filter((pl.col("days_left") >= 0) & (pl.col("days_left") <= ascending[-1]))
            .with_columns(stage_expr.cast(pl.Int64).alias("stage_n"))
            .with_columns(
                pl.col("stage_n").replace_strict(order, return_dtype=pl.Int64).alias("stage_order"),
                pl.col("stage_n").cast(pl.String).alias("stage"),
            )
        )
        cat = inp.catalog.lazy()
        if rule.renewal_item == "auto":
            renew = (
                cat.filter(pl.col("renews_license").is_in(list(rule.licence_types)))
                .group_by(pl.col("renews_license").alias("license_type"))
                .agg(pl.col("item_id").min())
            )
            due = due.join(renew, on="license_type", how="left")
        else:
            due = due.with_columns(pl.lit(rule.renewal_item).alias("item_id"))
        due = (
            due.join(cat.select("item_id", pl.col("name").alias("item_name")), on="item_id", how="left")
            .join(inp.item_names_en.lazy().rename({"name_en": "item_name_en"}), on="item_id", how="left")
            .join(inp.licence_names.lazy(), on="license_type", how="left")
            .with_columns(
                pl.col("licence_name_zh").fill_null(pl.col("license_type")),
                pl.col("licence_name_en").fill_null(pl.col("license_type")),
                pl.col("item_name_en").fill_null(pl.col("item_id")),
                pl.col("expires_on").cast(pl.String),
                pl.col("license_id").alias("object_id"),
                pl.col("expires_on").cast(pl.String).alias("cause_date"),
            )
            .with_columns(_expiry_phrases())
        )
        fields = ["license_id", "license_type", "licence_name_zh", "licence_name_en", "expires_on", "days_left",
                  "expiry_zh", "expiry_en", "stage", "item_id", "item_name", "item_name_en"]
        return finish(rule, inp, due, fields, lead_items=[pl.col("item_id")]), live_keys


def _expiry_phrases() -> list[pl.Expr]:
    """When the licence expires, as a sentence reads it: today and tomorrow by name, later as a date and a count."""
    left, on = pl.col("days_left"), pl.col("expires_on").cast(pl.String)
    return [
        pl.when(left == 0).then(pl.concat_str([pl.lit("今天（"), on, pl.lit("）到期")]))
        .when(left == 1).then(pl.concat_str([pl.lit("明天（"), on, pl.lit("）到期")]))
        .otherwise(pl.concat_str([pl.lit("将于"), on, pl.lit("到期（还有"), left.cast(pl.String), pl.lit("天）")]))
        .alias("expiry_zh"),
        pl.when(left == 0).then(pl.concat_str([pl.lit("expires today ("), on, pl.lit(")")]))
        .when(left == 1).then(pl.concat_str([pl.lit("expires tomorrow ("), on, pl.lit(")")]))
        .otherwise(pl.concat_str([pl.lit("expires on "), on, pl.lit(" ("), left.cast(pl.String),
                                  pl.lit(" days left)")]))
        .alias("expiry_en"),
    ]
