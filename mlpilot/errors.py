"""The exceptions mlpilot raises on purpose.

Every error a user can cause (bad data, a missing model, a wrong option) is a
subclass of :class:`MlpilotError`, so a caller can catch them all in one place
and the CLI can print them as one readable line instead of a traceback.
"""

from __future__ import annotations


class MlpilotError(Exception):
    """Base class of every error mlpilot raises deliberately."""


class DataError(MlpilotError, ValueError):
    """The input data breaks a rule; the message states the rule and the value."""


class ConfigError(MlpilotError, ValueError):
    """An option or setting has a value mlpilot cannot use."""
