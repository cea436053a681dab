"""A saved transformer text classifier as a scikit-learn classifier.

The NAS agent delivers a folder (safetensors weights, a JSON architecture, the
tokenizer's files; see :mod:`mlpilot.tools.pruning`). This estimator holds the
folder's path, the text column and the token limit, not the weights: they load on
the first prediction, with torch and transformers, and loading runs no code from
the folder. It pickles and saves to skops as a few strings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from mlpilot.errors import ConfigError


class PrunedTextClassifier(ClassifierMixin, BaseEstimator):
    """Predicts a label from one text column with a saved transformer classifier.

    Args:
        directory: the classifier's folder.
        text_column: the column whose text it reads.
        max_length: tokens per text (longer texts are cut).
    """

    def __init__(
        self, directory: str = "", text_column: str = "text", max_length: int = 128
    ) -> None:
        self.directory = directory
        self.text_column = text_column
        self.max_length = max_length

    @classmethod
    def from_folder(
        cls, directory: str | Path, text_column: str, max_length: int
    ) -> PrunedTextClassifier:
        """The classifier saved in ``directory``, ready to predict (its classes read)."""
        model = cls(str(directory), text_column, max_length)
        arch = json.loads((Path(directory) / "arch.json").read_text())
        model.classes_ = np.asarray(arch["labels"], dtype=object)
        return model

    def fit(self, X: Any, y: Any) -> PrunedTextClassifier:
        raise ConfigError(
            "a PrunedTextClassifier is trained by mlpilot's NAS agent, not by fit(): run "
            'the pruning request again (mlpilot run "make this text classifier smaller" '
            "--data ... --target ...) to train another"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_predictor", None)  # the loaded weights stay in the folder
        return state

    def _texts(self, X: Any) -> list[str]:
        if isinstance(X, pd.DataFrame):
            if self.text_column not in X.columns:
                raise ConfigError(
                    f"the data has no text column {self.text_column!r} (columns: "
                    f"{', '.join(map(str, list(X.columns)[:8]))})"
                )
            values = X[self.text_column]
        else:
            array = np.asarray(X, dtype=object)
            values = array[:, 0] if array.ndim == 2 else array
        return [
            "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values
        ]

    def predictor(self) -> Any:
        """The loaded classifier (:class:`mlpilot.tools.pruning.TextPredictor`)."""
        cached = self.__dict__.get("_predictor")
        if cached is None:
            try:
                from mlpilot.tools.pruning import TextPredictor
            except ImportError as e:
                raise ConfigError(
                    "this model is a transformer text classifier: predicting needs torch and "
                    f'transformers (pip install -e ".[nas]" after torch) ({e})'
                ) from e
            if not (Path(self.directory) / "arch.json").is_file():
                raise ConfigError(f"the classifier's folder {self.directory} is missing")
            cached = TextPredictor(self.directory, max_length=self.max_length).load()
            self.__dict__["_predictor"] = cached
        return cached

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.predictor().predict_proba(self._texts(X))

    def predict(self, X: Any) -> np.ndarray:
        proba = self.predict_proba(X)
        return np.asarray(self.classes_, dtype=object)[proba.argmax(1)]
