"""One contract, checked for every implicit model on a small dataset whose right answer is known.

The dataset: two communities that never mix. Users 0-29 use items 0-9, users 30-59 use items 10-19, each
user has seen some of their community's 10 items. Any collaborative model must rank the unseen items of the
user's own community first; popularity must return the most-used unseen items.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recommender.models import (
    ALS, BPR, EASE, MODELS, ImplicitModel, ItemKNN, Popularity, batch_topk, load_model, make_model,
    weighted_interactions,
)
from data.errors import ConfigFileError, ContractError, NotFound, StateError

N_USERS, N_ITEMS, BLOCK = 60, 20, 10


@pytest.fixture(scope="module")
def communities() -> sp.csr_matrix:
    # each user takes each item of their community with probability 1/2 (2..8 of them): a fixed count per
    # user would make items of one community anti-correlated, and EASE would rightly learn that
    rng = np.random.default_rng(7)
    dense = np.zeros((N_USERS, N_ITEMS), dtype=np.float32)
    for u in range(N_USERS):
        base = 0 if u < N_USERS // 2 else BLOCK
        while not 2 <= dense[u].sum() <= BLOCK - 2:
            dense[u, base:base + BLOCK] = rng.random(BLOCK) < 0.5
    return sp.csr_matrix(dense)


def own_block(u: int) -> set[int]:
    base = 0 if u < N_USERS // 2 else BLOCK
    return set(range(base, base + BLOCK))


class ModelContract:
    """Mixin: every test here runs once per model class below."""

    params: dict = {}
    personalised = True
    # item-item models with co-occurrence weights rank *all* unseen community items above the other community
    exact_order = False

    def make(self, **over) -> ImplicitModel:
        return self.model_cls(**{**self.params, **over})

    def test_registered_and_params_stored_untouched(self):
        assert MODELS[self.model_cls.name] is self.model_cls
        m = self.make()
        assert m.get_params() == {**self.model_cls().get_params(), **self.params}
        marker = object()
        m.set_params(random_state=marker)
        assert m.random_state is marker  # stored as given, not coerced
        assert not [a for a in vars(self.make()) if a.endswith("_")]  # nothing learned before fit

    def test_fit_returns_self_and_learned_attributes_end_in_underscore(self, communities):
        m = self.make()
        assert m.fit(communities) is m
        learned = [a for a in vars(m) if a.endswith("_")]
        assert set(m.learned) <= set(learned)
        assert m.n_items_ == N_ITEMS and m.n_users_ == N_USERS

    def test_unfitted_model_says_so(self, communities):
        with pytest.raises(StateError, match="not fitted"):
            self.make().recommend(np.arange(2), communities[:2], k=3)

    def test_scores_shape_and_dtype(self, communities):
        m = self.make().fit(communities)
        s = m.score(np.arange(7), communities[:7])
        assert s.shape == (7, N_ITEMS) and s.dtype == np.float32 and np.isfinite(s).all()

    def test_right_answer_on_communities(self, communities):
        m = self.make().fit(communities)
        items, scores = m.recommend(np.arange(N_USERS), communities, k=BLOCK)
        ok = items >= 0
        assert (np.diff(np.where(ok, scores, -1e30), axis=1) <= 1e-6).all()  # best first
        for u in range(N_USERS):
            seen = set(communities[u].indices)
            assert not seen & set(items[u])
            if self.personalised:
                # every user has at least 2 unseen items in their community: those must lead
                assert set(items[u, :2]) <= own_block(u), f"user {u}: {items[u]}"
            if self.exact_order:
                want = own_block(u) - seen
                assert set(items[u, :len(want)]) == want, f"user {u}: {items[u]}"

    def test_exclude_and_padding(self, communities):
        m = self.make().fit(communities)
        ex = sp.csr_matrix(([1.0], ([0], [int(np.setdiff1d(np.arange(N_ITEMS), communities[0].indices)[0])])),
                           shape=(1, N_ITEMS))
        items, scores = m.recommend([0], communities[:1], k=N_ITEMS, exclude=ex)
        rankable = N_ITEMS - communities[0].nnz - 1
        assert (items[0, :rankable] >= 0).all() and len(set(items[0, :rankable])) == rankable
        assert (items[0, rankable:] == -1).all() and np.isneginf(scores[0, rankable:]).all()
        assert ex.indices[0] not in items[0]

    def test_batch_topk_matches_a_full_sort(self, communities):
        m = self.make().fit(communities)
        users = np.arange(N_USERS)
        items, _ = batch_topk(m, users, communities, 4, chunk_size=7)  # chunks that do not divide the users
        threaded, _ = batch_topk(m, users, communities, 4, chunk_size=7, n_threads=2)
        np.testing.assert_array_equal(items, threaded)
        s = m.score(users, communities)
        s[communities.nonzero()] = -np.inf
        for u in users:
            kth = np.sort(s[u])[::-1][3]
            assert (s[u, items[u]] >= kth - 1e-6).all()

    def test_same_random_state_same_model(self, communities):
        a = self.make(random_state=3).fit(communities).score(np.arange(5), communities[:5])
        b = self.make(random_state=3).fit(communities).score(np.arange(5), communities[:5])
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def test_save_load_round_trip(self, communities, tmp_path):
        m = self.make().fit(communities)
        m.save(tmp_path / "m")
        meta = json.loads((tmp_path / "m" / "params.json").read_text())
        assert meta["model"] == m.name and meta["n_items"] == N_ITEMS
        back = load_model(tmp_path / "m")
        assert type(back) is type(m) and back.get_params() == json.loads(json.dumps(m.get_params()))
        np.testing.assert_array_equal(back.score(np.arange(9), communities[:9]), m.score(np.arange(9), communities[:9]))

    def test_unknown_user_scored_from_history(self, communities):
        m = self.make().fit(communities)
        row = sp.csr_matrix((np.ones(3, dtype=np.float32), ([0, 0, 0], [10, 11, 12])), shape=(1, N_ITEMS))
        items, _ = m.recommend([-1], row, k=3)
        assert not {10, 11, 12} & set(items[0])
        if self.personalised:
            assert set(items[0, :2]) <= own_block(N_USERS - 1)

    def test_bad_input_is_a_contract_error(self, communities):
        with pytest.raises(ContractError, match="scipy sparse"):
            self.make().fit(communities.toarray())
        m = self.make().fit(communities)
        with pytest.raises(ContractError, match="item columns"):
            m.score([0], communities[:1, :5])
        with pytest.raises(ContractError, match="rows"):
            m.score([0, 1], communities[:1])


class TestEASE(ModelContract):
    model_cls = EASE
    params = {"l2": 100.0}
    exact_order = True


class TestItemKNN(ModelContract):
    model_cls = ItemKNN
    params = {"neighbours": 10}
    exact_order = True


class TestALS(ModelContract):
    model_cls = ALS
    params = {"factors": 4, "regularization": 1.0, "iterations": 15, "num_threads": 1, "random_state": 0}


class TestBPR(ModelContract):
    model_cls = BPR
    params = {"factors": 4, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100, "num_threads": 1,
              "random_state": 0}


class TestPopularity(ModelContract):
    model_cls = Popularity
    personalised = False

    def test_popularity_answer(self, communities):
        m = self.make().fit(communities)
        counts = np.asarray((communities > 0).sum(axis=0)).ravel()
        items, scores = m.recommend([0], communities[:1], k=3)
        unseen = np.setdiff1d(np.arange(N_ITEMS), communities[0].indices)
        assert sorted(scores[0].tolist(), reverse=True) == sorted(counts[unseen], reverse=True)[:3]


def test_every_model_is_covered_by_the_contract():
    covered = {c.model_cls for c in ModelContract.__subclasses__()}
    assert covered == set(MODELS.values())


def test_make_model_names_the_unknown_key():
    with pytest.raises(ConfigFileError, match="unknown model 'lightfm'"):
        make_model("lightfm")
    with pytest.raises(ConfigFileError, match="unknown parameter.*lambda"):
        make_model("ease", **{"lambda": 3})
    assert make_model("popularity").name == "pop"


def test_load_model_errors_name_the_file(tmp_path):
    with pytest.raises(NotFound, match="no saved model"):
        load_model(tmp_path)
    (tmp_path / "params.json").write_text("{not json")
    np.savez(tmp_path / "arrays.npz", x=np.zeros(1))
    with pytest.raises(ContractError, match="params.json"):
        load_model(tmp_path)


def test_bad_hyperparameter_is_a_config_error(communities):
    with pytest.raises(ConfigFileError, match="l2"):
        EASE(l2=0).fit(communities)
    with pytest.raises(ConfigFileError, match="neighbours"):
        ItemKNN(neighbours=0).fit(communities)


def test_batch_topk_agrees_with_implicit_recommend(communities):
    from recommender.models.factors import time_topk_vs_implicit

    m = ALS(factors=4, iterations=5, num_threads=1, random_state=0).fit(communities)
    figures = time_topk_vs_implicit(m, communities, k=5)
    assert figures["topk_agreement"] == 1.0
    assert figures["users"] == N_USERS


# -- confidence weighting ------------------------------------------------------------------------------
AS_OF = datetime(2026, 6, 30, 12, tzinfo=timezone.utc)


def _events(rows):
    return pl.DataFrame(rows, schema={"subject_id": pl.String, "item_id": pl.String, "action": pl.String,
                                      "ts": pl.Datetime("us", "UTC")}, orient="row")


def test_weights_follow_actions_and_half_life():
    ev = _events([
        ("P1", "A", "view", AS_OF),
        ("P1", "A", "apply", AS_OF - timedelta(days=30)),  # one half-life ago: counts half
        ("P2", "B", "click", AS_OF - timedelta(days=60)),  # two half-lives: a quarter
        ("P2", "A", "view", AS_OF + timedelta(days=1)),  # after as_of: never seen
    ])
    ia = weighted_interactions(ev, {"view": 1.0, "click": 2.0, "apply": 10.0}, 30, AS_OF)
    assert ia.subject_ids.tolist() == ["P1", "P2"] and ia.item_ids.tolist() == ["A", "B"]
    np.testing.assert_allclose(ia.matrix.toarray(), [[1 + 5, 0], [0, 0.5]], rtol=1e-5)
    no_decay = weighted_interactions(ev, {"view": 1.0, "click": 2.0, "apply": 10.0}, None, AS_OF, aggregate="max")
    np.testing.assert_allclose(no_decay.matrix.toarray(), [[10, 0], [0, 2]])
    fixed = weighted_interactions(ev, {"view": 1, "click": 2, "apply": 10}, None, AS_OF, item_ids=["B", "A", "C"])
    assert fixed.matrix.shape == (2, 3) and fixed.matrix[0, 1] == 11


def test_unconfigured_action_is_named():
    ev = _events([("P1", "A", "consult", AS_OF)])
    with pytest.raises(ConfigFileError, match="consult"):
        weighted_interactions(ev, {"view": 1.0}, 30, AS_OF)
    with pytest.raises(ConfigFileError, match="action_weights.view"):
        weighted_interactions(ev, {"view": -1.0, "consult": 1}, 30, AS_OF)
    with pytest.raises(ContractError, match="missing column"):
        weighted_interactions(ev.drop("action"), {"view": 1.0}, 30, AS_OF)
