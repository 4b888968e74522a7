"""The learned occupation tagger: LightGBM over behaviour and attributes, with calibrated probabilities.

Trained each batch on the persons whose occupation the registry holds, it predicts the rest. LightGBM's
multiclass scores are over-confident, so a single temperature is fitted on held-out labelled rows (minimising
log-loss). The registry never says "no occupation", so a second, positive-unlabelled model estimates whether
a person has one at all (:meth:`OccupationClassifier.fit_presence`). The confidence on a tag is
P(has an occupation) x P(this occupation | has one); below ``settings.occupation_min_confidence`` no tag is
emitted. :class:`OccupationTagger` wraps the classifier in the learned-tagger contract (:mod:`taggers.base`).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date
from pathlib import Path

# LightGBM's OpenMP threads spin while they wait for work; on a busy machine (the batch shares its cores) that
# spinning cost ten times the CPU of the prediction itself. Passive waiting must be chosen before the OpenMP
# runtime loads, i.e. before lightgbm is imported; an operator's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightgbm as lgb  # noqa: E402
import numpy as np
import polars as pl
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from data.errors import ContractError, NotFound, StateError
from data.estimator import ParamsMixin
from data.settings import Settings
from taggers.base import LearnedTagger, register_tagger
from taggers.rules import Aggregate

OCCUPATIONS = (
    "student",
    "teacher",
    "security_guard",
    "medical_worker",
    "driver",
    "it_professional",
    "self_employed",
    "office_worker",
)
# Licences that speak to an occupation; the model learns how much each one says.
OCCUPATION_LICENCES = (
    "teacher_qualification",
    "security_guard_certificate",
    "physician_licence",
    "nurse_licence",
    "ride_hailing_driver_permit",
    "road_transport_qualification",
    "driving_licence",
    "foreigner_work_permit",
)
MODEL_NAME = "occupation_lgbm"


def occupation_event_aggregates() -> list[Aggregate]:
    """Event counts on items the catalogue links to each occupation, over the whole log (a job outlasts any
    window), computed in the taggers' events pass."""
    return [
        Aggregate(f"occ.{o}", "events", {"occupation": [f"occupation.{o}"], "within_days": None}, latest=False)
        for o in OCCUPATIONS
    ]


def feature_exprs() -> list[pl.Expr]:
    """Model features over the tagging frame (profile columns plus the ``occ.*`` event aggregates)."""
    return [
        pl.col("age").cast(pl.Float32).alias("f_age"),
        (pl.col("gender") == "M").cast(pl.Float32).alias("f_male"),
        pl.col("local_hukou").cast(pl.Float32).alias("f_local"),
        pl.col("n_licenses").cast(pl.Float32).alias("f_n_licenses"),
        pl.col("is_legal_rep").cast(pl.Float32).alias("f_legal_rep"),
        pl.col("views_180d").cast(pl.Float32).alias("f_views_180d"),
        pl.col("applies_180d").cast(pl.Float32).alias("f_applies_180d"),
        pl.col("n_children").cast(pl.Float32).alias("f_n_children"),
        *[pl.col("license_types").list.contains(t).cast(pl.Float32).alias(f"f_lic_{t}") for t in OCCUPATION_LICENCES],
        *[pl.col(f"occ.{o}.count").fill_null(0).cast(pl.Float32).alias(f"f_occ_{o}") for o in OCCUPATIONS],
    ]


FEATURES = [e.meta.output_name() for e in feature_exprs()]


class OccupationClassifier(ParamsMixin):
    """Multiclass LightGBM with temperature calibration (scikit-learn estimator conventions)."""

    def __init__(
        self,
        # A few strong trees: prediction over every unlabelled person costs per tree and per class, and on the
        # 1M-person city learning rate 0.3 (12-16 trees after early stopping) scored the same macro-F1 as 0.1
        # (64 trees): 0.954 against 0.955, for a third of the tagging CPU.
        n_estimators: int = 40,
        learning_rate: float = 0.3,
        num_leaves: int = 15,
        min_child_samples: int = 20,
        presence_n_estimators: int = 60,
        presence_num_leaves: int = 7,
        presence_min_child_samples: int = 200,
        calibration_fraction: float = 0.2,
        early_stopping_rounds: int = 10,
        max_train_rows: int = 40_000,
        n_jobs: int = 2,
        random_state: int = 0,
    ):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.presence_n_estimators = presence_n_estimators
        self.presence_num_leaves = presence_num_leaves
        self.presence_min_child_samples = presence_min_child_samples
        self.calibration_fraction = calibration_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.max_train_rows = max_train_rows
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> "OccupationClassifier":
        """``y`` holds class labels (strings); rows beyond ``max_train_rows`` are sampled away for speed."""
        rng = np.random.default_rng(self.random_state)
        y = np.asarray(y)
        if len(y) > self.max_train_rows:
            keep = rng.choice(len(y), self.max_train_rows, replace=False)
            X, y = X[keep], y[keep]
        self.classes_ = np.array(sorted(set(y.tolist())))
        yi = np.searchsorted(self.classes_, y)
        order = rng.permutation(len(yi))
        n_cal = int(len(yi) * self.calibration_fraction)
        cal, train = order[:n_cal], order[n_cal:]
        params = {
            "objective": "multiclass",
            "num_class": len(self.classes_),
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "num_threads": self.n_jobs,
            "seed": self.random_state,
            "deterministic": True,
            "verbosity": -1,
        }
        data = lgb.Dataset(X[train], label=yi[train], free_raw_data=True)
        callbacks, valid = [], []
        if n_cal >= 50:
            # Stop when held-out log-loss stops improving: fewer trees, and prediction over a million people
            # costs per tree.
            valid = [lgb.Dataset(X[cal], label=yi[cal], reference=data)]
            callbacks = [lgb.early_stopping(self.early_stopping_rounds, verbose=False)]
        self.booster_ = lgb.train(params, data, num_boost_round=self.n_estimators, valid_sets=valid, callbacks=callbacks)
        self.n_trees_ = int(self.booster_.best_iteration or self.n_estimators)
        self.temperature_ = 1.0
        if n_cal >= 50:
            raw = self.booster_.predict(X[cal], raw_score=True)
            target = yi[cal]

            def nll(t: float) -> float:
                return -log_softmax(raw / t, axis=1)[np.arange(len(target)), target].mean()

            self.temperature_ = float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)
        self.n_train_ = int(len(train))
        self.n_calibration_ = int(n_cal)
        return self

    def fit_presence(self, X_labelled: np.ndarray, y_labelled: np.ndarray, X_unlabelled: np.ndarray) -> "OccupationClassifier":
        """Learn P(has an occupation | x) from labelled vs unlabelled persons (Elkan & Noto, 2008).

        The registry records occupations for a share ``c`` of the people who have one, and never records
        "none"; a classifier g(x) = P(labelled | x) then gives P(has occupation | x) = g(x) / c, with ``c``
        estimated as the mean of g over held-out labelled rows. The registry knows some occupations more
        often than others (teachers, medical workers), so ``c`` is estimated per occupation and mixed by the
        occupation probabilities. Without this, children under school age, retirees and the unemployed would
        all be handed an occupation.
        """
        rng = np.random.default_rng(self.random_state + 1)
        half = self.max_train_rows // 2

        def sample(X):
            return X[rng.choice(len(X), half, replace=False)] if len(X) > half else X

        y_labelled = np.asarray(y_labelled)
        pick = rng.choice(len(X_labelled), half, replace=False) if len(X_labelled) > half else np.arange(len(X_labelled))
        Xl, yl, Xu = X_labelled[pick], y_labelled[pick], sample(X_unlabelled)
        # The labelled/unlabelled mix of the sample differs from the population's; weights restore it.
        wl, wu = len(X_labelled) / len(Xl), len(X_unlabelled) / max(len(Xu), 1)
        order = rng.permutation(len(Xl))
        n_hold = max(int(len(Xl) * self.calibration_fraction), 1)
        hold, hold_y, keep = Xl[order[:n_hold]], yl[order[:n_hold]], Xl[order[n_hold:]]
        X = np.vstack([keep, Xu])
        s = np.concatenate([np.ones(len(keep)), np.zeros(len(Xu))])
        w = np.concatenate([np.full(len(keep), wl), np.full(len(Xu), wu)])
        # Labelling is random within an occupation, so the ideal g is flat across a class: a small, heavily
        # regularised model keeps its noise (and so the spread of g / c) down.
        params = {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.presence_num_leaves,
            "min_data_in_leaf": self.presence_min_child_samples,
            "num_threads": self.n_jobs,
            "seed": self.random_state,
            "deterministic": True,
            "verbosity": -1,
        }
        self.presence_booster_ = lgb.train(params, lgb.Dataset(X, label=s, weight=w), num_boost_round=self.presence_n_estimators)
        g = self.presence_booster_.predict(hold, num_threads=self.n_jobs)
        pooled = float(np.clip(g.mean(), 1e-3, 1.0))
        self.label_frequency_ = np.array(
            [float(np.clip(g[hold_y == k].mean(), 1e-3, 1.0)) if (hold_y == k).sum() >= 20 else pooled for k in self.classes_]
        )
        return self

    def presence_proba(self, X: np.ndarray, proba: np.ndarray | None = None) -> np.ndarray:
        """P(the person has an occupation at all); 1 where no presence model was fitted.

        ``proba`` (from :meth:`predict_proba`) may be passed to save predicting twice.
        """
        if not hasattr(self, "presence_booster_") or len(X) == 0:
            return np.ones(len(X))
        if proba is None:
            proba = self.predict_proba(X)
        c = proba @ self.label_frequency_
        return np.clip(self.presence_booster_.predict(X, num_threads=self.n_jobs) / c, 0.0, 1.0)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """P(occupation k | x, has an occupation), temperature-calibrated; rows sum to 1."""
        if len(X) == 0:
            return np.zeros((0, len(self.classes_)))
        raw = self.booster_.predict(X, raw_score=True, num_threads=self.n_jobs)
        return softmax(raw / self.temperature_, axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def version(self, as_of: date) -> str:
        blob = json.dumps({"params": self.get_params(), "as_of": as_of.isoformat(), "n": self.n_train_}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def save(self, directory: Path, as_of: date, extra: dict | None = None) -> Path:
        """Write the fitted model into ``directory`` (``model.txt``, ``presence.txt``, ``meta.json``, the latter
        with ``extra`` keys added)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(out / "model.txt"))
        if hasattr(self, "presence_booster_"):
            self.presence_booster_.save_model(str(out / "presence.txt"))
        (out / "meta.json").write_text(
            json.dumps(
                {
                    "model": MODEL_NAME,
                    "as_of": as_of.isoformat(),
                    "params": self.get_params(),
                    "classes": self.classes_.tolist(),
                    "features": FEATURES,
                    "temperature": self.temperature_,
                    "label_frequency": getattr(self, "label_frequency_", np.array([])).tolist(),
                    "n_train": self.n_train_,
                    "n_calibration": self.n_calibration_,
                    **(extra or {}),
                },
                indent=2,
            )
        )
        return out

    @classmethod
    def load(cls, directory: Path) -> tuple["OccupationClassifier", dict]:
        """A model written by :meth:`save`, and its ``meta.json``."""
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.exists() or not (directory / "model.txt").exists():
            raise NotFound(f"{directory}: no saved occupation model here (expected meta.json and model.txt)")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ContractError(f"{meta_path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if meta.get("model") != MODEL_NAME or meta.get("features") != FEATURES:
            raise ContractError(f"{meta_path}: not an {MODEL_NAME} model over today's features; retrain with `yiwang tag`")
        model = cls(**meta["params"])
        model.booster_ = lgb.Booster(model_file=str(directory / "model.txt"))
        model.classes_ = np.array(meta["classes"])
        # save_model keeps the trees up to the best iteration only
        model.n_trees_ = model.booster_.num_trees() // len(model.classes_)
        model.temperature_ = float(meta["temperature"])
        model.n_train_ = int(meta["n_train"])
        model.n_calibration_ = int(meta["n_calibration"])
        if (directory / "presence.txt").exists():
            model.presence_booster_ = lgb.Booster(model_file=str(directory / "presence.txt"))
            model.label_frequency_ = np.array(meta["label_frequency"], dtype=np.float64)
        return model, meta


def _persons(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter(pl.col("subject_type") == "person").select("subject_id", "occupation", *feature_exprs())


@register_tagger
class OccupationTagger(LearnedTagger):
    """Occupation tags for persons the registry has no occupation for, from :class:`OccupationClassifier`.

    Its hyperparameters are the classifier's plus ``min_confidence`` (no tag below it); ``fit`` learns from the
    persons of the frame whose occupation the registry holds (and, for the presence model, from the others),
    ``predict`` tags the persons of the frame it does not know, at the ages the registry records occupations.
    """

    name = MODEL_NAME
    codes = tuple(f"occupation.{o}" for o in OCCUPATIONS)

    def __init__(
        self,
        min_confidence: float = 0.6,
        n_estimators: int = 40,
        learning_rate: float = 0.3,
        num_leaves: int = 15,
        min_child_samples: int = 20,
        presence_n_estimators: int = 60,
        presence_num_leaves: int = 7,
        presence_min_child_samples: int = 200,
        calibration_fraction: float = 0.2,
        early_stopping_rounds: int = 10,
        max_train_rows: int = 40_000,
        n_jobs: int = 2,
        random_state: int = 0,
    ):
        # The classifier's defaults, repeated because a constructor's signature is its list of hyperparameters;
        # tests/test_tagger_contract.py fails if the two drift apart.
        self.min_confidence = min_confidence
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.presence_n_estimators = presence_n_estimators
        self.presence_num_leaves = presence_num_leaves
        self.presence_min_child_samples = presence_min_child_samples
        self.calibration_fraction = calibration_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.max_train_rows = max_train_rows
        self.n_jobs = n_jobs
        self.random_state = random_state

    @classmethod
    def from_settings(cls, settings: Settings) -> "OccupationTagger":
        return cls(min_confidence=settings.occupation_min_confidence)

    def event_aggregates(self) -> list[Aggregate]:
        return occupation_event_aggregates()

    def classifier_params(self) -> dict:
        return {k: v for k, v in self.get_params().items() if k != "min_confidence"}

    def fit(self, frame: pl.DataFrame, as_of: date) -> "OccupationTagger":
        """Learn from the persons of ``frame``; too few labelled ones (or nobody to tag) leaves ``version_`` None."""
        # In subject order: the tagging frame comes out of parallel joins in no fixed order, and the training
        # sample is drawn by position, so without this the model (and its tags) would change from run to run.
        # (Prediction is per row, so predict needs no order.)
        persons = _persons(frame).sort("subject_id")
        labelled = persons.filter(pl.col("occupation").is_in(OCCUPATIONS))
        unlabelled = persons.filter(pl.col("occupation").is_null())
        self.classifier_, self.age_range_, self.as_of_, self.version_ = None, None, as_of, None
        if labelled.height < 50 or labelled["occupation"].n_unique() < 2 or unlabelled.height == 0:
            return self
        model = OccupationClassifier(**self.classifier_params())
        X_labelled = labelled.select(FEATURES).to_numpy()
        model.fit(X_labelled, labelled["occupation"].to_numpy())
        model.fit_presence(X_labelled, labelled["occupation"].to_numpy(), unlabelled.select(FEATURES).to_numpy())
        self.classifier_ = model
        # Outside the ages at which the registry records any occupation (toddlers, the very old) nobody is
        # tagged, and predicting there would only cost time.
        self.age_range_ = (float(labelled["f_age"].min()), float(labelled["f_age"].max()))
        self.version_ = model.version(as_of)
        return self

    def _predict(self, frame: pl.DataFrame, as_of: date) -> pl.DataFrame:
        model = self.classifier_
        lo, hi = self.age_range_
        unlabelled = _persons(frame.filter(pl.col("occupation").is_null())).filter(pl.col("f_age").is_between(lo, hi))
        # The features are small counts and flags, so many people share a feature vector: each distinct one is
        # predicted once (prediction costs per row and per tree) and its result handed to every person who has it.
        distinct = unlabelled.select(FEATURES).unique(maintain_order=True).with_row_index("_row")
        X_distinct = distinct.select(FEATURES).to_numpy()
        proba = model.predict_proba(X_distinct)
        best = proba.argmax(axis=1)
        # Confidence that this person has *this* occupation: has one at all, and it is this one.
        confidence = proba[np.arange(len(best)), best] * model.presence_proba(X_distinct, proba)
        keep = confidence >= self.min_confidence
        predicted = pl.DataFrame(
            {
                "_row": distinct["_row"].filter(pl.Series(keep)),
                "code": pl.Series([f"occupation.{c}" for c in model.classes_], dtype=pl.String).gather(best[keep]),
                "confidence": confidence[keep].astype(np.float64),
            }
        )
        pred = (
            unlabelled.select("subject_id", *FEATURES)
            .join(distinct, on=FEATURES, how="inner", nulls_equal=True, maintain_order="left")
            .join(predicted, on="_row", how="inner", maintain_order="left")
            .select("subject_id", "code", "confidence")
        )
        pct = (pl.col("confidence") * 100).round(0).cast(pl.Int64).cast(pl.String)
        return self.tag_rows(
            pred,
            as_of,
            pl.concat_str([pl.lit("由办事行为与证照推断（置信度 "), pct, pl.lit("%）")]),
            pl.concat_str([pl.lit("inferred from service use and licences (confidence "), pct, pl.lit("%)")]),
        )

    def save(self, directory: Path) -> Path:
        """The fitted model in ``directory`` (the batch uses ``models_dir/occupation_lgbm/<version_>``)."""
        self._check_fitted()
        if self.classifier_ is None:
            raise StateError(f"tagger {self.name!r} learned nothing (too few labelled persons): nothing to save")
        return self.classifier_.save(
            directory, self.as_of_, {"min_confidence": self.min_confidence, "age_range": list(self.age_range_)}
        )

    @classmethod
    def load(cls, directory: Path) -> "OccupationTagger":
        model, meta = OccupationClassifier.load(directory)
        if "age_range" not in meta or "min_confidence" not in meta:
            raise ContractError(f"{Path(directory) / 'meta.json'}: written before the tagger contract (no age_range); "
                                "retrain with `yiwang tag`")
        tagger = cls(min_confidence=meta["min_confidence"], **model.get_params())
        tagger.classifier_ = model
        tagger.age_range_ = tuple(float(a) for a in meta["age_range"])
        tagger.as_of_ = date.fromisoformat(meta["as_of"])
        tagger.version_ = model.version(tagger.as_of_)
        return tagger
