"""The embedded model: chunk joining and hash check, and real answers from the small model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlpilot.llm import LLMUnavailable, make_llm, structured
from mlpilot.llm.embedded import EmbeddedModelSpec, ensure_model_file, get_engine


def _fake_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: list[bytes]) -> str:
    """Installs importable chunk modules <unique>_part1..N, like the real packages."""
    pkg_root = tmp_path / "site"
    prefix = f"fakechunk_{tmp_path.name.replace('-', '_')}"
    for i, data in enumerate(parts, start=1):
        mod = pkg_root / f"{prefix}_part{i}"
        (mod / "data").mkdir(parents=True)
        (mod / "data" / "part.bin").write_bytes(data)
        (mod / "__init__.py").write_text(
            "import os\n"
            "def get_part_path():\n"
            "    return os.path.join(os.path.dirname(__file__), 'data', 'part.bin')\n"
        )
    monkeypatch.syspath_prepend(str(pkg_root))
    return prefix + "_part{i}"


def test_chunks_are_joined_in_order_and_verified(tmp_path, monkeypatch) -> None:
    parts = [b"GGUF-head-", b"middle-", b"tail"]
    spec = EmbeddedModelSpec(
        name="fake",
        title="fake",
        part_module=_fake_chunks(tmp_path, monkeypatch, parts),
        n_parts=3,
        size_bytes=21,
        sha256=hashlib.sha256(b"".join(parts)).hexdigest(),
        extra="embedded",
    )
    path = ensure_model_file(spec, tmp_path / "models")
    assert path.read_bytes() == b"GGUF-head-middle-tail"
    stamp = path.stat().st_mtime_ns
    assert ensure_model_file(spec, tmp_path / "models") == path
    assert path.stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_a_tampered_chunk_is_refused_and_nothing_is_kept(tmp_path, monkeypatch) -> None:
    spec = EmbeddedModelSpec(
        name="fake",
        title="fake",
        part_module=_fake_chunks(tmp_path, monkeypatch, [b"evil-", b"bytes"]),
        n_parts=2,
        size_bytes=10,
        sha256=hashlib.sha256(b"the real model").hexdigest(),
        extra="embedded",
    )
    with pytest.raises(LLMUnavailable, match="damaged or altered"):
        ensure_model_file(spec, tmp_path / "models")
    assert list((tmp_path / "models").iterdir()) == []


def test_a_file_changed_after_verification_is_rebuilt(tmp_path, monkeypatch) -> None:
    parts = [b"abc", b"def"]
    spec = EmbeddedModelSpec(
        name="fake",
        title="fake",
        part_module=_fake_chunks(tmp_path, monkeypatch, parts),
        n_parts=2,
        size_bytes=6,
        sha256=hashlib.sha256(b"abcdef").hexdigest(),
        extra="embedded",
    )
    path = ensure_model_file(spec, tmp_path / "models")
    path.write_bytes(b"corrupted")
    assert ensure_model_file(spec, tmp_path / "models").read_bytes() == b"abcdef"


def test_the_shipped_licence_is_packaged() -> None:
    import mlpilot.llm

    licence = Path(mlpilot.llm.__file__).parent / "licenses" / "QWEN2.5-CODER-LICENSE.txt"
    assert "Apache License" in licence.read_text()


@pytest.mark.embedded
def test_embedded_model_gives_a_valid_structured_answer(embedded_model: str) -> None:
    from mlpilot.agents.planner import PlanDraft

    llm = make_llm()
    assert llm.model == f"embedded/{embedded_model}"
    draft = structured(
        llm,
        "Choose model families for 500 rows of numeric tabular data, binary target, from "
        "hist_gradient_boosting, random_forest, extra_trees, linear, knn, svm, mlp. Example "
        'answer: {"families": ["random_forest", "linear"], "rationale": "..."}',
        PlanDraft,
        role="test",
        temperature=0,
        max_tokens=200,
    )
    assert isinstance(draft, PlanDraft) and draft.families
    total = llm.ledger.as_rows()[-1]
    assert total["calls"] >= 1 and total["completion_tokens"] > 0
    assert total["cost_usd"] == 0.0
    assert get_engine(embedded_model).load_seconds is not None


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlpilot", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.embedded
def test_cli_llm_answers_with_the_embedded_model(embedded_model: str) -> None:
    done = _cli(
        "llm", "Name one Python library for machine learning.", "--json", "--max-tokens", "20"
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["model"] == f"embedded/{embedded_model}"
    assert answer["text"].strip() and answer["completion_tokens"] > 0


@pytest.mark.embedded
def test_cli_llm_answers_with_a_litellm_model_string(embedded_model: str) -> None:
    """The openai provider path, against an OpenAI-compatible server on loopback."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(ensure_model_file(get_engine(embedded_model).spec))
    params.n_ctx = 2048
    params.verbosity = -1
    server = xllamacpp.Server(params)
    done = _cli(
        "llm",
        "Say hello.",
        "--llm",
        "openai/local-qwen",
        "--api-base",
        f"{server.listening_address}/v1",
        "--json",
        "--max-tokens",
        "10",
        env={"OPENAI_API_KEY": "sk-local-test"},
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["model"] == "openai/local-qwen"
    assert answer["text"].strip() and answer["prompt_tokens"] > 0


@pytest.mark.embedded
def test_generation_stops_at_its_time_limit_and_on_cancel(embedded_model: str) -> None:
    import threading
    import time

    from mlpilot.llm import LLMTimeout

    engine = get_engine(embedded_model)
    long_task = [{"role": "user", "content": "Count from 1 to 400, one number per line."}]
    # Greedy decoding: the answer is ~700 tokens (~30 s) every time. Sampled, it was
    # sometimes a short reply that ended before the cancel came.
    greedy = {"temperature": 0.0, "seed": 0}
    engine.chat([{"role": "user", "content": "Say hi."}], max_tokens=4)  # loaded
    t0 = time.perf_counter()
    with pytest.raises(LLMTimeout, match="time limit"):
        engine.chat(long_task, max_tokens=1500, timeout=1.0, **greedy)
    assert time.perf_counter() - t0 < 5  # stopped, not run to 1500 tokens
    timer = threading.Timer(1.0, engine.cancel)
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(LLMTimeout, match="cancelled"):
        engine.chat(long_task, max_tokens=1500, **greedy)
    assert time.perf_counter() - t0 < 5
    # The engine answers the next request normally (the cancel does not linger).
    done = engine.chat([{"role": "user", "content": "Say hi."}], max_tokens=8)
    assert done.text and done.usage.completion_tokens > 0


@pytest.mark.embedded
def test_a_long_prompt_stops_while_it_is_read(embedded_model: str) -> None:
    # Tokens come only after the whole prompt is read (~40 s for this one on one core):
    # a cancel or a time limit must stop the reading itself, between its steps.
    import threading
    import time

    from mlpilot.llm import LLMTimeout

    engine = get_engine(embedded_model)
    rows = " ".join(f"row {i}: value {i * 7 % 13}, label {i % 3}." for i in range(300))
    engine.chat([{"role": "user", "content": "Say hi."}], max_tokens=4)  # loaded
    for n, stop in enumerate(("time limit", "cancelled")):
        prompt = [{"role": "user", "content": f"Table {n}. {rows} Which label is most common?"}]
        timer = threading.Timer(1.0, engine.cancel)
        t0 = time.perf_counter()
        with pytest.raises(LLMTimeout, match=stop) as stopped:
            if stop == "cancelled":
                timer.start()
            engine.chat(prompt, max_tokens=8, timeout=1.0 if stop == "time limit" else None)
        assert time.perf_counter() - t0 < 12, stopped.value  # a step of the prompt, not all of it
        assert not stopped.value.partial  # no token came: it stopped in the prompt


@pytest.mark.embedded
def test_the_load_ahead_of_a_run_is_the_server_its_plan_uses(embedded_model: str) -> None:
    # A run loads the model while its sandbox starts; its first calls (the plan, the
    # warm starts) have the cores to themselves. Loading for the threads of the
    # moment made a server no call used, and the plan loaded its own inside its share.
    from mlpilot.llm.embedded import EmbeddedEngine, cores_to_itself

    engine = EmbeddedEngine(get_engine(embedded_model).spec, n_threads=1)
    engine.load()
    with cores_to_itself():
        wanted = engine.threads()
        engine.chat([{"role": "user", "content": "Say hi."}], max_tokens=2)
    assert list(engine._servers) == [wanted]  # one server, loaded ahead
