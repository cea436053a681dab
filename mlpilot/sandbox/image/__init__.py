"""Building the Docker sandbox image (``mlpilot sandbox build``) and, for machines
without a registry, its Debian base (``mlpilot sandbox base``).

The image holds the libraries that training jobs import, pinned to the versions
installed on the host, so that a model fitted in a container loads on the host.
Their wheels are downloaded on the host (with the host's own pip configuration)
and copied into the build, so the build itself runs without network.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from mlpilot.sandbox.base import SandboxError

CPU_BASE = "python:3.11-slim-bookworm"
GPU_BASE = "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime"
OFFLINE_BASE = "mlpilot-base:bookworm"
RUNTIME_PACKAGES = (
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "joblib",
    "threadpoolctl",
    "pyarrow",
    "skops",
    "lightgbm",
)
# with ``--nas`` (and ``--gpu``): what the NAS agent's jobs import, torch included even
# on a PyTorch base (transformers 5 needs torch >= 2.6: the host's torch is the one
# its transformers works with)
NAS_PACKAGES = ("torch", "transformers", "safetensors", "tokenizers")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
REQUIREMENTS_LABEL = "org.mlpilot.requirements"  # the pins an image was built with

Say = Callable[[str], None]


def runtime_requirements(packages: tuple[str, ...] = RUNTIME_PACKAGES) -> list[str]:
    """``name==version`` for each runtime package, at the host's installed version (its
    public part: a local build such as ``2.13.0+cpu`` pins ``2.13.0``)."""
    pins = []
    for name in packages:
        try:
            version = importlib.metadata.version(name).split("+", 1)[0]
            pins.append(f"{name}=={version}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    return pins


def image_requirements(*, nas: bool = False) -> list[str]:
    """The pins an image is built with: the runtime packages, and with ``nas`` the NAS
    agent's, at the host's versions (a host without them cannot pin them: an error
    that says what to install)."""
    packages: tuple[str, ...] = RUNTIME_PACKAGES
    if nas:
        missing = [n for n in NAS_PACKAGES if not _installed(n)]
        if missing:
            raise SandboxError(
                f"an image with the NAS libraries pins the host's versions, but this host "
                f'has no {", ".join(missing)}: pip install "mlpilot[nas]" (and torch) first'
            )
        packages = packages + NAS_PACKAGES
    return runtime_requirements(packages)


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def stale_reason(image: Any) -> str | None:
    """Why ``image`` does not fit this host (its library pins differ), or None."""
    built = (image.labels or {}).get(REQUIREMENTS_LABEL)
    if built is None:
        return None  # not built by mlpilot (a user's own image): trust it
    have = dict(p.split("==", 1) for p in built.split() if "==" in p)
    # the runtime packages, and the NAS packages an image built with --nas holds
    nas = tuple(n for n in NAS_PACKAGES if n in have)
    need = dict(p.split("==", 1) for p in runtime_requirements(RUNTIME_PACKAGES + nas) if "==" in p)
    diff = [f"{k} {have.get(k, '-')} (host {v})" for k, v in need.items() if have.get(k) != v]
    if not diff:
        return None
    return "built with other library versions than this host's: " + ", ".join(diff)


def has_nas_libraries(image: Any) -> bool:
    """Whether ``image`` was built with the NAS packages (``--nas`` or ``--gpu``); an
    image mlpilot did not build counts as having them (its jobs will say if not)."""
    built = (image.labels or {}).get(REQUIREMENTS_LABEL)
    return built is None or "transformers" in {p.split("==", 1)[0] for p in built.split()}


def rebuild_command(image: Any, tag: str) -> str:
    """The command that rebuilds ``image`` (tagged ``tag``) with what it holds: the
    NAS libraries if it has them, the GPU base for the ``:gpu`` tag."""
    from mlpilot.sandbox.docker import DEFAULT_IMAGE

    command = "mlpilot sandbox build"
    if tag.endswith(":gpu"):
        command += " --gpu"
    elif (image.labels or {}).get(REQUIREMENTS_LABEL) is not None and has_nas_libraries(image):
        command += " --nas"
    if tag not in (DEFAULT_IMAGE, DEFAULT_IMAGE.replace(":latest", ":gpu")):
        command += f" --tag {tag}"
    return command


def download_wheels(
    dest: Path,
    *,
    python_version: str | None = None,
    requirements: list[str] | None = None,
    say: Say = print,
) -> None:
    """Downloads ``requirements`` (default: the runtime packages' pins) and their
    dependencies as wheels into ``dest`` with pip."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--only-binary=:all:",
        "--dest",
        str(dest),
    ]
    if python_version:
        cmd += ["--python-version", python_version]
    requirements = requirements or runtime_requirements()
    say(f"downloading wheels: {' '.join(requirements)}")
    done = subprocess.run([*cmd, *requirements], capture_output=True, text=True)
    if done.returncode != 0:
        raise SandboxError(
            "could not download the sandbox image's wheels with pip "
            f"(exit {done.returncode}): {done.stderr.strip()[-600:]}"
        )


def _ensure_base(client: Any, base: str, say: Say) -> None:
    import docker

    try:
        client.images.get(base)
        return
    except docker.errors.ImageNotFound:
        pass
    say(f"pulling the base image {base}")
    try:
        client.images.pull(base)
    except Exception as e:
        raise SandboxError(
            f"the base image {base!r} is not on this machine and could not be pulled "
            f"({type(e).__name__}: {str(e)[:200]}). Without a registry, make a base offline "
            f"from Debian's packages with `mlpilot sandbox base` (needs root and debootstrap) "
            f"and build with `mlpilot sandbox build --base {OFFLINE_BASE}`."
        ) from e


def build_image(
    client: Any,
    *,
    tag: str,
    base: str,
    python_version: str | None = None,
    nas: bool = False,
    say: Say = print,
) -> str:
    """Builds the sandbox image ``tag`` from ``base``; returns the image id. With
    ``nas`` it also holds torch and transformers (see :func:`image_requirements`)."""
    requirements = image_requirements(nas=nas)
    _ensure_base(client, base, say)
    with tempfile.TemporaryDirectory(prefix="mlpilot-image-") as tmp:
        context = Path(tmp)
        dockerfile = resources.files("mlpilot.sandbox.image").joinpath("Dockerfile")
        (context / "Dockerfile").write_text(dockerfile.read_text())
        openmp = resources.files("mlpilot.sandbox.image").joinpath("openmp.py")
        (context / "openmp.py").write_text(openmp.read_text())
        download_wheels(
            context / "wheels", python_version=python_version, requirements=requirements, say=say
        )
        say(f"building {tag} from {base}")
        try:
            image, logs = client.images.build(
                path=str(context),
                tag=tag,
                buildargs={"BASE": base, "NAS": "1" if nas else ""},
                network_mode="none",  # everything it needs is in the context
                rm=True,
                forcerm=True,
                pull=False,
                labels={REQUIREMENTS_LABEL: " ".join(requirements)},
            )
        except Exception as e:
            log = getattr(e, "build_log", None) or []
            tail = "".join(str(chunk.get("stream", "")) for chunk in log if isinstance(chunk, dict))
            raise SandboxError(
                f"building the sandbox image failed: {e}\n{tail.strip()[-1500:]}"
            ) from e
        for chunk in logs:
            line = str(chunk.get("stream", "")).strip() if isinstance(chunk, dict) else ""
            if line == "mlpilot sandbox image ok":
                say(line)
    return str(image.id)


def make_base(
    client: Any,
    *,
    tag: str = OFFLINE_BASE,
    suite: str = "bookworm",
    mirror: str = DEBIAN_MIRROR,
    say: Say = print,
) -> str:
    """Makes a minimal Debian root filesystem with python3 and pip (debootstrap, from
    Debian's package mirror) and imports it as the image ``tag``; returns its id."""
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise SandboxError(
            "debootstrap is not installed (Debian/Ubuntu: `sudo apt-get install debootstrap`)"
        )
    with tempfile.TemporaryDirectory(prefix="mlpilot-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        say(f"debootstrap {suite} from {mirror} (a few minutes, once)")
        done = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                "--include=python3,python3-pip,ca-certificates,libgomp1",
                suite,
                str(rootfs),
                mirror,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SandboxError(
                f"debootstrap failed (exit {done.returncode}; it needs root): "
                f"{(done.stderr or done.stdout).strip()[-800:]}"
            )
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / cache, ignore_errors=True)
        archive = Path(tmp) / "rootfs.tar"
        say(f"importing the root filesystem as {tag}")
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        repository, _, version = tag.partition(":")
        client.api.import_image(src=str(archive), repository=repository, tag=version or "latest")
    return str(client.images.get(tag).id)
