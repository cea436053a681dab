"""Jobs built to fool the verifier (mlpilot.testing.adversarial), each caught by the
guard named in its test; removing that guard makes the test fail."""

from __future__ import annotations

import time

import numpy as np
import optuna
import pytest
from sklearn.datasets import load_breast_cancer

from mlpilot.agents import verifier
from mlpilot.agents.context import RunContext
from mlpilot.agents.graph import run_graph
from mlpilot.agents.hpo import HpoAgent, HpoSettings
from mlpilot.agents.rundir import RunDir, RunMeta
from mlpilot.agents.state import TrialRow
from mlpilot.agents.trials import CLAIM_MISMATCH, TrialRunner
from mlpilot.task import TaskSpec
from mlpilot.testing import adversarial


@pytest.fixture(scope="module")
def task() -> TaskSpec:
    frame = load_breast_cancer(as_frame=True).frame.sample(240, random_state=1)
    return TaskSpec.from_data(frame, target="target")


def test_a_job_that_claims_a_better_score_is_failed(box, task) -> None:
    # Guard: TrialRunner.run compares the job's own score with its predictions.
    honest = TrialRunner(box, task, folds=3).run("linear", {})
    liar = TrialRunner(box, task, folds=3, code=adversarial.LYING_CV_JOB).run("linear", {})
    assert honest.ok and honest.verified
    assert not liar.ok and liar.reason.startswith(CLAIM_MISMATCH)
    assert liar.cv_score is None and liar.oof is None  # nothing of it is used


def test_a_lying_trial_never_enters_the_study_as_a_result(box, task, tmp_path) -> None:
    # Guard: a failed outcome is told to Optuna as FAIL, so no leaderboard sees it.
    runner = TrialRunner(box, task, folds=3, code=adversarial.LYING_CV_JOB)
    agent = HpoAgent(runner, None, storage=f"sqlite:///{tmp_path}/o.db")
    study = agent.optimize("linear", n_trials=2)
    states = {t.state for t in study.trials}
    assert states == {optuna.trial.TrialState.FAIL}
    assert all(t.user_attrs["reason"].startswith(CLAIM_MISMATCH) for t in study.trials)


def test_the_claims_check_names_the_lying_trials() -> None:
    # Guard: verifier.check_claims reads the failure reasons.
    def row(number: int, score: float | None, reason: str) -> TrialRow:
        state = "COMPLETE" if score is not None else "FAIL"
        return TrialRow(
            f"linear-{number}", "linear", number, {}, "tpe", 0.1, reason, state, score, None, 0.0
        )

    rows = [row(0, 0.97, ""), row(1, None, f"{CLAIM_MISMATCH}: it claimed 1.0, x")]
    check = verifier.check_claims(rows)
    assert not check.ok and "linear-1" in check.detail and "excluded" in check.detail
    assert verifier.check_claims(rows[:1]).ok


@pytest.mark.parametrize("kind", adversarial.BAD_PREDICTIONS)
def test_predictions_that_cannot_be_a_models_are_refused(box, task, kind) -> None:
    # Guard: trials.check_predictions (row count, finite numbers, classes, probabilities).
    runner = TrialRunner(box, task, folds=3, code=adversarial.bad_predictions_cv_job(kind))
    outcome = runner.run("linear", {})
    assert not outcome.ok
    expected = {
        "nan": "not finite numbers",
        "inf": "not finite numbers",
        "short": "expected 192 out-of-fold predictions, got 189",
        "wrong_classes": "are for classes ('spam', 'eggs')",
        "not_probabilities": "outside [0, 1]",
        "strings": "not finite numbers",
    }[kind]
    assert expected in outcome.reason, outcome.reason


def test_in_sample_out_of_fold_predictions_are_caught_by_the_fold_rerun(box, task) -> None:
    # Guard: TrialRunner.refold (one job per fold, each seeing only its fold's labels)
    # and verifier.judge_rerun.
    cheat = TrialRunner(box, task, folds=3, code=adversarial.in_sample_cv_job())
    outcome = cheat.run("random_forest", {"n_estimators": 50})
    assert outcome.ok and outcome.verified  # its claim is consistent with its predictions
    assert outcome.cv_score > 0.999  # in-sample: a forest recalls its training rows
    rerun = cheat.refold("random_forest", {"n_estimators": 50})
    assert rerun.ok and rerun.cv_score < outcome.cv_score - 0.005
    verdict = verifier.judge_rerun("random_forest-0", outcome.cv_score, rerun)
    assert not verdict.ok and "saw their own labels" in verdict.detail


@pytest.mark.parametrize("family", ["linear", "hist_gradient_boosting", "random_forest", "knn"])
def test_an_honest_trial_passes_the_fold_rerun(box, task, family) -> None:
    runner = TrialRunner(box, task, folds=3)
    outcome = runner.run(family, {})
    rerun = runner.refold(family, {})
    assert verifier.judge_rerun(family, outcome.cv_score, rerun).ok
    np.testing.assert_allclose(rerun.oof, outcome.oof, atol=1e-6)


def test_a_model_file_with_a_type_of_the_jobs_own_is_refused(box, task, capfd) -> None:
    # Guard: model_io.loads refuses types outside the trusted list (no pickle).
    runner = TrialRunner(box, task, folds=3, code=adversarial.UNTRUSTED_MODEL_JOB)
    refit = runner.refit("linear", {})
    assert not refit.ok and "outside the trusted list" in refit.reason
    assert "code from the job ran on the host" not in capfd.readouterr().out


def test_a_model_file_that_is_a_link_to_a_host_file_is_refused(box, task, tmp_path) -> None:
    # Guard: artifacts are taken with lstat; links are refused, never followed.
    secret = tmp_path / "id_rsa"
    secret.write_text("PRIVATE KEY")
    runner = TrialRunner(box, task, folds=3, code=adversarial.linked_model_job(str(secret)))
    refit = runner.refit("linear", {})
    assert not refit.ok and "symbolic link" in refit.reason


def run_with_job(task, folder, request: str, budget: float, trials: int, code: str) -> dict:
    """A whole run (no LLM, one trial at a time) whose trial jobs are ``code``."""
    from mlpilot.sandbox import LocalSandbox

    run = RunDir(folder)
    meta = RunMeta(request=request, data="-", target="target", metric="roc_auc",
                   time_budget=budget, max_trials=trials)  # fmt: skip
    run.create(meta)
    with LocalSandbox(warm=True) as sandbox:
        ctx = RunContext(
            task=task,
            llm=None,
            sandbox=sandbox,
            run=run,
            request=request,
            time_budget_s=budget,
            max_trials=trials,
            started=time.monotonic(),
            hpo_settings=HpoSettings(parallel=1, warmstart=0),
            trial_code=code,
        )
        return run_graph(ctx)


def test_a_run_excludes_the_cheating_family_and_delivers_an_honest_model(task, tmp_path) -> None:
    """End to end: forests cheat with in-sample predictions (they would win CV), the
    fold-by-fold re-run catches them, and the final model is an honest one."""
    cheat = adversarial.in_sample_cv_job(("random_forest", "extra_trees"))
    state = run_with_job(task, tmp_path, "tune a model: random forest and linear", 40, 8, cheat)
    checks = {c.name: c for c in state["checks"]}
    assert not checks["fold-by-fold CV"].ok
    assert "saw their own labels" in checks["fold-by-fold CV"].detail
    final = state["final"]
    assert final.ok
    assert "random_forest" not in final.description
    assert "extra_trees" not in final.description
    assert not any(k.startswith(("random_forest", "extra_trees")) for k in state["reruns"])
    report = (tmp_path / "report.md").read_text()
    assert "saw their own labels" in report


def test_a_refit_that_echoes_the_holdouts_labels_is_not_delivered(task, tmp_path) -> None:
    """Guard: verifier.same_predictions, value by value. Handed every row for the final
    refit, the job sends the holdout's labels as its predictions; the model it saved
    does not make them, so the verified model (training rows only) is delivered."""
    from mlpilot.tools import model_io

    run = RunDir(tmp_path)
    state = run_with_job(
        task, tmp_path, "tune a model: linear", 30, 4, adversarial.HOLDOUT_ECHO_JOB
    )
    checks = {c.name: c for c in state["checks"]}
    refit = checks["refit on all rows"]
    assert refit.severity == "warning" and "does not make the predictions" in refit.detail
    final = state["final"]
    assert final.ok and final.refit == "train" and final.rows == len(task.train)
    assert not run.train_model_path.exists()
    delivered = model_io.load(run.model_path)
    scored = verifier.verify_holdout(task, delivered, final.holdout_score)
    assert scored.ok  # the delivered model is the one the holdout scored


@pytest.mark.parametrize("as_integers", [False, True])
def test_a_job_that_fills_the_fold_it_skipped_gains_nothing(box, task, as_integers) -> None:
    # Guard: TrialRunner.run puts the first fold's own predictions (from a job that never
    # saw that fold's labels) over whatever the job wrote in those rows, of any number type.
    honest = TrialRunner(box, task, folds=3)
    code = adversarial.skipped_fold_cheat_job(as_integers)
    cheat = TrialRunner(box, task, folds=3, code=code)
    first = honest.first_fold("knn", {"n_neighbors": 1, "weights": "uniform"})
    outcome = cheat.run("knn", {"n_neighbors": 1, "weights": "uniform"}, first=first)
    whole = honest.run("knn", {"n_neighbors": 1, "weights": "uniform"})
    assert outcome.ok and whole.ok and whole.cv_score < 0.99, outcome.reason
    np.testing.assert_allclose(outcome.oof[honest.fold_of_row == 0], first.pred)
    assert outcome.cv_score == pytest.approx(whole.cv_score)


class Spy(TrialRunner):
    """Records each job's options (the jobs themselves run as usual)."""

    def submit(self, family, params, **options):  # type: ignore[override]
        self.options = [*getattr(self, "options", []), options]
        return super().submit(family, params, **options)


def test_a_trial_after_its_first_fold_does_not_fit_that_fold_again(box, task) -> None:
    # Guard: the trial's job is told to skip the fold that already ran (which the job
    # then leaves out: test_cv_job_skips_the_folds_it_is_told_to_skip).
    runner = Spy(box, task, folds=3)
    first = runner.first_fold("linear", {"C": 1.0})
    runner.run("linear", {"C": 1.0}, first=first)
    assert runner.options[0]["cv"] is False
    assert runner.options[1].get("skip_folds") == [0]
