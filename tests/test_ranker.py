"""The LambdaRank ranker: estimator conventions, learning, persistence, the time-ordered training set."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from recommender import candidates as C
from recommender.config import load_config
from recommender.ranker import LambdaRanker, groups_of, ndcg_at_k, positives
from recommender.training import train_models
from cities import mini_city
from estimator_contract import EstimatorContract
from data.errors import StateError
from data.eventlog import scan_events

N_F = len(C.FEATURES)


@pytest.fixture
def problem():
    """300 queries of 20 candidates; relevance is decided by feature 2 (f_tag) alone, plus noise features."""
    rng = np.random.default_rng(0)
    n_q, per = 300, 20
    X = rng.random((n_q * per, N_F)).astype(np.float32)
    X[:, C.FEATURES.index("i_category")] = rng.integers(0, 5, n_q * per)
    X[:, C.FEATURES.index("p_kind")] = rng.integers(0, 2, n_q * per)
    y = (X[:, 2] > 0.9).astype(np.int32)
    return X, y, np.full(n_q, per)


def _frame(X, y, scores, per):
    return pl.DataFrame({"sidx": np.repeat(np.arange(len(y) // per), per), "label": y, "s": scores})


def test_estimator_conventions(problem):
    X, y, g = problem
    r = LambdaRanker(n_estimators=20, num_leaves=7, random_state=3)
    assert r.get_params()["n_estimators"] == 20 and r.random_state == 3
    assert not [a for a in vars(r) if a.endswith("_")]  # nothing learned before fit
    with pytest.raises(StateError, match="not fitted"):
        r.predict(X)
    assert r.fit(X, y, g) is r
    learned = [a for a in vars(r) if a.endswith("_")]
    assert set(learned) == {"booster_", "feature_names_", "splits_"}
    assert r.get_params()["n_estimators"] == 20  # hyperparameters untouched by fit


class TestLambdaRankerContract(EstimatorContract):
    """The estimator conventions every learned part shares (tests/estimator_contract.py)."""

    estimator_cls = LambdaRanker
    params = {"n_estimators": 10, "num_leaves": 7, "n_jobs": 1}

    @pytest.fixture
    def contract_data(self, problem):
        return problem

    def fit(self, m, data):
        X, y, g = data
        return m.fit(X, y, g)

    def predict(self, m, data):
        return m.predict(data[0])

    def save_load(self, m, path):
        return LambdaRanker.load(m.save(path / "ranker.txt"), **m.get_params())


def test_learns_the_signal_and_is_repeatable(problem):
    X, y, g = problem
    a = LambdaRanker(n_estimators=30, num_leaves=7, random_state=1).fit(X, y, g).predict(X)
    b = LambdaRanker(n_estimators=30, num_leaves=7, random_state=1).fit(X, y, g).predict(X)
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(9)
    learned = ndcg_at_k(_frame(X, y, a, 20), "s", 10)
    random = ndcg_at_k(_frame(X, y, rng.random(len(y)), 20), "s", 10)
    assert learned > 0.95 > random + 0.3


def test_save_and_load_round_trip(problem, tmp_path):
    X, y, g = problem
    r = LambdaRanker(n_estimators=10, num_leaves=7).fit(X, y, g)
    path = r.save(tmp_path / "ranker.txt")
    np.testing.assert_allclose(LambdaRanker.load(path).predict(X), r.predict(X), rtol=1e-6)
    with pytest.raises(Exception, match="no saved ranker"):
        LambdaRanker.load(tmp_path / "missing.txt")


def test_no_positive_is_a_clear_error(problem):
    X, _, g = problem
    with pytest.raises(StateError, match="no training rows with a positive label"):
        LambdaRanker().fit(X, np.zeros(len(X), dtype=np.int32), g)


def test_ndcg_at_k_by_hand():
    # one subject, relevant items ranked 1 and 3, a third relevant item outside the candidates
    f = pl.DataFrame({"sidx": [0, 0, 0], "label": [1, 0, 1], "s": [3.0, 2.0, 1.0]})
    dcg = 1 + 1 / math.log2(4)
    assert ndcg_at_k(f, "s", 10) == pytest.approx(dcg / (1 + 1 / math.log2(3)))
    n_rel = pl.DataFrame({"sidx": [0], "n": [3]})
    assert ndcg_at_k(f, "s", 10, n_rel) == pytest.approx(dcg / (1 + 1 / math.log2(3) + 1 / math.log2(4)))
    assert groups_of(pl.DataFrame({"sidx": [0, 0, 1, 2, 2, 2]})).tolist() == [2, 1, 3]


def test_training_split_is_time_ordered(settings, db):
    city = mini_city(settings, db, n_people=250, n_ent=20)
    cfg = load_config(settings)
    as_of = city["as_of"]
    cut = as_of - timedelta(days=cfg["ranker"]["label_window_days"])
    events = scan_events(settings.events_dir)
    world = C.build_world(settings, db, cfg, cut, events)
    # the world at the cut knows nothing of the label window
    assert world.inter["last_ts"].max() < C.cutoff(cut)
    pos = positives(events, world, cut + timedelta(days=1), as_of, ["apply", "complete"])
    ev = city["events"].filter(pl.col("action").is_in(["apply", "complete"])
                               & (pl.col("ts") >= C.cutoff(cut)) & (pl.col("ts") < C.cutoff(as_of)))
    assert pos.height == ev.select("subject_id", "item_id").unique().height > 0
    source, ranker, m = train_models(settings, db, cfg, as_of, events)
    assert m["training_cut"] == cut.isoformat()
    assert m["positives"] == pos.height
    assert 0 < m["candidate_recall"] <= 1
    assert set(m["feature_gain"]) == set(C.FEATURES)
    # the serving implicit model is fitted on everything up to as_of (more subjects than at the cut, or equal)
    assert len(source.subject_ids) >= world.n_subjects


def _check_cells_predict_exactly(booster, X):
    from recommender.ranker import SplitCells

    r = LambdaRanker()
    r.booster_, r.feature_names_, r.splits_ = booster, list(C.FEATURES), SplitCells.of(booster)
    keys = r.splits_.keys(X)
    assert keys is not None
    assert pl.DataFrame(keys).n_unique() < len(X)  # rows do share cells, so the shortcut is exercised
    np.testing.assert_array_equal(r.predict(X), booster.predict(X).astype(np.float32))


def test_predict_scores_each_split_cell_once_and_exactly_as_lightgbm(problem):
    """predict() scores one row per cell of the model's splits: the scores must be LightGBM's, bit for bit, also
    for values lying exactly on a threshold, the missing sentinel and categories no split names."""
    X, y, g = problem
    r = LambdaRanker(n_estimators=40, num_leaves=15).fit(X, y, g)
    rng = np.random.default_rng(5)
    Z = X[rng.integers(0, len(X), 4000)].copy()
    Z[::7, 3] = 0.0
    Z[::11, 5] = C.MISSING
    Z[::13, C.FEATURES.index("i_category")] = rng.choice([-1, 4, 7, 40], len(Z[::13]))
    # Values on, just below and just above each threshold of the model.
    for f, cuts in r.splits_.cuts.items():
        picks = rng.choice(cuts, 200)
        for rows, delta in ((slice(0, 200), 0), (slice(200, 400), -1), (slice(400, 600), 1)):
            v = picks if delta == 0 else np.nextafter(picks, np.float32(delta * np.inf))
            Z[rows, f] = v
    Z = np.concatenate([Z, np.round(X[:2000], 1)])  # coarse values: many rows per cell
    _check_cells_predict_exactly(r.booster_, np.ascontiguousarray(Z, dtype=np.float32))


def test_predict_by_cells_honours_zero_as_missing(problem):
    import lightgbm as lgb

    X, y, g = problem
    X = X.copy()
    X[::3, 2] = 0.0
    X[::5, 4] = 1e-36
    params = {"objective": "lambdarank", "verbose": -1, "num_leaves": 7, "zero_as_missing": True,
              "min_data_in_leaf": 5, "deterministic": True, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X, label=y, group=g, feature_name=list(C.FEATURES),
                                            categorical_feature=list(C.CATEGORICAL_FEATURES)), num_boost_round=20)
    Z = np.concatenate([X, np.round(X, 1), -X[:500]]).astype(np.float32)
    _check_cells_predict_exactly(booster, Z)
