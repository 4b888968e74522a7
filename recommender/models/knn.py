"""Item-kNN with cosine similarity and per-item neighbour pruning (sparse throughout), and global popularity."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recommender.models.base import ImplicitModel, as_user_items
from data.errors import ConfigFileError


class ItemKNN(ImplicitModel):
    """score(u, j) = sum_i x_ui * sim(i, j), keeping each item's ``neighbours`` most similar items.

    ``shrink`` damps similarities resting on few co-occurrences: sim = x_i.x_j / (|x_i||x_j| + shrink).
    """

    name = "itemknn"
    learned = ("sim_data_", "sim_indices_", "sim_indptr_")

    def __init__(self, neighbours: int = 100, shrink: float = 0.0, binary: bool = True,
                 random_state: int | None = None):
        self.neighbours = neighbours
        self.shrink = shrink
        self.binary = binary
        self.random_state = random_state

    def fit(self, user_items) -> "ItemKNN":
        if int(self.neighbours) < 1:
            raise ConfigFileError(f"model 'itemknn': neighbours must be >= 1, got {self.neighbours!r}")
        if float(self.shrink) < 0:
            raise ConfigFileError(f"model 'itemknn': shrink must be >= 0, got {self.shrink!r}")
        X = as_user_items(user_items)
        if self.binary:
            X = X.copy()
            X.data[:] = 1.0
        n_items = X.shape[1]
        k = min(int(self.neighbours), n_items - 1) if n_items > 1 else 0
        prune = 0 < k < n_items - 1
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=0), dtype=np.float32).ravel())
        shrink = np.float32(self.shrink) + np.float32(1e-12)
        XT, Xc = X.T.tocsr(), X.tocsc()
        # the item x item co-occurrences are built a block of target items at a time and pruned to each target's
        # k neighbours at once, so memory follows co-occurrences and k, never items squared
        block = max(1, min(n_items, (1 << 20) // max(1, n_items)))
        rows_out, cols_out, sims_out = [], [], []
        for start in range(0, n_items, block):
            G = (XT @ Xc[:, start:start + block]).tocoo()
            rows, cols = G.row.astype(np.int64), G.col.astype(np.int64) + start
            sim = (G.data / (norms[rows] * norms[cols] + shrink)).astype(np.float32)
            keep = (rows != cols) & (sim != 0)
            rows, cols, sim = rows[keep], cols[keep], sim[keep]
            if prune and len(sim):
                # keep, for each target item j (column), its k most similar source items; ties go to the lower index
                order = np.lexsort((rows, -sim, cols))
                rows, cols, sim = rows[order], cols[order], sim[order]
                counts = np.bincount(cols - start, minlength=min(block, n_items - start))
                first = np.repeat(np.cumsum(counts) - counts, counts)
                top = (np.arange(len(cols)) - first) < k
                rows, cols, sim = rows[top], cols[top], sim[top]
            rows_out.append(rows)
            cols_out.append(cols)
            sims_out.append(sim)
        sim = sp.csr_matrix((np.concatenate(sims_out), (np.concatenate(rows_out), np.concatenate(cols_out))),
                            shape=(n_items, n_items), dtype=np.float32)
        sim.sort_indices()
        self.sim_data_, self.sim_indices_, self.sim_indptr_ = sim.data, sim.indices, sim.indptr
        self.n_users_, self.n_items_ = X.shape
        self._after_load()
        return self

    def _after_load(self) -> None:
        n = self.n_items_
        self.sim_ = sp.csr_matrix((self.sim_data_, self.sim_indices_, self.sim_indptr_), shape=(n, n))

    def _score(self, user_ids, user_items):
        X = user_items
        if self.binary:
            X = X.copy()
            X.data[:] = 1.0
        return (X @ self.sim_).toarray()


class Popularity(ImplicitModel):
    """Global popularity: every user gets the same ranking, by number of users (or summed confidence)."""

    name = "pop"
    learned = ("popularity_",)

    def __init__(self, binary: bool = True, random_state: int | None = None):
        self.binary = binary
        self.random_state = random_state

    def fit(self, user_items) -> "Popularity":
        X = as_user_items(user_items)
        if self.binary:
            pop = np.diff(X.tocsc().indptr).astype(np.float32)
        else:
            pop = np.asarray(X.sum(axis=0)).ravel().astype(np.float32)
        self.popularity_ = pop
        self.n_users_, self.n_items_ = X.shape
        return self

    def _score(self, user_ids, user_items):
        return np.broadcast_to(self.popularity_, (len(user_ids), self.n_items_)).copy()
