"""Recommender configuration: action weights, time decay, candidate sizes, ranker and serving parameters.

The values live in ``DATA_DIR/recommender.yaml`` (or ``settings.recommender_config_file``); this module only
checks them, against the schema below. A missing or unknown key, or a value of the wrong type, is a
:class:`ConfigFileError` naming the file, the line and the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from data import yamlfile
from data.errors import ConfigFileError
from data.eventlog import ACTIONS

Count = Annotated[int, Field(ge=0)]
Days = Annotated[int, Field(ge=0)]
Weight = Annotated[float, Field(ge=0)]


class _Section(BaseModel):
    # strict: `true` is not a number and "30" is not a whole number
    model_config = ConfigDict(extra="forbid", strict=True)


def _known_actions(actions, what: str):
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise ValueError(f"{what} names unknown action {unknown[0]!r} (known: {', '.join(ACTIONS)})")
    return actions


class Interactions(_Section):
    action_weights: dict[str, Weight]
    half_life_days: float = Field(gt=0)  # time decay of an interaction's weight
    history_days: Days
    positive_actions: list[str]

    @field_validator("action_weights")
    @classmethod
    def _weights(cls, v):
        return _known_actions(v, "action_weights")

    @field_validator("positive_actions")
    @classmethod
    def _positives(cls, v):
        return _known_actions(v, "positive_actions")


class ModelSection(_Section):
    name: str
    params: dict[str, Any]  # checked by the model's constructor


class Candidates(_Section):
    implicit: Count
    tags: Count
    renewals: Count
    neighbours: Count
    neighbours_per_item: Count
    recent_items: Count
    recent_days: Days
    popular_per_group: Count
    popular_days: Days
    renewal_grace_days: Days


class Ranker(_Section):
    label_window_days: int = Field(gt=0)
    max_training_subjects: Count
    validation_fraction: float = Field(gt=0, lt=1)
    params: dict[str, Any]  # LightGBM's own parameters


class Serving(_Section):
    pin_renewals_within_days: Days
    chunk_subjects: int = Field(gt=0)
    popular_list_size: Count


class RecommenderFile(_Section):
    """The whole file: every section and every key is required."""

    interactions: Interactions
    model: ModelSection
    candidates: Candidates
    ranker: Ranker
    serving: Serving


@dataclass(frozen=True)
class RecommenderConfig:
    """The checked configuration; ``raw`` is the plain dict (stored with each trained model as config.json)."""

    raw: dict[str, Any]
    source: str = "<dict>"

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.raw[section]

    @property
    def action_weights(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.raw["interactions"]["action_weights"].items()}

    def with_overrides(self, overrides: dict[str, dict[str, Any]]) -> "RecommenderConfig":
        """A copy with some keys replaced (experiments use this); the result is checked like a file."""
        raw = copy.deepcopy(self.raw)
        for section, values in (overrides or {}).items():
            if section not in raw or not isinstance(values, dict):
                raise ConfigFileError(f"{self.source}: override names unknown section {section!r}")
            raw[section].update(values)
        return from_dict(raw, source=f"{self.source} (with overrides)")


def config_path(settings) -> Path:
    return Path(settings.recommender_config_file or Path(settings.data_dir) / "recommender.yaml")


def load_config(settings=None, path: Path | None = None) -> RecommenderConfig:
    """Read and check the recommender configuration file."""
    if path is None:
        if settings is None:
            raise ConfigFileError("load_config needs settings or a path")
        path = config_path(settings)
    path = Path(path)
    if not path.exists():
        raise ConfigFileError(f"recommender config {path} does not exist")
    return _checked(yamlfile.read(path, error=ConfigFileError))


def from_dict(raw: Any, source: str = "<dict>") -> RecommenderConfig:
    """Check a configuration that is already data (a trained model's config.json, overrides)."""
    return _checked(yamlfile.Document.from_data(raw, source))


def _checked(doc: yamlfile.Document) -> RecommenderConfig:
    yamlfile.validate(RecommenderFile, doc, error=ConfigFileError, style=yamlfile.key_style)
    return RecommenderConfig(raw=copy.deepcopy(doc.data), source=doc.source)
