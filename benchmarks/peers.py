"""Peers in their own virtual environments.

A peer whose pins clash with mlpilot's (autofeat 2.1 requires numpy < 2 and
pandas < 3; installing it next to mlpilot downgrades both and breaks pyarrow) is
installed into ``benchmarks/.peers/<name>`` from PyPI on first use and run there
as a subprocess; data travels as CSV files.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent / ".peers"


def peer_python(name: str, requirements: list[str]) -> Path:
    """The Python of the peer's environment, created (and its requirements
    installed) on first use."""
    home = ROOT / name
    python = home / "bin" / "python"
    stamp = home / "installed.txt"
    wanted = "\n".join(requirements)
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"[peers] installing {name} into {home} ({', '.join(requirements)})", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(home)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *requirements,
        ],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def run_peer(name: str, requirements: list[str], script: str, *args: str, timeout: float) -> str:
    """Runs ``script`` (Python source) with the peer's Python; returns its stdout."""
    python = peer_python(name, requirements)
    done = subprocess.run(
        [str(python), "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


if __name__ == "__main__":
    print(peer_python(sys.argv[1], sys.argv[2:]))
