"""Test doubles for code built on mlpilot (like ``optuna.testing``).

``ScriptedLLM`` answers from a script and fails loudly on any call the script
did not foresee. ``forbid_network_llm`` makes any LLM call that would leave
the machine an error, for a whole test session.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from mlpilot.llm.base import (
    NO_NETWORK_ENV,
    Completion,
    Message,
    NetworkLLMForbidden,
    Usage,
    is_loopback,
)

Reply = str | Exception | Callable[[list[Message], dict[str, Any]], str]


class UnscriptedCall(AssertionError):
    """A ScriptedLLM got a call its script has no reply for.

    An ``AssertionError`` on purpose: agent code catches LLM errors to fall back,
    and must never swallow this one.
    """


@dataclass
class ScriptedCall:
    messages: list[Message]
    params: dict[str, Any]


@dataclass
class ScriptedLLM:
    """An :class:`~mlpilot.llm.base.LLMClient` that replays scripted replies in order.

    Each reply is a string (the completion text), an exception (raised), or a
    function of ``(messages, params)`` returning the text. Every call is kept
    in ``calls`` for assertions.

    Args:
        replies: the script.
        model: the name the client reports.
        json_schema: what ``supports_json_schema`` reports.
        tokens_per_call: prompt/completion tokens reported per call, for budget tests.
        cost_per_call: money reported per call.
        latency_per_call: seconds reported per call (nothing actually waits).
        runs_locally: act as a model generating on this machine (the embedded one):
            the run then awaits its warm starts before the first trial and has it
            review leakage beside the trials.
    """

    replies: Iterable[Reply] = ()
    model: str = "scripted"
    json_schema: bool = True
    tokens_per_call: tuple[int, int] = (10, 5)
    cost_per_call: float = 0.0
    latency_per_call: float = 0.0
    runs_locally: bool = False
    calls: list[ScriptedCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue: list[Reply] = list(self.replies)

    @property
    def supports_json_schema(self) -> bool:
        return self.json_schema

    @property
    def remaining(self) -> int:
        return len(self._queue)

    def add(self, *replies: Reply) -> None:
        self._queue.extend(replies)

    def complete(self, messages: Sequence[Message], **params: Any) -> Completion:
        msgs = list(messages)
        self.calls.append(ScriptedCall(msgs, dict(params)))
        if not self._queue:
            last = msgs[-1]["content"] if msgs else ""
            raise UnscriptedCall(
                f"ScriptedLLM got call #{len(self.calls)} but its script is empty; "
                f"last message was: {last[:300]!r}"
            )
        reply = self._queue.pop(0)
        if isinstance(reply, Exception):
            raise reply
        text = reply(msgs, dict(params)) if callable(reply) else reply
        return Completion(
            text=text,
            model=self.model,
            usage=Usage(*self.tokens_per_call),
            cost_usd=self.cost_per_call,
            latency_s=self.latency_per_call,
            finish_reason="stop",
        )


def _guarded_connect(original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0])
            if not (host.startswith("127.") or host in ("::1", "localhost")):
                raise NetworkLLMForbidden(f"network access to {address!r} is forbidden in tests")
        return original(sock, address)

    return connect


@contextmanager
def forbid_network_llm() -> Iterator[None]:
    """Within the block, an LLM call that would leave the machine raises
    :class:`NetworkLLMForbidden`, and so does any socket connection to a
    non-loopback address (a second line of defence).

    Subprocesses inherit the rule through ``$MLPILOT_NO_NETWORK_LLM``.
    """
    previous_env = os.environ.get(NO_NETWORK_ENV)
    os.environ[NO_NETWORK_ENV] = "1"
    original = socket.socket.connect
    socket.socket.connect = _guarded_connect(original)  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]
        if previous_env is None:
            os.environ.pop(NO_NETWORK_ENV, None)
        else:
            os.environ[NO_NETWORK_ENV] = previous_env


def configs_reply(params: Sequence[Any], n: int = 2) -> str:
    """A scripted LLM's answer to a configuration request: ``n`` configurations of the
    search-space ``params`` (``Param``s), each value inside its range."""
    import json

    configs = []
    for k in range(n):
        config: dict[str, Any] = {}
        for j, p in enumerate(params):
            if p.kind == "categorical":
                config[p.name] = p.choices[(j + k) % len(p.choices)]
                continue
            value = p.from_unit((0.3 + 0.618 * (j + k)) % 1.0)  # a different place each
            config[p.name] = value if p.kind == "int" else float(f"{value:.3g}")
        configs.append(config)
    return json.dumps({"configs": configs})


__all__ = [
    "NetworkLLMForbidden",
    "ScriptedCall",
    "ScriptedLLM",
    "UnscriptedCall",
    "configs_reply",
    "forbid_network_llm",
    "is_loopback",
]
