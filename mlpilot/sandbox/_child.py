"""The program that runs inside a local sandbox process. Imports nothing from mlpilot.

Two modes:

``python _child.py run TIMEOUT MEMORY_MB USER SCRIPT [ARGS...]``
    one job: fork, run SCRIPT in the child, print the status record as the last
    line of this process's standard output (which the job cannot write to), exit
    with the job's status. USER is ``UID:GID`` to run the job as, or ``-``.

``python _child.py serve [MODULE...]``
    a warm worker: import MODULEs once, then read one JSON request per line
    on stdin and answer one JSON status per line, forking a fresh child per
    job so that each job starts from the same clean, already-imported state.

In both modes the job runs in its own session, with no file descriptor but
0, 1 and 2 (so it cannot reach the control channel) and a private umask; when
started as root it first becomes its unprivileged user. On exit or timeout the
whole session is killed, and inside a PID namespace (the worker is PID 1) every
other process left in the namespace is killed too.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import sys
import time
import traceback

STATUS_MARKER = "\x00mlpilot-status "  # starts the runner's status line on its stdout
OOM_FILE = ".mlpilot-oom"
STDOUT_FILE = ".mlpilot-stdout"
STDERR_FILE = ".mlpilot-stderr"
OOM_EXIT = 137


def _job_child(
    directory: str,
    script: str,
    args: list[str],
    env: dict,
    memory_mb: int | None,
    cpus: float | None,
    user: tuple[int, int] | None = None,
) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        os.setsid()
        if user is not None:  # before touching the job directory, which is the user's
            uid, gid = user
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            if os.getuid() != uid or os.geteuid() != uid:
                raise SystemExit(f"could not become user {uid}")
        os.umask(0o077)
        os.chdir(directory)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        out = os.open(STDOUT_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        err = os.open(STDERR_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.closerange(3, _max_fd())  # the worker's control pipe among them
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGPIPE, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        tmp = env.get("TMPDIR")
        if tmp:
            os.makedirs(tmp, exist_ok=True)
            import tempfile

            tempfile.tempdir = None  # re-read TMPDIR
        if memory_mb:
            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if cpus:
            try:
                from threadpoolctl import threadpool_limits

                threadpool_limits(max(1, int(cpus)))
            except ImportError:
                pass
        sys.argv = [script, *args]
        sys.path[0] = directory
        import runpy

        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as e:
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except MemoryError:
            traceback.print_exc()
            with contextlib.suppress(OSError), open(OOM_FILE, "w"):
                pass
            code = OOM_EXIT
        except BaseException:
            traceback.print_exc()
            code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code & 0xFF)


def _max_fd() -> int:
    try:
        return min(int(os.sysconf("SC_OPEN_MAX")), 1 << 20)
    except (ValueError, OSError):
        return 65536


def _kill_leftovers(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    if os.getpid() != 1:
        return
    # PID 1 of a private namespace: everything else here belongs to finished jobs.
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)


def _reap_others(keep: int) -> None:
    """Collects exited orphans (PID 1 inherits them) without touching ``keep``."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0 or pid == keep:
            return


def execute(
    directory: str,
    script: str,
    args: list[str],
    env: dict,
    timeout: float,
    memory_mb: int | None,
    cpus: float | None,
    user: tuple[int, int] | None = None,
) -> dict:
    """Forks a child for one job and waits for it; returns the status record."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _job_child(directory, script, args, env, memory_mb, cpus, user)
    deadline = start + timeout
    pause = 0.0005
    timed_out = False
    status = None
    while True:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            status = raw
            break
        if time.monotonic() >= deadline:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
    duration = time.monotonic() - start
    _kill_leftovers(pid)
    exit_code = None
    if not timed_out and status is not None:
        if os.WIFEXITED(status):
            exit_code = os.WEXITSTATUS(status)
        elif os.WIFSIGNALED(status):
            exit_code = -os.WTERMSIG(status)
    oom = exit_code == OOM_EXIT or os.path.exists(os.path.join(directory, OOM_FILE))
    return {"exit_code": exit_code, "timed_out": timed_out, "oom": oom, "duration": duration}


def _user(spec: str | list | None) -> tuple[int, int] | None:
    if spec in (None, "-", ""):
        return None
    uid, gid = spec.split(":") if isinstance(spec, str) else spec
    return int(uid), int(gid)


def _run_one(argv: list[str]) -> int:
    timeout, memory, user, script, *args = argv
    directory = os.getcwd()
    status = execute(
        directory,
        script,
        args,
        dict(os.environ),
        float(timeout),
        int(memory) or None,
        None,
        _user(user),
    )
    sys.stdout.write(STATUS_MARKER + json.dumps(status) + "\n")
    sys.stdout.flush()
    code = status["exit_code"]
    return 1 if code is None else (code if code >= 0 else 128 - code)


def _import_all(names: list[str]) -> list[str]:
    failed = []
    for name in names:
        try:
            __import__(name)
        except Exception as e:  # a missing optional library only costs warmth
            failed.append(f"{name}: {type(e).__name__}: {e}")
    return failed


def _serve(preload: list[str]) -> int:
    # Keep the protocol on a private fd: stray prints from imported libraries
    # must not corrupt it.
    ctl = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    failed = _import_all(preload)
    ctl.write(json.dumps({"ready": True, "pid": os.getpid(), "preload_failed": failed}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if "warm" in request:  # modules later jobs need, imported once here (jobs fork from us)
            failed = _import_all(request["warm"])
            ctl.write(json.dumps({"id": request["id"], "preload_failed": failed}) + "\n")
            continue
        status = execute(
            request["dir"],
            request["script"],
            request.get("args", []),
            request["env"],
            request["timeout"],
            request.get("memory_mb"),
            request.get("cpus"),
            _user(request.get("user")),
        )
        _reap_others(keep=-1)
        status["id"] = request["id"]
        ctl.write(json.dumps(status) + "\n")
    return 0


def main() -> int:
    mode, *rest = sys.argv[1:]
    if mode == "run":
        return _run_one(rest)
    if mode == "serve":
        return _serve(rest)
    print(f"unknown mode {mode!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
