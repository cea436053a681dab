"""The LLM client contract: messages in, text out, with usage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from mlpilot.errors import MlpilotError

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    """One chat message, in the OpenAI shape every provider understands."""

    role: Role
    content: str


@dataclass(frozen=True)
class Usage:
    """Tokens one call consumed."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Completion:
    """What one LLM call returned.

    Attributes:
        text: the assistant message's content.
        model: the model that answered, as the caller named it.
        usage: tokens in and out.
        cost_usd: money spent on the call (0 for local models and cache hits).
        latency_s: wall-clock seconds the call took (0 for cache hits).
        cached: True when the answer came from the on-disk response cache.
        recorded_latency_s: for a cache hit, the seconds the call took when its
            answer was recorded (what a replayed audit reports).
        finish_reason: the provider's reason for stopping ("stop", "length", ...).
    """

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    finish_reason: str | None = None
    recorded_latency_s: float = 0.0


@runtime_checkable
class LLMClient(Protocol):
    """A chat model. Implementations must be safe to call from one thread at a time.

    ``complete`` sends the messages and returns the answer. Keyword parameters
    are the OpenAI ones (``temperature``, ``max_tokens``, ``seed``, ``stop``,
    ``response_format``); a backend that cannot honour ``response_format`` of
    type ``json_schema`` reports so through ``supports_json_schema`` so that
    callers fall back to validation and re-asking.

    Errors: a provider or transport failure raises :class:`LLMCallError`; a
    model that cannot be used at all (missing weights, no key) raises
    :class:`LLMUnavailable`.
    """

    model: str

    @property
    def supports_json_schema(self) -> bool: ...

    def complete(self, messages: Sequence[Message], **params: Any) -> Completion: ...


class LLMError(MlpilotError):
    """Base class of the LLM layer's errors."""


class LLMUnavailable(LLMError):
    """No LLM can be used now: not configured, not installed, or over budget.

    Agents catch this and carry on without the LLM.
    """


class BudgetExceeded(LLMUnavailable):
    """The run's LLM budget (tokens, cost or seconds) is spent."""


class LLMCallError(LLMError):
    """A call to a provider failed (network, authentication, bad request)."""


class LLMTimeout(LLMCallError):
    """A call ran past its time limit (or was cancelled) and was stopped.

    Attributes:
        partial: the answer's text up to the stop, where the backend streams it (the
            embedded model); a caller may use what is complete in it.
    """

    def __init__(self, message: str, *, partial: str = "") -> None:
        super().__init__(message)
        self.partial = partial


class StructuredOutputError(LLMError):
    """The model did not produce a valid instance after the allowed re-asks.

    Attributes:
        raw: the last completion text, exactly as the model wrote it.
        errors: the validation error messages, one per attempt.
    """

    def __init__(self, message: str, *, raw: str, errors: Sequence[str]) -> None:
        super().__init__(message)
        self.raw = raw
        self.errors = list(errors)


def normalize_messages(messages: Sequence[Mapping[str, Any]] | str) -> list[Message]:
    """Accepts a bare prompt or a list of messages and checks their shape."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    out: list[Message] = []
    for i, m in enumerate(messages):
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise LLMError(
                "each message must be {'role': 'system'|'user'|'assistant', 'content': str}, "
                f"but message {i} is {dict(m)!r}"
            )
        out.append({"role": role, "content": content})
    if not out:
        raise LLMError("at least one message is required, but got an empty list")
    return out


class NetworkLLMForbidden(AssertionError):
    """An LLM call would have left the machine while ``$MLPILOT_NO_NETWORK_LLM`` is set.

    An ``AssertionError`` on purpose, like ``UnscriptedCall``: agent code catches
    LLM errors to fall back, and must never swallow this one.
    """


NO_NETWORK_ENV = "MLPILOT_NO_NETWORK_LLM"


def is_loopback(url: str | None) -> bool:
    """True when ``url`` points at this machine (localhost, 127.0.0.0/8, ::1)."""
    if not url:
        return False
    from urllib.parse import urlparse

    host = urlparse(url).hostname or ""
    return host == "localhost" or host.startswith("127.") or host == "::1"
