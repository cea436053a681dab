"""On-disk response cache keyed by (model, messages, params)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlpilot.llm.base import Completion, Message, Usage


def default_cache_dir() -> Path:
    """``$MLPILOT_CACHE_DIR/llm`` or ``~/.cache/mlpilot/llm``."""
    root = os.environ.get("MLPILOT_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "mlpilot"
    return base / "llm"


class ResponseCache:
    """Stores completions as one JSON file each, named by the request's hash.

    Reruns of the same request read the stored answer, so a run replays
    exactly and costs nothing. Only deterministic requests are cached unless
    ``cache_sampled`` is set: a request with a temperature above zero is
    expected to vary between calls.

    Args:
        directory: where the files go (created on first write).
        cache_sampled: also cache requests with ``temperature > 0``.
    """

    def __init__(self, directory: Path | str | None = None, *, cache_sampled: bool = False):
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.cache_sampled = cache_sampled

    def applies(self, params: Mapping[str, Any]) -> bool:
        temperature = params.get("temperature")
        # An unset temperature means the provider's default, which samples.
        deterministic = temperature is not None and float(temperature) == 0.0
        return deterministic or self.cache_sampled

    @staticmethod
    def key(model: str, messages: Sequence[Message], params: Mapping[str, Any]) -> str:
        blob = json.dumps(
            {
                "model": model,
                "messages": list(messages),
                # how long one may wait does not change the answer
                "params": {k: v for k, v in params.items() if k != "timeout"},
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        usage = Usage(**data.pop("usage"))
        recorded = data.get("latency_s") or data.get("recorded_latency_s", 0.0)
        data.update(cached=True, cost_usd=0.0, latency_s=0.0, recorded_latency_s=recorded)
        return Completion(usage=usage, **data)

    def put(self, key: str, completion: Completion) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(completion)))
        os.replace(tmp, path)  # atomic: a reader never sees half a file
