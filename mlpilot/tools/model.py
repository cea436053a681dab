"""The models a run hands back: scikit-learn compatible, picklable with joblib."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.exceptions import NotFittedError
from sklearn.utils import ClassifierTags, RegressorTags, Tags, get_tags
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, column_or_1d

from mlpilot.tools.data import select_columns


def _kind_tags(tags: Tags, classification: bool) -> Tags:
    """Tags that make scikit-learn see a classifier or a regressor."""
    if classification:
        tags.estimator_type = "classifier"
        tags.classifier_tags = ClassifierTags()
    else:
        tags.estimator_type = "regressor"
        tags.regressor_tags = RegressorTags()
    return tags


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
        return self._members()[0].classes_

    def _members(self) -> Sequence[Any]:
        """The fitted members: those ``fit`` fitted, or the fitted ones it was built with."""
        return self.__dict__.get("members_", self.members)

    def fit(self, X: Any, y: Any) -> WeightedEnsemble:
        """Fits a clone of each member (the weights stay as they were chosen)."""
        self.members_ = [clone(m).fit(X, y) for m in self.members]
        return self

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted when its members are (they come fitted): a Pipeline that ends in an
        ensemble (engineered features, then the ensemble) asks this before predicting."""
        try:
            for m in self._members():
                check_is_fitted(m)
        except NotFittedError:
            return False
        return bool(self._members())

    def __sklearn_tags__(self) -> Tags:
        return _kind_tags(super().__sklearn_tags__(), self.classification)

    def _weights(self) -> np.ndarray:
        w = np.asarray(self.weights, dtype=float)
        return w / w.sum()

    def predict_proba(self, X: Any) -> np.ndarray:
        if not self.classification:
            raise AttributeError("a regression ensemble has no predict_proba")
        classes = self.classes_
        total = np.zeros((len(X), len(classes)))
        for w, m in zip(self._weights(), self._members(), strict=True):
            if list(m.classes_) != list(classes):
                raise ValueError("ensemble members disagree on the class order")
            total += w * m.predict_proba(X)
        return total

    def predict(self, X: Any) -> np.ndarray:
        if self.classification:
            return self.classes_[self.predict_proba(X).argmax(axis=1)]
        members = self._members()
        return sum(w * m.predict(X) for w, m in zip(self._weights(), members, strict=True))


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
        return self._members()[0].classes_

    def _members(self) -> Sequence[Any]:
        return self.__dict__.get("members_", self.members)

    def fit(self, X: Any, y: Any) -> CombinedEnsemble:
        """Fits a clone of each member; the combiner's parameters stay as they were fit."""
        self.members_ = [clone(m).fit(X, y) for m in self.members]
        return self

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted when its members are: a Pipeline that ends in it asks before predicting."""
        return WeightedEnsemble.__sklearn_is_fitted__(self)  # type: ignore[arg-type]

    def __sklearn_tags__(self) -> Tags:
        return _kind_tags(super().__sklearn_tags__(), self.classification)

    def _combined(self, X: Any) -> np.ndarray:
        from mlpilot.tools import combiners

        if self.classification:
            classes = list(self.classes_)
            if any(list(m.classes_) != classes for m in self._members()):
                raise ValueError("ensemble members disagree on the class order")
            preds = [m.predict_proba(X) for m in self._members()]
        else:
            preds = [m.predict(X) for m in self._members()]
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
    """A run's final model with the columns it was trained on, and a scikit-learn
    estimator: ``clone``, ``cross_val_score``, ``CalibratedClassifierCV`` and
    ``Pipeline`` accept it (a classifier or a regressor by its problem type).

    ``predict`` and ``predict_proba`` accept a DataFrame with at least the
    training columns (in any order; extra columns such as the target are
    ignored) and give a clear error when columns are missing. A NumPy array is
    read as those columns in order.

    Args:
        estimator: the model (a fitted one when built by :meth:`wrap`); ``fit``
            fits a clone of it.
        feature_columns: the columns it reads; None: the columns ``fit`` is given.
        target: the target's name (for messages and ``mlpilot predict``).
        problem_type: "binary", "multiclass" or "regression"; None: from the
            estimator (a classifier or not) and the labels ``fit`` is given.
    """

    def __init__(
        self,
        estimator: Any,
        feature_columns: Sequence[str] | None = None,
        target: str | None = None,
        problem_type: str | None = None,
    ) -> None:
        self.estimator = estimator
        self.feature_columns = feature_columns
        self.target = target
        self.problem_type = problem_type

    @classmethod
    def wrap(
        cls, fitted: Any, feature_columns: Sequence[str], target: str, problem_type: str
    ) -> PilotModel:
        """The model of an estimator fitted already (as a run delivers it)."""
        model = cls(fitted, list(feature_columns), target, problem_type)
        model._fitted(fitted, list(feature_columns))
        return model

    def _fitted(self, estimator: Any, columns: list[Any]) -> None:
        self.estimator_ = estimator
        self.columns_ = list(columns)
        if all(isinstance(c, str) for c in columns):  # scikit-learn's rule for the names
            self.feature_names_in_ = np.asarray(columns, dtype=object)
        self.n_features_in_ = len(columns)

    # -- what kind of estimator it is --------------------------------------------------

    def _classifies(self) -> bool:
        if self.problem_type is not None:
            return self.problem_type != "regression"
        return is_classifier(self.estimator)

    def __sklearn_tags__(self) -> Tags:
        tags = _kind_tags(super().__sklearn_tags__(), self._classifies())
        inner = get_tags(self.estimator).input_tags
        tags.input_tags.allow_nan = inner.allow_nan  # a run's pipelines impute
        tags.input_tags.string = inner.string
        return tags

    # -- fitted state ------------------------------------------------------------------

    def _model(self) -> Any:
        fitted = getattr(self, "estimator_", None)
        if fitted is None and "estimator_" not in self.__dict__:
            # a model file written before ``estimator_``: its estimator is the fitted one
            if getattr(self, "feature_columns", None) is not None and _is_fitted(self.estimator):
                return self.estimator
            raise NotFittedError("this PilotModel is not fitted yet: call fit(X, y) first")
        return fitted

    def _columns(self) -> list[Any]:
        if "columns_" in self.__dict__:
            return self.columns_
        return list(self.feature_columns or [])  # a model file written before ``columns_``

    def _frame(self, X: Any, columns: list[Any]) -> pd.DataFrame:
        if sparse.issparse(X):
            raise TypeError(
                "PilotModel does not accept sparse input: give a DataFrame (or a dense "
                "array) of the feature columns"
            )
        if not isinstance(X, pd.DataFrame):
            array = np.asarray(X)
            if array.ndim != 2:
                raise ValueError(
                    f"Expected a 2D array of features, got a {array.ndim}D array instead: "
                    "Reshape your data (one row per sample, one column per feature)"
                )
            if array.shape[1] != len(columns):
                raise ValueError(
                    f"X has {array.shape[1]} features, but PilotModel is expecting "
                    f"{len(columns)} features as input (a DataFrame with the columns "
                    f"{columns[:8]}, or an array of them in order)"
                )
            X = pd.DataFrame(array, columns=columns)
        return select_columns(X, columns)

    @property
    def classes_(self) -> np.ndarray:
        return self._model().classes_

    def fit(self, X: Any, y: Any) -> PilotModel:
        """Fits a clone of ``estimator`` on ``X``'s feature columns."""
        if self.feature_columns is not None:
            columns = list(self.feature_columns)
        elif isinstance(X, pd.DataFrame):
            columns = [c for c in X.columns if c != self.target]
        else:
            shape = X.shape if sparse.issparse(X) else np.asarray(X).shape
            columns = list(range(shape[1])) if len(shape) == 2 else []
            if len(shape) != 2:
                self._frame(X, columns)  # the error that says why
        if not columns:
            raise ValueError(
                f"0 feature(s) (shape=({len(X)}, 0)) while a minimum of 1 is required: "
                "PilotModel needs at least one feature column"
            )
        frame = self._frame(X, columns)
        if (
            getattr(y, "ndim", None) == 2
        ):  # one target: a column vector is flattened, with a warning
            y = column_or_1d(y, warn=True)
        self._fitted(clone(self.estimator).fit(frame, y), columns)
        return self

    def predict(self, X: Any) -> np.ndarray:
        model = self._model()
        return model.predict(self._frame(X, self._columns()))

    @available_if(_classifies)
    def predict_proba(self, X: Any) -> np.ndarray:
        model = self._model()
        return model.predict_proba(self._frame(X, self._columns()))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (a classifier) or R² (a regressor), as scikit-learn's mixins score."""
        from sklearn.metrics import accuracy_score, r2_score

        pred = self.predict(X)
        if self._classifies():
            return float(accuracy_score(y, pred, sample_weight=sample_weight))
        return float(r2_score(y, pred, sample_weight=sample_weight))


def _is_fitted(estimator: Any) -> bool:
    try:
        check_is_fitted(estimator)
    except (NotFittedError, TypeError):
        return False
    return True
