"""Pure functions the agents call: metrics, profiling, model zoo, search spaces."""

from mlpilot.tools.metrics import METRICS, Metric, default_metric, get_metric, metric_from_request
from mlpilot.tools.profile import DataProfile, profile_frame

__all__ = [
    "METRICS",
    "DataProfile",
    "Metric",
    "default_metric",
    "get_metric",
    "metric_from_request",
    "profile_frame",
]
