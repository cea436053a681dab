"""The sandbox contract: ``run(job, files, limits) -> ExecResult``.

A timeout, an out-of-memory kill or a crash of the job is *data* in the
result; only a failure of the sandbox itself (cannot start a process, cannot
write the job directory) raises :class:`SandboxError`, after cleaning up.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from mlpilot.errors import ConfigError, MlpilotError

FileSource = bytes | str | Path
"""A file given to a job: raw bytes, text, or a host path to copy."""

T = TypeVar("T")
TAIL_BYTES = 20_000  # how much of stdout/stderr a result keeps (the end)
MAX_ARTIFACT_MB = 2048  # a file a job leaves that is larger than this is refused


class SandboxError(MlpilotError):
    """The sandbox itself failed (not the job): it could not start, write or clean up."""


class GpuUnavailableError(SandboxError):
    """GPUs were requested (``Limits.gpus``) and the sandbox cannot provide them."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one job.

    Attributes:
        timeout_s: wall-clock seconds before the job and everything it spawned is killed.
        memory_mb: address-space (local) or memory (docker) limit; None for none.
        cpus: CPUs the job may use; sets the thread counts of BLAS/OpenMP and,
            in docker, a CPU quota. None shares the machine's cores among the
            jobs the sandbox may run at once.
        pids: most processes the job may hold (docker; the local backend kills
            the job's whole process tree instead).
        gpus: 0 hides every GPU, ``n`` exposes the first n, -1 all of them.
        network: allow network access (off by default).
    """

    timeout_s: float = 300.0
    memory_mb: int | None = 4096
    cpus: float | None = None
    pids: int | None = 512
    gpus: int = 0
    network: bool = False

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ConfigError(f"Limits.timeout_s must be > 0, but got {self.timeout_s!r}")
        if self.memory_mb is not None and self.memory_mb < 64:
            raise ConfigError(f"Limits.memory_mb must be >= 64 or None, but got {self.memory_mb!r}")
        if self.cpus is not None and not self.cpus > 0:
            raise ConfigError(f"Limits.cpus must be > 0 or None, but got {self.cpus!r}")
        if self.pids is not None and self.pids < 1:
            raise ConfigError(f"Limits.pids must be >= 1 or None, but got {self.pids!r}")
        if self.gpus < -1:
            raise ConfigError(f"Limits.gpus must be -1 (all), 0 or a count, but got {self.gpus!r}")


@dataclass(frozen=True)
class Job:
    """What to run: Python source (``code``) run as the job's main script.

    Attributes:
        code: Python source; it runs with the job directory as its working
            directory and on ``sys.path``, like ``python main.py`` there.
        files: files to place in the job directory, by relative path.
        env: extra environment variables (the rest of the environment is scrubbed).
        args: command-line arguments passed to the script (``sys.argv[1:]``).
    """

    code: str
    files: Mapping[str, FileSource] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecResult:
    """The outcome of one job, whatever happened to it.

    Attributes:
        exit_code: the process's exit status; negative ``-N`` for signal N;
            None when it never finished (timed out or the sandbox lost it).
        stdout: the last ``TAIL_BYTES`` of standard output.
        stderr: the last ``TAIL_BYTES`` of standard error.
        duration_s: wall-clock seconds from start to end.
        timed_out: killed at ``Limits.timeout_s``.
        oom_killed: killed, or failed, for lack of memory.
        artifacts: files the job created or changed, by relative path, as host paths.
        workdir: the host directory holding the artifacts (removed with the sandbox).
        network_isolated: True when the job provably had no network.
        backend: which sandbox ran it ("local", "local-warm", "docker", ...).
        gpus: the GPUs the job could see: "none", "all", or the device ids / count.
        isolation: the wall the job actually ran behind: "bwrap", "namespaces",
            "none" (local) or "docker" (see :mod:`mlpilot.sandbox.isolation`).
        refused: what the job left that is not handed back, by relative path, with
            the reason (symbolic links, FIFOs, devices, sockets, files over the cap).
    """

    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool
    oom_killed: bool
    artifacts: Mapping[str, Path]
    workdir: Path
    network_isolated: bool
    backend: str
    gpus: str = "none"
    isolation: str = "none"
    refused: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.oom_killed

    def summary(self) -> str:
        """One line saying how the job ended, for logs and error messages."""
        if self.timed_out:
            how = "timed out"
        elif self.oom_killed:
            how = "ran out of memory"
        elif self.exit_code == 0:
            how = "succeeded"
        elif self.exit_code is None:
            how = "was lost by the sandbox"
        elif self.exit_code < 0:
            how = f"was killed by signal {-self.exit_code}"
        else:
            how = f"exited with code {self.exit_code}"
        last = self.stderr.strip().splitlines()[-1:] if not self.ok else []
        tail = f": {last[0][:300]}" if last else ""
        return f"job {how} after {self.duration_s:.2f} s{tail}"


_running = 0
_running_lock = threading.Lock()


def running_jobs() -> int:
    """How many sandbox jobs this process is running right now. A model generating on
    this machine reads it: its prompt processing uses every core only when no job
    needs one (on two cores, a prompt read with both beside a one-core fit made a
    1 s fold job take 14 s)."""
    return _running


@contextlib.contextmanager
def job_running() -> Iterator[None]:
    """Counts a job as running (see :func:`running_jobs`) for the ``with`` block."""
    global _running
    with _running_lock:
        _running += 1
    try:
        yield
    finally:
        with _running_lock:
            _running -= 1


class Sandbox(abc.ABC):
    """Runs jobs in isolation. Use as a context manager so ``close`` always runs.

    Implementations must be safe to call ``run`` from several threads.
    """

    name: str = "sandbox"

    @abc.abstractmethod
    def run(
        self,
        job: Job | str,
        files: Mapping[str, FileSource] | None = None,
        limits: Limits | None = None,
    ) -> ExecResult:
        """Runs ``job`` (a :class:`Job`, or Python source) and returns how it ended.

        ``files`` are added to the job's own files. A timeout, OOM or crash is
        reported in the result; only sandbox failures raise :class:`SandboxError`.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stops workers and removes every job directory. Idempotent."""

    def warm_up(self, modules: Sequence[str]) -> None:
        """Has warm workers import ``modules`` once, in the background and in a job's
        slot, so that the jobs after it that import them (each job is forked from its
        worker) skip that import. A hint: sandboxes without warm workers ignore it.
        The modules' memory counts toward each later job's ``Limits.memory_mb``."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def as_job(job: Job | str, files: Mapping[str, FileSource] | None) -> Job:
    """Normalises ``run``'s arguments into one :class:`Job`."""
    if isinstance(job, str):
        job = Job(code=job)
    if files:
        job = Job(code=job.code, files={**job.files, **files}, env=job.env, args=job.args)
    for rel in job.files:
        path = Path(rel)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise SandboxError(
                f"job file names must be relative paths inside the job directory, but got {rel!r}"
            )
    return job


def new_job_dir(root: Path, prepare: Callable[[Path], T]) -> tuple[Path, T]:
    """Creates a fresh job directory under ``root`` and fills it with ``prepare``;
    on failure removes it and raises :class:`SandboxError`."""
    workdir = root / f"job-{uuid.uuid4().hex[:12]}"
    try:
        workdir.mkdir(parents=True)
        return workdir, prepare(workdir)
    except OSError as e:
        shutil.rmtree(workdir, ignore_errors=True)
        raise SandboxError(f"could not prepare the job directory {workdir}: {e}") from e


def write_job_files(directory: Path, job: Job, script_name: str) -> dict[str, tuple[int, int]]:
    """Writes the script and files into ``directory``; returns their (size, mtime_ns)."""
    written: dict[str, tuple[int, int]] = {}
    items: dict[str, FileSource] = {**job.files, script_name: job.code}
    for rel, source in items.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, Path):
            target.write_bytes(source.read_bytes())
        elif isinstance(source, bytes):
            target.write_bytes(source)
        else:
            target.write_text(source)
        st = target.lstat()
        written[rel] = (st.st_size, st.st_mtime_ns)
    return written


CONTROL_PREFIX = ".mlpilot"  # files the sandbox itself writes in a job directory


def collect_artifacts(
    directory: Path,
    inputs: Mapping[str, tuple[int, int]],
    max_bytes: int = MAX_ARTIFACT_MB * 1024 * 1024,
) -> tuple[dict[str, Path], dict[str, str]]:
    """Regular files in ``directory`` that the job created or changed, and what it left
    that is refused: links and special files are never followed (``lstat``), so a job
    cannot hand back a host file by pointing a link at it; nor are files over
    ``max_bytes``."""
    out: dict[str, Path] = {}
    refused: dict[str, str] = {}
    for root, dirs, names in os.walk(directory):  # never descends into linked directories
        kept = []
        for d in dirs:
            if d.startswith(CONTROL_PREFIX):
                continue
            sub = Path(root) / d
            if sub.is_symlink():
                refused[sub.relative_to(directory).as_posix()] = "a symbolic link"
                continue
            kept.append(d)
        dirs[:] = kept
        for name in names:
            if name.startswith(CONTROL_PREFIX):
                continue
            path = Path(root) / name
            rel = path.relative_to(directory).as_posix()
            try:
                st = path.lstat()
            except OSError:
                continue
            if inputs.get(rel) == (st.st_size, st.st_mtime_ns):
                continue
            why = _refusal(st, max_bytes)
            if why:
                refused[rel] = why
            else:
                out[rel] = path
    return out, refused


def _refusal(st: os.stat_result, max_bytes: int) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if not stat.S_ISREG(mode):
        return "not a regular file (a FIFO, socket or device)"
    if st.st_size > max_bytes:
        return f"{st.st_size / 1e6:.0f} MB, over the {max_bytes / 1e6:.0f} MB cap"
    return ""


def read_artifact(path: Path, max_bytes: int = MAX_ARTIFACT_MB * 1024 * 1024) -> bytes:
    """The bytes of a job's file, opened without following links and checked to be a
    regular file within ``max_bytes``.

    Raises:
        SandboxError: the path is a link, a special file, or too large.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise SandboxError(f"the job's file {path.name!r} cannot be read safely: {e}") from e
    with os.fdopen(fd, "rb") as f:
        why = _refusal(os.fstat(fd), max_bytes)
        if why:
            raise SandboxError(f"the job's file {path.name!r} is refused: {why}")
        return f.read(max_bytes + 1)


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a regular file as text ('' if it does not exist, or
    is a link or special file: a job may have replaced its output file with either)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return ""
        f.seek(max(0, st.st_size - limit))
        data = f.read(limit)
    return data.decode("utf-8", errors="replace")


def parse_status(output: str | bytes) -> dict[str, Any] | None:
    """The status record the in-sandbox runner printed on its own standard output
    (None if it printed none)."""
    from mlpilot.sandbox import _child

    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    for line in reversed(text.splitlines()):
        if line.startswith(_child.STATUS_MARKER):
            try:
                status = json.loads(line[len(_child.STATUS_MARKER) :])
            except ValueError:
                return None
            return status if isinstance(status, dict) else None
    return None


def build_result(
    backend: str,
    workdir: Path,
    inputs: Mapping[str, tuple[int, int]],
    status: Mapping[str, Any],
    duration: float,
    *,
    network_isolated: bool,
    gpus: str = "none",
    isolation: str = "none",
) -> ExecResult:
    """The :class:`ExecResult` of a finished job, from its status and job directory."""
    from mlpilot.sandbox import _child

    stdout = read_tail(workdir / _child.STDOUT_FILE)
    stderr = read_tail(workdir / _child.STDERR_FILE)
    exit_code = status.get("exit_code")
    timed_out = bool(status.get("timed_out"))
    oom = bool(status.get("oom")) or (not timed_out and looks_oom(exit_code, stderr))
    artifacts, refused = collect_artifacts(workdir, inputs)
    return ExecResult(
        exit_code=exit_code,
        stdout=stdout,
        stderr=stderr,
        duration_s=float(status.get("duration") or duration),
        timed_out=timed_out,
        oom_killed=oom,
        artifacts=artifacts,
        workdir=workdir,
        network_isolated=network_isolated,
        backend=backend,
        gpus=gpus,
        isolation=isolation,
        refused=refused,
    )


def decode_exit(returncode: int | None) -> int | None:
    """Maps the one-shot runner's exit status back to the job's (128+N means signal N)."""
    if returncode is None:
        return None
    if returncode < 0:
        return returncode
    return -(returncode - 128) if returncode > 128 else returncode


OOM_MARKERS = ("MemoryError", "std::bad_alloc", "Cannot allocate memory", "out of memory")


def looks_oom(exit_code: int | None, stderr: str) -> bool:
    """Whether a failed job died for lack of memory, judged from its exit and last words."""
    if exit_code == 0:
        return False
    last = stderr[-4000:]
    return any(marker in last for marker in OOM_MARKERS)
