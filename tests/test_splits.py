"""Splits: RecBole's per-user random 80/10/10, leave-last-out by time, global temporal cut, cold-start drops."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from recommender.splits import drop_cold, leave_last_out, random_split, recbole_counts, temporal_split
from data.errors import ConfigFileError, ContractError

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def recbole_calcu_split_ids(tot: int, ratios) -> list[int]:
    """RecBole's Dataset._calcu_split_ids (recbole/data/dataset/dataset.py), as sizes."""
    cnt = [int(ratios[i] * tot) for i in range(len(ratios))]
    cnt[0] = tot - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * tot < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


def frame(counts: dict[str, int]) -> pl.DataFrame:
    rows = [(u, f"i{j}", T0 + timedelta(days=j)) for u, n in counts.items() for j in range(n)]
    return pl.DataFrame(rows, schema={"subject_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")},
                        orient="row")


def test_counts_match_recbole():
    n = np.arange(1, 300)
    got = recbole_counts(n, (0.8, 0.1, 0.1))
    want = np.array([recbole_calcu_split_ids(int(t), (0.8, 0.1, 0.1)) for t in n])
    np.testing.assert_array_equal(got, want)
    got = recbole_counts(n, (0.7, 0.2, 0.1))
    want = np.array([recbole_calcu_split_ids(int(t), (0.7, 0.2, 0.1)) for t in n])
    np.testing.assert_array_equal(got, want)


def test_random_split_partitions_each_user():
    df = frame({"a": 20, "b": 27, "c": 3, "d": 1})
    s = random_split(df, seed=1)
    both = pl.concat([s.train, s.valid, s.test])
    assert both.sort("subject_id", "item_id").equals(df.sort("subject_id", "item_id"))
    sizes = {p: getattr(s, p).group_by("subject_id").len() for p in ("train", "valid", "test")}
    for u, n in {"a": 20, "b": 27, "c": 3}.items():
        want = recbole_calcu_split_ids(n, (0.8, 0.1, 0.1))
        got = [sizes[p].filter(pl.col("subject_id") == u)["len"].sum() for p in ("train", "valid", "test")]
        assert got == want
    assert s.skips == {"users without a test interaction (not evaluated)": 1}  # d: a single interaction


def test_random_split_seeded():
    df = frame({"a": 50, "b": 40})
    a, b, c = random_split(df, seed=5), random_split(df, seed=5), random_split(df, seed=6)
    assert a.test.equals(b.test)
    assert not a.test.sort("item_id").equals(c.test.sort("item_id"))
    with pytest.raises(ConfigFileError, match="ratios"):
        random_split(df, (0.5, 0.5, 0.5))


def test_leave_last_out_takes_the_latest():
    df = frame({"a": 5, "b": 2, "c": 1})
    s = leave_last_out(df)
    assert s.test.sort("subject_id")["item_id"].to_list() == ["i4", "i1"]
    assert s.valid["item_id"].to_list() == ["i3"]  # b has only 2: train + test, no valid
    assert s.train.height == 3 + 1
    assert s.skips == {"single-interaction users": 1}
    with pytest.raises(ContractError, match="single interaction"):
        leave_last_out(frame({"x": 1, "y": 1}))
    with pytest.raises(ContractError, match="missing column"):
        leave_last_out(df.drop("ts"))


def test_temporal_split_and_empty_window():
    df = frame({"a": 100, "b": 10})
    s = temporal_split(df, test_days=10, valid_days=5)
    assert s.test["ts"].min() > df["ts"].max() - timedelta(days=10)
    assert s.train.height + s.valid.height + s.test.height == df.height
    assert s.valid.height == 5 and s.test.height == 10
    with pytest.raises(ContractError, match="empty train part"):
        temporal_split(df, test_days=1000)
    with pytest.raises(ConfigFileError, match="test_days"):
        temporal_split(df, test_days=0)


def test_drop_cold_counts_what_it_drops():
    tr = pl.DataFrame({"subject_id": ["a", "a", "b"], "item_id": ["x", "y", "x"]})
    te = pl.DataFrame({"subject_id": ["a", "b", "c"], "item_id": ["z", "y", "x"]})
    from recommender.splits import Split

    s = drop_cold(Split(tr, te.clear(), te, "t"))
    assert s.test.rows() == [("b", "y")]
    assert s.skips == {"test interactions on items absent from train": 1, "test interactions of users absent from train": 1}
    with pytest.raises(ContractError, match="test part is empty"):
        drop_cold(Split(tr, te.clear(), te.filter(pl.col("subject_id") == "c"), "t"))
