"""The chat's action schema: what one user turn can ask mlpilot to do.

An LLM answers with one :class:`ChatAction` under constrained decoding (every field
is flat and the enumerations are closed, which a 1.5B model fills reliably); the
deterministic parser in :mod:`mlpilot.chat` produces the same object when no LLM
answers in time.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

# action: what it means (shown to the LLM)
ACTIONS: dict[str, str] = {
    "run": "start a new run: tune a model on a data file",
    "rerun": "run the last run again with a change (a column dropped, another budget or metric)",
    "compare": "compare two runs (by default the last two)",
    "explain": "answer a question about the last run (see topics)",
    "predict": "predict a data file with the last run's model",
    "plot": "show a plot of the last run",
    "profile": "describe a data file: rows, columns, kinds, missing values, the target",
    "runs": "list the past runs",
    "help": "say what the chat can do",
    "quit": "end the chat",
}
# explain topics: what each answers
TOPICS: dict[str, str] = {
    "winner": "which model won and why",
    "llm": "what the LLM proposed and what it was worth",
    "leakage": "leakage flags",
    "features": "which features mattered",
    "cost": "what the run cost (LLM calls, tokens, time)",
    "leaderboard": "the best verified trials",
    "checks": "the verifier's checks",
    "report": "where the report is",
}
# plot: what it shows (the run report's plot-<name>.png files)
PLOTS: dict[str, str] = {
    "history": "the optimisation history per family",
    "params": "which hyperparameters mattered",
    "roc": "the holdout ROC curve",
    "pr": "the holdout precision-recall curve",
    "confusion": "the holdout confusion matrix",
    "pred-actual": "predicted vs actual values",
    "residuals": "the residuals",
    "features": "which features mattered",
    "ensemble": "the ensemble's weights",
    "llm": "the LLM's time per role",
    "feature-gains": "the engineered features' gains",
}

Action = Literal[tuple(ACTIONS)]  # type: ignore[valid-type]
Topic = Literal[tuple(TOPICS)]  # type: ignore[valid-type]
PlotName = Literal[tuple(PLOTS)]  # type: ignore[valid-type]


class ChatAction(BaseModel):
    """One turn's action. Fields that do not apply stay null or empty."""

    action: Action  # type: ignore[valid-type]
    data: str | None = Field(None, description="a data file's path, as the user wrote it")
    target: str | None = Field(None, description="the column to predict")
    seconds: float | None = Field(None, gt=0, description="the time budget, in seconds")
    drop: list[str] = Field(default_factory=list, description="columns to leave out")
    metric: str | None = Field(None, description="what to optimise, e.g. AUC, recall, RMSE")
    topic: Topic | None = None  # type: ignore[valid-type]
    plot: PlotName | None = None  # type: ignore[valid-type]
    runs: list[str] = Field(default_factory=list, description="runs to compare, by name")
    out: str | None = Field(None, description="where to write predictions")
