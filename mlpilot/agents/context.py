"""What every node of the run's graph needs and nothing in the state should hold."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpilot.agents.hpo import HpoSettings
from mlpilot.agents.rundir import RunDir
from mlpilot.llm import LLM
from mlpilot.sandbox import Sandbox
from mlpilot.task import TaskSpec

Progress = Callable[[str, dict[str, Any]], None]


@dataclass
class RunContext:
    """The run's dependencies, handed to every node through LangGraph's runtime.

    Attributes:
        run: the run directory's owner; every file a resume reads goes through it.
        started: ``time.monotonic()`` when this process (re)started the run.
        spent_before_s: wall time used by earlier processes of a resumed run.
        store: where past runs are found (the planner retrieves them).
        trial_code: the trial job's source; None for mlpilot's CV job (tests hand
            in misbehaving jobs from :mod:`mlpilot.testing.adversarial`).
    """

    task: TaskSpec
    llm: LLM | None
    sandbox: Sandbox
    run: RunDir
    request: str
    time_budget_s: float
    max_trials: int
    started: float
    spent_before_s: float = 0.0
    store: Path | None = None
    hpo_settings: HpoSettings = field(default_factory=HpoSettings)
    progress: Progress | None = None
    command: str = ""
    trial_code: str | None = None
    description: str = ""
    features: bool | None = None
    refit: str = "all"  # the delivered model learns from: "all" rows, or "train" rows only
    # the pruning step's settings as fields of NasSettings (None: sized to the budget)
    nas: dict[str, Any] | None = None
    # the LLM's leakage review, when the search began it (finalize.start_leak_review);
    # a wait function, never checkpointed: a resumed run's final step asks anew
    leak_review: Callable[[float], Any] | None = None

    @property
    def deadline(self) -> float:
        return self.started + self.time_budget_s - self.spent_before_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return self.spent_before_s + time.monotonic() - self.started

    def emit(self, event: str, **data: Any) -> None:
        """Tells the caller's progress display, and appends the event to the run's
        progress log (what ``mlpilot ui`` shows), with the LLM calls made so far."""
        if self.llm is not None:
            data.setdefault("llm_calls", self.llm.ledger.total().calls)
        with contextlib.suppress(OSError):  # a full disk must not stop the run
            self.run.log_progress(event, data, self.elapsed())
        if self.progress is not None:
            self.progress(event, data)
