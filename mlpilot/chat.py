"""The chat loop behind ``mlpilot chat``: requests in plain words, questions back
for what is missing, a run, and answers to follow-ups from the run's own records."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlpilot.api import Pilot, RunResult
from mlpilot.errors import MlpilotError
from mlpilot.task import TaskSpec, _target_candidates, target_from_request
from mlpilot.tools.data import read_table

_PATH = re.compile(r"(?P<path>[\w./~-]+\.(?:csv|tsv|txt|parquet|pq))\b", re.IGNORECASE)
_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds|m|min|mins|minutes)\b", re.I)
_QUIT = {"quit", "exit", "bye", "q"}


@dataclass
class ChatSession:
    """One conversation. ``say`` takes a user line and returns mlpilot's reply.

    Args:
        pilot: runs the requests.
        default_budget: seconds per run unless the request names a time.
        run: how a run is started (replaceable for a progress display).
    """

    pilot: Pilot
    default_budget: float = 120.0
    run: Callable[..., RunResult] | None = None
    request: str = ""
    data: Path | None = None
    target: str | None = None
    budget: float | None = None
    result: RunResult | None = None
    columns: list[str] = field(default_factory=list)
    awaiting: str | None = None  # "data" or "target" when a question is open
    done: bool = False

    def say(self, line: str) -> str:
        text = line.strip()
        if not text:
            return ""
        if text.lower() in _QUIT:
            self.done = True
            return "Bye."
        if self.awaiting == "data":
            return self._answer_data(text)
        if self.awaiting == "target":
            return self._answer_target(text)
        if self.result is not None and not _PATH.search(text) and not _wants_new_run(text):
            return self.follow_up(text)
        return self._new_request(text)

    # -- a new request -------------------------------------------------------------

    def _new_request(self, text: str) -> str:
        self.request, self.data, self.target, self.columns = text, None, None, []
        seconds = _SECONDS.search(text)
        if seconds:
            value = float(seconds.group(1))
            self.budget = value * 60 if seconds.group(2).lower().startswith("m") else value
        match = _PATH.search(text)
        if match is None:
            self.awaiting = "data"
            return "Which data file should I use? (a CSV, TSV or Parquet path)"
        return self._answer_data(match.group("path"))

    def _answer_data(self, text: str) -> str:
        path = Path(text.strip().strip("'\"")).expanduser()
        try:
            header = read_table(path)
        except MlpilotError as e:
            self.awaiting = "data"
            return f"{e}. Which data file should I use?"
        self.data = path
        self.columns = [str(c) for c in header.columns]
        self.target = target_from_request(self.request, self.columns)
        if self.target is None:
            self.awaiting = "target"
            likely = _target_candidates(header)
            rest = [c for c in self.columns if c not in likely]
            shown = ", ".join(rest[:20]) + (" ..." if len(rest) > 20 else "")
            return (
                f"Which column should I predict? Likely: {', '.join(likely)}. "
                f"Other columns: {shown}"
            )
        return self._start()

    def _answer_target(self, text: str) -> str:
        name = text.strip().strip("'\"`")
        found = next((c for c in self.columns if c.lower() == name.lower()), None)
        if found is None:
            found = target_from_request(text, self.columns)
        if found is None:
            return f"There is no column {name!r}. Which column should I predict?"
        self.target = found
        return self._start()

    def _start(self) -> str:
        self.awaiting = None
        budget = self.budget or self.default_budget
        runner = self.run or self.pilot.run
        try:
            self.result = runner(self.request, self.data, target=self.target, time_budget=budget)
        except MlpilotError as e:
            return f"I could not run that: {e}"
        r = self.result
        if r.model is None:
            return (
                f"The run finished without a verified model; the report says why: {r.report_path}"
            )
        best = r.leaderboard.iloc[0] if len(r.leaderboard) else None
        lead = (
            f" Best single model: {best['family']} (CV {best['cv_score']:.4f})."
            if best is not None
            else ""
        )
        return (
            f"Done. Holdout score {r.holdout_score:.4f} (CV {r.cv_score:.4f}), "
            f"{len(r.leaderboard)} verified trials.{lead} Report: {r.report_path}. "
            "Ask me which features mattered, what it cost, for the leaderboard, or start "
            "a new request."
        )

    # -- follow-ups ------------------------------------------------------------------

    def follow_up(self, text: str) -> str:
        t = text.lower()
        r = self.result
        assert r is not None
        if re.search(r"feature|important|matter|driv", t):
            return self.feature_importance()
        if re.search(r"cost|token|spend|spent|price|usage", t):
            total = r.usage[-1] if r.usage else None
            if total is None:
                return "No LLM was used, so it cost nothing in tokens."
            return (
                f"{total['calls']} LLM calls, {total['prompt_tokens']} tokens in and "
                f"{total['completion_tokens']} out, ${float(total['cost_usd']):.4f}, "
                f"{float(total['latency_s']):.1f} s of LLM time."
            )
        if re.search(r"leaderboard|best|models|top", t):
            rows = r.leaderboard.head(5)
            lines = [
                f"{i + 1}. {row.family} ({row.source}): CV {row.cv_score:.4f}, holdout "
                f"{row.holdout_score:.4f}"
                for i, row in enumerate(rows.itertuples())
            ]
            return "\n".join(lines) or "No verified trials."
        if re.search(r"report|where", t):
            return f"The report is {r.report_path} (and report.html beside it)."
        if re.search(r"verif|check|leak", t):
            return "\n".join(f"{c['check']}: {_verdict(c)} — {c['detail']}" for c in r.checks)
        return (
            "I can tell you which features mattered, what it cost, the leaderboard, the "
            "verification checks or where the report is — or give me a new request."
        )

    def feature_importance(self, top: int = 8) -> str:
        """Permutation importance of the final model on the holdout rows, computed on the host."""
        r = self.result
        assert r is not None and r.model is not None and self.data is not None
        task = TaskSpec.from_data(self.data, request=self.request, target=self.target, seed=0)
        X = task.holdout.features
        y = task.holdout._labels.to_numpy()
        metric = task.metric
        base = _score(r.model, X, y, task)
        rng = np.random.default_rng(0)
        drops: list[tuple[float, str]] = []
        for col in X.columns:
            shuffled = X.copy()
            shuffled[col] = rng.permutation(shuffled[col].to_numpy())
            drops.append((metric.sign() * (base - _score(r.model, shuffled, y, task)), col))
        drops.sort(reverse=True)
        lines = [f"{col}: {loss:+.4f}" for loss, col in drops[:top]]
        return (
            f"Drop in holdout {metric.display} when each feature is shuffled "
            "(bigger = mattered more):\n" + "\n".join(lines)
        )


def _verdict(check: dict[str, Any]) -> str:
    if check["ok"]:
        return "ok"
    return "FAILED" if check["severity"] == "error" else "doubt"


def _score(model: Any, X: pd.DataFrame, y: np.ndarray, task: TaskSpec) -> float:
    from mlpilot.tools.metrics import predictions_for

    raw = model.predict_proba(X) if task.is_classification else model.predict(X)
    classes = list(model.classes_) if task.is_classification else None
    return task.metric(y, predictions_for(task.metric, raw, classes))


def _wants_new_run(text: str) -> bool:
    return bool(re.search(r"\b(tune|train|fit|run|predict|forecast|classify)\b", text.lower()))
