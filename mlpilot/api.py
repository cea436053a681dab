"""Pilot: the programmatic entry point.

from mlpilot import Pilot
result = Pilot().run("tune a model for this dataset", data="train.csv", time_budget=120)
result.model.predict(new_frame); result.leaderboard; result.report_path; result.usage
"""

from __future__ import annotations

import dataclasses
import io
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlpilot.agents.context import RunContext
from mlpilot.agents.graph import command_of, run_graph
from mlpilot.agents.hpo import HpoSettings
from mlpilot.agents.nas_step import NAS_DIR
from mlpilot.agents.planner import pruning_plan
from mlpilot.agents.rundir import RunDir, RunMeta, task_of
from mlpilot.agents.state import FeatureSummary, FinalModel, RunState, TrialRow
from mlpilot.errors import ConfigError, DataError, MlpilotError
from mlpilot.llm import LLM, Budget, LLMUnavailable, make_llm
from mlpilot.sandbox import Sandbox, make_sandbox
from mlpilot.task import TaskSpec
from mlpilot.tools import model_io
from mlpilot.tools.files import write_atomic
from mlpilot.tools.model import PilotModel
from mlpilot.tools.text_model import PrunedTextClassifier

REFITS = ("all", "train")  # what the delivered model learns from (see Pilot.run)
# Below this budget a run does not use the default (embedded) LLM unless it was named: on
# 2 cores its plan and warm starts take the cores to themselves for ~30 s, and at 60 s
# the race (benchmarks/tabular.py, docs/benchmarks.md; 11 datasets, 3 seeds) ranked
# mlpilot with the embedded model behind mlpilot without it (mean rank 2.55 against
# 2.36; 11 wins, 18 losses, 4 ties). A model the user names is always used.
LOCAL_LLM_MIN_BUDGET_S = 120.0


@dataclass
class RunResult:
    """What a run produced. Only verified numbers are in it."""

    run_dir: Path
    status: str
    model: PilotModel | None
    leaderboard: pd.DataFrame
    report_path: Path
    usage: list[dict[str, Any]]
    holdout_score: float | None
    cv_score: float | None
    metric_display: str = ""
    checks: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    features: FeatureSummary | None = None  # the feature step's outcome, if it ran

    def predict(self, frame: pd.DataFrame) -> Any:
        if self.model is None:
            raise MlpilotError(f"run {self.run_dir} has no verified model")
        return self.model.predict(frame)


class Pilot:
    """Plans and runs AutoML from a plain-words request.

    Args:
        llm: a model string (``openai/gpt-4o-mini``, ``embedded``), an ``LLM``, None for
            the default (``$MLPILOT_LLM`` or the embedded model), or False for no LLM.
        sandbox: ``"local-warm"`` (default), ``"local"``, ``"docker-warm"``,
            ``"docker"`` or a :class:`Sandbox`.
        runs_dir: where run directories are created (and past runs are found).
        llm_budget: limits on LLM use; default: LLM seconds up to 60% of the time budget.
        api_base: base URL for an OpenAI-compatible server.
    """

    def __init__(
        self,
        llm: str | LLM | bool | None = None,
        sandbox: str | Sandbox = "local-warm",
        *,
        runs_dir: str | Path = "mlpilot-runs",
        llm_budget: Budget | None = None,
        api_base: str | None = None,
    ) -> None:
        self.llm_spec = llm
        self.sandbox = sandbox
        self.runs_dir = Path(runs_dir)
        self.llm_budget = llm_budget
        self.api_base = api_base
        self.llm_note = ""

    def _llm_named(self) -> bool:
        """Whether the user chose the LLM (an argument or ``$MLPILOT_LLM``): only the
        default, the embedded model, is left out of short runs."""
        return self.llm_spec not in (None, True) or bool(os.environ.get("MLPILOT_LLM"))

    def _make_llm(self, time_budget: float) -> LLM | None:
        self.llm_note = ""
        if self.llm_spec is False:
            self.llm_note = "no LLM (disabled)"
            return None
        budget = self.llm_budget or Budget(max_llm_seconds=0.6 * time_budget)
        try:
            spec = None if self.llm_spec in (None, True) else self.llm_spec
            llm = make_llm(spec, api_base=self.api_base, budget=budget)  # type: ignore[arg-type]
        except LLMUnavailable as e:
            self.llm_note = f"no LLM: {e}"
            return None
        if not self._llm_named() and llm.runs_locally and time_budget < LOCAL_LLM_MIN_BUDGET_S:
            self.llm_note = (
                f"no LLM: below {LOCAL_LLM_MIN_BUDGET_S:.0f} s the embedded model costs more "
                "time than it gives back (default plan and TPE measured better at 60 s, see "
                "docs/benchmarks.md); name it (--llm embedded) to use it anyway"
            )
            return None
        if llm.ledger.budget == Budget():
            llm.ledger.budget = budget
        return llm

    def run(
        self,
        request: str,
        data: pd.DataFrame | str | Path,
        *,
        target: str | None = None,
        metric: str | None = None,
        time_budget: float = 120.0,
        max_trials: int = 200,
        seed: int = 0,
        run_dir: str | Path | None = None,
        progress: Any = None,
        hpo: HpoSettings | None = None,
        drop: Sequence[str] = (),
        description: str | Path | None = None,
        features: bool | None = None,
        refit: str = "all",
        nas: dict[str, Any] | None = None,
    ) -> RunResult:
        """Runs the request on ``data`` within ``time_budget`` seconds (wall clock).

        ``drop`` names columns to leave out (a suspected leak, say). ``description``
        says what the data is (text, or a Path to a text/Markdown file): the feature
        step reads it. ``features`` forces the feature step on (True) or off (False);
        by default the planner decides (see :func:`mlpilot.agents.planner.feature_step`).
        ``refit`` says what the delivered model learns from once the holdout has
        scored it: ``"all"`` rows (the default; the holdout score then describes the
        same configuration trained without the holdout) or ``"train"`` rows only.
        ``nas`` sets fields of :class:`mlpilot.agents.nas.NasSettings` for a pruning
        request ("make this text classifier smaller"); the rest are sized to the budget.
        """
        if refit not in REFITS:
            raise ConfigError(f"refit must be one of {', '.join(REFITS)}, but got {refit!r}")
        if time_budget < 10:
            raise ConfigError(f"time_budget must be at least 10 seconds, but got {time_budget}")
        description_text, description_file = _read_description(description)
        llm = self._make_llm(time_budget)
        if llm is not None:
            llm.prepare()  # once per machine: the embedded model's file, before the clock
        started = time.monotonic()
        task = TaskSpec.from_data(
            data, request=request, target=target, metric=metric, seed=seed, drop=drop
        )
        # a pruning request on data it cannot prune fails here, before a run exists
        pruning_plan(request, task, time_budget_s=time_budget, max_trials=max_trials)
        if nas:
            from mlpilot.agents.nas import NasSettings

            try:
                NasSettings(**nas)  # unknown or bad fields fail before the run
            except TypeError as e:
                raise ConfigError(f"nas takes fields of NasSettings: {e}") from e
        run = RunDir(Path(run_dir) if run_dir else self.new_run_dir(task.name))
        run.path.mkdir(parents=True, exist_ok=True)
        settings = hpo or HpoSettings.for_budget(
            time_budget, local_llm=llm is not None and llm.runs_locally
        )
        meta = RunMeta(
            request=request,
            data=self._keep_data(data, run),
            target=task.target,
            metric=task.metric.name,
            time_budget=time_budget,
            max_trials=max_trials,
            seed=seed,
            drop=list(drop),
            description=description_text,
            description_file=description_file,
            features=features,
            refit=refit,
            nas=dict(nas) if nas else None,
            llm=self.llm_spec if isinstance(self.llm_spec, str) else None,
            no_llm=self.llm_spec is False,
            llm_note=self.llm_note,  # empty when an LLM was made
            api_base=self.api_base,
            hpo=dataclasses.asdict(settings),
            sandbox=self._sandbox_name(),
            name=task.name,
            created=datetime.now().isoformat(timespec="seconds"),
        )
        run.create(meta)
        return self._execute(task, run, meta, llm, settings, started, progress, resume=False)

    def resume(self, run_dir: str | Path, *, progress: Any = None) -> RunResult:
        """Continues a killed or interrupted run as it started (same LLM, HPO settings and
        columns); finished trials are kept, not re-run, and the time it had already
        spent counts against its budget."""
        run = RunDir(run_dir)
        meta = run.meta()
        if meta.no_llm:
            self.llm_spec = False
        elif meta.llm and self.llm_spec is None:
            self.llm_spec = meta.llm
        if self.api_base is None:
            self.api_base = meta.api_base
        started = time.monotonic()
        task = task_of(meta)
        llm = self._make_llm(meta.time_budget)
        settings = (
            HpoSettings(**meta.hpo)
            if meta.hpo
            else HpoSettings.for_budget(
                meta.time_budget, local_llm=llm is not None and llm.runs_locally
            )
        )
        return self._execute(task, run, meta, llm, settings, started, progress, resume=True)

    def _sandbox_name(self) -> str:
        return self.sandbox if isinstance(self.sandbox, str) else self.sandbox.name

    def _execute(
        self,
        task: TaskSpec,
        run: RunDir,
        meta: RunMeta,
        llm: LLM | None,
        settings: HpoSettings,
        started: float,
        progress: Any,
        *,
        resume: bool,
    ) -> RunResult:
        if llm is not None:  # load the model while the sandbox starts and the data is profiled
            threading.Thread(target=llm.warm_up, daemon=True).start()
        sandbox = (
            make_sandbox(self.sandbox, workers=settings.parallel)
            if isinstance(self.sandbox, str)
            else self.sandbox
        )
        ctx = RunContext(
            task=task,
            llm=llm,
            sandbox=sandbox,
            run=run,
            request=meta.request,
            time_budget_s=meta.time_budget,
            max_trials=meta.max_trials,
            started=started,
            spent_before_s=meta.spent_s,
            store=self.runs_dir,
            hpo_settings=settings,
            progress=progress,
            command=command_of(meta, self._sandbox_name()),
            description=meta.description,
            features=meta.features,
            refit=meta.refit,
            nas=meta.nas,
        )
        try:
            with run.clock(meta.spent_s):  # the spent time survives a kill at any instant
                state = run_graph(ctx, resume=resume)
        finally:
            if isinstance(self.sandbox, str):
                sandbox.close()
        return _result(run, state, ctx)

    def new_run_dir(self, name: str) -> Path:
        """A new, unused run directory path under the runs directory for data named ``name``."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        base = self.runs_dir / f"{stamp}-{name}"
        path, i = base, 1
        while path.exists():
            i += 1
            path = Path(f"{base}-{i}")
        return path

    @staticmethod
    def _keep_data(data: pd.DataFrame | str | Path, run: RunDir) -> str:
        """Where a resumed run re-reads the data: the file, or a copy of a DataFrame."""
        if isinstance(data, pd.DataFrame):
            buf = io.BytesIO()
            data.to_parquet(buf, index=False)
            write_atomic(run.data_copy, buf.getvalue())
            return str(run.data_copy.resolve())
        return str(Path(data).resolve())

    @staticmethod
    def load(run_dir: str | Path) -> LoadedRun:
        """Opens a finished run: its model, leaderboard and report."""
        return LoadedRun(Path(run_dir))


def _read_description(description: str | Path | None) -> tuple[str, str | None]:
    """(the text, the file it came from) of a run's data description."""
    if description is None:
        return "", None
    if isinstance(description, Path):
        try:
            return description.read_text(encoding="utf-8"), str(description.resolve())
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot read the description file {str(description)!r}: {e}") from e
    return str(description), None


def _leaderboard(rows: list[TrialRow], verified: set[str]) -> pd.DataFrame:
    """Finished trials whose scores held, best first."""
    columns = ["key", "family", "source", "cv_score", "holdout_score", "seconds", "params"]
    done = [r for r in rows if r.finished and r.key in verified]
    return pd.DataFrame([{c: getattr(r, c) for c in columns} for r in done], columns=columns)


def _result(run: RunDir, state: RunState, ctx: RunContext) -> RunResult:
    final = state.get("final") or FinalModel()
    model = run.load_model() if final.ok and run.model_path.exists() else None
    return RunResult(
        run_dir=run.path,
        status=state.get("status", "unknown"),
        model=model,
        leaderboard=_leaderboard(state.get("trials", []), set(state.get("verified", []))),
        report_path=run.report_path,
        usage=ctx.llm.ledger.as_rows() if ctx.llm is not None else [],
        holdout_score=final.holdout_score,
        cv_score=final.cv_score,
        metric_display=ctx.task.metric.display,
        checks=[c.as_row() for c in state.get("checks", [])],
        events=state.get("events", []),
        features=state.get("features"),
    )


class LoadedRun:
    """A finished run read back from its directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        run = RunDir(run_dir)
        self.meta = run.meta()
        model_path = run.model_path
        if not model_path.exists():
            if (run_dir / "model.joblib").exists():
                raise ConfigError(
                    f"run {run_dir} keeps its model as a pickle (model.joblib), which "
                    "mlpilot does not load because unpickling runs code; run the "
                    "request again to get a model.skops"
                )
            raise ConfigError(f"run {run_dir} has no model (status: {self.meta.status})")
        try:
            self.model: PilotModel = run.load_model()
        except model_io.UntrustedModel as e:
            raise ConfigError(str(e)) from e
        inner = getattr(self.model, "estimator_", None)
        if isinstance(inner, PrunedTextClassifier):  # its folder, wherever the run now is
            inner.directory = str(run_dir / NAS_DIR / "pruned")
        self.report_path = run.report_path

    def predict(self, frame: pd.DataFrame) -> Any:
        return self.model.predict(frame)

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        """Class probabilities, one column per class in ``model.classes_`` order."""
        if self.model.problem_type == "regression":
            raise ConfigError(_NO_PROBA)
        return self.model.predict_proba(frame)

    def prediction_table(
        self, frame: pd.DataFrame, *, proba: bool = False, id_column: str | None = None
    ) -> pd.DataFrame:
        """Predictions as a table to submit: ``id_column`` carried through first (when
        given), then ``<target>_predicted``, or with ``proba`` one column of
        probabilities per class, named by the class."""
        if id_column is not None and id_column not in frame.columns:
            import difflib

            close = difflib.get_close_matches(id_column, [str(c) for c in frame.columns], 3)
            hint = f" (close matches: {', '.join(close)})" if close else ""
            raise DataError(f"the data has no id column {id_column!r}{hint}")
        if proba:
            values = self.predict_proba(frame)
            table = pd.DataFrame(values, columns=[str(c) for c in self.model.classes_])
        else:
            table = pd.DataFrame({f"{self.model.target}_predicted": self.predict(frame)})
        if id_column is not None:
            if id_column in table.columns:
                raise DataError(f"the id column {id_column!r} has a class's name; rename it")
            table.insert(0, id_column, frame[id_column].to_numpy())
        return table


_NO_PROBA = (
    "a regression model has no class probabilities: predict without --proba "
    "(predict_proba is for classification runs)"
)
