"""Feature-evaluation job, run inside a sandbox: repeated cross-validation of one fast
model on the data as it is and with candidate feature blocks. Standalone: imports
nothing from mlpilot; ``cv_job.py`` and ``featurize.py`` are handed in next to it.

Inputs in the job directory:
    config.json   {"family", "params", "problem_type", "target", "text_columns",
                   "seed", "cardinality", "variants": [{"features": [...], "drop": [...]}]}
    train.parquet features and target
    folds.npy     (repeats, rows): each row's fold in each repeat, decided by the host

Outputs:
    oof_<i>.npy   out-of-fold predictions of variant i, one slice per repeat
                  (class probabilities or values), for the host to score fold by fold
    classes.json  class order of the probability columns (classification)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv_job  # type: ignore[import-not-found]  # handed in next to this script
import featurize  # type: ignore[import-not-found]
import numpy as np
import pandas as pd
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import Pipeline


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
        schema = builder.fit(X).transform(X)  # the columns the model will see
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
            pipeline = Pipeline([("features", builder), *inner.steps])
            split = PredefinedSplit(repeat)
            out.append(cross_val_predict(pipeline, X, y, cv=split, method=method))
        np.save(f"oof_{i}.npy", np.stack(out))
        print(f"variant {i}: {len(folds)} repeats in {time.perf_counter() - t0:.2f} s")
    if classification:
        Path("classes.json").write_text(json.dumps(classes))


if __name__ == "__main__":
    main()
