"""The LightGBM LambdaRank ranker over candidates, and its time-ordered training set.

Training set: cut the history at ``T = as_of - label_window_days``. The world, the candidate sources and the
implicit model see only events before ``T``; the positives are the items each subject applied for or completed
in ``[T, as_of]``. Each subject with at least one positive is one query group (a group without a positive
teaches LambdaRank nothing); the label is 1 for candidates that became positives, 0 for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from recommender.candidates import (
    CATEGORICAL_FEATURES, FEATURES, World, cutoff, feature_matrix, heuristic_score,
)
from yiwang.errors import NotFound, StateError


class LambdaRanker:
    """LightGBM LambdaRank with scikit-learn conventions: ``fit(X, y, group) -> self``, ``predict(X)``."""

    def __init__(self, n_estimators: int = 150, learning_rate: float = 0.05, num_leaves: int = 31,
                 min_child_samples: int = 50, subsample: float = 0.8, subsample_freq: int = 1,
                 colsample_bytree: float = 0.9, n_jobs: int = 2, random_state: int | None = 42):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.subsample_freq = subsample_freq
        self.colsample_bytree = colsample_bytree
        self.n_jobs = n_jobs
        self.random_state = random_state

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in (
            "n_estimators", "learning_rate", "num_leaves", "min_child_samples", "subsample", "subsample_freq",
            "colsample_bytree", "n_jobs", "random_state")}

    def fit(self, X: np.ndarray, y: np.ndarray, group: np.ndarray) -> "LambdaRanker":
        import lightgbm as lgb

        if X.shape[0] == 0 or int(np.sum(y)) == 0:
            raise StateError("ranker: no training rows with a positive label (no applications in the label window?)")
        # The core API, not lightgbm.sklearn: that wrapper needs scikit-learn, which the project does not install.
        params = {
            "objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "verbose": -1,
            "learning_rate": self.learning_rate, "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples, "bagging_fraction": self.subsample,
            "bagging_freq": self.subsample_freq, "feature_fraction": self.colsample_bytree,
            "num_threads": self.n_jobs, "seed": self.random_state if self.random_state is not None else 0,
            "deterministic": True, "force_row_wise": True,
        }
        data = lgb.Dataset(
            X, label=y, group=group, feature_name=list(FEATURES), categorical_feature=list(CATEGORICAL_FEATURES),
            free_raw_data=True,
        )
        self.booster_ = lgb.train(params, data, num_boost_round=int(self.n_estimators))
        self.feature_names_ = list(FEATURES)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "booster_"):
            raise StateError("ranker is not fitted")
        return self.booster_.predict(X, num_threads=self.n_jobs).astype(np.float32)

    def feature_importance(self) -> dict[str, float]:
        gain = self.booster_.feature_importance(importance_type="gain")
        return {n: float(g) for n, g in zip(self.feature_names_, gain)}

    def save(self, path: Path) -> Path:
        Path(path).write_text(self.booster_.model_to_string())
        return Path(path)

    @classmethod
    def load(cls, path: Path, **params) -> "LambdaRanker":
        import lightgbm as lgb

        path = Path(path)
        if not path.exists():
            raise NotFound(f"{path}: no saved ranker here")
        r = cls(**params)
        r.booster_ = lgb.Booster(model_str=path.read_text())
        r.feature_names_ = r.booster_.feature_name()
        if r.feature_names_ != list(FEATURES):
            raise StateError(f"{path}: ranker was trained on other features; retrain with `yiwang train`")
        return r


def positives(events: pl.LazyFrame, world: World, start: date, end: date, actions: list[str]) -> pl.DataFrame:
    """(sidx, iidx) applied for / completed on days ``start``..``end`` (Shanghai dates), in ``world``'s indices."""
    return (
        events.filter((pl.col("ts") >= cutoff(start - timedelta(days=1))) & (pl.col("ts") < cutoff(end))
                      & pl.col("action").is_in(actions))
        .select("subject_id", "item_id").unique().collect()
        .join(world.subjects.select("subject_id", "sidx"), on="subject_id")
        .join(world.items.select("item_id", "iidx"), on="item_id")
        .select("sidx", "iidx")
    )


@dataclass
class TrainingSet:
    frame: pl.DataFrame          # candidate rows with FEATURES and label, sorted by sidx
    n_subjects: int
    n_positives: int             # positives of the sampled subjects
    n_positives_in_candidates: int

    @property
    def candidate_recall(self) -> float:
        return self.n_positives_in_candidates / self.n_positives if self.n_positives else 0.0


def label_candidates(cands: pl.DataFrame, pos: pl.DataFrame) -> pl.DataFrame:
    return cands.join(pos.with_columns(pl.lit(1, dtype=pl.Int8).alias("label")), on=["sidx", "iidx"], how="left") \
        .with_columns(pl.col("label").fill_null(0)).sort("sidx", "iidx")


def groups_of(frame: pl.DataFrame) -> np.ndarray:
    """Query-group sizes of a frame sorted by sidx."""
    return frame.group_by("sidx", maintain_order=True).len()["len"].to_numpy()


def ndcg_at_k(frame: pl.DataFrame, score: str, k: int = 10, n_relevant: pl.DataFrame | None = None) -> float:
    """Mean NDCG@k over the subjects of ``frame`` (label column); ideal DCG from ``n_relevant`` when given
    (positives outside the candidates count against the ranking), else from the labels in the frame."""
    ranked = frame.with_columns(pl.col(score).rank("ordinal", descending=True).over("sidx").alias("_r"))
    dcg = ranked.filter((pl.col("_r") <= k) & (pl.col("label") == 1)).group_by("sidx").agg(
        (1.0 / (pl.col("_r") + 1).cast(pl.Float64).log(2)).sum().alias("dcg"))
    rel = n_relevant if n_relevant is not None else frame.group_by("sidx").agg(pl.col("label").sum().alias("n"))
    disc = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
    j = rel.join(dcg, on="sidx", how="left").with_columns(pl.col("dcg").fill_null(0.0))
    j = j.filter(pl.col("n") > 0)
    if j.height == 0:
        return 0.0
    idcg = disc[np.minimum(j["n"].to_numpy(), k)]
    return float(np.mean(j["dcg"].to_numpy() / idcg))


def heuristic_column(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(heuristic_score(frame).fill_nan(0).fill_null(0).alias("heuristic"))


def X_of(frame: pl.DataFrame) -> np.ndarray:
    return feature_matrix(frame)
