"""Reference-search job, run inside a sandbox: how much a gradient-boosting model
uses each candidate feature. Standalone: imports nothing from mlpilot;
``cv_job.py`` and ``featurize.py`` are handed in next to it.

Inputs in the job directory:
    config.json    {"problem_type", "target", "seed", "candidates": [feature specs],
                    "folds", "repeats"}
    train.parquet  features and target

For each of ``folds`` cross-validation folds (stratified for classes, seeded), every
candidate is fitted on the other folds (:class:`featurize.FeatureBuilder`), a
histogram gradient-boosting model is trained there on the original columns plus
all candidates, and each column's permutation importance (the drop in the model's
score when the column is shuffled, over ``repeats`` shuffles) is measured on the
fold; the importances are averaged over the folds, so every row is held out once.

Outputs:
    importance.json  {column: [mean, std]} for every column the model saw
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv_job  # type: ignore[import-not-found]  # handed in next to this script
import featurize  # type: ignore[import-not-found]
import numpy as np
import pandas as pd
from sklearn.inspection import permutation_importance
from sklearn.model_selection import KFold, StratifiedKFold


def main() -> None:
    t0 = time.perf_counter()
    config = json.loads(Path("config.json").read_text())
    train = pd.read_parquet("train.parquet")
    target = config["target"]
    X, y = train.drop(columns=[target]), train[target]
    classification = config["problem_type"] != "regression"
    seed = int(config.get("seed", 0))
    splitter = (StratifiedKFold if classification else KFold)(
        n_splits=int(config.get("folds", 3)), shuffle=True, random_state=seed
    )
    scoring = {"binary": "roc_auc", "multiclass": "accuracy"}.get(config["problem_type"], "r2")
    means, sds = [], []
    for fit_rows, val_rows in splitter.split(X, y):
        X_fit, X_val = X.iloc[fit_rows], X.iloc[val_rows]
        builder = featurize.FeatureBuilder(config["candidates"]).fit(X_fit)
        A_fit, A_val = builder.transform(X_fit), builder.transform(X_val)
        estimator = cv_job.build_estimator("hist_gradient_boosting", {}, classification, seed)
        model = cv_job.build_pipeline(A_fit, [], estimator).fit(A_fit, y.iloc[fit_rows])
        result = permutation_importance(
            model,
            A_val,
            y.iloc[val_rows],
            scoring=scoring,
            n_repeats=int(config.get("repeats", 3)),
            random_state=seed,
        )
        means.append(result.importances_mean)
        sds.append(result.importances_std)
    mean, sd = np.mean(means, axis=0), np.mean(sds, axis=0)
    importance = {
        str(col): [float(m), float(s)] for col, m, s in zip(A_val.columns, mean, sd, strict=True)
    }
    Path("importance.json").write_text(json.dumps(importance))
    print(f"{len(config['candidates'])} candidates in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
