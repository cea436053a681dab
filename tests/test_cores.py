"""Who gets the cores: a local LLM reads its prompts with every core only while no
sandbox job runs and generates with every core only while the run waits for it; the
final step's jobs get the trials' cores, not all of them."""

from __future__ import annotations

import threading
import time

import pytest

from mlpilot.agents import finalize
from mlpilot.agents.hpo import trial_limits
from mlpilot.llm.embedded import EMBEDDED_MODELS, EmbeddedEngine, cores_to_itself
from mlpilot.sandbox import Limits
from mlpilot.sandbox.base import job_running, running_jobs


def test_the_llm_uses_every_core_only_while_nothing_else_may_run(monkeypatch) -> None:
    monkeypatch.delenv("MLPILOT_LLM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    engine = EmbeddedEngine(EMBEDDED_MODELS["qwen2.5-coder-0.5b"], n_threads=2)
    assert engine.threads() == (2, 4)  # (generating, reading the prompt)
    with job_running():
        assert running_jobs() == 1
        assert engine.threads() == (2, 2)
    assert running_jobs() == 0
    with cores_to_itself():  # the run waits for the answer and starts no job
        assert engine.threads() == (4, 4)
        with job_running():  # one started anyway: the job gets its cores
            assert engine.threads() == (2, 2)
        monkeypatch.setenv("MLPILOT_LLM_THREADS", "2")  # the user's count holds
        assert engine.threads() == (2, 4)
    monkeypatch.delenv("MLPILOT_LLM_THREADS")
    assert engine.threads() == (2, 4)


def test_a_sandbox_job_counts_as_running_while_it_runs(box) -> None:
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(running_jobs())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = box.run("import time; time.sleep(1.0)", limits=Limits(timeout_s=30))
    finally:
        done.set()
        watcher.join()
    assert result.ok
    assert max(seen) == 1
    assert running_jobs() == 0


def test_the_final_steps_jobs_get_the_trials_cores(monkeypatch) -> None:
    # finalize builds its runners with the trials' limits: a job given every core
    # beside the LLM's leakage review oversubscribes OpenMP
    made: list[Limits | None] = []
    real = finalize.TrialRunner

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args, limits=None, **kwargs) -> None:
            made.append(limits)
            raise RuntimeError("stop here")

    monkeypatch.setattr(finalize, "TrialRunner", Spy)

    class Ctx:
        llm = type("L", (), {"runs_locally": True, "available": False})()
        hpo_settings = type("S", (), {"parallel": 1, "folds": 5})()
        task = None
        run = type("R", (), {"storage_url": "sqlite://", "sandbox_data": None})()
        trial_code = None
        sandbox = None
        leak_review = None

    monkeypatch.setattr(finalize, "trial_rows", lambda *_: [])
    monkeypatch.setattr(finalize.verifier, "check_claims", lambda rows: None)
    runtime = type("RT", (), {"context": Ctx()})()
    with pytest.raises(RuntimeError, match="stop here"):
        finalize.finalize_node({}, runtime)  # type: ignore[arg-type]
    assert made == [trial_limits(1, local_llm=True)]
    assert made[0] is not None and made[0].cpus is not None


def test_an_ensembles_members_are_refit_side_by_side() -> None:
    # two members, two workers: both refit jobs run at once (most of a small job is its
    # start), and the time estimate the final step budgets with says so
    running, most = [0], [0]
    lock = threading.Lock()

    class Runner:
        features = None

        def refit(self, family, params, **_):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.5)
            with lock:
                running[0] -= 1
            return finalize.RefitOutcome(ok=False, reason="stop", family=family, params=params)

    class Ctx:
        task = None
        hpo_settings = type("S", (), {"parallel": 2, "folds": 5})()

        @staticmethod
        def remaining() -> float:
            return 60.0

    Row = type("Row", (), {"family": "linear", "params": {}})
    weights = {"a": 0.5, "b": 0.5}
    model, *_ = finalize._refit_candidate(Ctx(), Runner(), weights, {"a": Row(), "b": Row()})
    assert model is None and most[0] == 2
    assert finalize.side_by_side([3.0, 3.0], 2) == 3.0
    assert finalize.side_by_side([3.0, 3.0], 1) == 6.0
    assert finalize.side_by_side([5.0, 1.0, 1.0], 2) == 5.0
