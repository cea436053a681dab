"""How strongly the local sandbox can wall a job off on this machine.

Three levels, the strongest this OS allows being chosen (``$MLPILOT_SANDBOX_ISOLATION``
may ask for a weaker one: ``namespaces`` or ``none``/``off``):

``bwrap``
    bubblewrap: the host's root file system mounted read-only, a new ``/tmp``,
    ``/run``, ``/dev/shm``, and empty home directories (``/root``, ``/home`` and
    the user's own ``$HOME``; the Python installation is bound back read-only);
    only the job directory is writable; new network, PID, IPC and UTS
    namespaces; the job dies with its parent. When mlpilot runs as root, each job
    runs as an unprivileged user id of its own, so jobs cannot read each other's
    directories either.
``namespaces``
    ``unshare``: new network and PID namespaces (no network, no view of host
    processes); the file system is the host's. As root, jobs still run as an
    unprivileged user id where that user can start Python.
``none``
    a plain subprocess: a scrubbed environment and its own working directory,
    nothing more. Generated code could read and write the user's files.
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mlpilot.sandbox import _child

Level = Literal["bwrap", "namespaces", "none"]
LEVELS: tuple[Level, ...] = ("bwrap", "namespaces", "none")
ISOLATION_ENV = "MLPILOT_SANDBOX_ISOLATION"
# Unprivileged user ids that jobs run as when mlpilot runs as root: one per job,
# taken in turn from this range (no passwd entry is needed for a uid).
JOB_UID_BASE = 200_000
JOB_UID_COUNT = 50_000
# What the in-sandbox runner keeps when it starts as root under bubblewrap: enough
# to drop a job to its user id, to kill that job's processes and to read its
# directory. The job itself, once it is another user, has no capability at all.
RUNNER_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_DAC_OVERRIDE")

PROMISES: dict[str, str] = {
    "bwrap": (
        "bubblewrap: host files read-only, home directories hidden, only the job "
        "directory writable; no network; host processes invisible"
    ),
    "namespaces": (
        "namespaces: no network and host processes invisible, but the job shares the "
        "host's file system (with the rights of the user it runs as)"
    ),
    "none": (
        "none: a plain subprocess; generated code could read and write the user's files "
        "and reach the network"
    ),
    "docker": (
        "docker: a container with no network, a read-only image, only the job directory "
        "writable, an unprivileged user and cgroup limits"
    ),
}


@dataclass(frozen=True)
class Isolation:
    """The wall this machine gives a local job.

    Attributes:
        level: ``bwrap``, ``namespaces`` or ``none``.
        network_isolated: the job provably has no network.
        drops_user: jobs run as an unprivileged user id (mlpilot runs as root).
    """

    level: Level
    network_isolated: bool
    drops_user: bool

    def prefix(self, writable: Path, *, network: bool = False) -> tuple[str, ...]:
        """The command that starts a process inside this wall, with ``writable`` (a
        job directory, or a warm worker's root) the one writable host path."""
        if self.level == "bwrap":
            return _bwrap_prefix(writable, network=network, root=self.drops_user)
        if self.level == "namespaces":
            return _unshare_prefix(network=network)
        return ()

    def describe(self) -> str:
        return PROMISES[self.level]


def requested_level() -> Level:
    """The strongest level ``$MLPILOT_SANDBOX_ISOLATION`` allows (default: bwrap)."""
    asked = os.environ.get(ISOLATION_ENV, "").strip().lower()
    if asked in ("off", "0", "false", "no", "none"):
        return "none"
    if asked == "namespaces":
        return "namespaces"
    return "bwrap"


@functools.cache
def detect(network: bool = False) -> Isolation:
    """The strongest isolation that works here, probed once per process."""
    wanted = requested_level()
    root = os.geteuid() == 0
    probe_dir = Path(_child.__file__).parent
    if wanted == "bwrap" and _works(_bwrap_prefix(probe_dir, network=network, root=root)):
        return Isolation("bwrap", network_isolated=not network, drops_user=root)
    if wanted in ("bwrap", "namespaces") and _works(_unshare_prefix(network=network)):
        return Isolation(
            "namespaces", network_isolated=not network, drops_user=root and _nobody_runs_python()
        )
    return Isolation("none", network_isolated=False, drops_user=False)


def _works(prefix: tuple[str, ...]) -> bool:
    if not prefix or sys.platform != "linux":
        return False
    try:
        probe = subprocess.run(
            [*prefix, sys.executable, "-c", "pass"], capture_output=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _nobody_runs_python() -> bool:
    """Whether an unprivileged user can start this Python (not so when it lives in
    root's home directory)."""
    try:
        probe = subprocess.run(
            [sys.executable, "-c", "pass"],
            capture_output=True,
            timeout=20,
            user=JOB_UID_BASE,
            group=JOB_UID_BASE,
            extra_groups=[],
            cwd="/",
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


_UNSHARE_BASE = ("--pid", "--fork", "--kill-child", "--mount-proc")


@functools.cache
def _unshare_prefix(network: bool) -> tuple[str, ...]:
    unshare = shutil.which("unshare")
    if sys.platform != "linux" or unshare is None:
        return ()
    net = () if network else ("--net",)
    for user in ((), ("--user", "--map-root-user")):
        cmd = (unshare, *user, *net, *_UNSHARE_BASE)
        try:
            probe = subprocess.run([*cmd, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return cmd
    return ()


def _hidden_dirs() -> list[Path]:
    """Directories where a user's secrets live: mounted empty inside the wall."""
    dirs = [Path("/root"), Path("/home"), Path.home()]
    return [d for d in dict.fromkeys(p.resolve() for p in dirs) if d.is_dir()]


def _python_paths() -> list[Path]:
    """What a job needs to run this Python: the installation and its site packages."""
    paths: Iterable[str] = (
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        str(Path(sys.executable).resolve().parent.parent),
        *site.getsitepackages(),
        site.getusersitepackages(),
        *(p for p in sys.path if "site-packages" in p or "dist-packages" in p),
        str(Path(_child.__file__).resolve().parent),
    )
    return [p for p in dict.fromkeys(Path(x).resolve() for x in paths if x) if p.is_dir()]


def _bwrap_prefix(writable: Path, *, network: bool, root: bool) -> tuple[str, ...]:
    bwrap = shutil.which("bwrap")
    if bwrap is None or sys.platform != "linux":
        return ()
    args = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for shared in ("/tmp", "/dev/shm"):
        args += ["--perms", "1777", "--tmpfs", shared]
    args += ["--tmpfs", "/run"]  # sockets (Docker's among them) and per-user runtime dirs
    hidden = _hidden_dirs()
    for directory in hidden:
        args += ["--tmpfs", str(directory)]
    fresh = [Path("/tmp"), Path("/dev/shm"), Path("/run"), *hidden]

    def bind(option: str, path: Path) -> None:
        # The directories leading to a mount inside a fresh tmpfs would be created
        # private to root; a job user must be able to pass through them.
        for ancestor in reversed(path.parents):
            if any(ancestor != m and ancestor.is_relative_to(m) for m in fresh):
                args.extend(["--perms", "0755", "--dir", str(ancestor)])
        args.extend([option, str(path), str(path)])

    for path in _python_paths():  # a checkout or virtualenv under /tmp or a home
        if any(path.is_relative_to(m) for m in fresh):
            bind("--ro-bind", path)
    bind("--bind", Path(writable).resolve())
    # --as-pid-1: the runner is the namespace's init and kills what a job leaves behind
    args += ["--unshare-pid", "--as-pid-1", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    if not network:
        args.append("--unshare-net")
    if root:
        args += ["--cap-drop", "ALL"]
        for cap in RUNNER_CAPS:
            args += ["--cap-add", cap]
    return tuple(args)


class JobUsers:
    """Hands out an unprivileged user id per job, in turn (thread-safe enough: ids are
    taken under the GIL by ``next``)."""

    def __init__(self) -> None:
        self._next = 0

    def take(self) -> tuple[int, int]:
        n = self._next
        self._next = (n + 1) % JOB_UID_COUNT
        uid = JOB_UID_BASE + n
        return uid, uid


def hand_over(directory: Path, user: tuple[int, int]) -> None:
    """Makes ``directory`` and everything in it the job user's, readable by it alone."""
    uid, gid = user
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            os.lchown(os.path.join(root, name), uid, gid)
    os.chown(directory, uid, gid)
    directory.chmod(0o700)
