"""The one contract every implicit-feedback model honours, plus persistence and the batch top-K scorer.

Models work on integer indices: rows of a users x items CSR matrix of confidences (float32). Id mapping
(subject_id / item_id strings to rows / columns) lives with the caller (see :mod:`recommender.models.weights`
and :class:`recommender.evaluation.ModelSystem`), so the same fitted model serves any id scheme.

Contract (checked for every model by ``tests/test_models_contract.py``):

- ``__init__`` stores hyperparameters untouched; ``get_params()`` returns them (:class:`data.estimator.ParamsMixin`).
- ``fit(user_items) -> self``; learned attributes end in ``_``; ``random_state`` makes fits repeatable.
- ``score(user_ids, user_items) -> ndarray (len(user_ids), n_items_) float32``: ``user_items`` holds one row
  per requested user (that user's history, same convention as ``implicit``'s ``recommend``). Item-based models
  score from those rows, so they also serve users unseen at fit time; factor models use ``user_ids``.
- ``recommend(user_ids, user_items, k, exclude=None) -> (items, scores)``: top-k per user with the user's
  own items (and ``exclude``) removed; ``-1`` pads rows with fewer than k rankable items.
- ``save(directory)`` / :func:`load_model` round-trip a fitted model (``params.json`` + ``arrays.npz``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from data.errors import ContractError, NotFound, StateError
from data.estimator import ParamsMixin

FORMAT_VERSION = 1


def as_user_items(user_items, *, name: str = "user_items") -> sp.csr_matrix:
    """A float32 CSR matrix with sorted indices, or a ContractError saying what was passed instead."""
    if not sp.issparse(user_items):
        raise ContractError(f"{name}: expected a scipy sparse users x items matrix, got {type(user_items).__name__}")
    m = sp.csr_matrix(user_items, dtype=np.float32)
    if m.nnz and not np.isfinite(m.data).all():
        raise ContractError(f"{name}: contains NaN or infinite confidences")
    m.sort_indices()
    return m


class ImplicitModel(ParamsMixin):
    """Base class: parameter handling, the top-K path and persistence shared by every model."""

    #: registry key, e.g. "ease"
    name: ClassVar[str] = ""
    #: learned array attributes written by save() and restored by load_model()
    learned: ClassVar[tuple[str, ...]] = ()

    def _params_owner(self) -> str:
        return f"model {self.name!r}"

    # -- fitted state ------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "n_items_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise StateError(f"model {self.name!r} is not fitted: call fit(user_items) first")

    def _check_rows(self, user_ids, user_items) -> tuple[np.ndarray, sp.csr_matrix]:
        self._check_fitted()
        user_ids = np.asarray(user_ids, dtype=np.int64).reshape(-1)
        user_items = as_user_items(user_items)
        if user_items.shape[0] != len(user_ids):
            raise ContractError(
                f"user_items has {user_items.shape[0]} rows but {len(user_ids)} user ids were given (one row per user)"
            )
        if user_items.shape[1] != self.n_items_:
            raise ContractError(f"user_items has {user_items.shape[1]} item columns, the model knows {self.n_items_}")
        return user_ids, user_items

    # -- to implement ------------------------------------------------------------------------------
    def fit(self, user_items) -> "ImplicitModel":  # pragma: no cover - abstract
        raise NotImplementedError

    def _score(self, user_ids: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _after_load(self) -> None:
        """Rebuild caches derived from the learned arrays (nothing by default)."""

    # -- shared behaviour --------------------------------------------------------------------------
    def score(self, user_ids, user_items) -> np.ndarray:
        """Dense scores (len(user_ids), n_items_) float32; higher is better."""
        user_ids, user_items = self._check_rows(user_ids, user_items)
        return np.asarray(self._score(user_ids, user_items), dtype=np.float32)

    def recommend(self, user_ids, user_items, k: int = 10, exclude=None, *, filter_seen: bool = True,
                  chunk_size: int = 2048, n_threads: int = 1):
        """Top-k item indices and scores per user, best first (see :func:`batch_topk`)."""
        return batch_topk(self, user_ids, user_items, k, exclude=exclude, filter_seen=filter_seen,
                          chunk_size=chunk_size, n_threads=n_threads)

    def save(self, directory) -> Path:
        """Write ``params.json`` (model name, hyperparameters, shapes) and ``arrays.npz`` (learned arrays)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        params = {k: _jsonable(v) for k, v in self.get_params().items()}
        meta = {
            "format_version": FORMAT_VERSION,
            "model": self.name,
            "params": params,
            "n_users": int(self.n_users_),
            "n_items": int(self.n_items_),
        }
        np.savez(directory / "arrays.npz", **{a: getattr(self, a) for a in self.learned})
        (directory / "params.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return directory


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, type) or isinstance(v, np.dtype):
        return str(np.dtype(v))
    return v


def load_model(directory) -> ImplicitModel:
    """Rebuild a model written by :meth:`ImplicitModel.save`; errors name the file at fault."""
    from recommender.models import MODELS

    directory = Path(directory)
    meta_path, arrays_path = directory / "params.json", directory / "arrays.npz"
    if not meta_path.exists() or not arrays_path.exists():
        raise NotFound(f"{directory}: no saved model here (expected params.json and arrays.npz)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ContractError(f"{meta_path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ContractError(f"{meta_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    name = meta.get("model")
    if name not in MODELS:
        raise ContractError(f"{meta_path}: unknown model {name!r}; known: {', '.join(sorted(MODELS))}")
    model = MODELS[name](**meta["params"])
    with np.load(arrays_path, allow_pickle=False) as arrays:
        missing = [a for a in model.learned if a not in arrays.files]
        if missing:
            raise ContractError(f"{arrays_path}: missing array(s) {', '.join(missing)} for model {name!r}")
        for a in model.learned:
            setattr(model, a, arrays[a])
    model.n_users_ = int(meta["n_users"])
    model.n_items_ = int(meta["n_items"])
    model._after_load()
    return model


def batch_topk(model: ImplicitModel, user_ids, user_items, k: int, *, exclude=None, filter_seen: bool = True,
               chunk_size: int = 2048, n_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Top-k for many users at once: score a chunk of users with one matrix product, mask, argpartition.

    ``exclude`` (optional CSR, one row per user) removes further items, e.g. the validation items when
    ranking for test. Masked and padded slots come back as item ``-1`` with score ``-inf``. Within the
    top k equal scores rank by item index (which of several tied items makes the cut at rank k is arbitrary). ``n_threads > 1`` scores chunks in parallel threads (the matrix products and the
    partition release the GIL). This is the path for all-user scoring: it beats ``implicit``'s own
    ``recommend`` (see :func:`recommender.models.factors.time_topk_vs_implicit`).
    """
    user_ids, user_items = model._check_rows(user_ids, user_items)
    if not isinstance(k, (int, np.integer)) or k <= 0:
        raise ContractError(f"k must be a positive integer, got {k!r}")
    if exclude is not None:
        exclude = as_user_items(exclude, name="exclude")
        if exclude.shape != user_items.shape:
            raise ContractError(f"exclude has shape {exclude.shape}, expected {user_items.shape}")
    n, n_items = len(user_ids), model.n_items_
    kk = min(int(k), n_items)
    out_items = np.full((n, k), -1, dtype=np.int64)
    out_scores = np.full((n, k), -np.inf, dtype=np.float32)

    def one_chunk(start: int) -> None:
        stop = min(start + chunk_size, n)
        scores = model.score(user_ids[start:stop], user_items[start:stop])
        masks = []
        if filter_seen:
            masks.append(user_items[start:stop])
        if exclude is not None:
            masks.append(exclude[start:stop])
        for m in masks:
            rows = np.repeat(np.arange(stop - start), np.diff(m.indptr))
            scores[rows, m.indices] = -np.inf
        if kk < n_items:
            part = np.argpartition(scores, n_items - kk, axis=1)[:, n_items - kk:]
        else:
            part = np.broadcast_to(np.arange(n_items), (stop - start, n_items))
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        top = np.take_along_axis(part, order, axis=1)
        top_scores = np.take_along_axis(part_scores, order, axis=1)
        top = np.where(np.isfinite(top_scores), top, -1)
        out_items[start:stop, :kk] = top
        out_scores[start:stop, :kk] = top_scores

    starts = range(0, n, chunk_size)
    if n_threads > 1 and n > chunk_size:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=int(n_threads)) as pool:
            list(pool.map(one_chunk, starts))
    else:
        for start in starts:
            one_chunk(start)
    return out_items, out_scores
