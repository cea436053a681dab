"""Sandboxes: where training jobs and generated code run, isolated from the host."""

from mlpilot.sandbox.base import ExecResult, Job, Limits, Sandbox, SandboxError
from mlpilot.sandbox.local import LocalSandbox


def make_sandbox(kind: str = "local", **options: object) -> Sandbox:
    """A sandbox by name: ``local`` (one-shot) or ``local-warm``."""
    if kind == "local":
        return LocalSandbox(**options)  # type: ignore[arg-type]
    if kind in ("local-warm", "warm"):
        return LocalSandbox(warm=True, **options)  # type: ignore[arg-type]
    raise SandboxError(f"unknown sandbox {kind!r}; known: local, local-warm")


__all__ = ["ExecResult", "Job", "Limits", "LocalSandbox", "Sandbox", "SandboxError", "make_sandbox"]
