"""Who competes: mlpilot itself and the baselines, behind one interface.

A runner is given a :class:`PublicTask` (the task's metadata and the folder of its
public files: train.csv, test.csv, description.md, sample_submission.csv), a
working folder, a seed and a wall-clock budget, and writes a submission. It never
gets the grader's folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import optuna
import pandas as pd

from mlpilot.errors import ConfigError
from mlpilot.evals.tasks import ID, EvalTask
from mlpilot.sandbox import Sandbox
from mlpilot.task import _inspect_column
from mlpilot.tools.cv_job import DENSE_ONLY, build_estimator, build_pipeline

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass(frozen=True)
class PublicTask:
    """What a runner may see of a task."""

    task: EvalTask
    folder: Path

    def train(self) -> pd.DataFrame:
        return pd.read_csv(self.folder / "train.csv")

    def test(self) -> pd.DataFrame:
        return pd.read_csv(self.folder / "test.csv")

    def description(self) -> str:
        return (self.folder / "description.md").read_text()


@dataclass
class Outcome:
    """What a runner reports besides its submission."""

    submission: Path
    tokens: int = 0
    cost_usd: float = 0.0
    detail: str = ""


class Runner(Protocol):
    name: str

    def __call__(self, task: PublicTask, work: Path, seed: int, budget: float) -> Outcome: ...


def write_submission(task: EvalTask, test: pd.DataFrame, values: Any, path: Path) -> Path:
    frame = pd.DataFrame({ID: test[ID].to_numpy(), task.target: np.asarray(values)})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def submission_values(task: EvalTask, model: Any, test: pd.DataFrame) -> np.ndarray:
    """What the submission's target column holds, from a fitted estimator."""
    needs = task.scorer.needs
    if needs == "proba":
        classes = [str(c) for c in model.classes_]
        return np.asarray(model.predict_proba(test))[:, classes.index(str(task.positive))]
    return np.asarray(model.predict(test))


# -- mlpilot ----------------------------------------------------------------------


@dataclass
class MlpilotRunner:
    """The full mlpilot run (planner, HPO, ensemble, verifier) on the training file.

    Args:
        llm: as for :class:`mlpilot.Pilot` (a model string, None for the default, False
            for none).
        sandbox: the sandbox kind, or a sandbox to use (left open).
    """

    llm: Any = None
    sandbox: str | Sandbox = "local-warm"
    name: str = "mlpilot"

    def __call__(self, task: PublicTask, work: Path, seed: int, budget: float) -> Outcome:
        from mlpilot.api import Pilot

        train = task.train().drop(columns=[ID])
        result = Pilot(llm=self.llm, sandbox=self.sandbox, runs_dir=work / "runs").run(
            task.task.request(),
            train,
            target=task.task.target,
            metric=task.task.metric,
            time_budget=budget,
            seed=seed,
            run_dir=work / "run",
            description=task.description(),
        )
        if result.model is None:
            raise RuntimeError(f"the run ended without a verified model ({result.status})")
        test = task.test()
        values = submission_values(task.task, result.model, test)
        total = next((r for r in result.usage if r.get("role") == "total"), {})
        tokens = int(total.get("prompt_tokens", 0)) + int(total.get("completion_tokens", 0))
        return Outcome(
            write_submission(task.task, test, values, work / "submission.csv"),
            tokens=tokens,
            cost_usd=float(total.get("cost_usd", 0.0)),
            detail=f"cv {result.cv_score}",
        )


# -- baselines: one model family, defaults or tuned by mlpilot's HPO agent --------------


def features(train: pd.DataFrame, target: str) -> tuple[list[str], list[str]]:
    """(feature columns, text columns), leaving out the id and columns mlpilot would drop
    (constant, empty, ID-like)."""
    kept, text = [], []
    for col in train.columns:
        if col in (ID, target):
            continue
        reason, is_text = _inspect_column(train[col], col)
        if reason is None:
            kept.append(col)
            if is_text:
                text.append(col)
    return kept, text


def make_model(
    task: EvalTask, train: pd.DataFrame, family: str, params: dict[str, Any], seed: int
) -> Any:
    cols, text = features(train, task.target)
    classification = task.problem_type != "regression"
    estimator = build_estimator(family, params, classification, seed)
    return build_pipeline(train[cols], text, estimator, dense=family in DENSE_ONLY)


def fit_and_submit(
    task: EvalTask,
    train: pd.DataFrame,
    test: pd.DataFrame,
    family: str,
    params: dict[str, Any],
    seed: int,
    path: Path,
) -> Path:
    cols, _ = features(train, task.target)
    y = train[task.target]
    if task.problem_type != "regression":
        y = y.astype(str)
    model = make_model(task, train, family, params, seed).fit(train[cols], y)
    return write_submission(task, test, submission_values(task, model, test[cols]), path)


def search(
    task: EvalTask,
    train: pd.DataFrame,
    sampler: str,
    *,
    family: str = "hist_gradient_boosting",
    seed: int = 0,
    budget: float | None = None,
    max_trials: int = 10_000,
    sandbox: str | Sandbox = "local-warm",
) -> dict[str, Any]:
    """The best configuration of ``family`` that mlpilot's HPO agent finds with
    ``sampler`` ("tpe" or "random") and no LLM, within ``budget`` seconds or
    ``max_trials`` trials; the family's defaults if none finished.

    The search is the one a mlpilot run does, minus the LLM: the same agent, the
    same trial jobs in the same sandbox, the host's folds (5) on the same 80% of the
    training rows a run tunes on (the rest is the run's holdout, unused here).
    With no budget and one trial at a time it is fully determined by ``seed``.
    """
    from mlpilot.agents.hpo import HpoAgent, HpoSettings, trial_limits
    from mlpilot.agents.trials import TrialRunner
    from mlpilot.sandbox import make_sandbox
    from mlpilot.task import TaskSpec

    spec = TaskSpec.from_data(
        train.drop(columns=[ID]),
        target=task.target,
        metric=task.metric,
        problem_type=task.problem_type,
        seed=seed,
        name=task.name,
    )
    parallel = 1 if budget is None else HpoSettings.for_budget(budget, local_llm=False).parallel
    box = make_sandbox(sandbox, workers=parallel) if isinstance(sandbox, str) else sandbox
    try:
        settings = HpoSettings(defaults=False, sampler=sampler, seed=seed, parallel=parallel)
        limits = trial_limits(parallel, local_llm=False)
        agent = HpoAgent(TrialRunner(box, spec, limits=limits), None, settings=settings)
        deadline = None if budget is None else time.monotonic() + budget
        study = agent.optimize(family, n_trials=max_trials, deadline=deadline)
    finally:
        if isinstance(sandbox, str):
            box.close()
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return dict(study.best_params) if done else {}


@dataclass
class DefaultRunner:
    """One model family with scikit-learn's defaults."""

    family: str = "hist_gradient_boosting"
    name: str = "default-gbm"

    def __call__(self, task: PublicTask, work: Path, seed: int, budget: float) -> Outcome:
        path = fit_and_submit(
            task.task, task.train(), task.test(), self.family, {}, seed, work / "submission.csv"
        )
        return Outcome(path)


@dataclass
class SearchRunner:
    """mlpilot's HPO agent without its LLM (TPE or random search) on one model family
    within the budget; the best configuration refit on all training rows."""

    sampler: str = "tpe"
    family: str = "hist_gradient_boosting"
    max_trials: int = 10_000
    sandbox: str | Sandbox = "local-warm"
    name: str = "tpe-gbm"

    def __call__(self, task: PublicTask, work: Path, seed: int, budget: float) -> Outcome:
        train = task.train()
        # Leave time for the final refit: a tenth of the budget.
        best = search(
            task.task,
            train,
            self.sampler,
            family=self.family,
            seed=seed,
            budget=0.9 * budget,
            max_trials=self.max_trials,
            sandbox=self.sandbox,
        )
        path = fit_and_submit(
            task.task, train, task.test(), self.family, best, seed, work / "submission.csv"
        )
        return Outcome(path, detail=f"best {best}")


RUNNERS: dict[str, Callable[..., Runner]] = {
    "mlpilot": MlpilotRunner,
    "default-gbm": DefaultRunner,
    "tpe-gbm": lambda **kw: SearchRunner(sampler="tpe", name="tpe-gbm", **kw),
    "random-gbm": lambda **kw: SearchRunner(sampler="random", name="random-gbm", **kw),
}


def make_runner(name: str, **options: Any) -> Runner:
    """A runner by name; of ``options``, ``llm`` applies to mlpilot only and
    ``sandbox`` to mlpilot and the search baselines (where their trials run)."""
    if name not in RUNNERS:
        raise ConfigError(f"unknown runner {name!r}; known: {', '.join(RUNNERS)}")
    if name == "default-gbm":
        options = {}
    elif name != "mlpilot":
        options = {k: v for k, v in options.items() if k == "sandbox"}
    return RUNNERS[name](**options)
