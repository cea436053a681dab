"""What only the warm-worker mode promises: warmth, recovery, parallel workers."""

from __future__ import annotations

import threading
import time

from mlpilot.sandbox import Limits, LocalSandbox


def test_warm_worker_keeps_imports_and_serves_many_jobs() -> None:
    with LocalSandbox(warm=True, preload=("json", "sklearn.ensemble")) as box:
        results = [
            box.run("import sys; print('sklearn.ensemble' in sys.modules)") for _ in range(5)
        ]
        assert all(r.stdout.strip() == "True" for r in results)
        assert box.worker_starts == 1


LOADED = "import sys; print('wave' in sys.modules)"


def test_warm_up_imports_a_module_once_in_the_running_workers() -> None:
    with LocalSandbox(warm=True, workers=2, preload=("json",)) as box:
        assert box.run(LOADED).stdout.strip() == "False"
        box.warm_up(["wave"])
        worker = box._all_workers[0]
        deadline = time.monotonic() + 30
        while "wave" not in worker._loaded and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "wave" in worker._loaded, "the idle worker was not warmed in the background"
        assert [box.run(LOADED).stdout.strip() for _ in range(3)] == ["True"] * 3
        assert box.worker_starts == 1  # imported in the running worker, not by a restart
        worker.proc.kill()  # type: ignore[union-attr]
        worker.proc.wait()  # type: ignore[union-attr]
        assert box.run(LOADED).stdout.strip() == "True"  # a restarted worker imports it too


def test_a_worker_busy_during_warm_up_catches_up_before_its_next_job() -> None:
    with LocalSandbox(warm=True, workers=1, preload=()) as box:
        box._warm_one = lambda: None  # type: ignore[method-assign]  # no background warming
        box.run("pass")
        busy = threading.Thread(target=lambda: box.run("import time; time.sleep(1)"))
        busy.start()
        time.sleep(0.3)
        box.warm_up(["wave"])
        busy.join()
        assert box.run(LOADED).stdout.strip() == "True"
        assert box.worker_starts == 1


def test_warm_up_is_a_no_op_without_warm_workers() -> None:
    with LocalSandbox(preload=()) as box:
        box.warm_up(["wave"])
        assert box.run(LOADED).stdout.strip() == "False"


def test_worker_survives_job_crash_and_timeout_without_restart() -> None:
    with LocalSandbox(warm=True, preload=()) as box:
        box.run("import os; os.abort()")
        box.run("import time; time.sleep(30)", limits=Limits(timeout_s=0.5))
        box.run("import sys; sys.exit(3)")
        assert box.run("print('ok')").stdout.strip() == "ok"
        assert box.worker_starts == 1


def test_a_dead_worker_is_replaced() -> None:
    with LocalSandbox(warm=True, preload=()) as box:
        box.run("pass")
        worker = box._all_workers[0]
        assert worker.proc is not None
        worker.proc.kill()
        worker.proc.wait()
        assert box.run("print('back')").stdout.strip() == "back"
        assert box.worker_starts == 2


def test_a_worker_started_from_a_thread_outlives_that_thread() -> None:
    # bubblewrap's --die-with-parent follows the thread that started the worker:
    # a worker started from a trial's thread died when the thread ended, and a job
    # another thread had just handed it was reported as lost.
    with LocalSandbox(warm=True, preload=()) as box:
        outputs: list[str] = []
        thread = threading.Thread(target=lambda: outputs.append(box.run("print(1)").stdout))
        thread.start()
        thread.join()
        time.sleep(0.5)
        worker = box._all_workers[0]
        assert worker._alive(), "the worker died with the thread that started it"
        assert box.run("print(2)").stdout.strip() == "2"
        assert outputs == ["1\n"]
        assert box.worker_starts == 1


def test_parallel_workers_run_jobs_at_the_same_time() -> None:
    with LocalSandbox(warm=True, workers=2, preload=()) as box:
        box.run("pass")  # start one worker before timing
        durations: list[float] = []

        def one() -> None:
            t0 = time.monotonic()
            box.run("import time; time.sleep(1.0)")
            durations.append(time.monotonic() - t0)

        threads = [threading.Thread(target=one) for _ in range(2)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.monotonic() - t0 < 1.9  # two 1-second jobs overlapped
