"""Ranking metrics: hand-worked cases and a check against a plain per-user reference implementation."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recommender.metrics import METRICS, coverage, evaluate, parse_metrics, per_user
from data.errors import ConfigFileError, ContractError


def recs_frame(lists: dict[str, list[str]]) -> pl.DataFrame:
    rows = [(u, i, r + 1) for u, items in lists.items() for r, i in enumerate(items)]
    return pl.DataFrame(rows, schema={"subject_id": pl.String, "item_id": pl.String, "rank": pl.Int64}, orient="row")


def truth_frame(sets: dict[str, set[str]]) -> pl.DataFrame:
    rows = [(u, i) for u, items in sets.items() for i in sorted(items)]
    return pl.DataFrame(rows, schema={"subject_id": pl.String, "item_id": pl.String}, orient="row")


def reference(rec: list[str], rel: set[str], k: int) -> dict[str, float]:
    """BENCHMARKS.md protocol 1, written the slow obvious way."""
    top = rec[:k]
    hits = [i in rel for i in top]
    first = next((r + 1 for r, h in enumerate(hits) if h), None)
    dcg = sum(1 / math.log2(r + 2) for r, h in enumerate(hits) if h)
    idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
    ap = sum(sum(hits[: r + 1]) / (r + 1) for r, h in enumerate(hits) if h) / min(len(rel), k)
    return {"recall": sum(hits) / len(rel), "precision": sum(hits) / k, "hit": float(any(hits)),
            "mrr": 1 / first if first else 0.0, "ndcg": dcg / idcg, "map": ap}


def test_hand_worked_user():
    # relevant {b, x}; top-3 [a, b, c]: one hit at rank 2
    pu = per_user(recs_frame({"u": ["a", "b", "c"]}), truth_frame({"u": {"b", "x"}}), 3).row(0, named=True)
    assert pu["recall"] == 0.5 and pu["precision"] == pytest.approx(1 / 3) and pu["hit"] == 1.0
    assert pu["mrr"] == 0.5
    assert pu["ndcg"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert pu["map"] == pytest.approx((1 / 2) / 2)


def test_idcg_uses_min_of_relevant_and_k():
    # 5 relevant, K = 2, both slots hit: a perfect list scores NDCG 1 (and recall only 2/5)
    pu = per_user(recs_frame({"u": ["a", "b"]}), truth_frame({"u": set("abcde")}), 2).row(0, named=True)
    assert pu["ndcg"] == pytest.approx(1.0) and pu["recall"] == pytest.approx(0.4) and pu["map"] == pytest.approx(1.0)


def test_ranks_beyond_k_are_ignored_and_missing_users_score_zero():
    recs = recs_frame({"u": ["a", "b", "c"]})
    pu = per_user(recs, truth_frame({"u": {"c"}, "v": {"a"}}), 2).sort("subject_id")
    assert pu["hit"].to_list() == [0.0, 0.0]
    assert pu["n_relevant"].to_list() == [1, 1]


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.tuples(st.permutations(list("abcdefghij")), st.sets(st.sampled_from(list("abcdefghijkl")), min_size=1)),
        min_size=1, max_size=6,
    ),
    k=st.integers(1, 10),
    n_recs=st.integers(0, 10),
)
def test_matches_reference(data, k, n_recs):
    lists = {f"u{j}": list(rec)[:n_recs] for j, (rec, _) in enumerate(data)}
    rel = {f"u{j}": set(r) for j, (_, r) in enumerate(data)}
    pu = per_user(recs_frame(lists), truth_frame(rel), k)
    for row in pu.iter_rows(named=True):
        want = reference(lists[row["subject_id"]], rel[row["subject_id"]], k)
        for m, v in want.items():
            assert row[m] == pytest.approx(v), (m, row["subject_id"])


def test_evaluate_means_and_coverage():
    recs = recs_frame({"u": ["a", "b"], "v": ["a", "c"], "w": ["z", "y"]})
    truth = truth_frame({"u": {"a"}, "v": {"x"}})
    out = evaluate(recs, truth, 2, ["hit", "coverage", "ndcg"], catalogue_size=10)
    assert list(out) == ["hit", "coverage", "ndcg"]
    assert out["hit"] == 0.5 and out["ndcg"] == 0.5
    assert out["coverage"] == pytest.approx(3 / 10)  # w has no truth: its items do not count
    assert coverage(recs, 1, 4) == pytest.approx(2 / 4)


def test_bad_input_is_named():
    with pytest.raises(ConfigFileError, match="unknown metric 'auc'"):
        parse_metrics(["ndcg", "auc"])
    assert parse_metrics("NDCG@10, HitRate,hr") == ["ndcg", "hit"]
    assert set(parse_metrics(list(METRICS))) == set(METRICS)
    with pytest.raises(ContractError, match="missing column"):
        per_user(recs_frame({"u": ["a"]}).drop("rank"), truth_frame({"u": {"a"}}), 1)
    with pytest.raises(ContractError, match="twice"):
        per_user(recs_frame({"u": ["a", "a"]}), truth_frame({"u": {"a"}}), 2)
    with pytest.raises(ContractError, match="empty"):
        evaluate(recs_frame({"u": ["a"]}), truth_frame({}), 1)
    with pytest.raises(ContractError, match="positive"):
        per_user(recs_frame({"u": ["a"]}), truth_frame({"u": {"a"}}), 0)
