"""ALS and BPR from ``implicit`` (CPU), wrapped in the model contract.

``implicit`` models are configured and fitted here but only their factor arrays are kept, so a fitted model
saves as plain .npy arrays and scores with our own batch top-K (see :func:`recommender.models.base.batch_topk`).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from recommender.models.base import ImplicitModel, as_user_items
from data.errors import ConfigFileError, ContractError


class _FactorModel(ImplicitModel):
    learned = ("user_factors_", "item_factors_")

    def _score(self, user_ids, user_items):
        known = (user_ids >= 0) & (user_ids < self.n_users_)
        U = np.empty((len(user_ids), self.item_factors_.shape[1]), dtype=np.float32)
        U[known] = self.user_factors_[user_ids[known]]
        if not known.all():
            U[~known] = self._fold_in(user_items[np.flatnonzero(~known)])
        return U @ self.item_factors_.T

    def _fold_in(self, rows) -> np.ndarray:
        """Factors for users unseen at fit (user id -1): a ridge projection of their rows onto the item factors.

        An approximation of the exact per-user ALS solve that stays one matrix product for any number of users.
        """
        V = self.item_factors_
        reg = float(getattr(self, "regularization", 0.01)) or 0.01
        A = V.T @ V + reg * np.eye(V.shape[1], dtype=np.float32)
        return np.linalg.solve(A, (rows @ V).T).T.astype(np.float32)

    def _check_dims(self, X) -> None:
        if X.shape[0] == 0 or X.shape[1] == 0 or X.nnz == 0:
            raise ContractError(f"model {self.name!r}: cannot fit on an empty interaction matrix {X.shape}")


class ALS(_FactorModel):
    """Implicit ALS (Hu, Koren, Volinsky 2008): confidence c_ui = 1 + alpha * r_ui."""

    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 1.0, iterations: int = 15,
                 num_threads: int = 0, random_state: int | None = 42):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.num_threads = num_threads
        self.random_state = random_state

    def fit(self, user_items) -> "ALS":
        from implicit.cpu.als import AlternatingLeastSquares

        if int(self.factors) < 1 or int(self.iterations) < 1:
            raise ConfigFileError(f"model 'als': factors and iterations must be >= 1 (got {self.factors}, {self.iterations})")
        X = as_user_items(user_items)
        self._check_dims(X)
        # implicit runs its own threads; a threaded BLAS inside them oversubscribes the cores (implicit checks and
        # warns when it builds the model, and the fit slows several-fold), so BLAS is held to one thread meanwhile
        with threadpool_limits(limits=1, user_api="blas"):
            m = AlternatingLeastSquares(
                factors=int(self.factors), regularization=float(self.regularization), alpha=float(self.alpha),
                iterations=int(self.iterations), num_threads=int(self.num_threads), random_state=self.random_state,
                dtype=np.float32,
            )
            m.fit(X, show_progress=False)
        self.user_factors_ = np.ascontiguousarray(m.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(m.item_factors, dtype=np.float32)
        self.n_users_, self.n_items_ = X.shape
        return self


class BPR(_FactorModel):
    """Bayesian personalised ranking by SGD (implicit's CPU version; one factor column is the item bias)."""

    name = "bpr"

    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100, num_threads: int = 0, random_state: int | None = 42):
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.num_threads = num_threads
        self.random_state = random_state

    def fit(self, user_items) -> "BPR":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        if int(self.factors) < 1 or int(self.iterations) < 1:
            raise ConfigFileError(f"model 'bpr': factors and iterations must be >= 1 (got {self.factors}, {self.iterations})")
        X = as_user_items(user_items)
        self._check_dims(X)
        m = BayesianPersonalizedRanking(
            factors=int(self.factors), learning_rate=float(self.learning_rate),
            regularization=float(self.regularization), iterations=int(self.iterations),
            num_threads=int(self.num_threads), random_state=self.random_state, dtype=np.float32,
        )
        m.fit(X, show_progress=False)
        self.user_factors_ = np.ascontiguousarray(m.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(m.item_factors, dtype=np.float32)
        self.n_users_, self.n_items_ = X.shape
        return self


def implicit_twin(model: _FactorModel):
    """An ``implicit`` CPU model carrying our fitted factors, so its own ``recommend`` can be timed against ours."""
    from implicit.cpu.als import AlternatingLeastSquares

    model._check_fitted()
    with threadpool_limits(limits=1, user_api="blas"):  # implicit's threaded-BLAS check runs in __init__
        twin = AlternatingLeastSquares(factors=model.item_factors_.shape[1], num_threads=int(model.num_threads))
    twin.user_factors = model.user_factors_
    twin.item_factors = model.item_factors_
    return twin


def time_topk_vs_implicit(model: _FactorModel, user_items, k: int = 10, *, max_users: int | None = None) -> dict:
    """Wall time of top-k for all users three ways, and whether the lists agree.

    - ``ours``: :func:`batch_topk` (chunked products + argpartition, seen items masked);
    - ``implicit_per_user``: implicit's ``recommend(userid, row)`` called once per user (the naive serving loop);
    - ``implicit_batch``: implicit's ``recommend(array_of_userids, rows)`` in one call.
    ``max_users`` caps the per-user loop (its time is then scaled to all users and marked as such).
    """
    import time as _time

    from recommender.models.base import as_user_items, batch_topk

    X = as_user_items(user_items)
    n = X.shape[0]
    users = np.arange(n)
    twin = implicit_twin(model)
    t = _time.perf_counter()
    ours, _ = batch_topk(model, users, X, k)
    t_ours = _time.perf_counter() - t
    t = _time.perf_counter()
    theirs, _ = twin.recommend(users, X, N=k, filter_already_liked_items=True)
    t_batch = _time.perf_counter() - t
    m = n if max_users is None else min(n, max_users)
    t = _time.perf_counter()
    for u in range(m):
        twin.recommend(u, X[u], N=k, filter_already_liked_items=True)
    t_loop = (_time.perf_counter() - t) * (n / m)
    # compare as sets: equal scores may be ordered differently
    agree = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours, theirs)]))
    return {"users": n, "k": k, "ours_s": t_ours, "implicit_batch_s": t_batch, "implicit_per_user_s": t_loop,
            "per_user_scaled_from": m, "speedup_vs_per_user": t_loop / t_ours, "speedup_vs_batch": t_batch / t_ours,
            "topk_agreement": agree}
