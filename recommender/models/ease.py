"""EASE (Steck 2019): a closed-form item-item model, B = I - P diagMat(1/diag(P)) with P = (X'X + lambda I)^-1.

With a catalogue of a few thousand items the Gram matrix is small, so fitting is one float32 inversion.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from recommender.models.base import ImplicitModel, as_user_items
from data.errors import ConfigFileError


class EASE(ImplicitModel):
    """Embarrassingly shallow autoencoder; ``l2`` is the ridge regularisation lambda."""

    name = "ease"
    learned = ("B_",)

    def __init__(self, l2: float = 250.0, binary: bool = True, random_state: int | None = None):
        self.l2 = l2
        self.binary = binary
        # closed form: nothing random, kept so every model takes the same arguments
        self.random_state = random_state

    def fit(self, user_items) -> "EASE":
        if not float(self.l2) > 0:
            raise ConfigFileError(f"model 'ease': l2 must be > 0, got {self.l2!r}")
        X = as_user_items(user_items)
        if self.binary:
            X = X.copy()
            X.data[:] = 1.0
        G = (X.T @ X).toarray().astype(np.float32)
        G[np.diag_indices_from(G)] += np.float32(self.l2)
        # G is symmetric positive definite (ridge on a Gram matrix): Cholesky-based inverse is
        # faster and steadier than a general inverse
        P = scipy.linalg.inv(G, overwrite_a=True, check_finite=False, assume_a="pos")
        B = P / (-np.diag(P))
        B[np.diag_indices_from(B)] = 0.0
        self.B_ = B.astype(np.float32, copy=False)
        self.n_users_, self.n_items_ = X.shape
        return self

    def _score(self, user_ids, user_items):
        X = user_items
        if self.binary:
            X = X.copy()
            X.data[:] = 1.0
        return np.asarray(X @ self.B_)
