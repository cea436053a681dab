"""Peers in their own virtual environments, under ``benchmarks/.peers/<name>``.

A peer whose pins clash with mlpilot's (autofeat 2.1 requires numpy < 2 and
pandas < 3; AutoGluon 1.6 pandas < 3) is installed there from PyPI on first use and
run as a subprocess; data travels as CSV files. The machinery is
:mod:`mlpilot.evals.peers`; this module only fixes where the benchmarks keep them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlpilot.evals import peers

ROOT = Path(__file__).resolve().parent / ".peers"


def peer_python(name: str, requirements: list[str]) -> Path:
    return peers.peer_python(name, requirements, ROOT)


def run_peer(name: str, requirements: list[str], script: str, *args: str, timeout: float) -> str:
    return peers.run_peer(name, requirements, script, *args, timeout=timeout, root=ROOT)


if __name__ == "__main__":
    print(peer_python(sys.argv[1], sys.argv[2:]))
