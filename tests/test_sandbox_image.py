"""The sandbox image's pins: which libraries an image is built with and when it is
stale (no Docker engine needed: images are read through their labels)."""

from __future__ import annotations

import importlib.metadata
from types import SimpleNamespace

import pytest

from mlpilot.sandbox.image import (
    GPU_BASE,
    REQUIREMENTS_LABEL,
    has_nas_libraries,
    image_requirements,
    runtime_requirements,
    stale_reason,
)


def _image(pins: list[str] | None) -> SimpleNamespace:
    return SimpleNamespace(labels={} if pins is None else {REQUIREMENTS_LABEL: " ".join(pins)})


def _names(pins: list[str]) -> list[str]:
    return [p.split("==")[0] for p in pins]


def test_a_nas_image_adds_torch_and_transformers_unless_the_base_has_torch() -> None:
    plain = image_requirements()
    assert plain == runtime_requirements() and "torch" not in _names(plain)
    cpu = _names(image_requirements(nas=True))
    assert {"torch", "transformers", "safetensors", "tokenizers"} <= set(cpu)
    gpu = _names(image_requirements(nas=True, base=GPU_BASE))
    assert "transformers" in gpu and "torch" not in gpu  # the PyTorch image brings its own


def test_a_local_build_pins_its_public_version() -> None:
    pytest.importorskip("torch")
    (pin,) = runtime_requirements(("torch",))
    assert pin == "torch==" + importlib.metadata.version("torch").split("+")[0]
    assert "+" not in pin


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
    assert not has_nas_libraries(_image(image_requirements()))
    assert has_nas_libraries(_image(image_requirements(nas=True, base=GPU_BASE)))
    assert has_nas_libraries(_image(None))  # not mlpilot's image: its jobs will tell
