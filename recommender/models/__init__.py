"""Implicit-feedback models behind one contract (see :mod:`recommender.models.base`).

``make_model(name, **params)`` builds one from configuration; an unknown name or parameter is a
:class:`data.errors.ConfigFileError` naming it. ``load_model(dir)`` restores a saved one.
"""

from __future__ import annotations

from recommender.models.base import ImplicitModel, as_user_items, batch_topk, load_model
from recommender.models.ease import EASE
from recommender.models.factors import ALS, BPR
from recommender.models.knn import ItemKNN, Popularity
from recommender.models.weights import Interactions, to_csr, weighted_interactions
from data.errors import ConfigFileError

MODELS: dict[str, type[ImplicitModel]] = {m.name: m for m in (EASE, ALS, BPR, ItemKNN, Popularity)}

#: the implicit model the product uses unless configured otherwise; chosen on ml-100k (see README)
DEFAULT_MODEL = "ease"


#: other spellings accepted in configuration
MODEL_ALIASES = {"popularity": "pop", "item_knn": "itemknn", "knn": "itemknn"}


def make_model(name: str, **params) -> ImplicitModel:
    """A model by registry name with the given hyperparameters."""
    name = MODEL_ALIASES.get(name, name)
    if name not in MODELS:
        raise ConfigFileError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[name]().set_params(**params)


__all__ = [
    "ALS", "BPR", "EASE", "ItemKNN", "Popularity", "ImplicitModel", "Interactions", "MODELS", "DEFAULT_MODEL",
    "make_model", "load_model", "batch_topk", "as_user_items", "to_csr", "weighted_interactions",
]
