"""Every model, remote or embedded, through one path: litellm.

Provider models are litellm model strings (``openai/gpt-4o-mini``,
``anthropic/claude-...``, ``ollama/llama3.1``, or any OpenAI-compatible server
with ``api_base``). The embedded model is registered with litellm as the custom
provider ``embedded``, so ``embedded/qwen2.5-coder-1.5b`` is a model string too.
Keys come only from the environment, as litellm reads them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from mlpilot.llm.base import (
    NO_NETWORK_ENV,
    Completion,
    LLMCallError,
    LLMError,
    LLMUnavailable,
    Message,
    NetworkLLMForbidden,
    Usage,
    is_loopback,
)

EMBEDDED_PROVIDER = "embedded"

_setup_lock = threading.Lock()
_litellm: ModuleType | None = None


def load_litellm() -> ModuleType:
    """Imports litellm once, offline-safe, with the embedded provider registered."""
    global _litellm
    with _setup_lock:
        if _litellm is not None:
            return _litellm
        # Without this, importing litellm fetches its price map from the internet.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm
        from litellm.utils import custom_llm_setup

        litellm.suppress_debug_info = True
        litellm.drop_params = False
        litellm.custom_provider_map = [
            p for p in litellm.custom_provider_map if p["provider"] != EMBEDDED_PROVIDER
        ] + [{"provider": EMBEDDED_PROVIDER, "custom_handler": _make_handler(litellm)}]
        custom_llm_setup()
        _litellm = litellm
        return litellm


def _make_handler(litellm: ModuleType) -> Any:
    from mlpilot.llm.embedded import get_engine

    class EmbeddedHandler(litellm.CustomLLM):  # type: ignore[name-defined,misc]
        """litellm custom provider that answers from the in-process embedded model."""

        def completion(self, model: str, messages: list, *args: Any, **kwargs: Any) -> Any:
            params = dict(kwargs.get("optional_params") or {})
            name = model.split("/", 1)[1] if "/" in model else model
            engine = get_engine(None if name in ("", "default") else name)
            done = engine.chat(messages, timeout=kwargs.get("timeout"), **params)
            response = kwargs["model_response"]
            response.choices[0].message.content = done.text
            response.choices[0].finish_reason = done.finish_reason or "stop"
            response.model = done.model
            response.usage = litellm.Usage(
                prompt_tokens=done.usage.prompt_tokens,
                completion_tokens=done.usage.completion_tokens,
                total_tokens=done.usage.total_tokens,
            )
            return response

    return EmbeddedHandler()


class LiteLLMClient:
    """An :class:`~mlpilot.llm.base.LLMClient` over ``litellm.completion``.

    Args:
        model: a litellm model string; ``embedded`` or ``embedded/<name>`` for
            the in-process model.
        api_base: base URL of an OpenAI-compatible server (vLLM, llama.cpp, ...).
        timeout: seconds per request.
        num_retries: litellm's retries on transient provider errors.
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        timeout: float = 120.0,
        num_retries: int = 2,
    ) -> None:
        self.model = f"{EMBEDDED_PROVIDER}/default" if model == EMBEDDED_PROVIDER else model
        self.api_base = api_base
        self.timeout = timeout
        self.num_retries = num_retries

    @property
    def is_embedded(self) -> bool:
        return self.model.startswith(f"{EMBEDDED_PROVIDER}/")

    @property
    def supports_json_schema(self) -> bool:
        if self.is_embedded:
            return True
        litellm = load_litellm()
        try:
            return bool(litellm.supports_response_schema(model=self.model))
        except Exception:  # unknown to litellm's model map: assume plain text
            return False

    @property
    def runs_locally(self) -> bool:
        """Whether generation uses this machine's cores: the embedded model, or a server
        on this machine (``api_base`` on loopback)."""
        return self.is_embedded or is_loopback(self.api_base)

    def prepare(self) -> None:
        """One-time set-up outside any time budget: joins and verifies the embedded
        model's file on its first use on this machine (about 2 s per GB)."""
        if self.is_embedded:
            from mlpilot.llm.embedded import ensure_model_file

            ensure_model_file(self._engine().spec)

    def warm_up(self) -> None:
        """Imports litellm and loads the embedded model, so the first call does not wait."""
        load_litellm()
        if self.is_embedded:
            self._engine().load()

    def _engine(self) -> Any:
        from mlpilot.llm.embedded import get_engine

        name = self.model.split("/", 1)[1]
        return get_engine(None if name == "default" else name)

    def cancel(self) -> None:
        """Stops the embedded model's generation in progress (other providers: no-op;
        their calls end at their timeout)."""
        if self.is_embedded:
            self._engine().cancel()

    def complete(self, messages: Sequence[Message], **params: Any) -> Completion:
        if (
            os.environ.get(NO_NETWORK_ENV)
            and not self.is_embedded
            and not is_loopback(self.api_base)
        ):
            raise NetworkLLMForbidden(
                f"{self.model}: a network LLM call was attempted while ${NO_NETWORK_ENV} is set"
            )
        litellm = load_litellm()
        params = dict(params)
        timeout = params.pop("timeout", None) or self.timeout
        t0 = time.perf_counter()
        try:
            response = litellm.completion(
                model=self.model,
                messages=list(messages),
                api_base=self.api_base,
                timeout=timeout,
                num_retries=0 if self.is_embedded else self.num_retries,
                **params,
            )
        except litellm.exceptions.AuthenticationError as e:
            raise LLMUnavailable(
                f"{self.model}: the provider refused the credentials; set the provider's API "
                f"key in the environment (e.g. OPENAI_API_KEY). Provider said: {_short(e)}"
            ) from e
        except Exception as e:
            inner = _our_error(e)
            if inner is not None:  # raised by the embedded provider, wrapped by litellm
                raise inner from e
            raise LLMCallError(f"{self.model}: {type(e).__name__}: {_short(e)}") from e
        latency = time.perf_counter() - t0
        choice = response.choices[0]
        usage = getattr(response, "usage", None)
        return Completion(
            text=choice.message.content or "",
            model=self.model,
            usage=Usage(
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            ),
            cost_usd=0.0 if self.is_embedded else _cost(litellm, response),
            latency_s=latency,
            finish_reason=getattr(choice, "finish_reason", None),
        )


def _our_error(error: BaseException) -> LLMError | None:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, LLMError):
            return current
        seen.add(id(current))
        wrapped = getattr(current, "original_exception", None)
        if isinstance(wrapped, BaseException):
            current = wrapped
        else:
            current = current.__cause__ or current.__context__
    return None


def _cost(litellm: ModuleType, response: Any) -> float:
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:  # a model missing from the price map costs "unknown": count 0
        return 0.0


def _short(error: Exception, limit: int = 400) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
