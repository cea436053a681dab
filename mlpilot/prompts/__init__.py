"""Prompt templates, one Jinja file per role, shipped as package data.

Rendered with ``StrictUndefined``: a variable the caller forgot is an error,
never a silently empty hole in a prompt.
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined


@functools.cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("mlpilot", "prompts"),
        undefined=StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # prompts are plain text, not HTML
    )


def render(name: str, **variables: Any) -> str:
    """Renders ``prompts/<name>.j2`` with ``variables``."""
    return _environment().get_template(f"{name}.j2").render(**variables).strip()


def templates() -> list[str]:
    """Names of the shipped templates."""
    return sorted(t.removesuffix(".j2") for t in _environment().list_templates(extensions=["j2"]))


__all__ = ["render", "templates"]
