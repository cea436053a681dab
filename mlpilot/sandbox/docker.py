"""The Docker sandbox: jobs run in containers of a locally built image.

Same contract and same :class:`ExecResult` as the local backend, with the
container as the hard boundary:

* no network (``network_mode=none``) unless a job's limits allow it;
* memory, CPU and process limits enforced by the engine's cgroups;
* a non-root user; no host environment variable enters the container;
* a read-only image (``/tmp`` is a private tmpfs) and one writable job directory;
  files given as host paths (the task data) are mounted read-only and linked into
  the job directory, never copied or writable;
* the time limit is enforced inside the container (by the same runner the local
  sandbox uses) and from outside (the container is killed when a wait runs over);
* an out-of-memory kill is data in the result (``oom_killed``), not an exception;
* GPUs through Docker device requests (``Limits.gpus``: a count, or -1 for all).

Two modes, like the local backend: one container per job, or a warm container
(``warm=True``) whose worker imports numpy/pandas/scikit-learn once and forks a
clean child per job, talking to the host over two named pipes in the mounted
directory. When mlpilot runs as root, the warm worker runs as root with only
the capabilities to switch users, and every job runs as an unprivileged user
id of its own, in a directory only that user can open; the pipes belong to
root, so no job can write to them (and none holds a descriptor of them). A warm
container that dies or hangs is replaced. Every container carries a label with
this sandbox's session id; ``close`` (also run at exit) removes all of them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from mlpilot.sandbox import _child
from mlpilot.sandbox.base import (
    CONTROL_PREFIX,
    ExecResult,
    FileSource,
    GpuUnavailableError,
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
from mlpilot.sandbox.isolation import RUNNER_CAPS, JobUsers, hand_over
from mlpilot.sandbox.local import (
    DEFAULT_PRELOAD,
    SCRIPT_NAME,
    WarmWorkers,
    _Worker,
    scrubbed_env,
)

DEFAULT_IMAGE = "mlpilot-sandbox:latest"
IMAGE_ENV = "MLPILOT_SANDBOX_IMAGE"
LABEL = "mlpilot.sandbox"  # label key; the value is the sandbox's session id
CHILD_IN_CONTAINER = "/opt/mlpilot/_child.py"
ROOT_IN_CONTAINER = PurePosixPath("/sandbox")  # the sandbox root (warm containers)
JOB_IN_CONTAINER = PurePosixPath("/job")  # the job directory (one-shot containers)
RO_IN_CONTAINER = PurePosixPath("/ro")  # read-only data directories
CONTAINER_USER_IF_ROOT = (1000, 1000)  # when the host runs as root; else the host's uid:gid
MEMORY_HEADROOM_MB = 256  # the container's cgroup limit = the job's limit + this
TMPFS_OPTIONS = "rw,nosuid,nodev,size=1g,mode=1777"  # the container's private /tmp


def docker_client(base_url: str | None = None) -> Any:
    """A connected Docker SDK client, or a :class:`SandboxError` that says what to do."""
    try:
        import docker
    except ImportError as e:  # pragma: no cover - docker is a dependency
        raise SandboxError("the Docker SDK is not installed: pip install docker") from e
    target = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.DockerClient(base_url=target, version="auto", timeout=60)
        client.ping()
    except Exception as e:
        socket = target.removeprefix("unix://")
        if target.startswith("unix://") and not Path(socket).exists():
            installed = shutil.which("dockerd") or shutil.which("docker")
            how = (
                "start the daemon (`sudo systemctl start docker`, or `sudo dockerd &`)"
                if installed
                else "install Docker (Debian/Ubuntu: `sudo apt-get install docker.io`) and start it"
            )
            raise SandboxError(
                f"Docker is not reachable: no socket at {socket} (tried {target}); {how}, "
                "or set DOCKER_HOST"
            ) from e
        raise SandboxError(
            f"the Docker daemon at {target} did not answer ({type(e).__name__}: "
            f"{str(e)[:200]}); is it running and may this user use it (docker group)?"
        ) from e
    return client


def _container_user() -> tuple[int, int]:
    if os.getuid() == 0:
        return CONTAINER_USER_IF_ROOT
    return os.getuid(), os.getgid()


def _device_requests(gpus: int) -> list[Any]:
    if gpus == 0:
        return []
    import docker

    return [docker.types.DeviceRequest(count=gpus, capabilities=[["gpu"]])]


def _gpu_error(error: Exception) -> SandboxError | None:
    text = str(error)
    if "device driver" in text or "nvidia" in text.lower() or "capabilities" in text:
        return GpuUnavailableError(
            "GPUs were requested (Limits.gpus) but this Docker engine cannot provide them: "
            f"{text[:300]}. Install the NVIDIA Container Toolkit and register it with Docker "
            "(`sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart "
            "docker`); jobs without GPUs do not need it."
        )
    return None


class _ContainerWorker(_Worker):
    """A warm worker whose interpreter runs in a long-lived container.

    Requests and status lines travel through two FIFOs in the mounted sandbox root.
    The host opens both read-write, so neither open blocks and a container that
    dies is noticed by polling its state, not by EOF.
    """

    def __init__(self, sandbox: DockerSandbox, ro_files: tuple[Path, ...]) -> None:
        super().__init__(sandbox.root, sandbox.preload, ())
        self.sandbox = sandbox
        self.ro_files = ro_files
        self.container: Any = None
        self._ctl: Path | None = None
        self._checked = 0.0

    def _launch(self) -> None:
        ctl = self.root / f"{CONTROL_PREFIX}-ctl-{uuid.uuid4().hex[:8]}"
        ctl.mkdir(mode=0o700)
        # As root the worker is root too and the pipes are root's alone; otherwise
        # worker and jobs are the host's user, who owns them.
        for name in ("in", "out"):
            os.mkfifo(ctl / name, 0o600)
            os.chmod(ctl / name, 0o600)
        self._ctl = ctl
        self._wfd = os.open(ctl / "in", os.O_RDWR)
        self._rfd = os.open(ctl / "out", os.O_RDWR)
        inner = ROOT_IN_CONTAINER / ctl.name
        command = [
            "sh",
            "-c",
            f'exec python3 -u {CHILD_IN_CONTAINER} serve "$@" < {inner}/in > {inner}/out',
            "serve",
            *self.preload,
        ]
        self.container = self.sandbox._start_container(
            command,
            limits=self.sandbox.default_limits,
            mounts={str(self.root): str(ROOT_IN_CONTAINER)},
            ro_files=self.ro_files,
            working_dir=str(ROOT_IN_CONTAINER),
            switches_users=os.getuid() == 0,
        )

    def _alive(self) -> bool:
        if self.container is None:
            return False
        now = time.monotonic()
        if now - self._checked < 0.5:
            return True
        self._checked = now
        try:
            self.container.reload()
        except Exception:
            return False
        return self.container.status in ("created", "running")

    def execute(self, request: dict[str, Any], hard_timeout: float) -> dict[str, Any] | None:
        self._checked = 0.0  # ask the engine afresh: a container killed since is replaced now
        return super().execute(request, hard_timeout)

    def kill(self) -> None:
        if self.container is not None:
            self.sandbox._remove(self.container)
            self.container = None
        for fd in (self._rfd, self._wfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._rfd = self._wfd = None
        if self._ctl is not None:
            shutil.rmtree(self._ctl, ignore_errors=True)
            self._ctl = None


class DockerSandbox(WarmWorkers, Sandbox):
    """Runs jobs in Docker containers. See the module docstring for the guarantees.

    Args:
        image: the sandbox image (``mlpilot sandbox build`` makes it); default
            ``$MLPILOT_SANDBOX_IMAGE`` or ``mlpilot-sandbox:latest``.
        warm: serve jobs from a warm container instead of one container per job.
        workers: how many jobs may run at once (warm: how many containers).
        preload: modules a warm container's worker imports once.
        root: where job directories go (a private temporary directory by default).
        limits: the default :class:`Limits` of a job (and of warm containers).
        base_url: the Docker daemon (default ``$DOCKER_HOST`` or the local socket).
    """

    def __init__(
        self,
        *,
        image: str | None = None,
        warm: bool = False,
        workers: int = 1,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        root: Path | str | None = None,
        limits: Limits | None = None,
        base_url: str | None = None,
    ) -> None:
        if workers < 1:
            raise SandboxError(f"workers must be >= 1, but got {workers}")
        self.client = docker_client(base_url)
        self.image = image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
        self._check_image()
        self.warm = warm
        self.workers = workers
        self.preload = tuple(preload)
        self.default_limits = limits or Limits()
        self.name = "docker-warm" if warm else "docker"
        self.session = uuid.uuid4().hex[:12]
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="mlpilot-docker-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        if os.getuid() == 0:  # job users pass through to their own directories only
            self.root.chmod(0o711)
        else:
            self.root.chmod(self.root.stat().st_mode | stat.S_IXOTH | stat.S_IXGRP)
        self._users = JobUsers()
        self._slots = threading.BoundedSemaphore(workers)
        self._idle: list[_ContainerWorker] = []
        self._all_workers: list[_ContainerWorker] = []
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    def _check_image(self) -> None:
        import docker

        from mlpilot.sandbox.image import rebuild_command, stale_reason

        try:
            image = self.client.images.get(self.image)
        except docker.errors.ImageNotFound as e:
            raise SandboxError(
                f"the sandbox image {self.image!r} is not built yet; build it with "
                "`mlpilot sandbox build` (add `--base IMAGE` on a machine without a registry, "
                "`--gpu` for a CUDA/PyTorch image)"
            ) from e
        stale = stale_reason(image)
        if stale is not None:
            # A model fitted in the container must load on the host: same library versions.
            raise SandboxError(
                f"the sandbox image {self.image!r} is {stale}; rebuild it: "
                f"{rebuild_command(image, self.image)}"
            )

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
        # Jobs whose limits differ in kind from the warm containers' get their own.
        defaults = self.default_limits
        warm_fits = (
            limits.network == defaults.network
            and limits.gpus == defaults.gpus
            and (limits.memory_mb or 0) <= (defaults.memory_mb or 0)
        )
        warm = self.warm and warm_fits
        # A warm container's jobs share its mount of the root: as root, each job is a
        # user of its own; a one-shot container sees its own directory only.
        user = self._users.take() if warm and os.getuid() == 0 else _container_user()
        workdir, (ro_files, inputs) = new_job_dir(
            self.root,
            lambda d: self._write_files(d, job, user),  # type: ignore[arg-type]
        )
        with self._slots, job_running():
            if warm:
                return self._run_warm(job, limits, workdir, inputs, ro_files, user)
            return self._run_oneshot(job, limits, workdir, inputs, ro_files)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers, self._all_workers = self._all_workers, []
        for worker in workers:
            worker.kill()
        # sparse: no inspect per listed container, which races removals and would
        # abandon the whole clean-up on one 404
        with contextlib.suppress(Exception):
            for container in self.client.containers.list(
                all=True, sparse=True, filters={"label": f"{LABEL}={self.session}"}
            ):
                self._remove(container)
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

    @property
    def worker_starts(self) -> int:
        """How many times warm containers were (re)started; for tests and benchmarks."""
        return sum(w.starts for w in self._all_workers)

    # -- files ----------------------------------------------------------------

    def _write_files(
        self, workdir: Path, job: Job, user: tuple[int, int]
    ) -> tuple[tuple[Path, ...], dict[str, tuple[int, int]]]:  # (read-only files, inputs)
        """Writes the job's text/bytes files; files given as host paths are each mounted
        read-only and linked into the job directory."""
        linked = {rel: src for rel, src in job.files.items() if isinstance(src, Path)}
        written = Job(
            code=job.code,
            files={k: v for k, v in job.files.items() if k not in linked},
            env=job.env,
            args=job.args,
        )
        inputs = write_job_files(workdir, written, SCRIPT_NAME)
        ro_files = tuple(dict.fromkeys(src.resolve() for src in linked.values()))
        for rel, src in linked.items():
            if not src.is_file():
                raise OSError(f"job file {rel!r}: {src} is not a file")
            target = workdir / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(RO_IN_CONTAINER / str(ro_files.index(src.resolve())))
            st = target.lstat()
            inputs[rel] = (st.st_size, st.st_mtime_ns)  # a link it was given is no artifact
        (workdir / f"{CONTROL_PREFIX}-tmp").mkdir()
        if os.getuid() == 0:  # the job owns what it was given (the data stays read-only)
            hand_over(workdir, user)
        return ro_files, inputs

    # -- containers -------------------------------------------------------------

    def _start_container(
        self,
        command: list[str],
        *,
        limits: Limits,
        mounts: Mapping[str, str],
        ro_files: Sequence[Path],
        working_dir: str,
        environment: Mapping[str, str] | None = None,
        switches_users: bool = False,
    ) -> Any:
        """Starts a container; ``switches_users``: its process is root with only the
        capabilities a warm worker needs to run each job as its own user."""
        import docker

        volumes = {host: {"bind": inner, "mode": "rw"} for host, inner in mounts.items()}
        volumes[str(Path(_child.__file__).resolve())] = {"bind": CHILD_IN_CONTAINER, "mode": "ro"}
        for i, path in enumerate(ro_files):
            volumes[str(path)] = {"bind": str(RO_IN_CONTAINER / str(i)), "mode": "ro"}
        uid, gid = (0, 0) if switches_users else _container_user()
        options: dict[str, Any] = {
            "command": command,
            "detach": True,
            "user": f"{uid}:{gid}",
            "read_only": True,
            "tmpfs": {"/tmp": TMPFS_OPTIONS},
            "working_dir": working_dir,
            "environment": dict(environment or {"HOME": working_dir, "LANG": "C.UTF-8"}),
            "volumes": volumes,
            "labels": {LABEL: self.session},
            "pids_limit": limits.pids,
            "device_requests": _device_requests(limits.gpus),
            "cap_drop": ["ALL"],
            "cap_add": list(RUNNER_CAPS) if switches_users else [],
            "security_opt": ["no-new-privileges"],
            "init": False,
        }
        if not limits.network:
            options["network_mode"] = "none"
        if limits.memory_mb:
            mem = f"{limits.memory_mb + MEMORY_HEADROOM_MB}m"
            options.update(mem_limit=mem, memswap_limit=mem)
        if limits.cpus:
            options["nano_cpus"] = int(limits.cpus * 1e9)
        options.pop("detach")
        container = None
        try:
            container = self.client.containers.create(self.image, **options)
            container.start()
            return container
        except docker.errors.ImageNotFound as e:
            raise SandboxError(
                f"the sandbox image {self.image!r} disappeared; rebuild it: mlpilot sandbox build"
            ) from e
        except docker.errors.APIError as e:
            if container is not None:
                self._remove(container)  # created but could not start
            gpu = _gpu_error(e) if limits.gpus else None
            if gpu is not None:
                raise gpu from e
            raise SandboxError(f"Docker could not start the job container: {e}") from e

    def _remove(self, container: Any) -> None:
        with contextlib.suppress(Exception):
            container.remove(force=True)

    def _env(self, workdir_inner: PurePosixPath, limits: Limits, job: Job) -> dict[str, str]:
        """The job's whole environment: the local sandbox's scrubbed set, with the
        container's paths. Nothing from the host environment."""
        threads = max(1, int(limits.cpus)) if limits.cpus else self._threads_per_job()
        env = scrubbed_env(Path(str(workdir_inner)), limits, job.env, threads=threads)
        env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
        env.pop("CUDA_VISIBLE_DEVICES", None)  # the device request decides what is visible
        if limits.gpus == 0:
            env["CUDA_VISIBLE_DEVICES"] = ""
        env.update(job.env)
        return env

    def _threads_per_job(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.workers)

    # -- one-shot -------------------------------------------------------------

    def _run_oneshot(
        self,
        job: Job,
        limits: Limits,
        workdir: Path,
        inputs: dict[str, tuple[int, int]],
        ro_files: tuple[Path, ...],
    ) -> ExecResult:
        memory = limits.memory_mb or 0
        command = [
            "python3",
            "-u",
            CHILD_IN_CONTAINER,
            "run",
            str(limits.timeout_s),
            str(memory),
            "-",
            SCRIPT_NAME,
            *job.args,
        ]
        start = time.monotonic()
        container = self._start_container(
            command,
            limits=limits,
            mounts={str(workdir): str(JOB_IN_CONTAINER)},
            ro_files=ro_files,
            working_dir=str(JOB_IN_CONTAINER),
            environment=self._env(JOB_IN_CONTAINER, limits, job),
        )
        outer_timeout = False
        exit_status: int | None = None
        oom = False
        try:
            try:
                # The runner inside enforces the timeout; this is the backstop.
                exit_status = int(container.wait(timeout=limits.timeout_s + 15)["StatusCode"])
            except Exception:
                outer_timeout = True
                with contextlib.suppress(Exception):
                    container.kill()
            with contextlib.suppress(Exception):
                container.reload()
                oom = bool(container.attrs["State"].get("OOMKilled"))
            logs = b""
            with contextlib.suppress(Exception):  # the runner's status line; not the job's
                logs = container.logs(stdout=True, stderr=False, tail=20)
        finally:
            self._remove(container)
        duration = time.monotonic() - start
        status = parse_status(logs)
        if status is None:
            status = {
                "exit_code": None if outer_timeout else decode_exit(exit_status),
                "timed_out": outer_timeout,
                "oom": oom,
                "duration": duration,
            }
        elif oom:
            status["oom"] = True
        return self._result(
            workdir,
            inputs,
            status,
            duration,
            network_isolated=not limits.network,
            gpus=limits.gpus,
        )

    # -- warm -----------------------------------------------------------------

    def _idle_worker(self) -> _ContainerWorker | None:
        with self._lock:
            return self._idle.pop() if self._idle else None

    def _return_worker(self, worker: _ContainerWorker) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(worker)

    def _take_worker(self, ro_files: tuple[Path, ...]) -> _ContainerWorker:
        with self._lock:
            for worker in self._idle:
                if set(ro_files) <= set(worker.ro_files):
                    self._idle.remove(worker)
                    return worker
            if self._idle:  # a container without these data mounts: replace it
                old = self._idle.pop()
                self._all_workers.remove(old)
                old.kill()
                ro_files = tuple(dict.fromkeys((*old.ro_files, *ro_files)))
            worker = _ContainerWorker(self, ro_files)
            self._all_workers.append(worker)
            return worker

    def _run_warm(
        self,
        job: Job,
        limits: Limits,
        workdir: Path,
        inputs: dict[str, tuple[int, int]],
        ro_files: tuple[Path, ...],
        user: tuple[int, int],
    ) -> ExecResult:
        worker = self._take_worker(ro_files)
        if ro_files:  # the links point at this container's own numbering of the mounts
            for rel, src in job.files.items():
                if isinstance(src, Path):
                    link = workdir / rel
                    link.unlink()
                    index = worker.ro_files.index(src.resolve())
                    link.symlink_to(RO_IN_CONTAINER / str(index))
                    st = link.lstat()
                    inputs[rel] = (st.st_size, st.st_mtime_ns)
        inner = ROOT_IN_CONTAINER / workdir.name
        request = {
            "id": uuid.uuid4().hex,
            "user": list(user) if os.getuid() == 0 else None,
            "dir": str(inner),
            "script": SCRIPT_NAME,
            "args": list(job.args),
            "env": self._env(inner, limits, job),
            "timeout": limits.timeout_s,
            "memory_mb": limits.memory_mb,
            "cpus": max(1, int(limits.cpus)) if limits.cpus else self._threads_per_job(),
        }
        worker.catch_up()  # a failure kills it: it restarts for the job, with every module
        start = time.monotonic()
        try:
            status = worker.execute(request, hard_timeout=limits.timeout_s + 15)
        finally:
            self._return_worker(worker)
        duration = time.monotonic() - start
        if status is None:
            hung = duration >= limits.timeout_s
            status = {"exit_code": None, "timed_out": hung, "oom": False, "duration": duration}
            with contextlib.suppress(OSError), (workdir / _child.STDERR_FILE).open("a") as f:
                f.write("\n[mlpilot] the sandbox container died during this job and was replaced\n")
        return self._result(
            workdir,
            inputs,
            status,
            duration,
            network_isolated=not self.default_limits.network,
            gpus=self.default_limits.gpus,
        )

    def _result(
        self,
        workdir: Path,
        inputs: dict[str, tuple[int, int]],
        status: dict[str, Any],
        duration: float,
        *,
        network_isolated: bool,
        gpus: int,
    ) -> ExecResult:
        return build_result(
            self.name,
            workdir,
            inputs,
            status,
            duration,
            network_isolated=network_isolated,
            gpus={0: "none", -1: "all"}.get(gpus, str(gpus)),
            isolation="docker",
        )
