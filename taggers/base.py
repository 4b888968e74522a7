"""The contract every learned tagger honours, and the registry the batch runs them from.

A learned tagger turns the tagging frame (published profiles plus the licence and event aggregates, see
:func:`taggers.tagging_frame`) into tag rows. Contract (checked for every registered tagger by
``tests/test_tagger_contract.py``):

- ``__init__`` takes keyword hyperparameters only and stores them untouched (``get_params`` / ``set_params`` come
  from :class:`data.estimator.ParamsMixin`); one of them is ``random_state``, and the same value gives the same tags.
- ``fit(frame, as_of) -> self``; everything learned is an attribute ending in ``_``, set only by ``fit`` or
  ``load``. ``version_`` names the fitted model in each tag's source (``model:<name>@<version_>``); it is None
  when the frame is too thin to learn from, and then ``predict`` gives no rows.
- ``predict(frame, as_of) -> pl.DataFrame`` with :data:`TAG_ROW_SCHEMA` (subject_id, code, confidence,
  source, evidence_zh, evidence_en, valid_from, valid_until); every code is one of the class's ``codes``.
  Before ``fit`` it raises :class:`data.errors.StateError`.
- ``save(directory)`` writes the fitted tagger so a tag's source can be traced; ``load(directory)`` gives a tagger
  whose ``predict`` is identical.
- ``event_aggregates()`` lists the event aggregates (:class:`taggers.rules.Aggregate`) it needs in the frame.

Register a class with :func:`register_tagger`; :func:`taggers.compute_tags` fits and runs every registered
tagger in each batch, and the contract test covers it once it has a ``TaggerContract`` subclass there.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import ClassVar, TypeVar

import polars as pl

from data.errors import ConfigFileError, StateError
from data.estimator import ParamsMixin
from data.settings import Settings

TAG_ROW_SCHEMA: dict[str, pl.DataType] = {
    "subject_id": pl.String(),
    "code": pl.String(),
    "confidence": pl.Float64(),
    "source": pl.String(),
    "evidence_zh": pl.String(),
    "evidence_en": pl.String(),
    "valid_from": pl.Date(),
    "valid_until": pl.Date(),
}


class LearnedTagger(ParamsMixin):
    """Base class: hyperparameters, the fitted check, the tag-row shape and the source string."""

    #: registry key; also the model's name in tag sources and its folder under ``models_dir``
    name: ClassVar[str] = ""
    #: every tag code the tagger can give (the batch keeps one tag per subject and code across rules and models)
    codes: ClassVar[tuple[str, ...]] = ()

    def _params_owner(self) -> str:
        return f"tagger {self.name!r}"

    @classmethod
    def from_settings(cls, settings: Settings) -> "LearnedTagger":
        """The tagger the nightly batch runs (settings may carry some of its hyperparameters)."""
        return cls()

    def event_aggregates(self) -> list:
        return []

    # -- to implement ------------------------------------------------------------------------------
    def fit(self, frame: pl.DataFrame, as_of: date) -> "LearnedTagger":  # pragma: no cover - abstract
        raise NotImplementedError

    def _predict(self, frame: pl.DataFrame, as_of: date) -> pl.DataFrame:  # pragma: no cover - abstract
        """Tag rows of a fitted tagger whose ``version_`` is set."""
        raise NotImplementedError

    def save(self, directory: Path) -> Path:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path) -> "LearnedTagger":  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared behaviour --------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "version_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise StateError(f"tagger {self.name!r} is not fitted: call fit(frame, as_of) first")

    def predict(self, frame: pl.DataFrame, as_of: date) -> pl.DataFrame:
        """Tag rows (:data:`TAG_ROW_SCHEMA`) for the subjects of ``frame`` at ``as_of``."""
        self._check_fitted()
        if self.version_ is None:
            return pl.DataFrame(schema=TAG_ROW_SCHEMA)
        return self._predict(frame, as_of)

    @property
    def source(self) -> str:
        self._check_fitted()
        return f"model:{self.name}@{self.version_}"

    def tag_rows(self, pred: pl.DataFrame, as_of: date, evidence_zh: pl.Expr, evidence_en: pl.Expr) -> pl.DataFrame:
        """Full tag rows from (subject_id, code, confidence) predictions: this model as source, valid from
        ``as_of`` with no end (a learned tag is re-derived each batch)."""
        return pred.select(
            "subject_id",
            "code",
            "confidence",
            pl.lit(self.source).alias("source"),
            evidence_zh.alias("evidence_zh"),
            evidence_en.alias("evidence_en"),
            pl.lit(as_of).alias("valid_from"),
            pl.lit(None, pl.Date).alias("valid_until"),
        )


LEARNED_TAGGERS: dict[str, type[LearnedTagger]] = {}

T = TypeVar("T", bound=type[LearnedTagger])


def register_tagger(cls: T) -> T:
    """Class decorator: the batch runs ``cls`` from now on (its ``name`` is the registry key)."""
    if not cls.name or cls.name in LEARNED_TAGGERS and LEARNED_TAGGERS[cls.name] is not cls:
        raise ConfigFileError(f"learned tagger {cls.__name__}: name {cls.name!r} is empty or already registered")
    LEARNED_TAGGERS[cls.name] = cls
    return cls


def make_tagger(name: str, **params) -> LearnedTagger:
    """A registered learned tagger by name, with the given hyperparameters."""
    if name not in LEARNED_TAGGERS:
        raise ConfigFileError(f"unknown learned tagger {name!r}; known: {', '.join(sorted(LEARNED_TAGGERS))}")
    return LEARNED_TAGGERS[name]().set_params(**params)
