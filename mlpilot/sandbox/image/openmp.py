"""Run while the sandbox image is built: makes sure ``libgomp.so.1`` (GNU OpenMP, which
LightGBM links against) is on the loader's path.

Debian's slim Python images do not carry it, and the build has no network to install
Debian's ``libgomp1``. scikit-learn's wheel ships its own copy of the same library,
so when the system has none, that copy is linked in under the standard name.
"""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import sklearn


def main() -> None:
    if ctypes.util.find_library("gomp"):
        print("libgomp: the system's")
        return
    libs = Path(sklearn.__file__).resolve().parent.parent / "scikit_learn.libs"
    copies = sorted(libs.glob("libgomp*.so*"))
    if not copies:
        raise SystemExit(f"no libgomp on this system and none in {libs}: LightGBM cannot load")
    # A directory the loader searches by file name: ldconfig's cache would file the
    # copy under its own, renamed soname, where a lookup of libgomp.so.1 misses it.
    target = Path("/usr/lib/libgomp.so.1")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    target.symlink_to(copies[0])
    print(f"libgomp: scikit-learn's copy ({copies[0].name})")


if __name__ == "__main__":
    main()
