"""The estimator conventions every learned part honours, as a test mixin (the implicit models have their own,
richer one in test_models_contract.py).

A subclass sets ``estimator_cls`` and ``params`` and defines the fixture ``contract_data`` plus four hooks:
``fit(m, data)`` (returns what ``m.fit`` returned), ``predict(m, data)``, ``save_load(m, path)`` (a reloaded copy)
and ``assert_same(a, b)`` (two predictions are identical).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from data.errors import ConfigFileError, StateError


class EstimatorContract:
    estimator_cls: type
    params: dict = {}

    def make(self, **over):
        return self.estimator_cls(**{**self.params, **over})

    def fit(self, m, data):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def predict(self, m, data):  # pragma: no cover
        raise NotImplementedError

    def save_load(self, m, path):  # pragma: no cover
        raise NotImplementedError

    def assert_same(self, a, b) -> None:
        np.testing.assert_array_equal(a, b)

    def test_params_round_trip(self):
        m = self.make()
        defaults = self.estimator_cls().get_params()
        assert "random_state" in defaults
        assert m.get_params() == {**defaults, **self.params}
        assert self.estimator_cls(**m.get_params()).get_params() == m.get_params()
        assert self.estimator_cls().set_params(**m.get_params()).get_params() == m.get_params()
        marker = object()
        assert m.set_params(random_state=marker) is m
        assert m.random_state is marker  # stored as given, not coerced
        with pytest.raises(ConfigFileError, match="unknown parameter.*no_such_knob"):
            m.set_params(no_such_knob=1)
        assert repr(self.make()).startswith(f"{self.estimator_cls.__name__}(")
        assert not [a for a in vars(self.make()) if a.endswith("_")]  # nothing learned before fit

    def test_fit_returns_self_and_only_adds_learned_attributes(self, contract_data):
        m = self.make()
        before_params = copy.deepcopy(m.get_params())
        before = set(vars(m))
        assert self.fit(m, contract_data) is m
        assert m.get_params() == before_params  # hyperparameters untouched by fit
        added = set(vars(m)) - before
        assert added, "fit learned nothing"
        assert all(a.endswith("_") for a in added), f"learned attributes must end in _: {sorted(added)}"

    def test_predict_before_fit_is_a_state_error(self, contract_data):
        with pytest.raises(StateError, match="not fitted"):
            self.predict(self.make(), contract_data)

    def test_save_load_round_trip_predicts_the_same(self, contract_data, tmp_path):
        m = self.make()
        self.fit(m, contract_data)
        back = self.save_load(m, tmp_path)
        assert type(back) is type(m) and back.get_params() == m.get_params()
        self.assert_same(self.predict(back, contract_data), self.predict(m, contract_data))

    def test_same_random_state_same_predictions(self, contract_data):
        a, b = self.make(random_state=3), self.make(random_state=3)
        self.fit(a, contract_data)
        self.fit(b, contract_data)
        self.assert_same(self.predict(a, contract_data), self.predict(b, contract_data))
