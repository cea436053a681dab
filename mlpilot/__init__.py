"""mlpilot: LLM-agent AutoML that plans from plain words, runs every job in a
sandbox and reports only results it has recomputed itself."""

from mlpilot.errors import ConfigError, DataError, MlpilotError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "MlpilotError", "__version__"]
