"""The models a run hands back: scikit-learn compatible, picklable with joblib."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from mlpilot.tools.data import select_columns


class WeightedEnsemble(BaseEstimator):
    """Weighted average of fitted members' predictions (probabilities or values).

    Args:
        members: fitted scikit-learn estimators or pipelines.
        weights: one non-negative weight per member (normalised internally).
        classification: average ``predict_proba`` (True) or ``predict`` (False).
    """

    def __init__(
        self, members: Sequence[Any], weights: Sequence[float], classification: bool
    ) -> None:
        self.members = members
        self.weights = weights
        self.classification = classification

    @property
    def classes_(self) -> np.ndarray:
        return self.members[0].classes_

    def fit(self, X: Any, y: Any) -> WeightedEnsemble:
        self.members = [clone(m).fit(X, y) for m in self.members]
        return self

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted when its members are (they come fitted): a Pipeline that ends in an
        ensemble (engineered features, then the ensemble) asks this before predicting."""
        try:
            for m in self.members:
                check_is_fitted(m)
        except NotFittedError:
            return False
        return bool(self.members)

    def _weights(self) -> np.ndarray:
        w = np.asarray(self.weights, dtype=float)
        return w / w.sum()

    def predict_proba(self, X: Any) -> np.ndarray:
        if not self.classification:
            raise AttributeError("a regression ensemble has no predict_proba")
        classes = self.classes_
        total = np.zeros((len(X), len(classes)))
        for w, m in zip(self._weights(), self.members, strict=True):
            if list(m.classes_) != list(classes):
                raise ValueError("ensemble members disagree on the class order")
            total += w * m.predict_proba(X)
        return total

    def predict(self, X: Any) -> np.ndarray:
        if self.classification:
            return self.classes_[self.predict_proba(X).argmax(axis=1)]
        return sum(w * m.predict(X) for w, m in zip(self._weights(), self.members, strict=True))


class CombinedEnsemble(BaseEstimator):
    """Fitted members' predictions combined by a stacking meta-model or the neural
    ensembler, whose parameters are numpy arrays (see :mod:`mlpilot.tools.combiners`).

    Args:
        members: fitted scikit-learn estimators or pipelines, in the combiner's order.
        method: "stacking" or "neural".
        params: the combiner's parameters.
        classification: combine ``predict_proba`` (True) or ``predict`` (False).
    """

    def __init__(
        self,
        members: Sequence[Any],
        method: str,
        params: dict[str, Any],
        classification: bool,
    ) -> None:
        self.members = members
        self.method = method
        self.params = params
        self.classification = classification

    @property
    def classes_(self) -> np.ndarray:
        return self.members[0].classes_

    def fit(self, X: Any, y: Any) -> CombinedEnsemble:
        """Refits the members; the combiner's parameters stay as they were fit."""
        self.members = [clone(m).fit(X, y) for m in self.members]
        return self

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted when its members are: a Pipeline that ends in it asks before predicting."""
        return WeightedEnsemble.__sklearn_is_fitted__(self)  # type: ignore[arg-type]

    def _combined(self, X: Any) -> np.ndarray:
        from mlpilot.tools import combiners

        if self.classification:
            classes = list(self.classes_)
            if any(list(m.classes_) != classes for m in self.members):
                raise ValueError("ensemble members disagree on the class order")
            preds = [m.predict_proba(X) for m in self.members]
        else:
            preds = [m.predict(X) for m in self.members]
        return combiners.apply(
            self.method, self.params, combiners.stack(preds), self.classification
        )

    def predict_proba(self, X: Any) -> np.ndarray:
        if not self.classification:
            raise AttributeError("a regression ensemble has no predict_proba")
        return self._combined(X)

    def predict(self, X: Any) -> np.ndarray:
        if self.classification:
            return self.classes_[self._combined(X).argmax(axis=1)]
        return self._combined(X)


class PilotModel(BaseEstimator):
    """A run's final model with the columns it was trained on.

    ``predict`` and ``predict_proba`` accept a DataFrame with at least the
    training columns (in any order; extra columns such as the target are
    ignored) and give a clear error when columns are missing.
    """

    def __init__(
        self, estimator: Any, feature_columns: Sequence[str], target: str, problem_type: str
    ) -> None:
        self.estimator = estimator
        self.feature_columns = list(feature_columns)
        self.target = target
        self.problem_type = problem_type

    def _frame(self, X: Any) -> pd.DataFrame:
        return select_columns(X, self.feature_columns)

    @property
    def classes_(self) -> np.ndarray:
        return self.estimator.classes_

    def fit(self, X: Any, y: Any) -> PilotModel:
        self.estimator = clone(self.estimator).fit(self._frame(X), y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        return self.estimator.predict(self._frame(X))

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.problem_type == "regression":
            raise AttributeError("a regression model has no predict_proba")
        return self.estimator.predict_proba(self._frame(X))
