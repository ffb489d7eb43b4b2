"""Python libraries the in-image half of kit needs beyond the base image, as wheels.

The model server runs on tornado (kit/runtime/serving/transport.py). The L4T
bases carry Python 3.6 and TensorFlow's dependencies only, so kit fetches the
tornado wheel for the image's Python and architecture on the host (`pip
download`, cached in ~/.cache/kit/wheels/) and unpacks it into the build
context's pylib/, which the Dockerfiles copy onto the image's PYTHONPATH:
nothing is fetched inside the image, nothing needs pip there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from kit.errors import KitError

# tornado 6.1 is the last release for Python 3.6 (cp36 manylinux2014 aarch64/x86_64 wheels).
_TORNADO_36 = "tornado==6.1"
_TORNADO = "tornado>=6.4,<7"
_MACHINES = {"arm64": "aarch64", "aarch64": "aarch64", "amd64": "x86_64", "x86_64": "x86_64"}


def tornado_requirement(python: str) -> str:
    major_minor = tuple(int(p) for p in python.split(".")[:2])
    return _TORNADO_36 if major_minor < (3, 8) else _TORNADO


def _platforms(architecture: str) -> list[str]:
    machine = _MACHINES.get(architecture)
    if machine is None:
        raise KitError(f"no wheels for architecture {architecture!r}", hint="use arm64 or amd64")
    return [f"manylinux2014_{machine}", f"manylinux_2_17_{machine}", f"manylinux_2_5_{machine}",
            f"manylinux1_{machine}"]


def server_wheels(python: str, architecture: str, cache: Path) -> list[Path]:
    """The server's wheels for this Python and architecture, downloaded once into `cache`."""
    requirement = tornado_requirement(python)
    dest = cache / "wheels" / f"serve-py{python}-{architecture}"
    found = sorted(dest.glob("tornado-*.whl")) if dest.is_dir() else []
    if found:
        return found
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".serve-", dir=dest.parent))
    try:
        argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
                "--no-deps", "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                "--dest", str(tmp)]
        for plat in _platforms(architecture):
            argv += ["--platform", plat]
        proc = subprocess.run(argv + [requirement], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = proc.stdout.decode(errors="replace").strip().splitlines()[-8:]
            raise KitError(f"pip download of {requirement} for Python {python} ({architecture}) failed",
                           details=tail, hint="check that PyPI (or your PIP_INDEX_URL mirror) is reachable")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        return sorted(dest.glob("tornado-*.whl"))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def unpack(wheels: list[Path], target: Path) -> None:
    """Install wheels by unpacking them (a wheel's purelib/platlib layout is importable as is)."""
    target.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.startswith("/") or ".." in name.split("/"):
                    raise KitError(f"{wheel.name}: unsafe path {name!r} in the wheel")
            archive.extractall(target)
