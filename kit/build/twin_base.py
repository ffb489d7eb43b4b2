"""The twin base image (`kit base --stack twin`): JetPack 4.4.1's Python side on x86-64.

kit/tf-cpu-base:tf2.3.1-py3.6 carries the Jetson image's Python 3.6,
tensorflow-cpu 2.3.1, numpy 1.16.1 and protobuf 3.8.0, so `kit build` of a
manifest with `target.stack: twin` runs the optimizer, the smoke reference and
the model server on the target's Python and TensorFlow. What it is not: aarch64,
CUDA, TensorRT (docs/twin.md).

No image can be pulled here, and Debian bookworm has no Python 3.6, so the
interpreter comes from this host: a Python 3.6 build (pyenv's 3.6.15 on
machines of this kind) linked against the same Debian release's libraries,
which kit's Debian base carries for its own python3. It is copied into the
build context without site-packages (nothing of the host's own packages or
configuration goes into the image), its tests or static library. The packages
are exactly kit/docker/twin-requirements.txt, as wheels fetched on the host.
Built under a temporary tag, verified, then tagged; reused by name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kit import labels as lb
from kit.build import base as bases
from kit.docker_api import Engine
from kit.errors import KitError, PreflightError
from kit.profiles import TWIN_STACK

TWIN_DOCKERFILE = "tf-twin-base.Dockerfile"
REQUIREMENTS = "twin-requirements.txt"
PYTHON_ENV = "KIT_TWIN_PYTHON"  # a Python 3.6 interpreter to copy (also what scripts/setup-host uses)

# Parts of the interpreter's tree the image does not need (tests, GUI, headers, the static library),
# and site-packages, which holds the host's own packages and configuration (.pth files).
_SKIP_DIRS = {"test", "tests", "idlelib", "tkinter", "turtledemo", "site-packages", "include", "share"}
_SKIP_FILES = re.compile(r"(\.a|sitecustomize\.py|usercustomize\.py|_tkinter\..*\.so)$")


# ---- the interpreter ---------------------------------------------------------------------


def _pyenv_root() -> Path:
    if os.environ.get("PYENV_ROOT"):
        return Path(os.environ["PYENV_ROOT"])
    exe = shutil.which("pyenv")
    if exe:
        out = subprocess.run([exe, "root"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
    return Path.home() / ".pyenv"


def find_python() -> tuple[Path, str]:
    """(installation prefix, "3.6.15") of the Python 3.6 to copy: $KIT_TWIN_PYTHON, else pyenv's newest 3.6."""
    hint = (f"install it with pyenv (pyenv install 3.6.15), or set {PYTHON_ENV} to a Python 3.6 interpreter "
            "built on this Debian release")
    exe = os.environ.get(PYTHON_ENV)
    if not exe:
        found = sorted((p for p in (_pyenv_root() / "versions").glob("3.6.*") if (p / "bin/python3.6").is_file()),
                       key=lambda p: [int(x) if x.isdigit() else 0 for x in p.name.split(".")])
        if not found:
            raise PreflightError(f"the twin base needs this host's Python 3.6 (the Jetson's), and none was found "
                                 f"under {_pyenv_root() / 'versions'}", hint=hint)
        exe = str(found[-1] / "bin/python3.6")
    probe = subprocess.run([exe, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3]); print(sys.base_prefix)"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL) if os.access(exe, os.X_OK) else None
    if probe is None or probe.returncode != 0:
        raise PreflightError(f"{exe} does not run", hint=hint)
    version, prefix = probe.stdout.split()[:2]
    if not version.startswith("3.6."):
        raise PreflightError(f"{exe} is Python {version}; the twin base needs Python 3.6 (JetPack 4.4.1's)", hint=hint)
    prefix_path = Path(prefix)
    if not (prefix_path / "lib/python3.6/os.py").is_file() or not (prefix_path / "bin/python3.6").is_file():
        raise PreflightError(f"{exe}: {prefix} is not a Python installation kit can copy "
                             "(bin/python3.6 and lib/python3.6/ expected)", hint=hint)
    return prefix_path, version


def copy_python(prefix: Path, dest: Path) -> int:
    """Copy the installation at `prefix` to `dest` without what the image must not or need not carry. Bytes copied."""
    def ignore(directory: str, names: list[str]) -> list[str]:
        return [n for n in names if n in _SKIP_DIRS or _SKIP_FILES.search(n)]

    shutil.copytree(prefix, dest, symlinks=True, ignore=ignore, copy_function=bases.link_or_copy)
    (dest / "lib/python3.6/site-packages").mkdir(parents=True, exist_ok=True)
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and not p.is_symlink())


# ---- the wheels ---------------------------------------------------------------------------


def requirements_path() -> Path:
    path = Path(__file__).resolve().parents[1] / "docker" / REQUIREMENTS
    if not path.is_file():
        raise KitError(f"kit's {REQUIREMENTS} is missing from {path.parent}", hint="reinstall kit (pip install -e .)")
    return path


def read_requirements(text: str) -> list[tuple[str, str, bool]]:
    """(name, version, from_source) of every `name==version` line."""
    out = []
    for line in text.splitlines():
        spec, _, comment = line.partition("#")
        spec = spec.strip()
        if not spec:
            continue
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.]+)$", spec)
        if not m:
            raise KitError(f"{REQUIREMENTS}: not a pin (name==version): {line!r}")
        out.append((m.group(1), m.group(2), comment.strip() == "source"))
    return out


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _platforms() -> list[str]:
    # pip expands no manylinux tag to older ones: list every one a cp36 wheel may carry that bookworm runs.
    legacy = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"]
    return legacy + [f"manylinux_2_{m}_x86_64" for m in range(bases.DEBIAN_GLIBC_MINOR, 4, -1)]


def _pip(argv: list[str], what: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise KitError(f"{what} failed (exit {proc.returncode})",
                       details=proc.stdout.decode(errors="replace").strip().splitlines()[-12:],
                       hint="check that PyPI (or your PIP_INDEX_URL mirror) is reachable")


def download_wheels(progress: bases.Progress | None = None) -> Path:
    """Every pin of twin-requirements.txt as a cp36 x86-64 wheel, plus the file itself as requirements.txt,
    in ~/.cache/kit/wheels/twin-<hash>/ (reused while the file is unchanged; written atomically)."""
    progress = progress or bases.quiet
    text = requirements_path().read_text()
    pins = read_requirements(text)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    dest = bases.cache_dir() / "wheels" / f"twin-tf{TWIN_STACK.tensorflow}-py{TWIN_STACK.python}-{digest}"
    if (dest / "requirements.txt").is_file():
        progress(f"wheels: reused {dest} ({len(list(dest.glob('*.whl')))} wheels)")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".twin-", dir=dest.parent))
    try:
        binary = [f"{n}=={v}" for n, v, source in pins if not source]
        progress(f"wheels: pip download {len(binary)} pinned packages for Python {TWIN_STACK.python} "
                 f"(tensorflow-cpu=={TWIN_STACK.tensorflow} is about 140 MB)")
        argv = ["download", "--disable-pip-version-check", "--no-input", "--no-deps", "--only-binary=:all:",
                "--python-version", TWIN_STACK.python, "--implementation", "cp",
                "--abi", "cp" + TWIN_STACK.python.replace(".", "") + "m", "--dest", str(tmp)]
        for plat in _platforms():
            argv += ["--platform", plat]
        _pip(argv + binary, "pip download of the twin's wheels")
        for name, version, source in pins:
            if source:  # pure Python without a wheel on PyPI: a py3 wheel built here runs on 3.6 alike
                progress(f"wheels: building {name}=={version} from source (pure Python)")
                _pip(["wheel", "--disable-pip-version-check", "--no-input", "--no-deps", "--no-binary", name,
                      "--wheel-dir", str(tmp), f"{name}=={version}"], f"building the {name} wheel")
        have = {_normal(w.name.split("-")[0]) + "==" + w.name.split("-")[1] for w in tmp.glob("*.whl")}
        missing = [f"{n}=={v}" for n, v, _ in pins if f"{_normal(n)}=={v}" not in have]
        if missing:
            raise KitError(f"no wheel was fetched for {', '.join(missing)}")
        (tmp / "requirements.txt").write_text(text)
        return bases.publish_wheels(tmp, dest, progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- the image ------------------------------------------------------------------------------


def ensure_twin_base(engine: Engine, progress: bases.Progress | None = None, force: bool = False) -> str:
    """The twin base image name, built (with the Debian base under it) if missing."""
    return twin_base(engine, progress, force).image


def twin_base(engine: Engine, progress: bases.Progress | None = None, force: bool = False,
              debian: bases.BaseImage | None = None) -> bases.BaseImage:
    progress = progress or bases.quiet
    image = TWIN_STACK.base_image
    start = time.monotonic()

    def reused() -> bases.BaseImage:
        info = engine.image_inspect(image)
        progress(f"{image}: present, reused")
        return bases.BaseImage(image, info.id, True, time.monotonic() - start, info.size,
                               info.labels.get(lb.PYTHON, ""), info.labels.get(lb.TENSORFLOW, ""))

    if engine.image_exists(image) and not force:
        return reused()
    prefix, version = find_python()  # before anything slow: a host without Python 3.6 hears it first
    debian = debian or bases.debian_base(engine, progress)
    with bases.exclusive(image, progress):
        if engine.image_exists(image) and not force:
            return reused()
        bases.remove_stale_temps(engine, image)
        return _build(engine, image, prefix, version, progress, force, start)


def _pins() -> dict[str, str]:
    return {_normal(n): v for n, v, _ in read_requirements(requirements_path().read_text())}


def _build(engine: Engine, image: str, prefix: Path, version: str, progress: bases.Progress, force: bool,
           start: float) -> bases.BaseImage:
    wheels = download_wheels(progress)
    pins = _pins()
    tensorflow = TWIN_STACK.tensorflow
    with bases.build_context("kit-twin-base-") as context:
        copied = copy_python(prefix, context / "python")
        progress(f"{image}: Python {version} from {prefix} ({copied / 1e6:.0f} MB without site-packages and tests)")
        (context / "wheels").mkdir()
        for f in wheels.iterdir():
            bases.link_or_copy(f, context / "wheels" / f.name)
        pip_wheel = next(w.name for w in wheels.glob("pip-*.whl"))
        shutil.copy2(bases.dockerfile_path(TWIN_DOCKERFILE), context / "Dockerfile")
        progress(f"{image}: docker build (installs the pinned wheels into /opt/kit/venv; a few minutes)")
        spec = bases.BaseBuild(
            image, buildargs={"DEBIAN_BASE": bases.DEBIAN_BASE, "TENSORFLOW": tensorflow,
                              "PYTHON": TWIN_STACK.python, "PIP_WHEEL": pip_wheel},
            install_stage=f"tf-twin-base-install-{tensorflow}",
            check=bases.Check(
                ["python3", "-c", "import sys, tensorflow as tf, numpy, google.protobuf as pb; "
                 "print('twin', '%d.%d.%d' % sys.version_info[:3], tf.__version__, numpy.__version__, "
                 "pb.__version__)"],
                expect=f"twin {version} {tensorflow} {pins['numpy']} {pins['protobuf']}",
                failure="the built image does not run the pinned stack"),
            python=TWIN_STACK.python, tensorflow=tensorflow)
        return bases.build_verified(engine, context, spec, progress, force, start)
