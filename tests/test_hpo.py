"""LLAMBO-style HPO on Optuna, with the scripted LLM and real sandboxed trials."""

from __future__ import annotations

import itertools
import json

import optuna
import pytest
from sklearn.datasets import load_breast_cancer

from mlpilot.agents.hpo import (
    LOCAL_LLM_CUTOFF_S,
    SOURCE_ATTR,
    HpoAgent,
    HpoSettings,
    trial_cores,
)
from mlpilot.agents.trials import TrialOutcome, TrialRunner
from mlpilot.llm import LLM, Budget
from mlpilot.sandbox import Limits
from mlpilot.task import TaskSpec
from mlpilot.testing import ScriptedLLM, UnscriptedCall
from mlpilot.tools.search_spaces import DEFAULTS


@pytest.fixture(scope="module")
def task() -> TaskSpec:
    frame = load_breast_cancer(as_frame=True).frame.sample(240, random_state=0)
    return TaskSpec.from_data(frame, target="target", name="cancer")


def knn_reply(*configs: tuple[int, str]) -> str:
    return json.dumps({"configs": [{"n_neighbors": n, "weights": w} for n, w in configs]})


def sources(study: optuna.Study) -> list[str]:
    return [t.user_attrs.get(SOURCE_ATTR) for t in study.trials]


def test_without_llm_it_is_plain_tpe(box, task, tmp_path) -> None:
    agent = HpoAgent(TrialRunner(box, task, folds=3), None, storage=f"sqlite:///{tmp_path}/o.db")
    study = agent.optimize("knn", n_trials=6)
    assert len(study.trials) == 6
    # The family's cheap default configuration first, then TPE.
    assert sources(study) == ["default"] + ["tpe"] * 5
    assert study.trials[0].params == DEFAULTS["knn"]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.best_value > 0.9


def test_warm_start_configs_are_validated_deduplicated_and_evaluated(box, task, tmp_path) -> None:
    fake = ScriptedLLM([knn_reply((3, "uniform"), (15, "distance"), (3, "uniform"))])
    agent = HpoAgent(
        TrialRunner(box, task, folds=3),
        LLM(fake),
        storage=f"sqlite:///{tmp_path}/o.db",
        settings=HpoSettings(warmstart=3, sample_every=1000, defaults=False),
    )
    study = agent.optimize("knn", n_trials=6)
    warm = [t for t in study.trials if t.user_attrs.get(SOURCE_ATTR) == "llm-warmstart"]
    assert sorted((t.params["n_neighbors"], t.params["weights"]) for t in warm) == [
        (3, "uniform"),
        (15, "distance"),
    ]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in warm)
    stats = agent.stats["knn"]
    assert (stats.proposed, stats.enqueued, stats.duplicates) == (3, 2, 1)
    prompt = fake.calls[0].messages[-1]["content"]
    assert f"{len(task.train)} training rows" in prompt
    assert "n_neighbors: int in [1, 50], log scale" in prompt
    assert fake.calls[0].params["response_format"]["type"] == "json_schema"


def test_candidate_sampling_sees_the_history_and_a_target_beyond_the_best(
    box, task, tmp_path
) -> None:
    fake = ScriptedLLM([knn_reply((7, "distance")), knn_reply((21, "uniform"))])
    agent = HpoAgent(
        TrialRunner(box, task, folds=3),
        LLM(fake),
        storage=f"sqlite:///{tmp_path}/o.db",
        settings=HpoSettings(
            warmstart=0, sample_every=3, sample_n=1, min_history=3, defaults=False
        ),
    )
    study = agent.optimize("knn", n_trials=6)
    assert len(fake.calls) == 1  # one sampling request (the second reply stays unused)
    prompt = fake.calls[0].messages[-1]["content"]
    assert prompt.count("->") >= 3  # the trials so far, as examples
    done = [t.value for t in study.trials[:3]]
    best, worst = max(done), min(done)
    assert f"{best + 0.1 * (best - worst):.4f}" in prompt
    sampled = [t for t in study.trials if t.user_attrs.get(SOURCE_ATTR) == "llm-sample"]
    assert [t.params for t in sampled] == [{"n_neighbors": 7, "weights": "distance"}]


def test_out_of_range_proposals_are_dropped_one_by_one_without_a_reask(box, task, tmp_path) -> None:
    answer = '{"configs": [{"n_neighbors": 500, "weights": "uniform"}, {"n_neighbors": 9, "weights": "uniform"}]}'
    fake = ScriptedLLM([answer])
    agent = HpoAgent(
        TrialRunner(box, task, folds=3),
        LLM(fake),
        storage=f"sqlite:///{tmp_path}/o.db",
        settings=HpoSettings(warmstart=2, sample_every=1000, defaults=False),
    )
    study = agent.optimize("knn", n_trials=3)
    assert len(fake.calls) == 1
    stats = agent.stats["knn"]
    assert (stats.proposed, stats.invalid, stats.enqueued) == (2, 1, 1)
    warm = [t.params for t in study.trials if t.user_attrs.get(SOURCE_ATTR) == "llm-warmstart"]
    assert warm == [{"n_neighbors": 9, "weights": "uniform"}]
    schema = fake.calls[0].params["response_format"]["json_schema"]["schema"]
    dumped = json.dumps(schema)
    assert '"minimum": 1' in dumped and '"maximum": 50' in dumped  # ranges as hints


def test_malformed_llm_output_is_reasked_then_dropped_and_search_goes_on(
    box, task, tmp_path
) -> None:
    wrong_type = '{"configs": [{"n_neighbors": "many", "weights": "uniform"}]}'
    fake = ScriptedLLM([wrong_type, "not json at all", '{"configs": []}'])
    agent = HpoAgent(
        TrialRunner(box, task, folds=3),
        LLM(fake),
        storage=f"sqlite:///{tmp_path}/o.db",
        settings=HpoSettings(warmstart=2, sample_every=1000),
    )
    study = agent.optimize("knn", n_trials=4)
    assert len(fake.calls) == 3  # first answer + two re-asks
    assert "Please fix your mistakes" in fake.calls[1].messages[-1]["content"]
    assert len(agent.stats["knn"].llm_errors) == 1
    assert "StructuredOutputError" in agent.stats["knn"].llm_errors[0]
    assert set(sources(study)) == {"default", "tpe"} and len(study.trials) == 4


def test_llm_over_budget_falls_back_to_tpe(box, task, tmp_path) -> None:
    fake = ScriptedLLM([])  # would fail loudly if called
    agent = HpoAgent(
        TrialRunner(box, task, folds=3),
        LLM(fake, budget=Budget(max_tokens=0)),
        storage=f"sqlite:///{tmp_path}/o.db",
    )
    study = agent.optimize("knn", n_trials=5)
    assert fake.calls == []
    assert "BudgetExceeded" in agent.stats["knn"].llm_errors[0]
    assert len(study.trials) == 5


def test_an_unscripted_llm_call_fails_the_run(box, task, tmp_path) -> None:
    agent = HpoAgent(
        TrialRunner(box, task, folds=3), LLM(ScriptedLLM([])), storage=f"sqlite:///{tmp_path}/o.db"
    )
    with pytest.raises(UnscriptedCall):
        agent.optimize("knn", n_trials=5)


class CrashOnce(TrialRunner):
    """Runs real trials, but sends an invalid value to the second one so it crashes."""

    def run(self, family, params, *, timeout_s=None) -> TrialOutcome:
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 2:
            params = {**params, "n_neighbors": -1}
        return super().run(family, params, timeout_s=timeout_s)


def test_crashing_and_timed_out_trials_are_recorded_as_failed(box, task, tmp_path) -> None:
    agent = HpoAgent(CrashOnce(box, task, folds=3), None, storage=f"sqlite:///{tmp_path}/o.db")
    study = agent.optimize("knn", n_trials=4)
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and "exited with code 1" in failed[0].user_attrs["reason"]
    assert len(study.trials) == 4

    slow = HpoAgent(
        TrialRunner(box, task, limits=Limits(timeout_s=0.2)),
        None,
        storage=f"sqlite:///{tmp_path}/slow.db",
    )
    study = slow.optimize("random_forest", n_trials=2)
    assert all(t.state == optuna.trial.TrialState.FAIL for t in study.trials)
    assert all(t.user_attrs["timed_out"] for t in study.trials)


class SlowForest(TrialRunner):
    """Real trials; the forest's get a time limit too short to finish."""

    def submit(self, family, params, *, timeout_s=None, **options):
        if family != "random_forest":
            return super().submit(family, params, timeout_s=timeout_s, **options)
        usual, self.limits = self.limits, Limits(timeout_s=0.2)
        try:
            return super().submit(family, params, **options)
        finally:
            self.limits = usual


class CountsBetweenTrials(TrialRunner):
    """Real trials; notes how many jobs count as running just before each one starts."""

    seen: list[int]

    def run(self, family, params, *, timeout_s=None) -> TrialOutcome:
        from mlpilot.sandbox.base import running_jobs

        self.seen = [*getattr(self, "seen", []), running_jobs()]
        return super().run(family, params, timeout_s=timeout_s)


def test_the_search_holds_its_cores_between_trials(box, task, tmp_path) -> None:
    # A local LLM reads its prompt with every core only while no job runs: between two
    # trials the search must still count as running, or an answer asked in that moment
    # takes both cores for its whole length and the next trial waits on it.
    from mlpilot.sandbox.base import running_jobs

    runner = CountsBetweenTrials(box, task, folds=3)
    agent = HpoAgent(runner, None, storage=f"sqlite:///{tmp_path}/o.db")
    agent.optimize_all(["knn", "linear"], n_trials=2)
    assert len(runner.seen) == 4
    assert min(runner.seen) >= 1
    assert running_jobs() == 0  # and gives them back when it ends


def test_a_family_whose_default_times_out_gets_no_more_trials(box, task, tmp_path) -> None:
    agent = HpoAgent(SlowForest(box, task, folds=3), None, storage=f"sqlite:///{tmp_path}/o.db")
    studies = agent.optimize_all(["random_forest", "knn"], n_trials=4)
    forest = studies["random_forest"].trials
    assert len(forest) == 1 and forest[0].user_attrs["timed_out"]
    assert "default configuration timed out" in agent.stopped["random_forest"]
    assert len(studies["knn"].trials) == 4  # the time went to the family that finishes


def test_resume_keeps_finished_trials_and_fails_interrupted_ones(box, task, tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/o.db"
    first = HpoAgent(TrialRunner(box, task, folds=3), None, storage=url)
    study = first.optimize("knn", n_trials=3)
    before = [(t.number, t.params, t.value) for t in study.trials]
    study.ask()  # a trial left RUNNING, as by a killed process
    again = HpoAgent(TrialRunner(box, task, folds=3), None, storage=url)
    resumed = again.optimize("knn", n_trials=6)
    after = resumed.trials
    assert [(t.number, t.params, t.value) for t in after[:3]] == before
    assert after[3].state == optuna.trial.TrialState.FAIL
    assert after[3].user_attrs["reason"].startswith("interrupted")
    assert len(after) == 6


def test_predictions_of_finished_trials_are_saved(box, task, tmp_path) -> None:
    from mlpilot.agents.rundir import RunDir

    run = RunDir(tmp_path)
    agent = HpoAgent(TrialRunner(box, task, folds=3), None, storage=run.storage_url, run_dir=run)
    study = agent.optimize("knn", n_trials=2)
    for t in study.trials:
        saved = run.load_predictions(f"knn-{t.number}")
        assert saved is not None
        oof, holdout, classes = saved
        assert oof.shape == (len(task.train), 2)
        assert len(holdout) == len(task.holdout.features)
        assert classes == [0, 1]


def test_deadline_stops_the_search(box, task, tmp_path) -> None:
    import time

    agent = HpoAgent(TrialRunner(box, task, folds=3), None, storage=f"sqlite:///{tmp_path}/o.db")
    t0 = time.monotonic()
    agent.optimize("knn", n_trials=1000, deadline=time.monotonic() + 4)
    assert time.monotonic() - t0 < 6


def test_parallel_trials_run_side_by_side(task, tmp_path) -> None:
    from mlpilot.sandbox import LocalSandbox

    with LocalSandbox(warm=True, workers=2) as two:
        agent = HpoAgent(
            TrialRunner(two, task, folds=3),
            None,
            storage=f"sqlite:///{tmp_path}/o.db",
            settings=HpoSettings(parallel=2),
        )
        studies = agent.optimize_all(["knn", "linear"], n_trials=4)
    trials = [t for st in studies.values() for t in st.trials]
    assert len(trials) == 8
    failed = [
        t.user_attrs.get("reason") for t in trials if t.state != optuna.trial.TrialState.COMPLETE
    ]
    assert not failed
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    overlaps = sum(1 for (_, end), (start, _) in itertools.pairwise(spans) if start < end)
    assert overlaps >= 2, "trials ran one after another"


def test_for_budget_leaves_the_llm_its_cores() -> None:
    import os

    from mlpilot.llm.embedded import default_threads

    cores = os.cpu_count() or 1
    assert HpoSettings.for_budget(60, local_llm=False).parallel == max(1, cores // 2)
    assert HpoSettings.for_budget(60).parallel == max(1, (cores - default_threads()) // 2)
    assert HpoSettings.for_budget(60).warmstart == 2 and HpoSettings.for_budget(600).warmstart == 3
    remote = [HpoSettings.for_budget(b, local_llm=False).warmstart for b in (60, 600)]
    assert remote == [3, 5]
    assert HpoSettings.for_budget(120, local_llm=False).llm_cutoff_s == 15.0
    assert HpoSettings.for_budget(120).llm_cutoff_s == LOCAL_LLM_CUTOFF_S == 40.0


def test_only_an_llm_on_this_machine_keeps_cores_from_trials() -> None:
    import os

    from mlpilot.llm.embedded import default_threads
    from mlpilot.llm.litellm_client import LiteLLMClient

    cores = os.cpu_count() or 1
    assert trial_cores(local_llm=False) == cores
    assert trial_cores(local_llm=True) == max(1, cores - default_threads())
    assert not LLM(LiteLLMClient("openai/gpt-4o-mini")).runs_locally
    assert LLM(LiteLLMClient("openai/qwen", api_base="http://127.0.0.1:8000/v1")).runs_locally
    assert LLM(LiteLLMClient("embedded/qwen2.5-coder-0.5b")).runs_locally
    assert not LLM(ScriptedLLM([])).runs_locally


def test_a_local_llms_warm_start_is_awaited_before_the_first_trial(box, task, tmp_path) -> None:
    """With ``upfront_s``, no trial competes with the LLM for the cores while it answers
    the warm start; without it, trials start at once."""
    import datetime
    import time

    for upfront in (5.0, 0.0):
        answered: list[datetime.datetime] = []

        def slow(messages, params, answered=answered, upfront=upfront) -> str:
            time.sleep(1.5)
            answered.append(datetime.datetime.now())
            reply = knn_reply((7, "distance"), (25, "uniform"))
            return json.dumps({"knn": json.loads(reply)["configs"]}) if upfront else reply

        settings = HpoSettings(warmstart=2, sample_every=10**6, upfront_s=upfront)
        agent = HpoAgent(
            TrialRunner(box, task, folds=3),
            LLM(ScriptedLLM([slow])),
            storage=f"sqlite:///{tmp_path}/o-{upfront}.db",
            settings=settings,
        )
        study = agent.optimize("knn", n_trials=3)
        first = min(t.datetime_start for t in study.trials if t.datetime_start)
        if upfront:
            assert sources(study) == ["default", "llm-warmstart", "llm-warmstart"]
            assert first >= answered[0] and agent.upfront_waited_s >= 1.0
        else:
            agent._llm_thread.join()  # the answer comes after the search began
            assert first < answered[0] and agent.upfront_waited_s == 0.0


def awaiting_agent(box, task, tmp_path, fake: ScriptedLLM) -> HpoAgent:
    """An agent that awaits its LLM's warm starts for up to 8 s, as for a local model."""
    settings = HpoSettings(warmstart=2, sample_every=10**6, upfront_s=8.0, defaults=False)
    return HpoAgent(
        TrialRunner(box, task, folds=3),
        LLM(fake),
        storage=f"sqlite:///{tmp_path}/o.db",
        settings=settings,
    )


def test_the_upfront_warm_starts_of_all_families_are_one_request(box, task, tmp_path) -> None:
    """A local LLM answers every family's warm start in one request before the first
    trial, and that request stops when the wait ends: it never generates beside a
    trial."""
    asked: list[dict] = []

    def both(messages, params) -> str:
        from mlpilot.llm import embedded

        asked.append({**params, "alone": embedded._alone})
        prompt = messages[-1]["content"]
        assert "Model: knn" in prompt and "Model: linear" in prompt
        return json.dumps(
            {
                "knn": [{"n_neighbors": 9, "weights": "uniform"}],
                "linear": [{"C": 0.05}, {"C": 5e4}],  # the second is out of range
            }
        )

    fake = ScriptedLLM([both])  # a second call would fail loudly
    agent = awaiting_agent(box, task, tmp_path, fake)
    studies = agent.optimize_all(["knn", "linear"], n_trials=2)
    assert len(fake.calls) == 1 and 0 < asked[0]["timeout"] <= 8.0
    assert asked[0]["alone"] == 1  # generated with every core (no trial runs meanwhile)
    warm = {
        f: [t.params for t in st.trials if t.user_attrs.get(SOURCE_ATTR) == "llm-warmstart"]
        for f, st in studies.items()
    }
    assert warm == {"knn": [{"n_neighbors": 9, "weights": "uniform"}], "linear": [{"C": 0.05}]}
    assert agent.stats["linear"].invalid == 1 and agent.stats["knn"].proposed == 1


def test_a_cut_off_warm_start_keeps_the_families_it_completed(box, task, tmp_path) -> None:
    from mlpilot.llm import LLMTimeout

    partial = '{"knn":[{"n_neighbors":9,"weights":"uniform"}],"linear":[{"C":0.'
    fake = ScriptedLLM([LLMTimeout("stopped at its 8 s time limit", partial=partial)])
    agent = awaiting_agent(box, task, tmp_path, fake)
    studies = agent.optimize_all(["knn", "linear"], n_trials=1)
    assert sources(studies["knn"]) == ["llm-warmstart"]
    assert sources(studies["linear"]) == ["tpe"]
    assert "LLMTimeout" in agent.stats["linear"].llm_errors[0]
    assert not agent.stats["knn"].llm_errors


def test_complete_members_reads_what_a_cut_answer_finished() -> None:
    from mlpilot.agents import llambo

    models = [llambo.Model.family("knn"), llambo.Model.family("linear")]
    shape = llambo.warmstarts_model(models, 2)
    knn = '"knn":[{"n_neighbors":9,"weights":"uniform"}]'
    assert llambo.complete_members("{" + knn + ',"linear":[{"C":0.', shape) == {
        "knn": [{"n_neighbors": 9, "weights": "uniform"}]
    }
    assert llambo.complete_members("{" + knn + ',"linear":[{"C":0.5}]}', shape) == {
        "knn": [{"n_neighbors": 9, "weights": "uniform"}],
        "linear": [{"C": 0.5}],
    }
    assert llambo.complete_members('{"knn":[{"n_neighbors":9,"wei', shape) == {}
    assert llambo.complete_members("", shape) == {}
    # a finished list that breaks the schema is not kept
    assert llambo.complete_members('{"knn":[{"n_neighbors":"many"}],"lin', shape) == {}


def test_for_budget_awaits_only_a_local_llm() -> None:
    assert HpoSettings.for_budget(120, local_llm=True).upfront_s == pytest.approx(42.0)
    assert HpoSettings.for_budget(600, local_llm=True).upfront_s == 60.0
    assert HpoSettings.for_budget(120, local_llm=False).upfront_s == 0.0


def test_a_trial_whose_first_fold_is_below_the_median_is_pruned(box, task, tmp_path) -> None:
    from mlpilot.agents.hpo import trial_rows
    from mlpilot.agents.rundir import RunDir

    storage = f"sqlite:///{tmp_path}/o.db"
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir()
    outcomes: list[TrialOutcome] = []
    agent = HpoAgent(
        TrialRunner(box, task, folds=4),
        None,
        storage=storage,
        run_dir=run_dir,
        settings=HpoSettings(defaults=False, prune=True, prune_after=3),
        on_trial=lambda f, n, o: outcomes.append(o),
    )
    study = agent.study("knn")
    good = [(15, "distance"), (9, "distance"), (25, "distance")]
    for n, w in [*good, (1, "uniform"), (12, "distance")]:
        study.enqueue_trial({"n_neighbors": n, "weights": w})
    study = agent.optimize("knn", n_trials=5)
    states = [t.state for t in study.trials]
    complete, pruned = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    assert states == [complete] * 3 + [pruned, complete]
    # every completed trial carries its first fold's score, which later ones are held to
    assert all(0 in t.intermediate_values for t in study.trials)
    worst = study.trials[3]
    median = sorted(t.intermediate_values[0] for t in study.trials[:3])[1]
    assert worst.intermediate_values[0] < median
    assert worst.user_attrs["reason"].startswith("stopped after fold 1 of 4")
    assert outcomes[3].pruned and not outcomes[3].ok
    assert outcomes[3].seconds < min(o.seconds for o in outcomes[:3])
    # the trial that went on is whole: its predictions are saved, its score is its CV's
    last = study.trials[4]
    assert last.intermediate_values[0] >= median
    assert outcomes[4].ok and outcomes[4].verified and outcomes[4].oof is not None
    assert run_dir.load_predictions("knn-4") is not None
    assert run_dir.load_predictions("knn-3") is None
    rows = {r.key: r for r in trial_rows(storage, task)}
    assert rows["knn-3"].state == "PRUNED" and rows["knn-3"].cv_score is None
    assert rows["knn-4"].finished


def test_without_prune_every_trial_runs_whole(box, task, tmp_path) -> None:
    agent = HpoAgent(
        TrialRunner(box, task, folds=4),
        None,
        storage=f"sqlite:///{tmp_path}/o.db",
        settings=HpoSettings(defaults=False),
    )
    study = agent.study("knn")
    for n, w in [(15, "distance"), (9, "distance"), (25, "distance"), (1, "uniform")]:
        study.enqueue_trial({"n_neighbors": n, "weights": w})
    study = agent.optimize("knn", n_trials=4)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


class SlowFirstFold(TrialRunner):
    """Its first folds report 10 s (the jobs themselves run as usual); counts whole runs."""

    whole_runs = 0

    def first_fold(self, family, params, *, timeout_s=None):  # type: ignore[override]
        import dataclasses

        return dataclasses.replace(
            super().first_fold(family, params, timeout_s=timeout_s), seconds=10.0
        )

    def run(self, family, params, *, timeout_s=None, first=None):  # type: ignore[override]
        self.whole_runs += first is not None
        return super().run(family, params, timeout_s=timeout_s, first=first)


def test_a_trial_whose_other_folds_cannot_end_in_time_stops_after_its_first(
    box, task, tmp_path
) -> None:
    import threading

    from mlpilot.tools.search_spaces import space

    runner = SlowFirstFold(box, task, folds=4)
    agent = HpoAgent(
        runner,
        None,
        storage=f"sqlite:///{tmp_path}/o.db",
        settings=HpoSettings(defaults=False, prune=True),
    )
    study = agent.study("knn")
    for n in (15, 9, 25, 12, 12):
        study.enqueue_trial({"n_neighbors": n, "weights": "distance"})
    study = agent.optimize("knn", n_trials=3)
    lock = threading.Lock()
    dists = {p.name: p.distribution() for p in space("knn")}
    # 10 s for the first fold: 40 s more for the rest, 30 s left -> stopped, no more jobs
    short = agent._run(study, study.ask(dists), "knn", 40.0, lock)
    assert not short.ok and short.timed_out and not short.pruned
    assert "would not end in the 30.0 s left" in short.reason
    assert runner.whole_runs == 0
    # with 60 s left it goes on
    assert agent._run(study, study.ask(dists), "knn", 60.0, lock).ok
    assert runner.whole_runs == 1
