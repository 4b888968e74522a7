"""Hyperparameter handling shared by every learned part (implicit models, the ranker, learned taggers).

The scikit-learn convention: ``__init__`` takes only keyword hyperparameters and stores each one untouched under
its own name, so the constructor's signature *is* the list of hyperparameters. :class:`ParamsMixin` reads that
signature once for ``get_params`` / ``set_params`` / ``repr``, so no estimator keeps a second list that can drift
from its constructor. It lives in the data layer because that is the one floor every engine may import.
"""

from __future__ import annotations

import inspect

from data.errors import ConfigFileError


class ParamsMixin:
    """``get_params`` / ``set_params`` / ``repr`` from the ``__init__`` signature."""

    @classmethod
    def param_names(cls) -> list[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict:
        return {p: getattr(self, p) for p in self.param_names()}

    def set_params(self, **params):
        """Set hyperparameters by name (returns self); an unknown name is a ConfigFileError naming it."""
        known = self.param_names()
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise ConfigFileError(
                f"{self._params_owner()}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def _params_owner(self) -> str:
        """How errors name this estimator (e.g. ``model 'ease'``)."""
        return type(self).__name__

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"
