"""Recommender configuration: action weights, time decay, candidate sizes, ranker and serving parameters.

The values live in ``DATA_DIR/recommender.yaml`` (or ``settings.recommender_config_file``); this module only
checks them. A missing or unknown key, or a value of the wrong type, is a :class:`ConfigFileError` naming the key,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data.errors import ConfigFileError
from data.eventlog import ACTIONS

# section -> key -> expected type (dict values are free-form parameter maps checked by their consumer)
_SPEC: dict[str, dict[str, type | tuple[type, ...]]] = {
    "interactions": {
        "action_weights": dict,
        "half_life_days": (int, float),
        "history_days": int,
        "positive_actions": list,
    },
    "model": {"name": str, "params": dict},
    "candidates": {
        "implicit": int,
        "tags": int,
        "renewals": int,
        "neighbours": int,
        "neighbours_per_item": int,
        "recent_items": int,
        "recent_days": int,
        "popular_per_group": int,
        "popular_days": int,
        "renewal_grace_days": int,
    },
    "ranker": {
        "label_window_days": int,
        "max_training_subjects": int,
        "validation_fraction": (int, float),
        "params": dict,
    },
    "serving": {"pin_renewals_within_days": int, "chunk_subjects": int, "popular_list_size": int},
}


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
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" line {line + 1}" if line is not None else ""
        raise ConfigFileError(f"{path}{where}: not valid YAML") from None
    return from_dict(raw, source=str(path))


def from_dict(raw: Any, source: str = "<dict>") -> RecommenderConfig:
    if not isinstance(raw, dict):
        raise ConfigFileError(f"{source}: expected a mapping of sections {sorted(_SPEC)}")
    for section in raw:
        if section not in _SPEC:
            raise ConfigFileError(f"{source}: unknown section {section!r} (known: {', '.join(_SPEC)})")
    for section, keys in _SPEC.items():
        values = raw.get(section)
        if not isinstance(values, dict):
            raise ConfigFileError(f"{source}: section {section!r} is missing or not a mapping")
        for key in values:
            if key not in keys:
                raise ConfigFileError(f"{source}: unknown key {section}.{key} (known: {', '.join(keys)})")
        for key, typ in keys.items():
            if key not in values:
                raise ConfigFileError(f"{source}: missing key {section}.{key}")
            value = values[key]
            if isinstance(value, bool) or not isinstance(value, typ):
                raise ConfigFileError(f"{source}: {section}.{key} = {value!r} has the wrong type")
            if isinstance(value, (int, float)) and value < 0:
                raise ConfigFileError(f"{source}: {section}.{key} = {value!r} must not be negative")
    weights = raw["interactions"]["action_weights"]
    for action, w in weights.items():
        if action not in ACTIONS:
            raise ConfigFileError(f"{source}: interactions.action_weights names unknown action {action!r}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ConfigFileError(f"{source}: interactions.action_weights.{action} = {w!r} must be a number >= 0")
    for action in raw["interactions"]["positive_actions"]:
        if action not in ACTIONS:
            raise ConfigFileError(f"{source}: interactions.positive_actions names unknown action {action!r}")
    if raw["interactions"]["half_life_days"] <= 0:
        raise ConfigFileError(f"{source}: interactions.half_life_days must be > 0")
    if not 0 < raw["ranker"]["validation_fraction"] < 1:
        raise ConfigFileError(f"{source}: ranker.validation_fraction must be between 0 and 1")
    if raw["serving"]["chunk_subjects"] <= 0 or raw["ranker"]["label_window_days"] <= 0:
        raise ConfigFileError(f"{source}: serving.chunk_subjects and ranker.label_window_days must be > 0")
    return RecommenderConfig(raw=copy.deepcopy(raw), source=source)
