"""mlpilot: LLM-agent AutoML that plans from plain words, runs every job in a
sandbox and reports only results it has recomputed itself.

    from mlpilot import Pilot
    result = Pilot().run("tune a model for this dataset", data="train.csv", time_budget=120)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlpilot.errors import ConfigError, DataError, MlpilotError

if TYPE_CHECKING:
    from mlpilot.api import Pilot, RunResult

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "MlpilotError", "Pilot", "RunResult", "__version__"]


def __getattr__(name: str) -> Any:
    # The API pulls in LangGraph, Optuna and scikit-learn: import it on first use, so
    # that `import mlpilot` (and the CLI's --help) stays fast.
    if name in ("Pilot", "RunResult"):
        from mlpilot import api

        return getattr(api, name)
    raise AttributeError(f"module 'mlpilot' has no attribute {name!r}")
