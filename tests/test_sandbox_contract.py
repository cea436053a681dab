"""The sandbox contract, written once and run against every backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpilot.sandbox import ExecResult, Job, Limits, Sandbox, SandboxError, make_sandbox
from mlpilot.sandbox.base import read_artifact
from mlpilot.sandbox.isolation import detect
from mlpilot.testing import adversarial

BACKENDS = [
    "local",
    "local-warm",
    pytest.param("docker", marks=pytest.mark.docker),
    pytest.param("docker-warm", marks=pytest.mark.docker),
]


@pytest.fixture(params=BACKENDS)
def sandbox(request: pytest.FixtureRequest) -> Iterator[Sandbox]:
    if request.param.startswith("docker"):
        request.getfixturevalue("docker_ready")
    box = make_sandbox(request.param)
    try:
        yield box
    finally:
        box.close()


def isolated(sandbox: Sandbox) -> bool:
    """Whether this backend's jobs have no network (docker: always)."""
    return sandbox.name.startswith("docker") or detect().network_isolated


def job_dirs(result: ExecResult) -> tuple[str, ...]:
    """The job directory as the job sees it: the host path (local) or its mount point."""
    return (str(result.workdir), "/job", f"/sandbox/{result.workdir.name}")


def code(src: str) -> str:
    return textwrap.dedent(src).strip() + "\n"


def test_success_with_output_and_exit_code(sandbox: Sandbox) -> None:
    result = sandbox.run(
        code("""
        import sys
        print("hello from the job")
        print("to stderr", file=sys.stderr)
    """)
    )
    assert result.ok and result.exit_code == 0
    assert "hello from the job" in result.stdout
    assert "to stderr" in result.stderr
    assert not result.timed_out and not result.oom_killed
    assert result.duration_s >= 0


def test_nonzero_exit_is_data(sandbox: Sandbox) -> None:
    result = sandbox.run("import sys; sys.exit(7)")
    assert result.exit_code == 7 and not result.ok
    assert "exited with code 7" in result.summary()


def test_exception_is_data_with_traceback(sandbox: Sandbox) -> None:
    result = sandbox.run("raise ValueError('bad feature code')")
    assert result.exit_code == 1
    assert "ValueError: bad feature code" in result.stderr
    assert "bad feature code" in result.summary()


def test_crash_is_data(sandbox: Sandbox) -> None:
    result = sandbox.run("import os; os.abort()")
    assert not result.ok
    assert result.exit_code is not None and result.exit_code < 0  # killed by a signal
    assert not result.timed_out


def test_timeout_is_data_not_exception(sandbox: Sandbox) -> None:
    t0 = time.monotonic()
    result = sandbox.run("import time; time.sleep(60)", limits=Limits(timeout_s=1.0))
    assert result.timed_out and not result.ok
    assert result.exit_code is None
    assert time.monotonic() - t0 < 15


def test_sandbox_still_works_after_a_timeout(sandbox: Sandbox) -> None:
    sandbox.run("while True: pass", limits=Limits(timeout_s=0.5))
    assert sandbox.run("print('alive')").stdout.strip() == "alive"


def test_oom_is_data(sandbox: Sandbox) -> None:
    result = sandbox.run(
        "block = bytearray(3 * 1024**3)", limits=Limits(memory_mb=1536, timeout_s=60)
    )
    assert result.oom_killed and not result.ok
    assert not result.timed_out


def test_a_child_process_dies_with_the_job(sandbox: Sandbox) -> None:
    # The job starts a detached child that keeps writing, then exits at once.
    result = sandbox.run(
        code("""
        import subprocess, sys
        beat = "import time\\nwhile True:\\n    open('beat', 'a').write('x')\\n    time.sleep(0.02)"
        subprocess.Popen([sys.executable, "-c", beat], start_new_session=True)
        import time; time.sleep(0.5)
    """)
    )
    assert result.ok, result.stderr
    beat = result.workdir / "beat"
    assert beat.exists()
    size = beat.stat().st_size
    time.sleep(0.5)
    assert beat.stat().st_size == size, "a process started by the job outlived it"


def test_a_child_process_dies_when_the_job_times_out(sandbox: Sandbox) -> None:
    result = sandbox.run(
        code("""
        import subprocess, sys, time
        beat = "import time\\nwhile True:\\n    open('beat', 'a').write('x')\\n    time.sleep(0.02)"
        subprocess.Popen([sys.executable, "-c", beat])
        time.sleep(60)
    """),
        limits=Limits(timeout_s=1.5),
    )
    assert result.timed_out
    beat = result.workdir / "beat"
    size = beat.stat().st_size
    time.sleep(0.5)
    assert beat.stat().st_size == size


def test_network_is_unreachable(sandbox: Sandbox) -> None:
    if not isolated(sandbox):
        pytest.skip("this OS does not allow network namespaces")
    result = sandbox.run(
        code("""
        import socket
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=3)
            print("CONNECTED")
        except OSError as e:
            print("blocked:", e)
    """)
    )
    assert result.ok, result.stderr
    assert "blocked" in result.stdout and "CONNECTED" not in result.stdout
    assert result.network_isolated


def test_isolation_flag_is_reported(sandbox: Sandbox) -> None:
    result = sandbox.run("pass")
    assert result.network_isolated == isolated(sandbox)
    assert result.backend == sandbox.name


def test_env_has_no_secrets(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret-value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("MY_DB_PASSWORD", "hunter2")
    result = sandbox.run("import os, json; print(json.dumps(dict(os.environ)))")
    assert result.ok
    for secret in ("sk-test-secret-value", "aws-secret-value", "hunter2"):
        assert secret not in result.stdout
    assert "OPENAI_API_KEY" not in result.stdout


def test_job_env_is_passed(sandbox: Sandbox) -> None:
    result = sandbox.run(Job(code="import os; print(os.environ['SEED'])", env={"SEED": "42"}))
    assert result.stdout.strip() == "42"


def test_files_in_and_artifacts_out(sandbox: Sandbox, tmp_path: Path) -> None:
    host_file = tmp_path / "host.bin"
    host_file.write_bytes(bytes(range(256)))
    job = Job(
        code=code("""
            from pathlib import Path
            data = Path("data/in.bin").read_bytes()
            Path("out").mkdir()
            Path("out/reversed.bin").write_bytes(data[::-1])
            Path("copy.bin").write_bytes(Path("host.bin").read_bytes())
            print(Path("note.txt").read_text())
        """),
        files={"data/in.bin": b"\x00\x01\x02", "host.bin": host_file},
    )
    result = sandbox.run(job, files={"note.txt": "text file"})
    assert result.ok, result.stderr
    assert "text file" in result.stdout
    assert set(result.artifacts) == {"out/reversed.bin", "copy.bin"}
    assert result.artifacts["out/reversed.bin"].read_bytes() == b"\x02\x01\x00"
    assert result.artifacts["copy.bin"].read_bytes() == bytes(range(256))


def test_an_input_changed_by_the_job_is_an_artifact(sandbox: Sandbox) -> None:
    result = sandbox.run("open('state.txt', 'w').write('after')", files={"state.txt": "before"})
    assert result.artifacts["state.txt"].read_text() == "after"


def test_script_arguments(sandbox: Sandbox) -> None:
    result = sandbox.run(Job(code="import sys; print(sys.argv[1:])", args=("a", "b")))
    assert result.stdout.strip() == "['a', 'b']"


def test_writes_land_in_the_job_directory(sandbox: Sandbox, tmp_path: Path) -> None:
    before = set(os.listdir(Path.cwd()))
    result = sandbox.run(
        code("""
        import os, tempfile
        from pathlib import Path
        Path("relative.txt").write_text("r")
        Path("~/home.txt").expanduser().write_text("h")
        fd, name = tempfile.mkstemp()
        os.write(fd, b"t"); os.close(fd)
        print(os.getcwd()); print(Path.home()); print(name)
    """)
    )
    assert result.ok, result.stderr
    cwd, home, tmp = result.stdout.split()
    inside = job_dirs(result)
    for path in (cwd, home, tmp):
        assert path.startswith(inside), f"{path} is outside the job directory {inside}"
    assert "relative.txt" in result.artifacts and "home.txt" in result.artifacts
    assert set(os.listdir(Path.cwd())) == before


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape.txt", "a/../../b"])
def test_file_names_outside_the_job_directory_are_refused(sandbox: Sandbox, name: str) -> None:
    with pytest.raises(SandboxError, match="relative paths inside the job directory"):
        sandbox.run("pass", files={name: "x"})


def test_jobs_do_not_share_state(sandbox: Sandbox) -> None:
    sandbox.run("import builtins; builtins.LEAK = 1; open('x', 'w').write('1')")
    result = sandbox.run(
        code("""
        import builtins, os
        print(hasattr(builtins, 'LEAK'), os.path.exists('x'))
    """)
    )
    assert result.stdout.strip() == "False False"


def test_gpus_are_hidden_unless_requested(sandbox: Sandbox) -> None:
    result = sandbox.run("import os; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')))")
    assert result.stdout.strip() == "''"
    assert result.gpus == "none"  # and the result says so


def test_close_removes_job_directories() -> None:
    box = make_sandbox("local")
    result = box.run("open('f', 'w').write('x')")
    assert result.workdir.exists()
    box.close()
    assert not result.workdir.exists()
    with pytest.raises(SandboxError, match="closed"):
        box.run("pass")


def test_limits_are_validated() -> None:
    from mlpilot.errors import ConfigError

    with pytest.raises(ConfigError, match="timeout_s must be > 0"):
        Limits(timeout_s=0)
    with pytest.raises(ConfigError, match="memory_mb must be >= 64"):
        Limits(memory_mb=10)


def test_unknown_sandbox_kind() -> None:
    with pytest.raises(SandboxError, match="unknown sandbox 'kubernetes'.*docker-warm"):
        make_sandbox("kubernetes")


def test_thread_counts_follow_the_cpu_limit(sandbox: Sandbox) -> None:
    result = sandbox.run("import os; print(os.environ['OMP_NUM_THREADS'])", limits=Limits(cpus=1))
    assert result.stdout.strip() == "1"


def test_parallel_slots_share_the_cores() -> None:
    from mlpilot.sandbox import LocalSandbox

    with LocalSandbox(workers=max(2, os.cpu_count() or 1) * 2) as box:
        assert box.run("import os; print(os.environ['OMP_NUM_THREADS'])").stdout.strip() == "1"


# -- the wall: what each isolation level promises, tried by jobs that try to escape ----


def wall(sandbox: Sandbox) -> str:
    """The isolation level this backend gives its jobs here."""
    return "docker" if sandbox.name.startswith("docker") else detect().level


def test_the_result_states_the_isolation_level(sandbox: Sandbox) -> None:
    assert sandbox.run("pass").isolation == wall(sandbox)


def test_ci_runs_the_local_sandbox_behind_bubblewrap() -> None:
    # CI installs bubblewrap (scripts/test): the strongest local level must be in force.
    if not os.environ.get("CI"):
        pytest.skip("outside CI the local level depends on the machine")
    assert detect().level == "bwrap"


def test_host_files_outside_the_job_directory_stay_untouched(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # Guard: bwrap's read-only root and private /tmp; docker's mounts; a job user.
    if wall(sandbox) == "none":
        pytest.skip("isolation level 'none' promises nothing about host files")
    users_file = tmp_path / "notes.txt"
    users_file.write_text("original")
    system_file = Path("/etc") / f"mlpilot-escape-{uuid.uuid4().hex[:8]}"
    shared_tmp = Path("/tmp") / f"mlpilot-escape-{uuid.uuid4().hex[:8]}"
    targets = [users_file, system_file]
    if wall(sandbox) != "namespaces":  # namespaces share the host's file system
        targets.append(shared_tmp)
    try:
        result = sandbox.run(Job(code=adversarial.WRITE_OUTSIDE_JOB, args=tuple(map(str, targets))))
        assert result.ok, result.stderr
        assert users_file.read_text() == "original"
        assert not system_file.exists() and not shared_tmp.exists()
    finally:
        for path in (system_file, shared_tmp):
            path.unlink(missing_ok=True)


def test_host_processes_and_secret_files_are_unreadable(sandbox: Sandbox, tmp_path: Path) -> None:
    # Guard: private PID namespace (or container) and hidden home/tmp directories.
    if wall(sandbox) == "none":
        pytest.skip("isolation level 'none' promises nothing about host processes")
    marker = f"sk-mlpilot-{uuid.uuid4().hex}"
    key_file = tmp_path / "api_key.txt"
    key_file.write_text(marker)
    # a process holding an API key in its environment, as the mlpilot process does
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, "OPENAI_API_KEY": marker},
    )
    try:
        with key_file.open() as opened:  # and a secret file this process holds open
            paths = [f"/proc/{holder.pid}/environ", f"/proc/{os.getpid()}/fd/{opened.fileno()}"]
            if wall(sandbox) != "namespaces" or detect().drops_user:
                paths.append(str(key_file))
            # the marker travels reversed, so that no command line holds it
            args = (marker[::-1], *paths)
            code = "import sys; sys.argv[1] = sys.argv[1][::-1]\n" + adversarial.READ_HOST_JOB
            result = sandbox.run(Job(code=code, args=args), limits=Limits(timeout_s=60))
    finally:
        holder.kill()
        holder.wait()
    assert result.ok, result.stderr
    assert result.stdout.startswith("nothing"), result.stdout


def test_the_job_holds_no_descriptor_beyond_its_standard_streams(sandbox: Sandbox) -> None:
    # Guard: the runner closes every inherited descriptor (a warm worker's control pipe
    # among them) before the job starts; a forged status line then reaches nobody.
    result = sandbox.run(adversarial.OPEN_FDS_JOB)
    line = next(x for x in result.stdout.splitlines() if x.startswith("FDS"))
    fds = json.loads(line.removeprefix("FDS "))
    assert len(fds) <= 4, fds  # 0, 1, 2 and the descriptor listing /proc/self/fd
    assert result.exit_code == 3


def test_a_forged_status_does_not_change_the_result(sandbox: Sandbox) -> None:
    # Guard: the runner's status travels on its own stdout, which the job cannot write.
    result = sandbox.run(adversarial.FORGED_STATUS_JOB)
    assert result.exit_code == 5 and not result.ok


def test_links_and_special_files_are_refused_as_artifacts(sandbox: Sandbox, tmp_path: Path) -> None:
    # Guard: collect_artifacts uses lstat; read_artifact opens with O_NOFOLLOW.
    host = tmp_path / "secret.txt"
    host.write_text("host secret")
    result = sandbox.run(Job(code=adversarial.LINKS_JOB, args=(str(host),)))
    assert result.ok, result.stderr
    assert set(result.artifacts) == {"ok.txt"}
    assert set(result.refused) == {"model.skops", "rootdir", "oof.npy"}
    assert "symbolic link" in result.refused["model.skops"]
    assert "FIFO" in result.refused["oof.npy"]
    with pytest.raises(SandboxError, match="cannot be read safely"):
        read_artifact(result.workdir / "model.skops")
    assert read_artifact(result.artifacts["ok.txt"]) == b"a real file"


def test_a_job_cannot_read_another_jobs_directory(sandbox: Sandbox) -> None:
    # Guard: one-shot walls mount one job directory; warm ones give each job its own user.
    if wall(sandbox) == "none" or (wall(sandbox) != "docker" and not detect().drops_user):
        pytest.skip("jobs of this level share one user")
    if sandbox.name == "docker-warm" and os.getuid() != 0:
        pytest.skip("without root, warm container jobs share the host's user")
    first = sandbox.run("open('secret.txt', 'w').write('first job')")
    inner = [str(first.workdir / "secret.txt"), f"/sandbox/{first.workdir.name}/secret.txt"]
    second = sandbox.run(
        code(f"""
        for path in {inner!r}:
            try:
                print("READ", open(path).read())
            except OSError as e:
                print("refused", type(e).__name__)
    """)
    )
    assert second.ok, second.stderr
    assert "READ" not in second.stdout


def test_a_python_or_checkout_under_tmp_is_bound_back_inside_bubblewrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A fresh clone or virtualenv in /tmp would otherwise vanish under the private /tmp.
    from mlpilot.sandbox import isolation

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    monkeypatch.setattr(isolation, "_python_paths", lambda: [tmp_path])
    args = isolation._bwrap_prefix(tmp_path / "job", network=False, root=True)
    text = " ".join(args)
    assert f"--ro-bind {tmp_path} {tmp_path}" in text
    assert text.index("--tmpfs /tmp") < text.index(f"--ro-bind {tmp_path}")
