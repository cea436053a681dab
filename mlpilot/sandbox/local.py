"""The local sandbox: jobs run as subprocesses of this machine's Python.

Each job gets its own directory (working directory, HOME and TMPDIR), a
scrubbed environment (no API keys, no host secrets), an address-space limit,
and its own session, so that the whole process tree dies on timeout. Around
that, the strongest wall this OS allows (:mod:`mlpilot.sandbox.isolation`):
bubblewrap (read-only host files, hidden home directories, no network, private
PIDs), else ``unshare`` namespaces (no network, private PIDs), else none; every
result says which one the job had. As root, each job runs as an unprivileged
user id of its own.

Two modes:

* one-shot (default): a fresh interpreter per job;
* warm (``warm=True``): a worker interpreter imports numpy/pandas/scikit-learn
  once and forks a clean child per job, so hundreds of short trials do not
  each pay the imports. A worker that dies or hangs is replaced.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mlpilot.sandbox import _child
from mlpilot.sandbox.base import (
    CONTROL_PREFIX,
    ExecResult,
    FileSource,
    Job,
    Limits,
    Sandbox,
    SandboxError,
    as_job,
    build_result,
    decode_exit,
    job_running,
    new_job_dir,
    parse_status,
    write_job_files,
)
from mlpilot.sandbox.isolation import Isolation, JobUsers, detect, hand_over

CHILD = Path(_child.__file__)
SCRIPT_NAME = "main.py"
DEFAULT_PRELOAD = (
    "numpy",
    "pandas",
    "scipy",
    "sklearn",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.model_selection",
    "sklearn.metrics",
    "joblib",
)


def scrubbed_env(
    workdir: Path, limits: Limits, extra: Mapping[str, str], threads: int | None = None
) -> dict[str, str]:
    """The whole environment a job sees: nothing from the host but a PATH.

    ``threads`` caps BLAS/OpenMP threads when ``limits.cpus`` is not set.
    """
    bin_dir = str(Path(sys.executable).parent)
    env = {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir / f"{CONTROL_PREFIX}-tmp"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "MPLBACKEND": "Agg",
        "MLPILOT_SANDBOX": "1",
    }
    cap = max(1, int(limits.cpus)) if limits.cpus is not None else threads
    if cap is not None:
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(cap)
    host_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if limits.gpus == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif limits.gpus > 0:
        devices = host_visible.split(",") if host_visible else [str(i) for i in range(limits.gpus)]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[: limits.gpus])
    elif host_visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = host_visible
    env.update(extra)
    return env


_launcher_lock = threading.Lock()
_launcher_pool: ThreadPoolExecutor | None = None


def _from_launcher_thread(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Starts a long-lived process from one thread that lives as long as this process.

    bubblewrap's ``--die-with-parent`` (``PR_SET_PDEATHSIG``) kills the sandbox
    when the *thread* that started it exits, not the process. A warm worker
    started from a trial's thread would die when that thread ends, and the job
    another thread had just handed it was lost with it.
    """
    global _launcher_pool
    with _launcher_lock:
        if _launcher_pool is None:
            _launcher_pool = ThreadPoolExecutor(1, thread_name_prefix="mlpilot-sandbox-launcher")
        pool = _launcher_pool
    return pool.submit(start).result()


def _memory_limiter(memory_mb: int | None) -> Any:
    if not memory_mb:
        return None

    def apply() -> None:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


class _Worker:
    """One warm interpreter serving jobs over a JSON-lines pipe.

    Subclasses change where the interpreter runs (``_launch``, ``_alive``,
    ``kill``); the protocol is the same: one request line in, one status line out.
    """

    def __init__(self, root: Path, preload: Sequence[str], prefix: tuple[str, ...]) -> None:
        self.root = root  # the one host directory the worker may write (its jobs' parent)
        self.preload = tuple(preload)
        self.prefix = prefix
        self.proc: subprocess.Popen[bytes] | None = None
        self._rfd: int | None = None  # where status lines come from
        self._wfd: int | None = None  # where request lines go
        self._buffer = b""
        self.starts = 0
        self._loaded: tuple[str, ...] = ()  # what the running interpreter has imported

    def _launch(self) -> None:
        log = (self.root / f"{CONTROL_PREFIX}-worker-{uuid.uuid4().hex[:8]}.log").open("wb")
        env = scrubbed_env(self.root, Limits(), {})
        cmd = [*self.prefix, sys.executable, "-u", str(CHILD), "serve", *self.preload]
        try:
            self.proc = _from_launcher_thread(
                lambda: subprocess.Popen(
                    cmd,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    cwd=self.root,
                    env=env,
                    start_new_session=True,
                )
            )
        except OSError as e:
            raise SandboxError(f"could not start a sandbox worker: {e}") from e
        finally:
            log.close()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._wfd, self._rfd = self.proc.stdin.fileno(), self.proc.stdout.fileno()

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _start(self) -> None:
        self._launch()
        self._buffer = b""
        self.starts += 1
        ready = self._read_line(deadline=time.monotonic() + 120)
        if ready is None or not ready.get("ready"):
            self.kill()
            raise SandboxError("the sandbox worker did not start (no ready message within 120 s)")
        self._loaded = self.preload

    def want(self, modules: Sequence[str]) -> None:
        """Adds ``modules`` to what this worker imports: at its next start, or in
        :meth:`catch_up` while it runs."""
        self.preload = tuple(dict.fromkeys((*self.preload, *modules)))

    def catch_up(self, hard_timeout: float = 120.0) -> None:
        """Imports, in the running interpreter, the modules wanted since it started, so
        that the jobs it forks from now on start with them loaded. Only an optimisation:
        a worker that fails here (or is closed meanwhile) is killed and restarts, with
        them, at its next job; nothing is raised."""
        if self.preload == self._loaded or not self._alive():
            return
        missing = [m for m in self.preload if m not in self._loaded]
        wanted = self.preload
        try:
            reply = self.execute({"id": uuid.uuid4().hex, "warm": missing}, hard_timeout)
        except Exception:
            self.kill()
            return
        if reply is not None:
            self._loaded = wanted

    def _read_line(self, deadline: float) -> dict[str, Any] | None:
        assert self._rfd is not None
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self._rfd], [], [], min(remaining, 1.0))
            if not readable:
                if not self._alive():
                    return None  # died without a word
                continue
            chunk = os.read(self._rfd, 65536)
            if not chunk:
                return None  # the worker died
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def execute(self, request: dict[str, Any], hard_timeout: float) -> dict[str, Any] | None:
        """Runs one request; None when the worker died or hung (it is then killed)."""
        if not self._alive():
            self._start()
        assert self._wfd is not None
        try:
            data = (json.dumps(request) + "\n").encode()
            while data:
                data = data[os.write(self._wfd, data) :]
        except OSError:
            self.kill()
            return None
        reply = self._read_line(deadline=time.monotonic() + hard_timeout)
        if reply is None or reply.get("id") != request["id"]:
            self.kill()
            return None
        return reply

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]
        self.proc = None
        self._rfd = self._wfd = None


class WarmWorkers:
    """:meth:`Sandbox.warm_up` for sandboxes that keep warm workers (local and Docker).
    They provide the attributes below and take an idle worker out (``_idle_worker``)
    and put it back (``_return_worker``) in their own way."""

    warm: bool
    workers: int
    preload: tuple[str, ...]
    _closed: bool
    _lock: threading.Lock
    _slots: threading.BoundedSemaphore
    _all_workers: Sequence[_Worker]

    def _idle_worker(self) -> _Worker | None:
        raise NotImplementedError

    def _return_worker(self, worker: Any) -> None:
        raise NotImplementedError

    def warm_up(self, modules: Sequence[str]) -> None:
        if not self.warm or self._closed:
            return
        with self._lock:
            self.preload = tuple(dict.fromkeys((*self.preload, *modules)))
            for worker in self._all_workers:
                worker.want(modules)
        for _ in range(self.workers):  # the idle workers now, each in a job's slot
            threading.Thread(target=self._warm_one, name="mlpilot-warm-up", daemon=True).start()

    def _warm_one(self) -> None:
        with self._slots:
            worker = self._idle_worker()
            if worker is None:
                return  # none idle: a busy worker catches up before its next job
            try:
                worker.catch_up()
            finally:
                self._return_worker(worker)


class LocalSandbox(WarmWorkers, Sandbox):
    """Runs jobs as local subprocesses. See the module docstring for the guarantees.

    Args:
        warm: serve jobs from warm worker interpreters instead of a fresh one each.
        workers: how many jobs may run at once (and, when warm, how many workers).
        preload: modules a warm worker imports once.
        root: where job directories go (a private temporary directory by default).
        limits: the default :class:`Limits` of a job.
    """

    def __init__(
        self,
        *,
        warm: bool = False,
        workers: int = 1,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        root: Path | str | None = None,
        limits: Limits | None = None,
    ) -> None:
        if workers < 1:
            raise SandboxError(f"workers must be >= 1, but got {workers}")
        self.warm = warm
        self.workers = workers
        self.preload = tuple(preload)
        self.default_limits = limits or Limits()
        self.name = "local-warm" if warm else "local"
        self._own_root = root is None
        self.root = (
            Path(tempfile.mkdtemp(prefix="mlpilot-sandbox-")) if root is None else Path(root)
        )
        self.root.mkdir(parents=True, exist_ok=True)
        self._users = JobUsers()
        if detect().drops_user:
            # Job users may pass through the root to their own directory, not list it.
            self.root.chmod(0o711)
        self._slots = threading.BoundedSemaphore(workers)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._all_workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    # -- public API --------------------------------------------------------

    def run(
        self,
        job: Job | str,
        files: Mapping[str, FileSource] | None = None,
        limits: Limits | None = None,
    ) -> ExecResult:
        if self._closed:
            raise SandboxError("this sandbox is closed")
        job = as_job(job, files)
        limits = limits or self.default_limits
        workdir, inputs = new_job_dir(
            self.root,
            lambda d: write_job_files(d, job, SCRIPT_NAME),  # type: ignore[arg-type]
        )
        env = scrubbed_env(workdir, limits, job.env, threads=self._threads_per_job(limits))
        Path(env["TMPDIR"]).mkdir(exist_ok=True)
        user = self._users.take() if detect(limits.network).drops_user else None
        if user is not None:
            try:
                hand_over(workdir, user)
            except OSError as e:
                shutil.rmtree(workdir, ignore_errors=True)
                raise SandboxError(f"could not hand {workdir} to the job's user: {e}") from e
        with self._slots, job_running():
            # A job that needs the network cannot share a worker's namespace.
            if self.warm and not limits.network:
                return self._run_warm(job, limits, workdir, env, inputs, user)
            return self._run_oneshot(job, limits, workdir, env, inputs, user)

    @property
    def isolation(self) -> Isolation:
        """The wall this machine gives this sandbox's jobs (without network)."""
        return detect()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers, self._all_workers = self._all_workers, []
        for worker in workers:
            worker.kill()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def _threads_per_job(self, limits: Limits) -> int:
        """Threads one job may use: ``limits.cpus``, else the cores shared by the slots.

        Parallel jobs that each start a thread per core oversubscribe the CPU,
        and OpenMP's spinning barriers then slow some models down a hundredfold.
        """
        if limits.cpus is not None:
            return max(1, int(limits.cpus))
        return max(1, (os.cpu_count() or 1) // self.workers)

    @property
    def worker_starts(self) -> int:
        """How many times warm workers were (re)started; for tests and benchmarks."""
        return sum(w.starts for w in self._all_workers)

    # -- one-shot -----------------------------------------------------------

    def _run_oneshot(
        self,
        job: Job,
        limits: Limits,
        workdir: Path,
        env: dict[str, str],
        inputs: dict[str, tuple[int, int]],
        user: tuple[int, int] | None,
    ) -> ExecResult:
        wall = detect(limits.network)
        memory = limits.memory_mb or 0
        cmd = [
            *wall.prefix(workdir, network=limits.network),
            sys.executable,
            "-u",
            str(CHILD),
            "run",
            str(limits.timeout_s),
            str(memory),
            "-" if user is None else f"{user[0]}:{user[1]}",
            SCRIPT_NAME,
            *job.args,
        ]
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,  # the runner's status line; the job cannot write here
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_memory_limiter(limits.memory_mb),
            )
        except OSError as e:
            raise SandboxError(f"could not start the job process: {e}") from e
        outer_timeout = False
        output = b""
        try:
            # The child enforces the timeout itself; this is the backstop.
            output, _ = proc.communicate(timeout=limits.timeout_s + 10)
        except subprocess.TimeoutExpired:
            outer_timeout = True
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # and anything left in its session
            if outer_timeout:
                with contextlib.suppress(Exception):
                    output, _ = proc.communicate(timeout=10)
            proc.wait()
        duration = time.monotonic() - start
        status = parse_status(output or b"")
        if status is None:
            status = {
                "exit_code": None if outer_timeout else decode_exit(proc.returncode),
                "timed_out": outer_timeout,
                "oom": False,
                "duration": duration,
            }
        return self._result(workdir, inputs, status, duration, wall=wall, env=env)

    # -- warm ---------------------------------------------------------------

    def _idle_worker(self) -> _Worker | None:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return None

    def _return_worker(self, worker: _Worker) -> None:
        if not self._closed:
            self._idle.put(worker)

    def _take_worker(self) -> _Worker:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            worker = _Worker(self.root, self.preload, detect().prefix(self.root))
            with self._lock:
                self._all_workers.append(worker)
            return worker

    def _run_warm(
        self,
        job: Job,
        limits: Limits,
        workdir: Path,
        env: dict[str, str],
        inputs: dict[str, tuple[int, int]],
        user: tuple[int, int] | None,
    ) -> ExecResult:
        worker = self._take_worker()
        request = {
            "id": uuid.uuid4().hex,
            "user": None if user is None else list(user),
            "dir": str(workdir),
            "script": SCRIPT_NAME,
            "args": list(job.args),
            "env": env,
            "timeout": limits.timeout_s,
            "memory_mb": limits.memory_mb,
            "cpus": self._threads_per_job(limits),
        }
        worker.catch_up()  # a failure kills it: it restarts for the job, with every module
        start = time.monotonic()
        try:
            status = worker.execute(request, hard_timeout=limits.timeout_s + 10)
        finally:
            self._return_worker(worker)
        duration = time.monotonic() - start
        if status is None:
            # The worker hung or died with the job: report the job as lost or timed out.
            hung = duration >= limits.timeout_s
            status = {"exit_code": None, "timed_out": hung, "oom": False, "duration": duration}
            with contextlib.suppress(OSError), (workdir / _child.STDERR_FILE).open("a") as f:
                f.write("\n[mlpilot] the sandbox worker died during this job and was restarted\n")
        return self._result(workdir, inputs, status, duration, wall=detect(), env=env)

    def _result(
        self,
        workdir: Path,
        inputs: dict[str, tuple[int, int]],
        status: dict[str, Any],
        duration: float,
        *,
        wall: Isolation,
        env: Mapping[str, str],
    ) -> ExecResult:
        visible = env.get("CUDA_VISIBLE_DEVICES")
        gpus = "all" if visible is None else (visible or "none")
        return build_result(
            self.name,
            workdir,
            inputs,
            status,
            duration,
            network_isolated=wall.network_isolated,
            gpus=gpus,
            isolation=wall.level,
        )
