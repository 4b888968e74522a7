"""Train/valid/test splits of an interaction frame (subject_id, item_id[, ts]).

- :func:`random_split`: per-user random 80/10/10, RecBole's ``order: RO, split: {RS: [0.8, 0.1, 0.1]}``
  with RecBole's rounding (valid and test get int(ratio * n); users with under 10 interactions still get one
  valid and one test item while at least two stay in train).
- :func:`leave_last_out`: per user by time, last -> test, second last -> valid.
- :func:`temporal_split`: one global cut, the last N days (or the latest fraction of interactions) -> test, the
  window before it -> valid.

The time-ordered splits score the test part from everything before it: their ``test_history`` is train + valid
(the valid item is history at test time, as in S3Rec/ICLRec and RecBole's sequential protocol).

Every split reports what it skipped, with counts, in ``Split.skips``; none silently drops data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import polars as pl

from data.errors import ConfigFileError, ContractError


@dataclass
class Split:
    train: pl.DataFrame
    valid: pl.DataFrame
    test: pl.DataFrame
    protocol: str
    skips: dict[str, int] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    #: what the test stage fits on and ranks from, when it is more than train: everything before the test
    #: interactions (train + valid) for the time-ordered protocols, as S3Rec/ICLRec and RecBole's sequential
    #: models score the last item from the whole sequence before it
    test_history: pl.DataFrame | None = None

    @property
    def test_train(self) -> pl.DataFrame:
        return self.train if self.test_history is None else self.test_history

    def summary(self) -> dict[str, int]:
        return {"train": self.train.height, "valid": self.valid.height, "test": self.test.height,
                **{f"skipped: {k}": v for k, v in self.skips.items()}}


def _check(df: pl.DataFrame, need_ts: bool) -> None:
    need = ["subject_id", "item_id"] + (["ts"] if need_ts else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ContractError(f"interaction frame: missing column(s) {', '.join(missing)} for this split")
    if df.height == 0:
        raise ContractError("interaction frame is empty: nothing to split")


def recbole_counts(n: np.ndarray, ratios=(0.8, 0.1, 0.1)) -> np.ndarray:
    """Per-user (train, valid, test) sizes exactly as RecBole's ``_calcu_split_ids`` computes them."""
    n = np.asarray(n, dtype=np.int64)
    r = np.asarray(ratios, dtype=np.float64)
    cnt = np.floor(r[None, :] * n[:, None]).astype(np.int64)
    cnt[:, 0] = n - cnt[:, 1:].sum(axis=1)
    # RecBole walks the later parts from last to first and gives a part with 0 < ratio*n < 1 one interaction,
    # taken from train, while train keeps more than one
    for i in range(1, len(r)):
        j = len(r) - i
        frac = r[j] * n
        bump = (cnt[:, 0] > 1) & (frac > 0) & (frac < 1)
        cnt[bump, j] += 1
        cnt[bump, 0] -= 1
    return cnt


def random_split(df: pl.DataFrame, ratios=(0.8, 0.1, 0.1), seed: int = 2020) -> Split:
    """Per-user random split (RecBole RO/RS). Users whose test part is empty are counted in skips."""
    _check(df, need_ts=False)
    if len(ratios) != 3 or abs(sum(ratios) - 1.0) > 1e-9 or min(ratios) < 0:
        raise ConfigFileError(f"ratios: expected three non-negative numbers summing to 1, got {list(ratios)}")
    rng = np.random.default_rng(seed)
    d = df.with_columns(_r=pl.Series(rng.random(df.height)))
    d = d.with_columns(_pos=pl.col("_r").rank("ordinal").over("subject_id").cast(pl.Int64) - 1,
                       _n=pl.len().over("subject_id").cast(pl.Int64))
    users = d.select("subject_id", "_n").unique("subject_id")
    cnt = recbole_counts(users["_n"].to_numpy(), ratios)
    users = users.with_columns(_ntr=pl.Series(cnt[:, 0]), _nva=pl.Series(cnt[:, 1]))
    d = d.join(users.select("subject_id", "_ntr", "_nva"), on="subject_id")
    part = (pl.when(pl.col("_pos") < pl.col("_ntr")).then(pl.lit("train"))
            .when(pl.col("_pos") < pl.col("_ntr") + pl.col("_nva")).then(pl.lit("valid"))
            .otherwise(pl.lit("test")))
    d = d.with_columns(_part=part).drop("_r", "_pos", "_n", "_ntr", "_nva")
    train, valid, test = (d.filter(pl.col("_part") == p).drop("_part") for p in ("train", "valid", "test"))
    no_test = int((cnt[:, 2] == 0).sum())
    skips = {"users without a test interaction (not evaluated)": no_test} if no_test else {}
    return Split(train, valid, test, "recbole-random", skips)


def leave_last_out(df: pl.DataFrame, *, valid: bool = True) -> Split:
    """Per user by time: last interaction -> test, the one before -> valid (when the user has 3 or more).

    Ties in time break on item_id so the split is deterministic. Users with a single interaction cannot be
    both trained on and tested: they are left out and counted.
    """
    _check(df, need_ts=True)
    d = df.sort("subject_id", "ts", "item_id").with_columns(
        _pos=pl.int_range(pl.len()).over("subject_id"), _n=pl.len().over("subject_id"))
    single = d.filter(pl.col("_n") == 1).select(pl.col("subject_id").n_unique()).item()
    d = d.filter(pl.col("_n") >= 2)
    if d.height == 0:
        raise ContractError("leave-last-out: every user has a single interaction; nothing to train and test on")
    is_test = pl.col("_pos") == pl.col("_n") - 1
    is_valid = (pl.col("_pos") == pl.col("_n") - 2) & (pl.col("_n") >= 3) if valid else pl.lit(False)
    test = d.filter(is_test).drop("_pos", "_n")
    va = d.filter(is_valid).drop("_pos", "_n")
    train = d.filter(~is_test & ~is_valid).drop("_pos", "_n")
    skips = {"single-interaction users": int(single)} if single else {}
    return Split(train, va, test, "leave-last-out", skips, test_history=pl.concat([train, va]))


def temporal_split(df: pl.DataFrame, test_days: int | None = None, valid_days: int | None = None, *,
                   test_fraction: float = 0.1, valid_fraction: float = 0.1) -> Split:
    """Global cut by time: the last ``test_days`` days (up to the latest event) are test, the ``valid_days``
    before them valid (default: as many days as the test window).

    Without ``test_days`` the cut is by share of interactions: the latest ``test_fraction`` of them (by time) are
    test and the ``valid_fraction`` before them valid, so the split works on data of any time span.
    An empty test window (or an empty train part) is a ContractError naming the window and the data's range.
    """
    _check(df, need_ts=True)
    if not isinstance(df.schema["ts"], pl.Datetime):
        raise ContractError(f"temporal split: column ts must be a datetime, got {df.schema['ts']}")
    lo, hi = df["ts"].min(), df["ts"].max()
    if test_days is None:
        if valid_days is not None:
            raise ConfigFileError("valid_days needs test_days (or give neither and the split uses fractions)")
        for name, v in (("test_fraction", test_fraction), ("valid_fraction", valid_fraction)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
                raise ConfigFileError(f"{name} must be a number in [0, 1), got {v!r}")
        if test_fraction <= 0 or test_fraction + valid_fraction >= 1:
            raise ConfigFileError(f"test_fraction must be > 0 and test_fraction + valid_fraction < 1 "
                                  f"(got {test_fraction!r}, {valid_fraction!r})")
        ts = df["ts"].sort()
        # the cut is a timestamp, so interactions at one instant stay together
        test_start = ts[min(df.height - 1, int(df.height * (1 - test_fraction)))]
        valid_start = ts[min(df.height - 1, int(df.height * (1 - test_fraction - valid_fraction)))]
        test = df.filter(pl.col("ts") >= test_start)
        valid = df.filter((pl.col("ts") >= valid_start) & (pl.col("ts") < test_start))
        train = df.filter(pl.col("ts") < valid_start)
        window = f"the latest {test_fraction:g} of interactions (from {test_start})"
    else:
        valid_days = test_days if valid_days is None else valid_days
        if (not isinstance(test_days, int) or isinstance(test_days, bool) or test_days <= 0
                or not isinstance(valid_days, int) or isinstance(valid_days, bool) or valid_days < 0):
            raise ConfigFileError(f"test_days must be > 0 and valid_days >= 0 (got {test_days!r}, {valid_days!r})")
        test_start = hi - timedelta(days=test_days)
        valid_start = test_start - timedelta(days=valid_days)
        test = df.filter(pl.col("ts") > test_start)
        valid = df.filter((pl.col("ts") > valid_start) & (pl.col("ts") <= test_start))
        train = df.filter(pl.col("ts") <= valid_start)
        window = f"the last {test_days} day(s) (after {test_start})"
        if valid_days:
            window += f" with {valid_days} day(s) of valid before them"
    if train.height == 0 or test.height == 0:
        raise ContractError(
            f"temporal split: {window} leave an empty {'train' if train.height == 0 else 'test'} part; "
            f"data spans {lo} .. {hi}"
        )
    return Split(train, valid, test, "temporal", {}, {"test_start": str(test_start), "valid_start": str(valid_start)},
                 test_history=pl.concat([train, valid]))


def drop_cold(split: Split) -> Split:
    """Drop valid/test rows whose user or item never occurs in what that stage trains on (counted in skips).

    The valid stage trains on train; the test stage on ``split.test_train`` (train, or train + valid).
    A model cannot rank an item it never saw, nor personalise for a user it never saw; leaving them in would
    quietly pull every metric down. (The RecBole protocol keeps them: see :mod:`recommender.evaluation`.)
    """
    skips = dict(split.skips)
    parts = {}
    for name, seen in (("valid", split.train), ("test", split.test_train)):
        users = seen["subject_id"].unique().implode()
        items = seen["item_id"].unique().implode()
        part = getattr(split, name)
        cold_item = ~pl.col("item_id").is_in(items)
        cold_user = ~pl.col("subject_id").is_in(users)
        n_item = part.filter(cold_item).height
        n_user = part.filter(cold_user & ~cold_item).height
        where = "train" if seen is split.train else "train and valid"
        if n_item:
            skips[f"{name} interactions on items absent from {where}"] = n_item
        if n_user:
            skips[f"{name} interactions of users absent from {where}"] = n_user
        parts[name] = part.filter(~cold_item & ~cold_user)
    if parts["test"].height == 0:
        raise ContractError("after dropping users/items unseen in train, the test part is empty")
    return Split(split.train, parts["valid"], parts["test"], split.protocol, skips, dict(split.notes),
                 split.test_history)
