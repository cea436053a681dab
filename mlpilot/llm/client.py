"""The handle agents hold: a backend client plus the ledger, budget and cache."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mlpilot.llm.base import (
    Completion,
    LLMClient,
    LLMError,
    LLMUnavailable,
    normalize_messages,
)
from mlpilot.llm.cache import ResponseCache
from mlpilot.llm.ledger import Budget, Ledger


class LLM:
    """Wraps an :class:`LLMClient` so that every call is budgeted, recorded and cached.

    Args:
        client: the backend (litellm, embedded, or a test double).
        ledger: where usage is recorded; a new one with ``budget`` if omitted.
        budget: the run's limits, used when ``ledger`` is omitted.
        cache: the response cache, or None for no caching.
        defaults: parameters sent with every call unless the call overrides them
            (``temperature``, ``max_tokens``, ``seed``).
    """

    def __init__(
        self,
        client: LLMClient,
        *,
        ledger: Ledger | None = None,
        budget: Budget | None = None,
        cache: ResponseCache | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.ledger = ledger if ledger is not None else Ledger(budget=budget or Budget())
        self.cache = cache
        self.defaults = dict(defaults or {})

    @property
    def model(self) -> str:
        return self.client.model

    @property
    def supports_json_schema(self) -> bool:
        return self.client.supports_json_schema

    @property
    def runs_locally(self) -> bool:
        """Whether the backend generates on this machine's cores (and competes with
        trials for them); a client that does not say is taken to run elsewhere."""
        return bool(getattr(self.client, "runs_locally", False))

    @property
    def available(self) -> bool:
        """False once the budget is spent."""
        return self.ledger.exhausted() is None

    def prepare(self) -> None:
        """The backend's one-time set-up (the embedded model's file on first use);
        errors are left for the first call to report."""
        prepare = getattr(self.client, "prepare", None)
        if callable(prepare):
            with contextlib.suppress(Exception):  # reported by the first real call
                prepare()

    def warm_up(self) -> None:
        """Prepares the backend (imports, model load) ahead of the first call; errors
        are left for that call to report."""
        warm_up = getattr(self.client, "warm_up", None)
        if callable(warm_up):
            with contextlib.suppress(Exception):  # reported by the first real call
                warm_up()

    def cancel(self) -> None:
        """Stops a generation in progress where the backend can (the embedded model);
        the waiting call then raises :class:`LLMTimeout`."""
        cancel = getattr(self.client, "cancel", None)
        if callable(cancel):
            cancel()

    def complete(
        self,
        messages: Sequence[Mapping[str, Any]] | str,
        *,
        role: str = "default",
        **params: Any,
    ) -> Completion:
        """Sends one request; ``role`` names the agent for the ledger.

        Raises:
            BudgetExceeded: the run's budget is spent (no call is made).
            LLMUnavailable: the model cannot be used at all.
            LLMCallError: the provider failed this call.
        """
        msgs = normalize_messages(messages)
        self.ledger.check()
        merged = {**self.defaults, **{k: v for k, v in params.items() if v is not None}}
        key = None
        if self.cache is not None and self.cache.applies(merged):
            key = ResponseCache.key(self.client.model, msgs, merged)
            hit = self.cache.get(key)
            if hit is not None:
                self.ledger.record(role, hit)
                return hit
        t0 = time.perf_counter()
        try:
            completion = self.client.complete(msgs, **merged)
        except LLMError:
            self.ledger.record_failure(role, time.perf_counter() - t0)
            raise
        self.ledger.record(role, completion)
        if key is not None and self.cache is not None:
            self.cache.put(key, completion)
        return completion


def make_llm(
    spec: str | LLMClient | LLM | None = None,
    *,
    api_base: str | None = None,
    budget: Budget | None = None,
    cache: ResponseCache | bool | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> LLM:
    """Builds the run's :class:`LLM` from what the user named.

    ``spec`` is a litellm model string (``openai/gpt-4o-mini``), ``embedded`` or
    ``embedded/<name>``, an ``LLMClient`` instance, or None. None means
    ``$MLPILOT_LLM`` if set, else the embedded default model.

    ``cache=True`` uses the default cache directory; a ``ResponseCache`` is used
    as given; None/False disables caching.
    """
    if isinstance(spec, LLM):
        return spec
    if spec is None:
        spec = os.environ.get("MLPILOT_LLM") or "embedded"
    if isinstance(spec, str):
        from mlpilot.llm.litellm_client import LiteLLMClient

        if spec.startswith("embedded"):
            from mlpilot.llm.embedded import resolve_embedded

            name = spec.split("/", 1)[1] if "/" in spec else None
            spec = f"embedded/{resolve_embedded(name).name}"  # fail early if not installed
        client: LLMClient = LiteLLMClient(spec, api_base=api_base)
    elif isinstance(spec, LLMClient):
        client = spec
    else:
        raise LLMUnavailable(f"cannot make an LLM from {spec!r}; pass a model string")
    if cache is True:
        cache = ResponseCache()
    return LLM(
        client,
        budget=budget,
        cache=cache or None,
        defaults=defaults,
    )
