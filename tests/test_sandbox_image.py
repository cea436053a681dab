"""The sandbox image's pins: which libraries an image is built with and when it is
stale (no Docker engine needed: images are read through their labels)."""

from __future__ import annotations

import importlib.metadata
from types import SimpleNamespace

import pytest

from mlpilot.sandbox import SandboxError
from mlpilot.sandbox.image import (
    REQUIREMENTS_LABEL,
    has_nas_libraries,
    image_requirements,
    rebuild_command,
    runtime_requirements,
    stale_reason,
)


def _image(pins: list[str] | None) -> SimpleNamespace:
    return SimpleNamespace(labels={} if pins is None else {REQUIREMENTS_LABEL: " ".join(pins)})


def _names(pins: list[str]) -> list[str]:
    return [p.split("==")[0] for p in pins]


def test_a_nas_image_adds_torch_and_transformers_at_the_hosts_versions() -> None:
    plain = image_requirements()
    assert plain == runtime_requirements() and "torch" not in _names(plain)
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    nas = image_requirements(nas=True)
    assert {"torch", "transformers", "safetensors", "tokenizers"} <= set(_names(nas))
    assert all("==" in p for p in nas)


def test_a_nas_image_on_a_host_without_the_libraries_is_refused(monkeypatch) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "transformers":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    with pytest.raises(SandboxError, match=r"this host has no transformers.*mlpilot\[nas\]"):
        image_requirements(nas=True)


def test_a_local_build_pins_its_public_version(monkeypatch) -> None:
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "2.13.0+cpu")
    assert runtime_requirements(("torch",)) == ["torch==2.13.0"]


def test_stale_images_are_told_by_their_pins() -> None:
    assert stale_reason(_image(None)) is None  # a user's own image: trusted
    assert stale_reason(_image(image_requirements())) is None
    pytest.importorskip("transformers")
    nas = image_requirements(nas=True)
    assert stale_reason(_image(nas)) is None  # the NAS pins match the host too
    old = [p if not p.startswith("transformers==") else "transformers==0.0.1" for p in nas]
    assert "transformers 0.0.1" in (stale_reason(_image(old)) or "")
    runtime = [p if not p.startswith("lightgbm==") else "lightgbm==0.1" for p in nas]
    assert "lightgbm 0.1" in (stale_reason(_image(runtime)) or "")


def test_nas_libraries_are_read_from_the_label() -> None:
    assert not has_nas_libraries(_image(runtime_requirements()))
    assert has_nas_libraries(_image([*runtime_requirements(), "transformers==5.0", "torch==2.13"]))
    assert has_nas_libraries(_image([*runtime_requirements(), "transformers"]))  # unpinned
    assert has_nas_libraries(_image(None))  # not mlpilot's image: its jobs will tell


def test_a_stale_image_is_rebuilt_with_what_it_holds() -> None:
    plain, nas = _image(["numpy==1"]), _image(["numpy==1", "transformers==5"])
    assert rebuild_command(plain, "mlpilot-sandbox:latest") == "mlpilot sandbox build"
    assert rebuild_command(nas, "mlpilot-sandbox:latest") == "mlpilot sandbox build --nas"
    assert rebuild_command(plain, "mlpilot-sandbox:gpu") == "mlpilot sandbox build --gpu"
    assert rebuild_command(nas, "mine:1") == "mlpilot sandbox build --nas --tag mine:1"
