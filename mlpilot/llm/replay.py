"""Record an LLM's answers once, replay them exactly later (no model, no network).

A recording is a folder: ``model.json`` (which model answered, and whether it took
JSON schemas) and one file per request in the :class:`ResponseCache` layout. A
replay answers each request from the folder; a request that was never recorded
means the replayed run has diverged from the recorded one, and raises
:class:`ReplayMiss` rather than quietly asking something else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlpilot.errors import MlpilotError
from mlpilot.llm.base import Completion, LLMClient, Message
from mlpilot.llm.cache import ResponseCache
from mlpilot.llm.client import LLM, make_llm

MANIFEST = "model.json"


class ReplayMiss(MlpilotError):
    """A replay was asked something the recording does not hold."""


class ReplayClient:
    """Stands in for the recorded model; only the response cache answers."""

    def __init__(self, directory: Path, info: dict[str, Any] | None = None) -> None:
        """``info`` ({"model", "supports_json_schema"}) where the recording keeps it
        elsewhere (an audit's ``audit.json``); else ``directory``'s manifest."""
        if info is None:
            manifest = directory / MANIFEST
            if not manifest.exists():
                raise MlpilotError(
                    f"{directory} is not an LLM recording (no {MANIFEST}); record one with --record"
                )
            info = json.loads(manifest.read_text())
        self.directory = directory
        self.model: str = info["model"]
        self._schema = bool(info.get("supports_json_schema", True))

    @property
    def supports_json_schema(self) -> bool:
        return self._schema

    def complete(self, messages: Sequence[Message], **params: Any) -> Completion:
        raise ReplayMiss(
            f"the recording in {self.directory} has no answer for this request (the run "
            "differs from the recorded one: other code, library versions, seeds or options)"
        )


def recording_llm(spec: str | LLMClient | None, directory: Path, **kwargs: Any) -> LLM:
    """An LLM that stores every answer (sampled ones too) under ``directory``."""
    llm = make_llm(spec, cache=ResponseCache(directory, cache_sampled=True), **kwargs)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {
        "model": llm.client.model,
        "supports_json_schema": bool(llm.client.supports_json_schema),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest))
    return llm


def replay_llm(directory: Path, **kwargs: Any) -> LLM:
    """An LLM that answers only from the recording in ``directory``."""
    return make_llm(
        ReplayClient(directory), cache=ResponseCache(directory, cache_sampled=True), **kwargs
    )
