"""The harness's protocols: what history the test stage sees, how many fits a run costs, grid edges, temporal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from recommender.evaluation import DEFAULT_GRIDS, REC_SCHEMA, evaluate_models, run_eval_config
from recommender.models import EASE, Popularity
from recommender.splits import leave_last_out, random_split, temporal_split

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def frame(rows) -> pl.DataFrame:
    return pl.DataFrame([(u, i, T0 + timedelta(days=d)) for u, i, d in rows],
                        schema={"subject_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")},
                        orient="row")


def paired_sequences(n_users=60, n_pairs=10, seed=0) -> pl.DataFrame:
    """Each user: two noise items, then P_k (valid), then Q_k (test). Q_k follows only from P_k.

    "Teacher" users hold many pairs (P_k, Q_k) early in their history, so a model learns P_k -> Q_k; only a test
    stage that sees the valid item P_k can rank Q_k first.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        noise = rng.choice(40, 2, replace=False)
        k = u % n_pairs
        rows += [(f"u{u}", f"n{noise[0]}", 0), (f"u{u}", f"n{noise[1]}", 1), (f"u{u}", f"P{k}", 2),
                 (f"u{u}", f"Q{k}", 3)]
    for t in range(30):
        ks = rng.choice(n_pairs, 3, replace=False)
        seq = [x for k in ks for x in (f"P{k}", f"Q{k}")] + [f"n{rng.integers(40)}", f"n{40 + t}"]
        rows += [(f"t{t}", item, d) for d, item in enumerate(seq)]
    return frame(rows)


class RecordingSystem:
    """A ready-made system that remembers what it was fitted on and recommends its most popular items."""

    def __init__(self):
        self.fitted_on: list[pl.DataFrame] = []

    def fit(self, train):
        self.fitted_on.append(train)
        self.top = train.group_by("item_id").len().sort("len", "item_id", descending=[True, False])["item_id"]
        return self

    def recommend(self, subject_ids, k, exclude=None):
        rows = []
        for s in subject_ids:
            seen = set() if exclude is None else set(exclude.filter(pl.col("subject_id") == s)["item_id"])
            picks = [i for i in self.top if i not in seen][:k]
            rows += [(s, i, r + 1, float(k - r)) for r, i in enumerate(picks)]
        return pl.DataFrame(rows, schema=REC_SCHEMA, orient="row")


def test_leave_last_out_test_stage_sees_the_valid_item():
    split = leave_last_out(paired_sequences())
    rec = RecordingSystem()
    evaluate_models({}, split, k=5, systems={"rec": rec})
    seen = rec.fitted_on[-1]
    # the test stage's history holds every valid interaction (RecBole / S3Rec: everything before the test item)
    assert split.valid.join(seen, on=["subject_id", "item_id"], how="anti").height == 0
    rep = evaluate_models({"ease": {"l2": 1.0}}, split, k=5, metrics=["ndcg", "hit"])
    # Q_k follows from P_k only: with P_k in the history EASE ranks it first for nearly everyone
    pu = rep.results[0].per_user.filter(pl.col("subject_id").str.starts_with("u"))
    assert pu["hit"].mean() > 0.9, pu["hit"].mean()


def test_temporal_test_stage_fits_on_everything_before_the_test_window():
    rows = [(f"u{u}", f"i{(u + d) % 12}", d * 3 + u % 3) for u in range(30) for d in range(10)]
    split = temporal_split(frame(rows), test_days=6, valid_days=6)
    rec = RecordingSystem()
    evaluate_models({}, split, k=5, systems={"rec": rec})
    assert rec.fitted_on[-1].height == split.train.height + split.valid.height


class Counted:
    """Counts real fits of a model class (the model still fits for real)."""

    def __init__(self, monkeypatch, cls):
        self.n = 0
        original = cls.fit

        def fit(model, user_items):
            self.n += 1
            return original(model, user_items)

        monkeypatch.setattr(cls, "fit", fit)


def test_each_setting_is_fitted_once_when_test_trains_on_the_same_data(monkeypatch):
    df = paired_sequences()
    ease, pop = Counted(monkeypatch, EASE), Counted(monkeypatch, Popularity)
    split = random_split(df, seed=1)
    rep = evaluate_models({"ease": {"l2": [1.0, 10.0, 100.0]}, "pop": {}}, split, k=5)
    # recbole-random: test trains on train, as the valid stage did: the winner and the single setting are reused
    assert (ease.n, pop.n) == (3, 1)
    fresh = evaluate_models({"ease": {"l2": rep.results[0].params["l2"]}}, split, k=5)
    assert fresh.results[0].metrics == rep.results[0].metrics
    assert rep.results[0].fit_s > 0 and rep.results[1].fit_s > 0
    # leave-last-out: test trains on train + valid, so the winner is fitted once more on that
    ease.n = pop.n = 0
    evaluate_models({"ease": {"l2": [1.0, 10.0, 100.0]}, "pop": {}}, leave_last_out(df), k=5)
    assert (ease.n, pop.n) == (4, 2)


def test_a_winner_on_the_edge_of_its_grid_is_reported():
    split = random_split(paired_sequences(), seed=1)
    rep = evaluate_models({"ease": {"l2": [1e4, 1e5, 1e6]}}, split, k=5)
    r = rep.results[0]
    assert r.params["l2"] in (1e4, 1e6)
    assert any("edge" in w and "l2" in w for w in r.warnings), r.warnings
    assert any("edge" in n and "ease" in n for n in rep.notes), rep.notes


def test_default_ease_grid_reaches_both_sides_of_the_usual_winners():
    l2 = DEFAULT_GRIDS["ease"]["l2"]
    assert min(l2) <= 10 and max(l2) >= 5000 and len(l2) >= 5
    assert len(DEFAULT_GRIDS["itemknn"]["neighbours"]) >= 4


def test_temporal_config_without_windows_uses_fractions(tmp_path):
    rows = [(f"u{u}", f"i{(u * 7 + d) % 25}", u % 5 + 2 * d) for u in range(40) for d in range(12)]
    p = tmp_path / "inter.csv"
    frame(rows).with_columns(pl.col("ts").dt.epoch("s")).write_csv(p)
    cfg = {"data": {"interactions": str(p), "time_col": 2}, "protocol": "temporal",
           "models": {"ease": {"l2": [1.0, 100.0]}, "pop": {}}, "k": 5}
    run = run_eval_config(cfg, write=False)
    s = run.report.split_summary
    assert s["valid"] > 0 and s["test"] > 0


def test_store_events_test_stage_learns_from_the_valid_window(settings, db):
    from test_eval_interactions import _store_events

    _store_events(settings, db)
    weights = {"view": 1.0, "click": 2.0, "favorite": 4.0, "consult": 4.0, "apply": 8.0, "complete": 8.0,
               "teleport": 0.0}
    cfg = {"_source": "city.yaml", "data": {"source": "events", "action_weights": weights, "half_life_days": 60},
           "protocol": "temporal", "test_days": 45, "valid_days": 60, "k": 5, "metrics": ["ndcg", "hit"],
           "models": {"ease": {"l2": [1.0, 10.0, 100.0]}}}
    rec = RecordingSystem()
    run = run_eval_config(cfg, write=False, settings=settings, db=db, systems={"rec": rec})
    assert run.report.results[0].valid_metrics  # selected on the valid window
    # events between the valid cut and the test cut are in the test stage's weighted history
    from data.eventlog import scan_events

    ev = scan_events(settings.events_dir).collect()
    test_cut = ev["ts"].max() - timedelta(days=45)
    late = ev.filter(pl.col("ts") > ev["ts"].max() - timedelta(days=105), pl.col("ts") <= test_cut,
                     pl.col("action") != "teleport").select("subject_id", "item_id").unique()
    assert late.height > 0 and "w" in rec.fitted_on[-1].columns
    assert late.join(rec.fitted_on[-1], on=["subject_id", "item_id"], how="anti").height == 0
