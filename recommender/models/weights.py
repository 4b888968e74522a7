"""Events -> confidence-weighted users x items CSR: action weights and time decay are configuration.

weight(event) = action_weights[action] * 0.5 ** (age_days / half_life_days), summed (or maxed) per
(subject, item). ``half_life_days=None`` switches decay off. Events after ``as_of`` are left out so a
model trained "as of" a date never sees the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import numpy as np
import polars as pl
import scipy.sparse as sp

from data.errors import ConfigFileError, ContractError
from data.facts import end_of_as_of_day_utc

REQUIRED = ("subject_id", "item_id", "action", "ts")


@dataclass
class Interactions:
    """A weighted users x items matrix and the ids of its rows and columns."""

    matrix: sp.csr_matrix
    subject_ids: np.ndarray
    item_ids: np.ndarray

    def subject_index(self) -> pl.DataFrame:
        return pl.DataFrame({"subject_id": self.subject_ids, "row": np.arange(len(self.subject_ids), dtype=np.int64)})

    def item_index(self) -> pl.DataFrame:
        return pl.DataFrame({"item_id": self.item_ids, "col": np.arange(len(self.item_ids), dtype=np.int64)})


def _as_utc(as_of) -> datetime:
    if isinstance(as_of, datetime):
        return as_of if as_of.tzinfo else as_of.replace(tzinfo=timezone.utc)
    if isinstance(as_of, date):
        # "As of" a day means through the end of that Shanghai day (data.facts), the last microsecond before it.
        return end_of_as_of_day_utc(as_of) - timedelta(microseconds=1)
    raise ContractError(f"as_of must be a date or datetime, got {type(as_of).__name__}")


def check_action_weights(action_weights: dict, half_life_days, *, source: str = "action_weights") -> None:
    if not isinstance(action_weights, dict) or not action_weights:
        raise ConfigFileError(f"{source}: expected a non-empty mapping action -> weight")
    for action, w in action_weights.items():
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not np.isfinite(w) or w < 0:
            raise ConfigFileError(f"{source}.{action}: weight must be a number >= 0, got {w!r}")
    if half_life_days is not None and (not isinstance(half_life_days, (int, float)) or half_life_days <= 0):
        raise ConfigFileError(f"half_life_days: must be a number > 0 or null (no decay), got {half_life_days!r}")


def weighted_interactions(events: pl.DataFrame | pl.LazyFrame, action_weights: dict[str, float],
                          half_life_days: float | None, as_of, *, subject_ids=None, item_ids=None,
                          aggregate: str = "sum") -> Interactions:
    """Build the confidence matrix from an events frame (subject_id, item_id, action, ts).

    ``subject_ids`` / ``item_ids`` fix the row / column order (e.g. the whole catalogue, so items nobody
    touched still get a column); events on ids outside them are dropped. Without them the ids are the
    sorted distinct ids of the kept events. An action missing from ``action_weights`` is a ConfigFileError
    naming it (a silently zero-weighted action would quietly change the model).
    """
    check_action_weights(action_weights, half_life_days)
    if aggregate not in ("sum", "max"):
        raise ConfigFileError(f"aggregate: expected 'sum' or 'max', got {aggregate!r}")
    lf = events.lazy()
    missing = [c for c in REQUIRED if c not in lf.collect_schema().names()]
    if missing:
        raise ContractError(f"events frame: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
    cutoff = _as_utc(as_of)
    lf = lf.filter(pl.col("ts") <= cutoff)
    unknown = (
        lf.select(pl.col("action").unique()).filter(~pl.col("action").is_in(list(action_weights))).collect()
    )
    if unknown.height:
        raise ConfigFileError(
            f"action_weights: no weight for action(s) {', '.join(sorted(map(str, unknown['action'].to_list())))}; "
            f"configured: {', '.join(action_weights)}"
        )
    w = pl.col("action").replace_strict(action_weights, return_dtype=pl.Float64)
    if half_life_days is not None:
        age_days = (pl.lit(cutoff) - pl.col("ts")).dt.total_microseconds() / 86_400e6
        w = w * (0.5 ** (age_days / float(half_life_days)))
    agg = pl.col("w").sum() if aggregate == "sum" else pl.col("w").max()
    pairs = (
        lf.select("subject_id", "item_id", w.alias("w"))
        .group_by("subject_id", "item_id")
        .agg(agg)
        .filter(pl.col("w") > 0)
        .collect()
    )
    subject_ids = np.sort(pairs["subject_id"].unique().to_numpy()) if subject_ids is None else np.asarray(subject_ids)
    item_ids = np.sort(pairs["item_id"].unique().to_numpy()) if item_ids is None else np.asarray(item_ids)
    return to_csr(pairs, subject_ids, item_ids, value="w")


def to_csr(pairs: pl.DataFrame, subject_ids, item_ids, *, value: str | None = None) -> Interactions:
    """(subject_id, item_id[, value]) pairs -> Interactions over the given id orders (unknown ids dropped).

    Without ``value`` each pair weighs 1. Duplicate pairs are summed.
    """
    subject_ids = np.asarray(subject_ids)
    item_ids = np.asarray(item_ids)
    sidx = pl.DataFrame({"subject_id": pl.Series(subject_ids, dtype=pl.String),
                         "row": np.arange(len(subject_ids), dtype=np.int64)})
    iidx = pl.DataFrame({"item_id": pl.Series(item_ids, dtype=pl.String),
                         "col": np.arange(len(item_ids), dtype=np.int64)})
    cols = [pl.col("subject_id").cast(pl.String), pl.col("item_id").cast(pl.String)]
    cols.append(pl.col(value).cast(pl.Float32).alias("v") if value else pl.lit(1.0, dtype=pl.Float32).alias("v"))
    j = pairs.select(cols).join(sidx, on="subject_id").join(iidx, on="item_id")
    m = sp.csr_matrix(
        (j["v"].to_numpy(), (j["row"].to_numpy(), j["col"].to_numpy())),
        shape=(len(subject_ids), len(item_ids)), dtype=np.float32,
    )
    m.sum_duplicates()
    m.sort_indices()
    return Interactions(m, subject_ids, item_ids)
