"""HPO benchmarks: Bayesmark problems, the optimisers, LLAMBO mode with a scripted
LLM, recording and replaying the LLM, the table benchmarks and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlpilot.agents.llambo import target_score
from mlpilot.errors import ConfigError
from mlpilot.evals.hpo_bench import (
    BAYESMARK_SPACES,
    GpOptimiser,
    LlamboOptimiser,
    OptunaOptimiser,
    bayesmark_problem,
    hpo_tables,
    make_optimiser,
    optimise,
    problem_names,
    run_hpo_bench,
    table_problem,
)
from mlpilot.llm import LLM
from mlpilot.llm.replay import ReplayMiss, recording_llm, replay_llm
from mlpilot.testing import ScriptedLLM


def test_bayesmark_spaces_follow_the_benchmark() -> None:
    svm = {p.name: (p.low, p.high, p.log) for p in BAYESMARK_SPACES["SVM"]}
    assert svm == {"C": (1.0, 1e3, True), "gamma": (1e-4, 1e-3, True), "tol": (1e-5, 1e-1, True)}
    ada = {p.name: (p.low, p.high, p.log) for p in BAYESMARK_SPACES["AdaBoost"]}
    assert ada == {"n_estimators": (10, 100, False), "learning_rate": (1e-4, 10.0, True)}
    assert len(problem_names("bayesmark")) == 25


def test_a_problem_scores_cv_and_generalisation_deterministically() -> None:
    problem = bayesmark_problem("iris", "SVM")
    config = {"C": 100.0, "gamma": 5e-4, "tol": 1e-3}
    first = problem.evaluate(config)
    assert first == problem.evaluate(config)
    cv, test = first
    assert 0.3 < cv <= 1.0 and 0.3 < test <= 1.0
    diabetes = bayesmark_problem("diabetes", "AdaBoost")
    assert not diabetes.greater_is_better
    mse, _ = diabetes.evaluate({"n_estimators": 50, "learning_rate": 0.1})
    assert 0.2 < mse < 1.5  # MSE of the standardised target


@pytest.mark.parametrize(
    "optimiser", [OptunaOptimiser("random"), OptunaOptimiser("tpe"), GpOptimiser()]
)
def test_each_optimiser_runs_initial_points_then_its_own(optimiser) -> None:
    problem = bayesmark_problem("iris", "DecisionTree")
    history = optimise(problem, optimiser, n_init=3, n_trials=3, seed=1)
    assert len(history) == 6
    for e in history:
        assert problem.model.validate(e.config) == e.config
    assert [e.source for e in history[:3]] == ["random"] * 3
    assert {e.source for e in history[3:]} == {optimiser.name}


def _reply(*configs: dict) -> str:
    return json.dumps({"configs": list(configs)})


A = {"C": 10.0, "gamma": 1e-4, "tol": 1e-3}
B = {"C": 100.0, "gamma": 5e-4, "tol": 1e-2}
C = {"C": 300.0, "gamma": 2e-4, "tol": 1e-3}
D = {"C": 30.0, "gamma": 8e-4, "tol": 1e-4}


def _script() -> list[str]:
    return [_reply(A, B, A), _reply(C, D), _reply(C, D), _reply(A)]


def test_llambo_mode_uses_the_llm_for_warm_start_and_candidates() -> None:
    problem = bayesmark_problem("iris", "SVM")
    fake = ScriptedLLM(_script())
    optimiser = LlamboOptimiser(LLM(fake), candidates=2)
    history = optimise(problem, optimiser, n_init=3, n_trials=5, seed=0)
    sources = [e.source for e in history]
    # the HPO agent's schedule: two distinct warm-start configurations (the repeat is
    # skipped), a random third; after every third evaluation two LLM candidates enter
    # the study, TPE proposes the rest, and candidates tried already leave it to TPE
    assert sources == [
        "llm-warmstart",
        "llm-warmstart",
        "random",
        "llm-sample",
        "llm-sample",
        "tpe",
        "tpe",
        "tpe",
    ]
    assert [history[0].config, history[1].config] == [A, B]
    assert [history[3].config, history[4].config] == [C, D]
    assert optimiser.stats.proposed == 7 and optimiser.stats.duplicates == 3
    assert fake.remaining == 1  # three requests: warm start, then at evaluations 3 and 6
    # TPE learnt from every evaluation, the LLM's included, with the same scores
    study = optimiser._study
    assert study is not None
    told = {json.dumps(t.params, sort_keys=True): t.value for t in study.trials}
    assert told == {json.dumps(e.config, sort_keys=True): e.score for e in history}
    # the answer's format has placeholders, not example values a small model would copy
    warm = fake.calls[0].messages[-1]["content"]
    assert '{"configs": [{"C": <number>, "gamma": <number>, "tol": <number>}, ... 3 ' in warm
    prompt = fake.calls[1].messages[-1]["content"]
    assert '"C": <number>' in prompt and "2 objects in all" in prompt
    assert "accuracy (5-fold cross-validation)" in prompt
    assert "C: float in [1, 1000], log scale" in prompt
    assert '{"C": 10.0, "gamma": 0.0001, "tol": 0.001}' in prompt  # the history as examples
    target = target_score([e.score for e in history[:3]], True, 0.1)  # s* beyond the best
    assert f"of {target:.4f}" in prompt


def test_llambo_every1_asks_the_llm_at_every_step() -> None:
    problem = bayesmark_problem("iris", "SVM")
    optimiser = make_optimiser("llambo-every1", LLM(ScriptedLLM(_script())))
    history = optimise(problem, optimiser, n_init=3, n_trials=3, seed=0)
    assert [e.source for e in history[3:]] == ["llm-sample", "llm-sample", "tpe"]
    for bad in ("llambo-every0", "llambo-everyx"):
        with pytest.raises(ConfigError, match="llambo-everyN"):
            make_optimiser(bad, LLM(ScriptedLLM([])))
    with pytest.raises(ConfigError, match="needs an LLM"):
        make_optimiser("llambo", None)


def test_a_recorded_llm_replays_the_same_run_without_the_model(tmp_path: Path) -> None:
    problem = bayesmark_problem("iris", "SVM")
    fake = ScriptedLLM(_script())
    recorded = recording_llm(fake, tmp_path / "rec")
    first = optimise(problem, LlamboOptimiser(recorded, candidates=2), n_init=3, n_trials=3, seed=0)
    replayed = optimise(
        problem,
        LlamboOptimiser(replay_llm(tmp_path / "rec"), candidates=2),
        n_init=3,
        n_trials=3,
        seed=0,
    )
    assert [e.config for e in replayed] == [e.config for e in first]
    assert [e.source for e in replayed] == [e.source for e in first]
    # another seed asks other questions: the replay says it has no answer
    with pytest.raises(ReplayMiss, match="no answer for this request"):
        optimise(
            problem,
            LlamboOptimiser(replay_llm(tmp_path / "rec"), candidates=2),
            n_init=3,
            n_trials=3,
            seed=1,
        )


def test_recording_llm_writes_its_manifest(tmp_path: Path) -> None:
    llm = recording_llm(ScriptedLLM([]), tmp_path / "rec")
    info = json.loads((tmp_path / "rec" / "model.json").read_text())
    assert info["model"] == llm.model
    with pytest.raises(Exception, match="not an LLM recording"):
        replay_llm(tmp_path / "elsewhere")


def test_table_benchmarks_run_through_the_same_optimisers() -> None:
    problem = table_problem("hpobench", "australian")
    history = optimise(problem, OptunaOptimiser("tpe"), n_init=5, n_trials=5, seed=0)
    assert len(history) == 10 and all(0 < e.score <= 1 for e in history)
    assert len(problem_names("tables")) == 15


def test_the_report_is_resumable_and_prints_llambo_reference_rows(tmp_path: Path) -> None:
    problems = ["iris/DecisionTree", "diabetes/DecisionTree"]
    rows = run_hpo_bench(
        problems,
        ["random", "tpe"],
        seeds=[0, 1],
        out=tmp_path,
        n_init=3,
        n_trials=2,
        log=lambda _: None,
    )
    assert len(rows) == 8
    again: list[str] = []
    rows = run_hpo_bench(
        problems,
        ["random", "tpe"],
        seeds=[0, 1],
        out=tmp_path,
        n_init=3,
        n_trials=2,
        log=again.append,
    )
    assert again == [] and len(rows) == 8  # nothing ran twice
    text = hpo_tables(rows)
    assert "| iris (accuracy, ↑) |" in text and "0.954 / 0.959" in text  # LLAMBO's iris
    assert "| diabetes (mean squared error, ↓) |" in text and "0.531 / 0.626" in text
    # per problem: the best score after 5 evaluations (the checkpoints beyond are blank)
    iris_tpe = next(
        line for line in text.splitlines() if line.startswith("| iris/DecisionTree | tpe")
    )
    best5 = np.mean(
        [
            max(r["scores"][:5])
            for r in rows
            if r["problem"] == "iris/DecisionTree" and r["optimiser"] == "tpe"
        ]
    )
    assert iris_tpe.split(" | ")[2] == f"{best5:.4g}" and "|  |  |  |" in iris_tpe
    assert "| random |" in text and "| tpe |" in text


def test_parallel_jobs_give_the_same_rows_and_keep_llm_runs_in_process(tmp_path: Path) -> None:
    problems = ["iris/DecisionTree", "wine/SVM"]
    common = dict(seeds=[0], n_init=3, n_trials=2, log=lambda _: None)
    serial = run_hpo_bench(problems, ["random", "tpe"], out=tmp_path / "a", **common)
    parallel = run_hpo_bench(problems, ["random", "tpe"], out=tmp_path / "b", jobs=2, **common)

    def key(r: dict) -> tuple:
        return r["problem"], r["optimiser"]

    assert [(key(r), r["scores"]) for r in sorted(serial, key=key)] == [
        (key(r), r["scores"]) for r in sorted(parallel, key=key)
    ]
    # an LLM optimiser cannot be sent to another process: it runs here, beside the pool
    llm = LLM(ScriptedLLM(_script()))
    rows = run_hpo_bench(
        ["iris/SVM"], ["tpe", "llambo"], out=tmp_path / "c", llm=llm, jobs=2, **common
    )
    assert sorted(r["optimiser"] for r in rows) == ["llambo", "tpe"]
    with pytest.raises(ConfigError, match="jobs must be at least 1"):
        run_hpo_bench(problems, ["tpe"], out=tmp_path / "d", jobs=0, **common)
