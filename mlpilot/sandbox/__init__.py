"""Sandboxes: where training jobs and generated code run, isolated from the host."""

from mlpilot.sandbox.base import (
    ExecResult,
    GpuUnavailableError,
    Job,
    Limits,
    Sandbox,
    SandboxError,
)
from mlpilot.sandbox.local import LocalSandbox

KINDS = ("local", "local-warm", "docker", "docker-warm")


def make_sandbox(kind: str = "local", **options: object) -> Sandbox:
    """A sandbox by name: ``local`` (one-shot), ``local-warm``, ``docker`` (one container
    per job) or ``docker-warm`` (a warm container serving many jobs)."""
    if kind == "local":
        return LocalSandbox(**options)  # type: ignore[arg-type]
    if kind in ("local-warm", "warm"):
        return LocalSandbox(warm=True, **options)  # type: ignore[arg-type]
    if kind in ("docker", "docker-warm"):
        from mlpilot.sandbox.docker import DockerSandbox

        return DockerSandbox(warm=kind == "docker-warm", **options)  # type: ignore[arg-type]
    raise SandboxError(f"unknown sandbox {kind!r}; known: {', '.join(KINDS)}")


__all__ = [
    "KINDS",
    "ExecResult",
    "GpuUnavailableError",
    "Job",
    "Limits",
    "LocalSandbox",
    "Sandbox",
    "SandboxError",
    "make_sandbox",
]
