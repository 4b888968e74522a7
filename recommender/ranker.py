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
from data.errors import NotFound, StateError
from data.estimator import ParamsMixin


class LambdaRanker(ParamsMixin):
    """LightGBM LambdaRank with scikit-learn conventions: ``fit(X, y, group) -> self``, ``predict(X)``, learned
    attributes ending in ``_``, hyperparameters from :class:`data.estimator.ParamsMixin`."""

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

    def _params_owner(self) -> str:
        return "ranker"

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
        self.splits_ = SplitCells.of(self.booster_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores of the rows of ``X``, bit for bit those of ``booster_.predict``.

        Rows that fall in the same cell of every split of every tree (:class:`SplitCells`) take the same path
        through every tree and so get the same score: LightGBM scores one row of each distinct cell. On serving
        candidates that is under half of the rows (most features have few splits, many candidates share
        them), and prediction was a third of the scoring time.
        """
        if not hasattr(self, "booster_"):
            raise StateError("ranker is not fitted")
        # The cut points are float32 (what feature_matrix gives); other input goes to LightGBM as it is.
        keys = self.splits_.keys(np.ascontiguousarray(X)) if X.dtype == np.float32 and len(X) > 1 else None
        if keys is None:
            return self.booster_.predict(X, num_threads=self.n_jobs).astype(np.float32)
        members = pl.DataFrame(keys).with_row_index("row").group_by(list(keys)).agg("row")["row"]
        score = self.booster_.predict(X[members.list.first().to_numpy()], num_threads=self.n_jobs)
        out = np.empty(len(X), dtype=np.float32)
        out[members.explode().to_numpy()] = np.repeat(score.astype(np.float32), members.list.len().to_numpy())
        return out

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
        r.splits_ = SplitCells.of(r.booster_)
        return r


# LightGBM sends a value to the default side of a split whose missing type is "zero" when |value| <= this (its
# kZeroThreshold, a float literal).
_ZERO = np.float32(1e-35)


def _f32_floor(t: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 ``t``: for a float32 value v, ``v <= t`` iff ``v <= _f32_floor(t)``."""
    f = t.astype(np.float32)
    return np.where(f.astype(np.float64) > t, np.nextafter(f, np.float32(-np.inf)), f)


@dataclass
class SplitCells:
    """Where each feature is cut by the splits of a LightGBM model, to tell which rows the model cannot tell apart.

    Per numeric feature, the sorted float32 cut points (every threshold, and the band LightGBM treats as zero
    where a split says so); per categorical feature, how many categories the splits' bitsets cover. A row's cell
    is, per feature, the interval between cut points (or the category) its value falls in; rows in the same cell
    go the same way at every split. Cells are packed into 64-bit words, a few features per word.
    """

    cuts: dict[int, np.ndarray]       # numeric feature -> sorted float32 cut points
    categories: dict[int, int]        # categorical feature -> one past the largest category a split can name
    words: list[list[tuple[int, int]]]  # per key word: (feature, bit offset)

    @classmethod
    def of(cls, booster) -> "SplitCells":
        thresholds: dict[int, list[float]] = {}
        categories: dict[int, int] = {}
        zero_missing: set[int] = set()
        for tree in booster.model_to_string().split("\nTree=")[1:]:
            kv = dict(line.split("=", 1) for line in tree.splitlines() if "=" in line)
            if "split_feature" not in kv:
                continue  # a single leaf
            bounds = [int(x) for x in kv.get("cat_boundaries", "").split()]
            for f, t, d in zip(map(int, kv["split_feature"].split()), kv["threshold"].split(),
                               map(int, kv["decision_type"].split())):
                if d & 1:  # categorical: the threshold indexes the split's bitset of categories
                    i = int(float(t))
                    categories[f] = max(categories.get(f, 0), 32 * (bounds[i + 1] - bounds[i]))
                else:
                    thresholds.setdefault(f, []).append(float(t))
                    if (d >> 2) & 3 == 1:  # missing type "zero": values near zero take the default side
                        zero_missing.add(f)
        zero = np.array([np.nextafter(-_ZERO, np.float32(-np.inf)), _ZERO], dtype=np.float32)
        cuts = {f: np.unique(np.concatenate([_f32_floor(np.array(t)), zero if f in zero_missing else zero[:0]]))
                for f, t in thresholds.items()}
        widths = {f: int(len(c)).bit_length() for f, c in cuts.items()}
        widths.update({f: int(n + 1).bit_length() for f, n in categories.items()})  # cells 0 .. n + 1
        words: list[list[tuple[int, int]]] = [[]]
        used = 0
        for f in sorted(widths):
            if used + widths[f] > 64:
                words.append([])
                used = 0
            words[-1].append((f, used))
            used += widths[f]
        return cls(cuts, categories, words)

    def keys(self, X: np.ndarray) -> dict[str, np.ndarray] | None:
        """The packed cell of every row of float32 ``X`` (name -> uint64 word), or None if X has a NaN (LightGBM
        gives NaN its own paths, not worth modelling here)."""
        if np.isnan(X).any():
            return None
        out = {}
        for w, members in enumerate(self.words):
            key = np.zeros(len(X), dtype=np.uint64)
            for f, offset in members:
                col = X[:, f]
                if f in self.cuts:
                    cell = np.searchsorted(self.cuts[f], col, side="left")
                else:
                    # LightGBM truncates to int; a negative category never matches, neither does one past the bitsets.
                    cell = np.clip(np.trunc(col), -1, self.categories[f]).astype(np.int64) + 1
                key |= cell.astype(np.uint64) << np.uint64(offset)
            out[f"k{w}"] = key
        return out


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
