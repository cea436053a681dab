"""``mlpilot ui``: the local web app (chat, live runs, runs list, reports)."""

from mlpilot.ui.app import UiState, check_host, create_app, serve

__all__ = ["UiState", "check_host", "create_app", "serve"]
