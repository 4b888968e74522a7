"""Item-kNN: memory bounded by co-occurrences and neighbours, not by items squared; same neighbours as dense."""

from __future__ import annotations

import tracemalloc

import numpy as np
import scipy.sparse as sp

from recommender.models import ItemKNN


def dense_reference(X: sp.csr_matrix, k: int, shrink: float) -> np.ndarray:
    X = X.copy()
    X.data[:] = 1.0
    G = (X.T @ X).toarray().astype(np.float64)
    norms = np.sqrt(np.diag(G))
    S = G / (np.outer(norms, norms) + shrink + 1e-12)
    np.fill_diagonal(S, 0.0)
    out = np.zeros_like(S)
    for j in range(S.shape[1]):
        col = S[:, j]
        keep = [i for i in np.lexsort((np.arange(len(col)), -col))[:k] if col[i] > 0]
        out[keep, j] = col[keep]
    return out


def test_sparse_neighbours_match_the_dense_definition():
    rng = np.random.default_rng(3)
    X = sp.random(200, 60, density=0.08, format="csr", random_state=rng, dtype=np.float32)
    for k, shrink in ((5, 0.0), (10, 2.0), (100, 0.0)):
        m = ItemKNN(neighbours=k, shrink=shrink).fit(X)
        np.testing.assert_allclose(m.sim_.toarray(), dense_reference(X, k, shrink), rtol=1e-5, atol=1e-6)


def test_fit_memory_does_not_grow_with_items_squared():
    rng = np.random.default_rng(0)
    n_users, n_items, per_user = 3000, 6000, 5
    rows = np.repeat(np.arange(n_users), per_user)
    cols = rng.integers(0, n_items, n_users * per_user)
    X = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_users, n_items))
    tracemalloc.start()
    try:
        m = ItemKNN(neighbours=50).fit(X)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # one dense item x item float32 matrix alone would be 144 MB here
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB"
    assert m.sim_.nnz <= 50 * n_items
