"""Cross-validation job, run inside a sandbox. Standalone: imports nothing from mlpilot.

Inputs in the job directory:
    config.json   {"family", "params", "problem_type", "target", "text_columns",
                   "seed", "cardinality", "cv", "save_model", "skip_folds"}
    train.parquet features and target
    folds.npy     the fold of each training row, decided by the host (for CV)
    holdout.parquet features only: rows to predict (the holdout, or the rows of one
                  fold when the host re-runs CV fold by fold); their labels never
                  leave the host

Outputs:
    oof.npy           out-of-fold predictions (class probabilities or values); the rows
                      of the folds in ``skip_folds`` are NaN (the host already has their
                      predictions, from a job that fitted that fold alone)
    holdout_pred.npy  predictions for holdout.parquet's rows, from a model fitted on
                      all of train.parquet
    classes.json      class order of the probability columns (classification)
    result.json       fit time and the score the job computed itself (the host
                      recomputes it from oof.npy and compares)
    model.skops       the fitted pipeline, when config asks for it (skops: it loads
                      on the host without running code)

``cardinality`` (categories per column over all training rows, computed by the host)
decides the encoding, so a job fitted on one fold's rows builds the same pipeline as
one fitted on all of them.

With ``"features"`` in the config ({"features": [...], "drop": [...]}), the pipeline
starts with ``featurize.FeatureBuilder`` (``featurize.py`` is handed in next to this
script), fitted with the rest on each fold's training rows; the saved model then
leaves that first step out (the host builds it from the same features with its own
copy of the module, so the file holds only scikit-learn's types).

The ``minilm`` family (logistic regression or ridge, as ``linear``) first replaces
each text column by its frozen MiniLM-L6 sentence embedding (``text_embed.py`` and
the encoder in ``encoder/`` are handed in); with ``tfidf`` true the text's TF-IDF
columns are kept beside it. The saved model leaves that step out too.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.svm import SVC, SVR


def _opt(params: dict, name: str, cast, default):
    value = params.get(name)
    return default if value is None else cast(value)


# The LightGBM parameters a configuration may set (the rest are fixed below).
LIGHTGBM_PARAMS = (
    "learning_rate",
    "num_leaves",
    "min_child_samples",
    "colsample_bytree",
    "reg_lambda",
    "extra_trees",
)


def _validation_rows(y: np.ndarray, classification: bool, fraction: float, seed: int) -> np.ndarray:
    """A seeded mask of the rows held out for early stopping: ``fraction`` of them, at
    least one per class, stratified by class; a class with one row stays in the fit."""
    rng = np.random.default_rng(seed)
    n = len(y)
    mask = np.zeros(n, dtype=bool)
    if not classification:
        take = max(1, round(fraction * n))
        mask[rng.permutation(n)[:take]] = True
        return mask
    labels, codes = np.unique(y.astype(str), return_inverse=True)
    for k in range(len(labels)):
        rows = np.flatnonzero(codes == k)
        if len(rows) < 2:
            continue
        take = min(len(rows) - 1, max(1, round(fraction * len(rows))))
        mask[rng.permutation(rows)[:take]] = True
    return mask


class BoostedTrees(BaseEstimator):
    """LightGBM with early stopping on a seeded validation split of its own fit's rows.

    ``fit`` first trains on the rows outside the validation split until the validation
    loss has not improved for ``patience`` rounds, then refits on every row it was
    given with the best round count scaled by the share of rows it gained, so the
    fitted model learns from all of its rows. Categorical columns
    (``categorical_features``, named as in scikit-learn's gradient boosting: positions
    in the input, as category codes with NaN for missing) are split on by LightGBM
    natively. The fitted model is a plain LightGBM estimator (``model_``), which is
    what a saved pipeline holds (see :func:`portable`).
    """

    def __init__(
        self,
        classification: bool = True,
        params: dict | None = None,
        seed: int = 0,
        categorical_features: list | None = None,
        validation: float = 0.15,
        patience: int = 50,
        max_rounds: int = 3000,
    ) -> None:
        self.classification = classification
        self.params = params
        self.seed = seed
        self.categorical_features = categorical_features
        self.validation = validation
        self.patience = patience
        self.max_rounds = max_rounds

    def _model(self, rounds: int):
        import lightgbm

        cls = lightgbm.LGBMClassifier if self.classification else lightgbm.LGBMRegressor
        params = {
            "learning_rate": 0.05,
            "num_leaves": 31,
            "min_child_samples": 20,
            "colsample_bytree": 1.0,
            "reg_lambda": 0.0,
            "extra_trees": False,
            "max_cat_threshold": LIGHTGBM_MAX_CAT_THRESHOLD,
            **(self.params or {}),
        }
        return cls(
            n_estimators=int(rounds),
            random_state=int(self.seed),
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
            n_jobs=_threads(),
            **params,
        )

    def fit(self, X, y):
        import lightgbm

        y = np.asarray(y)
        categorical = list(self.categorical_features or []) or "auto"
        val = _validation_rows(y, self.classification, self.validation, self.seed)
        fit_rows = ~val
        if val.any() and fit_rows.sum() >= 2 and len(np.unique(y[fit_rows].astype(str))) > 1:
            probe = self._model(self.max_rounds)
            # the probe only counts rounds: class labels as codes, since LightGBM 4.7's
            # eval_y is not label-encoded (string classes such as "good" fail there)
            y_fit = np.unique(y.astype(str), return_inverse=True)[1] if self.classification else y
            X_val, y_val = _rows(X, val), y_fit[val]
            # LightGBM 4.7 names the validation rows eval_X/eval_y; earlier, eval_set
            held_out = (
                {"eval_X": (X_val,), "eval_y": (y_val,)}
                if "eval_X" in inspect.signature(probe.fit).parameters
                else {"eval_set": [(X_val, y_val)]}
            )
            probe.fit(
                _rows(X, fit_rows),
                y_fit[fit_rows],
                **held_out,
                categorical_feature=categorical,
                callbacks=[lightgbm.early_stopping(self.patience, verbose=False)],
            )
            best = int(probe.best_iteration_ or self.max_rounds)
            rounds = max(1, round(best * len(y) / fit_rows.sum()))
        else:
            rounds = 100
        self.model_ = self._model(rounds).fit(X, y, categorical_feature=categorical)
        self.rounds_ = rounds
        if self.classification:
            self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)

    def predict_proba(self, X):
        return self.model_.predict_proba(X)

    def score(self, X, y) -> float:
        """Accuracy (classification) or R² (regression), as scikit-learn's estimators."""
        return float(self.model_.score(X, y))


def _threads() -> int:
    """The threads this job may use: the sandbox's OMP_NUM_THREADS, else the CPUs this
    process may run on (LightGBM's own default counts the machine's cores, and
    oversubscribed threads slow a small fit twentyfold)."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return max(1, len(os.sched_getaffinity(0)))


def _rows(X, mask: np.ndarray):
    return X.iloc[mask] if hasattr(X, "iloc") else X[mask]


def cross_predict(pipeline, X, y, folds: np.ndarray, method: str, skip=()) -> np.ndarray:
    """Out-of-fold predictions on the host's folds. The rows of the folds in ``skip`` are
    not predicted (NaN) but are training rows of every other fold's model, as in a full
    cross-validation: the other folds' predictions are the same as a full run's."""
    if not skip:
        return cross_val_predict(pipeline, X, y, cv=PredefinedSplit(folds), method=method)
    from sklearn.base import clone

    labels = y.to_numpy()
    proba = method == "predict_proba"
    classes = np.unique(labels) if proba else None
    oof = np.full((len(labels), len(classes)) if proba else len(labels), np.nan)
    for k in np.unique(folds):
        if k < 0 or int(k) in skip:
            continue
        test = folds == k
        model = clone(pipeline).fit(_rows(X, ~test), labels[~test])
        pred = getattr(model, method)(_rows(X, test))
        if proba:  # a class missing from this fold's training rows gets probability 0
            full = np.zeros((len(pred), len(classes)))
            full[:, np.searchsorted(classes, model.classes_)] = pred
            pred = full
        oof[test] = pred
    return oof


def portable(pipeline: Pipeline) -> Pipeline:
    """``pipeline`` with any :class:`BoostedTrees` step replaced by its fitted LightGBM
    model, so that the saved file holds only library types (this script's classes do
    not exist on the host)."""
    steps = [
        (name, step.model_ if isinstance(step, BoostedTrees) else step)
        for name, step in pipeline.steps
    ]
    return Pipeline(steps)


def build_estimator(family: str, params: dict, classification: bool, seed: int):
    """The estimator of ``family`` with ``params``; missing parameters take defaults."""
    if family in ("random_forest", "extra_trees"):
        cls = {
            ("random_forest", True): RandomForestClassifier,
            ("random_forest", False): RandomForestRegressor,
            ("extra_trees", True): ExtraTreesClassifier,
            ("extra_trees", False): ExtraTreesRegressor,
        }[(family, classification)]
        return cls(
            n_estimators=_opt(params, "n_estimators", int, 200),
            max_depth=_opt(params, "max_depth", int, None),
            min_samples_leaf=_opt(params, "min_samples_leaf", int, 1),
            max_features=_opt(params, "max_features", float, "sqrt" if classification else 1.0),
            random_state=seed,
            n_jobs=1,
        )
    if family == "hist_gradient_boosting":
        cls = HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor
        return cls(
            max_iter=_opt(params, "max_iter", int, _opt(params, "n_estimators", int, 100)),
            learning_rate=_opt(params, "learning_rate", float, 0.1),
            max_depth=_opt(params, "max_depth", int, None),
            max_leaf_nodes=_opt(params, "max_leaf_nodes", int, 31),
            min_samples_leaf=_opt(params, "min_samples_leaf", int, 20),
            l2_regularization=_opt(params, "l2_regularization", float, 0.0),
            random_state=seed,
        )
    if family == "lightgbm":
        return BoostedTrees(
            classification=classification,
            params={k: v for k, v in params.items() if k in LIGHTGBM_PARAMS},
            seed=seed,
        )
    if family in ("linear", "logistic_regression", "minilm"):
        c = _opt(params, "C", float, 1.0)
        return LogisticRegression(C=c, max_iter=2000) if classification else Ridge(alpha=1.0 / c)
    if family == "knn":
        cls = KNeighborsClassifier if classification else KNeighborsRegressor
        return cls(
            n_neighbors=_opt(params, "n_neighbors", int, 5),
            weights=params.get("weights") or "uniform",
        )
    if family == "svm":
        c, gamma = _opt(params, "C", float, 1.0), _opt(params, "gamma", float, "scale")
        if classification:
            return SVC(C=c, gamma=gamma, probability=True, random_state=seed)
        return SVR(C=c, gamma=gamma)
    if family == "mlp":
        cls = MLPClassifier if classification else MLPRegressor
        return cls(
            hidden_layer_sizes=(_opt(params, "hidden_units", int, 100),),
            alpha=_opt(params, "alpha", float, 1e-4),
            learning_rate_init=_opt(params, "learning_rate_init", float, 1e-3),
            early_stopping=True,
            max_iter=300,
            random_state=seed,
        )
    raise ValueError(f"unknown model family {family!r}")


DENSE_ONLY = ("hist_gradient_boosting",)  # estimators that reject sparse input
# families whose text columns become frozen MiniLM-L6 sentence embeddings first
# (``text_embed.py`` and the encoder's files are handed in next to this script)
EMBED_FAMILIES = ("minilm",)
# Gradient boosting splits on categories itself and handles missing values: its
# categorical columns become codes (missing and unseen values stay missing) and its
# numeric columns keep their missing values.
NATIVE_CATEGORICAL = (HistGradientBoostingClassifier, HistGradientBoostingRegressor, BoostedTrees)
# Columns with more categories than this are split on their (sorted) codes as numbers
# by scikit-learn's gradient boosting: split on natively, many categories overfit
# (lending_club's 50 states: log-loss 0.222 against 0.208 one-hot).
MAX_NATIVE_CATEGORIES = 16
# LightGBM splits natively on columns of up to this many categories, considering at most
# LIGHTGBM_MAX_CAT_THRESHOLD of them per split, which keeps many categories from
# overfitting. Measured with the default configuration, mean test score over the race's
# three seeds (benchmarks/tabular.py splits): ames (Neighborhood: 27 categories) RMSE
# 23,010 against 24,636 with such columns as codes; lending_club (50 states) log-loss
# 0.1861 against 0.1860; hpc_data, attrition, diamonds and credit_data unchanged.
LIGHTGBM_MAX_NATIVE_CATEGORIES = 255
LIGHTGBM_MAX_CAT_THRESHOLD = 8
# Forests split on category codes as numbers when one-hot encoding would add more than
# MAX_ONE_HOT_COLUMNS columns: on ames (40 categorical columns, 279 one-hot columns) a
# default random forest's 5-fold CV took 117 s one-hot and 25 s on codes, with the same
# RMSE. Below that, one-hot columns give the forest's feature sampling more to choose
# from (attrition, 55 columns: ROC AUC 0.808 one-hot against 0.785 on codes).
MAX_ONE_HOT_COLUMNS = 64
ONE_HOT_MAX_CATEGORIES = 50  # rarer categories share one column
CATEGORY_CODES = (
    RandomForestClassifier,
    RandomForestRegressor,
    ExtraTreesClassifier,
    ExtraTreesRegressor,
)


def _codes(missing: float | int) -> OrdinalEncoder:
    """Category codes; missing and unseen values get ``missing``."""
    return OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=missing,
        encoded_missing_value=missing,
        dtype=np.float64,
    )


def build_pipeline(
    frame: pd.DataFrame,
    text_columns: list[str],
    estimator,
    dense: bool = False,
    cardinality: dict | None = None,
) -> Pipeline:
    """The preprocessing ``estimator`` needs, then ``estimator``; TF-IDF for text.

    Gradient boosting: numeric columns as they are (missing stays missing), categorical
    columns as codes, split on natively up to 16 categories (LightGBM: 255). Everything
    else: imputed, scaled numeric columns and one-hot categories, except that forests get
    category codes when one-hot encoding would be wide. ``dense`` forces a dense matrix (with a
    smaller TF-IDF vocabulary) for estimators that need one. ``cardinality`` gives the
    categories per column (else they are counted in ``frame``)."""
    counts = dict(cardinality or {})

    def nunique(column: str) -> int:
        return int(counts[column]) if column in counts else int(frame[column].nunique())

    text = [c for c in text_columns if c in frame.columns]
    numeric = [
        c for c in frame.columns if c not in text and pd.api.types.is_numeric_dtype(frame[c])
    ]
    categorical = [c for c in frame.columns if c not in text and c not in numeric]
    native = isinstance(estimator, NATIVE_CATEGORICAL)
    codes = isinstance(estimator, CATEGORY_CODES) and (
        sum(min(nunique(c), ONE_HOT_MAX_CATEGORIES) for c in categorical) > MAX_ONE_HOT_COLUMNS
    )
    parts = []
    if numeric:
        if native:  # as they are: the host hands over floats with NaN for missing
            num = "passthrough"
        else:
            num = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        parts.append(("num", num, numeric))
    if categorical and native:
        most = (
            LIGHTGBM_MAX_NATIVE_CATEGORIES
            if isinstance(estimator, BoostedTrees)
            else MAX_NATIVE_CATEGORIES
        )
        few = [c for c in categorical if nunique(c) <= most]
        many = [c for c in categorical if c not in few]
        if few:
            first = len(numeric)
            estimator.set_params(categorical_features=list(range(first, first + len(few))))
            parts.append(("cat", _codes(np.nan), few))
        if many:
            parts.append(("codes", _codes(np.nan), many))
    elif categorical and codes:
        parts.append(("codes", _codes(-1), categorical))
    elif categorical:
        one_hot = make_pipeline(
            SimpleImputer(strategy="most_frequent"),
            OneHotEncoder(
                handle_unknown="infrequent_if_exist", max_categories=ONE_HOT_MAX_CATEGORIES
            ),
        )
        parts.append(("cat", one_hot, categorical))
    for col in text:
        vocabulary = 2000 if dense else 20000
        parts.append(
            (f"text_{col}", TfidfVectorizer(max_features=vocabulary, sublinear_tf=True), col)
        )
    pre = ColumnTransformer(parts, sparse_threshold=0.0 if dense else 0.3)
    return Pipeline([("pre", pre), ("model", estimator)])


def main() -> None:
    config = json.loads(Path("config.json").read_text())
    train = pd.read_parquet("train.parquet")
    holdout = pd.read_parquet("holdout.parquet")
    target = config["target"]
    X, y = train.drop(columns=[target]), train[target]
    classification = config["problem_type"] != "regression"
    seed = int(config.get("seed", 0))
    estimator = build_estimator(config["family"], config.get("params", {}), classification, seed)
    dense = config["family"] in DENSE_ONLY
    features = config.get("features")
    builder, schema = None, X
    if features:
        import featurize  # handed in next to this script

        builder = featurize.FeatureBuilder(features.get("features", []), features.get("drop", []))
        schema = builder.fit(X).transform(X)  # the columns the model will see
    text_columns = [c for c in config.get("text_columns", []) if c in schema.columns]
    embed = None
    if config["family"] in EMBED_FAMILIES and text_columns:
        import text_embed  # handed in next to this script

        params = config.get("params", {})
        embed = text_embed.SentenceEmbedder(
            text_columns,
            "encoder" if Path("encoder").is_dir() else None,
            max_length=int(config.get("max_length", 128)),
            keep_text=bool(params.get("tfidf", False)),
        )
        schema = embed.fit(schema).transform(schema.head(2))  # the columns after it
        text_columns = text_columns if embed.keep_text else []
    pipeline = build_pipeline(
        schema,
        text_columns,
        estimator,
        dense=dense,
        cardinality=config.get("cardinality"),
    )
    if embed is not None:
        pipeline = Pipeline([("embed", embed), *pipeline.steps])
    if builder is not None:
        pipeline = Pipeline([("features", builder), *pipeline.steps])
    method = "predict_proba" if classification else "predict"
    t0 = time.perf_counter()
    oof = None
    if config.get("cv", True):
        folds = np.load("folds.npy", allow_pickle=False)
        skip = {int(k) for k in config.get("skip_folds", [])}
        oof = cross_predict(pipeline, X, y, folds, method, skip)
    cv_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipeline.fit(X, y)
    fit_seconds = time.perf_counter() - t0
    pred = getattr(pipeline, method)(holdout[X.columns])
    np.save("holdout_pred.npy", pred)
    if config.get("save_model"):
        import skops.io  # loads on the host without running code (no pickle)

        # without the engineered features and the embeddings: the host puts its own
        # copies of those steps back (their code and weights are not in a model file)
        kept = [(n, step) for n, step in pipeline.steps if n not in ("features", "embed")]
        skops.io.dump(portable(Pipeline(kept)), "model.skops")
    result = {"cv_seconds": cv_seconds, "fit_seconds": fit_seconds}
    if classification:
        classes = pipeline.classes_.tolist()
        Path("classes.json").write_text(json.dumps(classes))
    if oof is None:
        Path("result.json").write_text(json.dumps(result))
        return
    np.save("oof.npy", oof)
    done = ~np.isnan(oof).any(axis=1) if oof.ndim == 2 else ~np.isnan(oof)  # rows predicted
    oof, truth = oof[done], y.to_numpy(dtype=object if classification else float)[done]
    if classification:
        labels = np.asarray(classes, dtype=object)[oof.argmax(axis=1)]
        result["cv_accuracy"] = float(np.mean(labels == truth))
    else:
        result["cv_rmse"] = float(np.sqrt(np.mean((oof - truth) ** 2)))
    Path("result.json").write_text(json.dumps(result))
    print(f"cv done in {cv_seconds:.2f} s, refit in {fit_seconds:.2f} s")


if __name__ == "__main__":
    main()
