"""The reference leaderboards that medals are measured against.

Each task's pool is the test scores of these baseline runs, all on the task's fixed
split and fully determined by the seeds (no time budgets, so any machine gets the
same pool):

* ``default-gbm``, ``default-rf``, ``default-linear``: scikit-learn's
  HistGradientBoosting, random forest and logistic/ridge regression with their
  default settings;
* ``random-<family>-s<k>`` for k = 0..SEEDS-1: random search of TRIALS
  configurations of the task's reference family (HistGradientBoosting; for text
  tasks logistic/ridge regression on TF-IDF) in mlpilot's search space, by
  mlpilot's own HPO agent (no LLM, one trial at a time, the run's 5 host folds; see
  :func:`mlpilot.evals.runners.search`), the best refit on all training rows.

With ``peers`` (``mlpilot eval reference --peers autogluon,flaml``), the pool also
holds ``<peer>-<budget>s``: AutoGluon (``medium_quality``) and FLAML fitted on the
training file within a wall-clock budget (default 60 s, two cores) in environments
of their own (:mod:`mlpilot.evals.peers`), so a medal means beating real AutoML.
Those runs depend on the machine's speed; the file records the budget and the peers'
releases.

``dummy`` (the constant predictor of the training labels) anchors the normalised
score and is not in the pool. The shipped file ``reference.json`` is made by
``mlpilot eval reference`` and records the library versions it was made with.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpilot.evals.grader import grade, score
from mlpilot.evals.runners import fit_and_submit, search
from mlpilot.evals.tasks import EvalTask, PreparedTask, constant_prediction

SEEDS = 3
TRIALS = 8
DEFAULTS = {
    "default-gbm": "hist_gradient_boosting",
    "default-rf": "random_forest",
    "default-linear": "linear",
}
SHIPPED = "reference.json"
PEER_BUDGET = 60.0  # seconds per peer run


def load_reference(path: Path | None = None) -> dict[str, Any]:
    """The reference leaderboards: ``path``, or the file that ships with mlpilot."""
    if path is not None:
        return json.loads(path.read_text()) if path.exists() else {}
    text = resources.files("mlpilot.evals").joinpath(SHIPPED)
    return json.loads(text.read_text()) if text.is_file() else {}


def dummy_values(task: EvalTask, train: pd.DataFrame, n: int) -> np.ndarray:
    value = constant_prediction(task, train)
    return np.full(n, value, dtype=object if isinstance(value, str) else float)


def peer_values(
    task: EvalTask, train: pd.DataFrame, test: pd.DataFrame, peer: str, budget: float, work: Path
) -> np.ndarray:
    """A peer's submission values for ``test``'s rows (see :mod:`mlpilot.evals.peers`)."""
    from mlpilot.evals import peers
    from mlpilot.evals.tasks import ID

    drop = [c for c in (ID,) if c in train.columns]
    pred = peers.predict(
        peer,
        train.drop(columns=drop),
        test.drop(columns=[c for c in (ID,) if c in test.columns]),
        target=task.target,
        problem=task.problem_type,
        metric=task.metric,
        budget=budget,
        work=work,
    )
    if task.problem_type == "regression":
        return pred["prediction"].to_numpy(float)
    if task.scorer.needs == "proba":
        return pred[str(task.positive)].to_numpy(float)
    return np.asarray(pred.columns)[pred.to_numpy(float).argmax(axis=1)]


def add_peers(
    prepared: PreparedTask,
    entry: dict[str, Any],
    peers: Sequence[str],
    budget: float,
    log: Callable[[str], None] = print,
) -> None:
    """Adds the peers' runs that ``entry`` (one task's pool) lacks."""
    task = prepared.task
    train = pd.read_csv(prepared.train_csv)
    test = pd.read_csv(prepared.test_csv)
    answers = prepared.answers()
    for peer in peers:
        name = f"{peer}-{budget:g}s"
        if name in entry["pool"]:
            continue
        started = time.perf_counter()
        work = prepared.private / "reference" / name
        values = peer_values(task, train, test, peer, budget, work)
        from mlpilot.evals.runners import write_submission

        path = write_submission(task, test, values, work / "submission.csv")
        result = grade(task, path, answers, None)
        if result.score is None:
            raise RuntimeError(f"{name} made an invalid submission on {task.name}: {result.error}")
        entry["pool"][name] = result.score
        log(f"  {task.name}: {name} {result.score:.4f} in {time.perf_counter() - started:.0f} s")


def build_task_reference(
    prepared: PreparedTask, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """The pool of one task (see the module's docstring)."""
    task = prepared.task
    train = pd.read_csv(prepared.train_csv)
    test = pd.read_csv(prepared.test_csv)
    answers = prepared.answers()
    work = prepared.private / "reference"
    pool: dict[str, float] = {}
    started = time.perf_counter()

    def graded(path: Path) -> float:
        result = grade(task, path, answers, None)
        if result.score is None:
            raise RuntimeError(
                f"a reference run of {task.name} made an invalid submission: {result.error}"
            )
        return result.score

    for name, family in DEFAULTS.items():
        pool[name] = graded(fit_and_submit(task, train, test, family, {}, 0, work / f"{name}.csv"))
    family = task.reference_family
    short = "gbm" if family == "hist_gradient_boosting" else family
    for seed in range(SEEDS):
        best = search(task, train, "random", family=family, seed=seed, max_trials=TRIALS)
        name = f"random-{short}-s{seed}"
        path = fit_and_submit(task, train, test, family, best, seed, work / f"{name}.csv")
        pool[name] = graded(path)
    dummy = score(task, dummy_values(task, train, len(answers)), answers)
    log(f"  {task.name}: {len(pool)} runs in {time.perf_counter() - started:.0f} s")
    return {"metric": task.metric, "dummy": dummy, "pool": pool}


def build_reference(
    prepared: list[PreparedTask],
    out: Path,
    log: Callable[[str], None] = print,
    *,
    peers: Sequence[str] = (),
    peer_budget: float = PEER_BUDGET,
) -> dict[str, Any]:
    """Builds (or extends: tasks and runs already in ``out`` are kept) the reference
    file; ``peers`` adds AutoGluon's and FLAML's runs (see the module's docstring)."""
    import sklearn

    from mlpilot.evals import peers as peer_envs

    reference = load_reference(out)
    for p in prepared:
        if p.task.name not in reference:
            reference[p.task.name] = build_task_reference(p, log)
        if peers:
            add_peers(p, reference[p.task.name], peers, peer_budget, log)
        made: dict[str, Any] = {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "seeds": SEEDS,
            "trials": TRIALS,
        }
        if peers:
            before = reference.get("_made_with", {}).get("peers", {})
            made["peers"] = {**before, **{k: peer_envs.REQUIREMENTS[k] for k in peers}}
            made["peer_budget_s"] = peer_budget
            made["peer_machine"] = f"{os.cpu_count()} cores"
        reference["_made_with"] = {**reference.get("_made_with", {}), **made}
        out.write_text(json.dumps(reference, indent=1, sort_keys=True) + "\n")
    return reference
