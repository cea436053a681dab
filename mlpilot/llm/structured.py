"""Typed answers from an LLM: constrained decoding, validation and bounded re-asking."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mlpilot.llm.base import (
    LLMCallError,
    LLMTimeout,
    Message,
    StructuredOutputError,
    normalize_messages,
)
from mlpilot.llm.client import LLM

T = TypeVar("T", bound=BaseModel)

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


def response_format_for(model_cls: type[BaseModel]) -> dict[str, Any]:
    """The OpenAI ``response_format`` that constrains decoding to ``model_cls``'s schema."""
    return {
        "type": "json_schema",
        "json_schema": {"name": model_cls.__name__, "schema": model_cls.model_json_schema()},
    }


def extract_json(text: str) -> str:
    """The JSON object inside a completion: drops code fences and chatter around it."""
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start, end = text.find("{"), text.rfind("}")
    if start == -1 or end < start:
        raise ValueError("the answer contains no JSON object (no '{ ... }' found)")
    return text[start : end + 1]


def _describe(error: Exception) -> str:
    if isinstance(error, ValidationError):
        parts = []
        for e in error.errors()[:8]:
            where = ".".join(str(p) for p in e["loc"]) or "(root)"
            parts.append(f"{where}: {e['msg']}")
        return "; ".join(parts)
    return str(error)


def structured(
    llm: LLM,
    messages: Sequence[Mapping[str, Any]] | str,
    model_cls: type[T],
    *,
    role: str = "default",
    max_retries: int = 2,
    **params: Any,
) -> T:
    """Asks ``llm`` for an instance of ``model_cls``.

    Where the backend supports JSON-schema constrained decoding the answer is
    generated under the schema. Either way it is validated; a validation error
    is sent back to the model ("Error: ... Please fix your mistakes") and the
    request is repeated, at most ``max_retries`` times.

    Prompts should show an example instance rather than paste the schema:
    small models tend to echo a schema back.

    Raises:
        StructuredOutputError: still invalid after the re-asks; carries the raw
            last completion and every validation error.
        LLMUnavailable / BudgetExceeded / LLMCallError: from the LLM itself.
    """
    msgs: list[Message] = normalize_messages(messages)
    use_schema = llm.supports_json_schema
    if not use_schema:
        schema = json.dumps(model_cls.model_json_schema(), separators=(",", ":"))
        msgs = [
            *msgs,
            {
                "role": "system",
                "content": "Answer with one JSON object and nothing else. "
                f"It must validate against this JSON Schema: {schema}",
            },
        ]
    errors: list[str] = []
    raw = ""
    # A timeout covers the whole exchange, re-asks included.
    deadline = None if params.get("timeout") is None else time.monotonic() + params["timeout"]
    for _ in range(max_retries + 1):
        call_params = dict(params)
        if deadline is not None:
            call_params["timeout"] = deadline - time.monotonic()
            if call_params["timeout"] <= 0:
                raise LLMTimeout(f"no time left to re-ask ({'; '.join(errors)})")
        if use_schema:
            call_params["response_format"] = response_format_for(model_cls)
        try:
            completion = llm.complete(msgs, role=role, **call_params)
        except LLMTimeout:
            raise
        except LLMCallError:
            if not use_schema:
                raise
            use_schema = False  # the provider rejected response_format: validate instead
            call_params.pop("response_format")
            completion = llm.complete(msgs, role=role, **call_params)
        raw = completion.text
        try:
            return model_cls.model_validate_json(extract_json(raw))
        except (ValidationError, ValueError) as e:
            problem = _describe(e)
            if completion.finish_reason == "length":
                problem += " (the answer was cut off at the token limit)"
            errors.append(problem)
            msgs = [
                *msgs,
                {"role": "assistant", "content": raw},
                {
                    "role": "user",
                    "content": f"Error: that is not a valid {model_cls.__name__}: {problem}. "
                    "Please fix your mistakes and answer with the corrected JSON object only.",
                },
            ]
    raise StructuredOutputError(
        f"{llm.model} gave no valid {model_cls.__name__} in {max_retries + 1} attempts; "
        f"last error: {errors[-1]}",
        raw=raw,
        errors=errors,
    )
