"""Feature-evaluation job, run inside a sandbox: repeated cross-validation of one fast
model on the data as it is and with candidate feature blocks. Standalone: imports
nothing from mlpilot; ``cv_job.py`` and ``featurize.py`` are handed in next to it.

Inputs in the job directory:
    config.json   {"family", "params", "problem_type", "target", "text_columns",
                   "seed", "cardinality",
                   "variants": [{"features": [...], "drop": [...], "code": "..."}]}

A variant's ``code`` (free feature code from an LLM, see
:mod:`mlpilot.agents.feature_code`) runs here only: ``fit`` on each fold's training
rows, ``transform`` on any rows, after the typed features.
    train.parquet features and target
    folds.npy     (repeats, rows): each row's fold in each repeat, decided by the host

Outputs:
    oof_<i>.npy   out-of-fold predictions of variant i, one slice per repeat
                  (class probabilities or values), for the host to score fold by fold
    classes.json  class order of the probability columns (classification)
    code_<i>.parquet  the code's new columns on all training rows (fitted on them),
                  for the host's checks
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv_job  # type: ignore[import-not-found]  # handed in next to this script
import featurize  # type: ignore[import-not-found]
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import Pipeline

BATCH_CHECK_ROWS = 20  # rows transformed one at a time and compared with the batch


class CodeFeatures(BaseEstimator, TransformerMixin):
    """Free feature code as a pipeline step: ``fit(train) -> state`` on the rows it
    is fitted on, ``transform(df, state) -> new columns`` on any rows."""

    def __init__(self, code: str = "") -> None:
        self.code = code

    def _functions(self):
        namespace: dict = {"pd": pd, "np": np}
        exec(compile(self.code, "<feature code>", "exec"), namespace)  # the sandbox is the wall
        return namespace["fit"], namespace["transform"]

    def fit(self, X, y=None):
        fit, _ = self._functions()
        self.state_ = fit(X.copy())
        return self

    def new_columns(self, X) -> pd.DataFrame:
        _, transform = self._functions()
        new = transform(X.copy(), self.state_)
        if isinstance(new, pd.Series):
            new = new.to_frame()
        if not isinstance(new, pd.DataFrame):
            raise ValueError(f"transform returned a {type(new).__name__}, not a DataFrame")
        if len(new) != len(X):
            raise ValueError(f"transform returned {len(new)} rows for {len(X)} rows")
        clash = [c for c in new.columns if c in X.columns]
        if clash:
            raise ValueError(f"transform returned existing columns {clash[:5]}")
        new.columns = [str(c) for c in new.columns]
        new.index = X.index
        return new

    def transform(self, X):
        return pd.concat([X, self.new_columns(X)], axis=1)


def check_batch_independence(step: CodeFeatures, X: pd.DataFrame) -> None:
    """Rows alone must give what they give in a batch (a seeded sample of rows, so
    that data sorted by a column still shows a batch statistic)."""
    head = X.sample(min(BATCH_CHECK_ROWS, len(X)), random_state=0)
    batch = step.new_columns(head)
    for i in range(len(head)):
        alone = step.new_columns(head.iloc[[i]])
        for col in batch.columns:
            a, b = alone[col].iloc[0], batch[col].iloc[i]
            if not ((pd.isna(a) and pd.isna(b)) or a == b):
                raise ValueError(
                    f"the code's column {col!r} depends on the batch: row {i} alone gives "
                    f"{a!r}, in a batch of {len(head)} {b!r} (statistics must be learnt in fit)"
                )


def main() -> None:
    config = json.loads(Path("config.json").read_text())
    train = pd.read_parquet("train.parquet")
    folds = np.load("folds.npy", allow_pickle=False)
    target = config["target"]
    X, y = train.drop(columns=[target]), train[target]
    classification = config["problem_type"] != "regression"
    seed = int(config.get("seed", 0))
    method = "predict_proba" if classification else "predict"
    classes = np.unique(y.to_numpy()).tolist() if classification else None
    for i, variant in enumerate(config["variants"]):
        t0 = time.perf_counter()
        builder = featurize.FeatureBuilder(variant.get("features", []), variant.get("drop", []))
        steps = [("features", builder)]
        schema = builder.fit(X).transform(X)  # the columns the model will see
        if variant.get("code"):
            code = CodeFeatures(variant["code"]).fit(schema)
            check_batch_independence(code, schema)
            code.new_columns(schema).to_parquet(f"code_{i}.parquet", index=False)
            schema = code.transform(schema)
            steps.append(("code", code))
        out = []
        for repeat in folds:
            estimator = cv_job.build_estimator(
                config["family"], config.get("params", {}), classification, seed
            )
            inner = cv_job.build_pipeline(
                schema,
                config.get("text_columns", []),
                estimator,
                dense=config["family"] in cv_job.DENSE_ONLY,
                cardinality=config.get("cardinality"),
            )
            pipeline = Pipeline([*steps, *inner.steps])
            split = PredefinedSplit(repeat)
            out.append(cross_val_predict(pipeline, X, y, cv=split, method=method))
        np.save(f"oof_{i}.npy", np.stack(out))
        print(f"variant {i}: {len(folds)} repeats in {time.perf_counter() - t0:.2f} s")
    if classification:
        Path("classes.json").write_text(json.dumps(classes))


if __name__ == "__main__":
    main()
