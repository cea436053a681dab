"""LLAMBO-style Bayesian optimisation on top of Optuna.

One Optuna study per model family. The LLM contributes in two ways, both as
configurations that enter the study through ``enqueue_trial``:

* **warm start**: from a data-aware prompt (rows, feature types, class balance,
  correlated features, the search space with its scales) it proposes N diverse
  initial configurations;
* **candidate sampling**: shown the trial history as examples, it proposes
  configurations aimed at a target score s* = best + α·(best − worst), i.e.
  a little beyond the best seen so far.

Every proposal is checked against the space (out-of-range or duplicate ones
are dropped) and everything else is sampled by Optuna's TPE, which also learns
from the LLM's trials. LLM requests run in a background thread while trials run
in the sandbox, so a slow or absent LLM never stalls the search: with no LLM it
is plain TPE.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from mlpilot.agents import llambo
from mlpilot.agents.allocation import FamilyRecord, choose_family
from mlpilot.agents.llambo import ProposalStats
from mlpilot.agents.rundir import RunDir
from mlpilot.agents.state import TrialRow
from mlpilot.agents.trials import TrialOutcome, TrialRunner
from mlpilot.llm import LLM
from mlpilot.llm.embedded import cores_to_itself
from mlpilot.sandbox import Limits
from mlpilot.sandbox.base import job_running
from mlpilot.task import TaskSpec
from mlpilot.tools.profile import DataProfile, profile_frame, prompt_context
from mlpilot.tools.search_spaces import first_configs, space

optuna.logging.set_verbosity(optuna.logging.WARNING)

SOURCE_ATTR = llambo.SOURCE_ATTR
# A local LLM's warm starts are awaited before the first trial for this share of the
# budget, at most UPFRONT_MAX_S (see HpoSettings.upfront_s). On 2 cores the 1.5B model
# answered the README main job's three families in one request in 26 s with two
# configurations each (212 tokens; 24-32 s in the main job), 38 s with three (310).
UPFRONT_SHARE = 0.35
UPFRONT_MAX_S = 60.0
# No candidate request to a local LLM this close to the search's end: beside trials, the
# 1.5B model took 28-31 s on one (a ~600-token prompt read with one thread, then about 5
# tokens/s); one cancelled unanswered at the end still holds the model while the final
# step's leakage review waits for it.
LOCAL_LLM_CUTOFF_S = 40.0


def trial_cores(local_llm: bool) -> int:
    """The cores trials may use: all of them, less the threads of an LLM that generates
    on this machine (the embedded model, or a server on loopback). A remote LLM uses
    no local core, so it leaves them all to trials."""
    from mlpilot.llm.embedded import default_threads

    return max(1, (os.cpu_count() or 1) - (default_threads() if local_llm else 0))


def trial_limits(parallel: int, *, local_llm: bool) -> Limits:
    """A trial's limits: the cores left to trials, shared by the ``parallel`` trials
    that run at once (oversubscribed OpenMP slows fits a hundredfold)."""
    return Limits(timeout_s=300, cpus=max(1, trial_cores(local_llm) // max(1, parallel)))


@dataclass(frozen=True)
class HpoSettings:
    """How the LLM takes part.

    Attributes:
        warmstart: configurations asked for at the start (0 turns warm start off).
        sample_every: ask for LLM candidates after every this many finished trials.
        sample_n: candidates per sampling request.
        alpha: LLAMBO's exploration factor in s* = best + alpha * (best - worst).
        history: most trials shown to the LLM as examples (the best ones).
        min_history: finished trials needed before candidate sampling starts.
        llm_cutoff_s: no new LLM request this close to the deadline (its answer would
            come too late and its generation would compete with the last trials);
            LOCAL_LLM_CUTOFF_S for a local LLM (see :meth:`for_budget`).
        defaults: try each family's cheap default configuration first.
        parallel: trials run at once (the sandbox must have as many workers).
        trial_share: most of the search's time window one trial may take (a slow
            configuration is stopped rather than eating a short run's budget).
        sampler: the Optuna sampler behind the LLM (``llambo.make_sampler``'s names:
            "tpe", or "random" for the random-search baseline).
        seed: the sampler's seed.
        upfront_s: most seconds the search waits for the LLM's warm starts before its
            first trial. A model generating on this machine then has every core to
            itself, and all families' warm starts are one request that stops when the
            wait ends: on 2 cores, generation beside a training job ran at a fifth of
            its speed (185 tokens in 71 s), so the warm starts arrived after the short
            search had ended. 0 asks in the background, one request per family, while
            trials run.
        folds: cross-validation folds of every trial.
        prune: stop a trial after its first fold when the fold scores worse than the median
            first fold of the family's completed trials (Optuna's median pruner, once
            ``prune_after`` of them completed): the fold runs as a job of its own, and a
            trial that goes on skips it. Off by default: see docs/benchmarks.md.
        prune_after: completed trials of a family before any of its trials is pruned.
    """

    warmstart: int = 5
    sample_every: int = 3
    sample_n: int = 2
    alpha: float = 0.1
    history: int = 12
    min_history: int = 3
    llm_cutoff_s: float = 15.0
    defaults: bool = True
    parallel: int = 1
    trial_share: float = 1 / 3
    sampler: str = "tpe"
    seed: int = 0
    upfront_s: float = 0.0
    folds: int = 5
    prune: bool = False
    prune_after: int = 3

    @classmethod
    def for_budget(cls, time_budget_s: float, *, local_llm: bool = True) -> HpoSettings:
        """Defaults sized to the run and the machine: a short run asks for smaller warm
        starts (their answers then arrive while there is time to try them); a local LLM
        is awaited for them and asked for fewer (2 per family below 180 s, else 3: its
        one request must end within the wait, see UPFRONT_SHARE); and the cores a local
        LLM leaves free run trials two threads each, side by side."""
        parallel = max(1, trial_cores(local_llm) // 2)
        upfront = min(UPFRONT_SHARE * time_budget_s, UPFRONT_MAX_S) if local_llm else 0.0
        short = time_budget_s < 180
        warmstart = (2 if short else 3) if local_llm else (3 if short else 5)
        cutoff = LOCAL_LLM_CUTOFF_S if local_llm else cls.llm_cutoff_s
        return cls(warmstart=warmstart, parallel=parallel, upfront_s=upfront, llm_cutoff_s=cutoff)


HpoStats = ProposalStats  # what happened to one family's LLM proposals, for the report


class HpoAgent:
    """Optimises one model family at a time on an Optuna study in ``storage``.

    Args:
        runner: runs a configuration in the sandbox and scores it on the host.
        llm: the LLM, or None for plain TPE.
        storage: an Optuna storage URL (``sqlite:///run/optuna.db``) or object.
        run_dir: the run directory each finished trial's predictions are saved in (for
            ensembling and the verifier); None keeps none.
        settings: how the LLM takes part.
        on_trial: called after each trial with (family, trial number, outcome).
    """

    def __init__(
        self,
        runner: TrialRunner,
        llm: LLM | None,
        *,
        storage: str | optuna.storages.BaseStorage | None = None,
        run_dir: RunDir | None = None,
        settings: HpoSettings | None = None,
        on_trial: Callable[[str, int, TrialOutcome], None] | None = None,
    ) -> None:
        self.runner = runner
        self.llm = llm
        self.storage = storage
        self.run_dir = run_dir
        self.settings = settings or HpoSettings()
        self.on_trial = on_trial
        self.stats: dict[str, HpoStats] = {}
        self._proposers: dict[str, llambo.Proposer] = {}
        # families given no more trials this run, with the reason (for the report)
        self.stopped: dict[str, str] = {}
        self._queues: dict[str, queue.SimpleQueue[tuple[str, dict[str, Any]]]] = {}
        self._crashed: list[BaseException] = []
        self._llm_thread: threading.Thread | None = None
        self._warm_requested: set[str] = set()
        self._llm_off = False
        self._deadline_of: Callable[[], float] | None = None
        self.upfront_waited_s = 0.0  # seconds the search waited for warm starts
        self.trials_started = threading.Event()  # set when the first trial may start
        self._best: tuple[float, float] | None = None  # (loss, seconds) of the best trial
        self._first_reported: set[tuple[str, int]] = set()  # trials whose first fold ran alone
        task = runner.task
        self._profile: DataProfile = profile_frame(
            task.X, task.y, text_columns=task.text_columns, classification=task.is_classification
        )

    @property
    def best_trial_seconds(self) -> float | None:
        """Wall seconds of the best trial this agent has run, None before any finished."""
        return None if self._best is None else self._best[1]

    @property
    def task(self) -> TaskSpec:
        return self.runner.task

    def study(self, family: str) -> optuna.Study:
        """The family's study; trials left running by a killed process are marked failed."""
        direction = "maximize" if self.task.metric.greater_is_better else "minimize"
        study = optuna.create_study(
            study_name=f"{self.task.name}-{family}",
            storage=self.storage,
            direction=direction,
            sampler=llambo.make_sampler(self.settings.sampler, self.settings.seed),
            pruner=optuna.pruners.MedianPruner(
                n_startup_trials=self._prune_after,
                n_warmup_steps=0,
                n_min_trials=self._prune_after,
            ),
            load_if_exists=True,
        )
        stale = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if stale and self.storage is not None:
            storage = optuna.storages.get_storage(self.storage)
            study_id = storage.get_study_id_from_name(study.study_name)
            for trial in stale:
                trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
                storage.set_trial_user_attr(trial_id, "reason", "interrupted (process ended)")
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        if self.settings.defaults and not study.trials:
            for i, config in enumerate(first_configs(family)):
                source = "default" if i == 0 else "portfolio"
                study.enqueue_trial(config, user_attrs={SOURCE_ATTR: source})
        return study

    # -- the loop ------------------------------------------------------------

    def prefetch_warmstart(self, families: list[str], *, upfront: float = 0.0) -> None:
        """Asks the LLM for the warm starts of the families that have none, in the
        background. With ``upfront`` seconds (a local LLM, which the search waits for
        before its first trial), one request asks for all of them and stops after
        ``upfront`` seconds, so it never generates beside a trial; otherwise one request
        per family, in order, so that a family's proposals are ready when its turn comes."""
        if self.llm is None or self._llm_off or self.settings.warmstart <= 0:
            return
        todo = [
            f
            for f in families
            if f not in self._warm_requested and not _has_warmstart(self.study(f))
        ]
        if not todo:
            return
        self._warm_requested.update(todo)

        def one_by_one() -> None:
            for family in todo:
                self._ask(family, "llm-warmstart")

        ends = time.monotonic() + upfront  # when the search stops waiting for it
        self._start_llm(one_by_one if upfront <= 0 else lambda: self._ask_all(todo, ends))

    def _ask_all(self, families: list[str], ends: float) -> None:
        """The warm starts of ``families`` in one request (run in the LLM thread) that
        stops at ``ends`` (time.monotonic), when the search stops waiting for it."""
        assert self.llm is not None
        try:
            timeout = ends - time.monotonic()
            stats = {f: self._proposer(f).stats for f in families}
            with cores_to_itself():  # the search waits for this answer, no trial runs
                answers = llambo.propose_warmstarts(
                    self.llm,
                    [llambo.Model.family(f) for f in families],
                    prompt_context(self.task, self._profile),
                    n=self.settings.warmstart,
                    stats=stats,
                    seed=self.settings.seed,
                    timeout=timeout,
                )
            if any(s.unavailable for s in stats.values()):
                self._llm_off = True  # over budget or gone: stop asking
            for family, configs in answers.items():
                for config in configs:
                    self._queue(family).put(("llm-warmstart", config))
        except BaseException as e:  # a bug, or a test double's alarm: surface it
            self._crashed.append(e)

    def _upfront(self, deadline: float | None) -> float:
        """Seconds the search waits for a local LLM's warm starts: ``settings.upfront_s``,
        at most half the time to ``deadline``."""
        if self.llm is None or self._llm_off or self.settings.upfront_s <= 0:
            return 0.0
        if deadline is None:
            return self.settings.upfront_s
        return min(self.settings.upfront_s, max(0.0, deadline - time.monotonic()) / 2)

    def _wait_for_warmstart(self, wait: float) -> None:
        """Waits up to ``wait`` seconds (and the moment a stopped generation takes to
        end) for the warm-start request in flight; records how long it waited."""
        if wait <= 0 or not self._llm_busy():
            return
        t0 = time.monotonic()
        assert self._llm_thread is not None
        self._llm_thread.join(timeout=wait + 1.0)
        self.upfront_waited_s += time.monotonic() - t0

    def _start_llm(self, work: Callable[[], None]) -> None:
        previous = self._llm_thread

        def chained() -> None:
            if previous is not None:
                previous.join()  # one LLM request at a time, in order
            work()

        self._llm_thread = threading.Thread(target=chained, daemon=True)
        self._llm_thread.start()

    def _llm_busy(self) -> bool:
        return self._llm_thread is not None and self._llm_thread.is_alive()

    def _proposer(self, family: str) -> llambo.Proposer:
        """The family's LLM schedule (the component the HPO benchmark drives too)."""
        if family not in self._proposers:
            assert self.llm is not None
            st = self.settings
            proposer = llambo.Proposer(
                self.llm,
                llambo.Model.family(family),
                prompt_context(self.task, self._profile),
                greater_is_better=self.task.metric.greater_is_better,
                warmstart=st.warmstart,
                sample_every=st.sample_every,
                sample_n=st.sample_n,
                alpha=st.alpha,
                history=st.history,
                min_history=st.min_history,
                seed=st.seed,
            )
            self._proposers[family] = proposer
            self.stats[family] = proposer.stats
        return self._proposers[family]

    def _ask(
        self,
        family: str,
        kind: str,
        finished: int = 0,
        scored: list[tuple[dict[str, Any], float]] | None = None,
    ) -> None:
        """One LLM request (run in the LLM thread); its configurations are queued for
        the family's study."""
        try:
            proposer = self._proposer(family)
            timeout = None
            if self._deadline_of is not None:
                timeout = self._deadline_of() - time.monotonic()
                if timeout < 2.0:
                    proposer.stats.llm_errors.append(
                        f"{kind}: not asked, the search was about to end"
                    )
                    return
            configs = (
                proposer.warm_start(timeout=timeout)
                if kind == "llm-warmstart"
                else proposer.sample(scored or [], finished=finished, timeout=timeout)
            )
            if proposer.stats.unavailable:
                self._llm_off = True  # over budget or gone: stop asking
            for config in configs:
                self._queue(family).put((kind, config))
        except BaseException as e:  # a bug, or a test double's alarm: surface it
            self._crashed.append(e)

    def _queue(self, family: str) -> queue.SimpleQueue[tuple[str, dict[str, Any]]]:
        return self._queues.setdefault(family, queue.SimpleQueue())

    def _raise_crash(self) -> None:
        if self._crashed:
            raise self._crashed[0]

    def optimize(
        self, family: str, *, n_trials: int, deadline: float | None = None
    ) -> optuna.Study:
        """Runs trials of ``family`` until ``n_trials`` have finished in its study
        (counting earlier runs on the same storage) or ``deadline`` (time.monotonic) passes."""
        return self.optimize_all([family], n_trials=n_trials, deadline=deadline)[family]

    def optimize_all(
        self,
        families: list[str],
        *,
        n_trials: int,
        deadline: float | Callable[[], float] | None = None,
    ) -> dict[str, optuna.Study]:
        """Tunes several families side by side. Every family gets its first trial before
        any gets a second; after that each new trial goes to a family drawn by its
        estimated cost for improvement (:mod:`mlpilot.agents.allocation`), so the
        promising and cheap families get most of the time and the others keep a chance.
        With ``settings.parallel`` > 1, that many trials run at once (the sandbox needs
        as many workers); choosing, asking and telling stay serialised.

        ``deadline`` (time.monotonic) may be a function, asked again before each trial:
        what must follow the search can depend on how long its trials take."""
        deadline_of: Callable[[], float] | None = (
            deadline if callable(deadline) or deadline is None else (lambda d=deadline: d)
        )
        self._deadline_of = deadline_of
        first = None if deadline_of is None else deadline_of()
        window = 0.0 if first is None else max(0.0, first - time.monotonic())
        studies = {f: self.study(f) for f in families}
        dists = {f: {p.name: p.distribution() for p in space(f)} for f in families}
        in_flight = dict.fromkeys(families, 0)
        lock = threading.Lock()
        rng = random.Random(self.settings.seed)
        upfront = self._upfront(first)
        self.prefetch_warmstart(list(families), upfront=upfront)
        self._wait_for_warmstart(upfront)
        self.trials_started.set()

        def started(family: str) -> int:
            return _finished(studies[family]) + in_flight[family]

        def next_trial() -> tuple[str, optuna.Trial, float | None] | None:
            self._raise_crash()
            any_completed = any(_completed_count(st) for st in studies.values())
            deadline = None if deadline_of is None else deadline_of()
            late = deadline is not None and time.monotonic() >= deadline - 1.0
            if late and (any_completed or sum(in_flight.values())):
                return None  # past the deadline; but never stop before one trial has finished
            if late and sum(_finished(st) for st in studies.values()) >= 3:
                return None
            # A family too slow for its cheap default gets no more trials once some
            # other trial has finished.
            open_families = [
                f
                for f in families
                if started(f) < n_trials and (f not in self.stopped or not any_completed)
            ]
            if not open_families:
                return None
            records = {f: _record_of(studies[f], in_flight[f]) for f in families}
            family = choose_family(records, rng, open_families)
            study = studies[family]
            stats = self.stats.setdefault(family, HpoStats())
            self._enqueue_ready(study, family, stats)
            finished = _finished(study)
            if (
                self.llm is not None
                and not self._llm_off
                and not self._llm_busy()
                and self._proposer(family).sample_due(finished)
                and (deadline is None or deadline - time.monotonic() > self.settings.llm_cutoff_s)
            ):
                scored = _scored(study)
                self._start_llm(
                    lambda f=family, n=finished, h=scored: self._ask(f, "llm-sample", n, h)
                )
            trial = study.ask(dists[family])
            trial.set_user_attr(
                SOURCE_ATTR, trial.user_attrs.get(SOURCE_ATTR, self.settings.sampler)
            )
            in_flight[family] += 1
            remaining = None
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if not any_completed:
                    remaining = max(10.0, remaining)  # the first model gets a fair chance
                else:
                    remaining = min(remaining, max(10.0, self.settings.trial_share * window))
            return family, trial, remaining

        def work() -> None:
            while True:
                try:
                    with lock:
                        step = next_trial()
                    if step is None:
                        return
                    family, trial, remaining = step
                    try:
                        outcome = self._run(studies[family], trial, family, remaining, lock)
                    except BaseException:
                        with lock, contextlib.suppress(Exception):
                            studies[family].tell(trial, state=optuna.trial.TrialState.FAIL)
                        raise
                    finally:
                        with lock:
                            in_flight[family] -= 1
                    with lock:
                        self._record(studies[family], trial, family, outcome)
                        if (
                            outcome.timed_out
                            and trial.user_attrs.get(SOURCE_ATTR) == "default"
                            and not _completed_count(studies[family])
                        ):
                            self.stopped[family] = (
                                f"its default configuration timed out after "
                                f"{outcome.seconds:.1f} s, before any of its trials finished"
                            )
                except BaseException as e:  # stop every worker; re-raised below
                    with lock:
                        if e not in self._crashed:
                            self._crashed.append(e)
                    return

        workers = [
            threading.Thread(target=work, daemon=True)
            for _ in range(max(1, self.settings.parallel) - 1)
        ]
        # From the first trial to the last the search holds the trials' cores, the
        # moments between two trials included: a local LLM asked in such a moment
        # would otherwise take every core for its whole answer (see EmbeddedEngine).
        with job_running():
            for thread in workers:
                thread.start()
            work()  # this thread is one of the workers
            for thread in workers:
                thread.join()
        if self.llm is not None and self._llm_busy():
            self.llm.cancel()  # an answer now would come too late: free the core
        # Proposals that arrive too late stay queued in the study for a resumed run.
        for family, study in studies.items():
            self._enqueue_ready(study, family, self.stats.setdefault(family, HpoStats()))
        self._raise_crash()
        return studies

    @property
    def _prune_after(self) -> int:
        """Completed trials a family needs before its first folds are compared (at least 1)."""
        return max(1, self.settings.prune_after)

    def _run(
        self,
        study: optuna.Study,
        trial: optuna.Trial,
        family: str,
        remaining: float | None,
        lock: threading.Lock,
    ) -> TrialOutcome:
        """Runs the trial: in one job, or, once the family's trials can be compared on
        their first fold (``settings.prune``), that fold first and the rest only if it
        is not worse than the family's median."""
        params = dict(trial.params)
        with lock:
            gate = self.settings.prune and _first_folds(study) >= self._prune_after
        if not gate:
            return self.runner.run(family, params, timeout_s=remaining)
        first = self.runner.first_fold(family, params, timeout_s=remaining)
        if not first.ok:
            return TrialOutcome(
                family=family,
                params=params,
                ok=False,
                reason=first.reason,
                seconds=first.seconds,
                timed_out=first.timed_out,
            )
        assert first.score is not None
        stop, median = False, float("nan")
        if math.isfinite(first.score):  # else the metric is undefined on the fold alone
            with lock:
                trial.report(first.score, FIRST_FOLD_STEP)
                self._first_reported.add((family, trial.number))
                stop = trial.should_prune()
                median = _median_first_fold(study)
        if stop:
            reason = (
                f"stopped after fold 1 of {self.runner.folds}: {first.score:.4g} there, "
                f"worse than the median {median:.4g} of the family's completed trials"
            )
            return TrialOutcome(
                family=family,
                params=params,
                ok=False,
                reason=reason,
                seconds=first.seconds,
                pruned=True,
            )
        left = None if remaining is None else remaining - first.seconds
        rest = first.seconds * self.runner.folds  # the other folds and the fit on all rows
        if left is not None and left < rest:
            reason = (
                f"its first fold took {first.seconds:.1f} s: the other folds and the fit "
                f"on all rows (about {rest:.0f} s) would not end in the {left:.1f} s left"
            )
            return TrialOutcome(
                family=family,
                params=params,
                ok=False,
                reason=reason,
                seconds=first.seconds,
                timed_out=True,
            )
        return self.runner.run(family, params, timeout_s=left, first=first)

    def _record(
        self, study: optuna.Study, trial: optuna.Trial, family: str, outcome: TrialOutcome
    ) -> None:
        attrs = {
            "seconds": round(outcome.seconds, 3),
            "verified": outcome.verified,
            "reason": outcome.reason[:500],
            "timed_out": outcome.timed_out,
        }
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        if outcome.pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif outcome.ok and outcome.cv_score is not None:
            # the first fold's score, which later trials of the family are held to
            # (reported already when the trial ran that fold alone)
            ran_alone = (family, trial.number) in self._first_reported
            if self.settings.prune and outcome.oof is not None and not ran_alone:
                score = self.runner.fold_score(outcome.oof, outcome.classes, 0)
                if math.isfinite(score):
                    trial.report(score, FIRST_FOLD_STEP)
            trial.set_user_attr("holdout_score", outcome.holdout_score)
            if self.run_dir is not None:  # before the trial counts as finished
                assert outcome.oof is not None and outcome.holdout_pred is not None
                self.run_dir.save_predictions(
                    f"{family}-{trial.number}", outcome.oof, outcome.holdout_pred, outcome.classes
                )
            study.tell(trial, outcome.cv_score)
            loss = -self.task.metric.sign() * outcome.cv_score
            if self._best is None or loss < self._best[0]:
                self._best = (loss, outcome.seconds)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if self.on_trial is not None:
            self.on_trial(family, trial.number, outcome)

    # -- the LLM's part ------------------------------------------------------------

    def _enqueue_ready(self, study: optuna.Study, family: str, stats: HpoStats) -> None:
        ready = []
        while True:
            try:
                ready.append(self._queue(family).get_nowait())
            except queue.Empty:
                break
        llambo.enqueue(study, ready, stats)


FIRST_FOLD_STEP = 0  # the step a trial's first-fold score is reported at
# the states of a trial that ran and will not run again
DONE = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.FAIL,
    optuna.trial.TrialState.PRUNED,
)


def _first_folds(study: optuna.Study) -> int:
    """Completed trials with a first-fold score (those a new trial can be held to)."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return sum(1 for t in done if FIRST_FOLD_STEP in t.intermediate_values)


def _median_first_fold(study: optuna.Study) -> float:
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    scores = [v for t in done if (v := t.intermediate_values.get(FIRST_FOLD_STEP)) is not None]
    return float(statistics.median(scores)) if scores else float("nan")


def _record_of(study: optuna.Study, in_flight: int) -> FamilyRecord:
    """The family's finished trials as the allocation reads them (lower loss is better;
    a pruned trial counts its time and no result)."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    done = [t for t in study.get_trials(deepcopy=False) if t.state in DONE]
    return FamilyRecord(
        seconds=[float(t.user_attrs.get("seconds", 0.0)) for t in done],
        losses=[
            sign * float(t.value)
            if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
            else None
            for t in done
        ],
        in_flight=in_flight,
    )


def _scored(study: optuna.Study) -> list[tuple[dict[str, Any], float]]:
    """(configuration, score) of every finished trial, for the LLM's examples."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [(dict(t.params), float(t.value)) for t in done]  # type: ignore[arg-type]


def _completed_count(study: optuna.Study) -> int:
    return sum(1 for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)


def _has_warmstart(study: optuna.Study) -> bool:
    return any(t.user_attrs.get(SOURCE_ATTR) == "llm-warmstart" for t in study.trials)


def _finished(study: optuna.Study) -> int:
    return sum(1 for t in study.trials if t.state in DONE)


def trial_rows(storage: str, task: TaskSpec) -> list[TrialRow]:
    """Every trial of every family's study in ``storage`` for ``task``: the finished
    ones best first, then the failed and pruned ones (trials still waiting or running
    are left out). Reads each study once."""
    rows: list[TrialRow] = []
    prefix = f"{task.name}-"
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if not summary.study_name.startswith(prefix):
            continue
        family = summary.study_name.removeprefix(prefix)
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        for t in study.get_trials(deepcopy=False):
            complete = t.state == optuna.trial.TrialState.COMPLETE
            if t.state not in DONE:
                continue
            rows.append(
                TrialRow(
                    key=f"{family}-{t.number}",
                    family=family,
                    number=t.number,
                    params=dict(t.params),
                    source=t.user_attrs.get(SOURCE_ATTR, "tpe"),
                    seconds=float(t.user_attrs.get("seconds", 0.0)),
                    reason=str(t.user_attrs.get("reason", "")),
                    state=t.state.name,
                    cv_score=float(t.value) if complete and t.value is not None else None,
                    holdout_score=t.user_attrs.get("holdout_score"),
                    started=t.datetime_start.timestamp() if t.datetime_start else 0.0,
                )
            )
    sign = task.metric.sign()
    done = sorted((r for r in rows if r.finished), key=lambda r: -sign * float(r.cv_score))  # type: ignore[arg-type]
    return done + [r for r in rows if not r.finished]
