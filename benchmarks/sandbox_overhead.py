"""Per-job overhead of the sandbox backends.

Runs N trivial jobs and N jobs that import numpy/pandas/scikit-learn in each
backend and prints wall-clock time per job (median and mean), measured from
the caller's side: job directory, process start, imports, teardown.

    python benchmarks/sandbox_overhead.py [--jobs 30] [--no-docker]

The Docker rows need a running engine and the sandbox image
(``./scripts/docker-setup``); without them they are reported as unavailable.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from mlpilot.sandbox import LocalSandbox, Sandbox, SandboxError
from mlpilot.sandbox.isolation import detect

JOBS = {
    "empty job": "pass\n",
    "sklearn job": (
        "import numpy, pandas\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "LogisticRegression().fit([[0.0], [1.0]], [0, 1])\n"
    ),
}


def measure(box: Sandbox, code: str, n: int) -> list[float]:
    box.run(code)  # warm-up: a warm worker starts here, caches fill
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        result = box.run(code)
        times.append(time.perf_counter() - t0)
        assert result.ok, result.summary()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--no-docker", action="store_true", help="Local backends only.")
    args = parser.parse_args()
    backends: dict[str, Callable[[], Sandbox]] = {
        "local one-shot": lambda: LocalSandbox(),
        "local warm": lambda: LocalSandbox(warm=True),
    }
    if not args.no_docker:
        from mlpilot.sandbox.docker import DockerSandbox

        backends["docker one-shot"] = lambda: DockerSandbox()
        backends["docker warm"] = lambda: DockerSandbox(warm=True)
    print(f"local isolation: {detect().describe()}")
    print(f"{args.jobs} jobs per cell; milliseconds per job, median / mean\n")
    header = f"| {'backend':<16} | " + " | ".join(f"{name:>16}" for name in JOBS) + " |"
    print(header)
    print("|" + "-" * 18 + "|" + "|".join("-" * 18 for _ in JOBS) + "|")
    for name, make in backends.items():
        cells = []
        try:
            box = make()
        except SandboxError as e:
            print(f"| {name:<16} | unavailable: {e}")
            continue
        with box:
            for code in JOBS.values():
                t = measure(box, code, args.jobs)
                cells.append(f"{statistics.median(t) * 1e3:7.1f} / {statistics.mean(t) * 1e3:6.1f}")
        print(f"| {name:<16} | " + " | ".join(f"{c:>16}" for c in cells) + " |")


if __name__ == "__main__":
    main()
