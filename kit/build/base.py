"""Offline base images (`kit base`).

This machine, like an air-gapped site, cannot pull images. kit assembles its
CPU bases from what it can reach: a Debian root filesystem made by
debootstrap from a Debian mirror, imported with `docker import`; then
TensorFlow from wheels that `pip download` fetched on the host and the build
context carries. Each image is reused when present (cached by name) and is
tagged only after it has been built and verified, so an interrupted run never
leaves a half-made final image behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from kit import labels as lb
from kit.docker_api import Engine
from kit.errors import DockerError, KitError, PreflightError, UsageError
from kit.profiles import CPU_STACK, CPU_STACKS, TWIN_STACK
from kit.units import utc_timestamp

Progress = Callable[[str], None]

DEBIAN_SUITE = "bookworm"
DEBIAN_BASE = f"kit/debian-python:{DEBIAN_SUITE}"
DEBIAN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEBIAN_GLIBC_MINOR = 36  # bookworm ships glibc 2.36: wheels up to manylinux_2_36 run on it
DEFAULT_MIRROR = "http://deb.debian.org/debian"

TF_BASE_REPOSITORY = CPU_STACK.base_image.rpartition(":")[0]  # "kit/tf-cpu-base"
TF_BASE_DOCKERFILE = "tf-cpu-base.Dockerfile"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class BaseImage:
    """One base image kit made or found."""

    image: str
    id: str
    reused: bool
    seconds: float  # wall time of this step (lookup only, when reused)
    size: int
    python: str
    tensorflow: str | None = None


@dataclass(frozen=True)
class BasesResult:
    debian: BaseImage
    tensorflow: BaseImage

    def to_dict(self) -> dict:
        return {"debian": asdict(self.debian), "tensorflow": asdict(self.tensorflow)}


def quiet(_: str) -> None:
    pass


def tf_base_image(tensorflow: str = CPU_STACK.tensorflow) -> str:
    """The TF CPU base name for a TensorFlow version (the pinned one is the CPU stack's base)."""
    if tensorflow == CPU_STACK.tensorflow:
        return CPU_STACK.base_image
    return f"{TF_BASE_REPOSITORY}:tf{tensorflow}"


def cache_dir() -> Path:
    """Host cache for downloaded wheels: $KIT_CACHE_DIR, else ~/.cache/kit."""
    env = os.environ.get("KIT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kit"


def dockerfile_path(name: str) -> Path:
    """kit ships its Dockerfiles as package data in kit/docker/."""
    path = Path(__file__).resolve().parents[1] / "docker" / name
    if not path.is_file():
        raise KitError(f"kit's {name} is missing from {path.parent}", hint="reinstall kit (pip install -e .)")
    return path


@contextlib.contextmanager
def exclusive(image: str, progress: Progress):
    """One builder per image on this machine: parallel test sessions or two
    `kit base` runs wait for each other instead of building twice."""
    lock_dir = Path(tempfile.gettempdir()) / "kit-locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", image) + ".lock"), "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"{image}: another kit is building it; waiting")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def remove_stale_temps(engine: Engine, image: str) -> None:
    # Under the lock, a temporary tag can only be left over from a killed run.
    for ref in engine.image_refs(f"{image}-tmp-*"):
        engine.remove_image(ref, force=True)


# ---- the Debian base -------------------------------------------------------------------


def _debootstrap_preflight() -> str:
    exe = shutil.which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if os.access(p, os.X_OK)), None)
    if exe is None:
        raise PreflightError("debootstrap is not installed; kit needs it to assemble the Debian base offline",
                             hint="apt-get install debootstrap (or run bash scripts/setup-host)")
    if os.geteuid() != 0:
        raise PreflightError("debootstrap must run as root to assemble the Debian base",
                             hint="run `kit base` as root (sudo), once; the image is reused afterwards")
    if shutil.which("tar") is None:
        raise PreflightError("tar is not installed", hint="apt-get install tar")
    return exe


def _python_in_rootfs(root: Path) -> str:
    """'3.11' from the rootfs' python3 symlink (python3 -> python3.11)."""
    target = os.readlink(root / "usr/bin/python3") if (root / "usr/bin/python3").is_symlink() else ""
    m = re.search(r"python(\d+\.\d+)$", target)
    if not m:
        raise KitError(f"the debootstrapped root has no usable python3 (usr/bin/python3 -> {target or 'missing'})")
    return m.group(1)


def _tar_chunks(proc: subprocess.Popen, size: int = 1 << 20) -> Iterator[bytes]:
    while True:
        chunk = proc.stdout.read(size)
        if not chunk:
            return
        yield chunk


def ensure_debian_base(engine: Engine, progress: Progress | None = None, force: bool = False) -> str:
    """The Debian base image name, assembled with debootstrap if missing."""
    return debian_base(engine, progress, force).image


def debian_base(engine: Engine, progress: Progress | None = None, force: bool = False) -> BaseImage:
    progress = progress or quiet
    start = time.monotonic()

    def reused() -> BaseImage:
        info = engine.image_inspect(DEBIAN_BASE)
        progress(f"{DEBIAN_BASE}: present, reused")
        return BaseImage(DEBIAN_BASE, info.id, True, time.monotonic() - start, info.size,
                         info.labels.get(lb.PYTHON, ""))

    if engine.image_exists(DEBIAN_BASE) and not force:
        return reused()
    debootstrap = _debootstrap_preflight()
    with exclusive(DEBIAN_BASE, progress):
        if engine.image_exists(DEBIAN_BASE) and not force:
            return reused()  # made by the run we waited for
        remove_stale_temps(engine, DEBIAN_BASE)
        return _assemble_debian(engine, progress, debootstrap, start)


def _assemble_debian(engine: Engine, progress: Progress, debootstrap: str, start: float,
                     image: str = DEBIAN_BASE) -> BaseImage:
    """debootstrap a root filesystem, import it under a temporary tag, verify, retag."""
    mirror = os.environ.get("KIT_DEBIAN_MIRROR", DEFAULT_MIRROR)
    work = Path(tempfile.mkdtemp(prefix="kit-debootstrap-", dir=os.environ.get("KIT_TMPDIR")))
    root = work / "rootfs"
    temp_tag = f"{image}-tmp-{uuid.uuid4().hex[:8]}"
    try:
        progress(f"{image}: debootstrap --variant=minbase {DEBIAN_SUITE} from {mirror} (about a minute)")
        log_path = work / "debootstrap.log"
        with open(log_path, "wb") as log:
            rc = subprocess.run(
                [debootstrap, "--variant=minbase", "--include=" + ",".join(DEBIAN_PACKAGES),
                 DEBIAN_SUITE, str(root), mirror],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            ).returncode
        if rc != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise KitError(f"debootstrap failed (exit {rc}) while assembling {image}", details=tail,
                           hint=f"check that {mirror} is reachable, or set KIT_DEBIAN_MIRROR to a Debian mirror")
        python = _python_in_rootfs(root)
        progress(f"{image}: root filesystem ready (Python {python}); importing into Docker")
        # Package lists and downloaded .debs are not needed in the image.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (root / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        # debootstrap copies this host's name and resolver; Docker supplies both at run time.
        (root / "etc/hostname").write_text("localhost\n")
        (root / "etc/resolv.conf").unlink(missing_ok=True)
        changes = [
            "ENV LANG=C.UTF-8",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"LABEL {lb.STACK}=cpu {lb.PYTHON}={python} {lb.DEBIAN}={DEBIAN_SUITE} "
            f"{lb.OCI_TITLE}=kit-debian-python "
            f"{lb.OCI_DESCRIPTION}=debootstrap-minbase-{DEBIAN_SUITE}-python{python}",
            'CMD ["python3"]',
        ]
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            engine.import_tarball(_tar_chunks(tar), temp_tag, changes=changes)
        finally:
            tar.stdout.close()
            tar_err = tar.stderr.read().decode(errors="replace")
            tar_rc = tar.wait()
        if tar_rc != 0:
            raise KitError(f"tar of the Debian root failed (exit {tar_rc})", details=tar_err.splitlines()[-5:])
        _verify_python(engine, temp_tag, python)
        engine.tag(temp_tag, image)
        info = engine.image_inspect(image)
        seconds = time.monotonic() - start
        progress(f"{image}: built in {seconds:.0f}s ({info.size / 1e6:.0f} MB)")
        return BaseImage(image, info.id, False, seconds, info.size, python)
    finally:
        engine.remove_image(temp_tag)  # only the temporary name; the final tag keeps the image
        shutil.rmtree(work, ignore_errors=True)


def _verify_python(engine: Engine, image: str, python: str) -> None:
    result = engine.run_to_completion(
        image, ["python3", "-c", "import sys, venv, ssl; print('%d.%d' % sys.version_info[:2])"], timeout=120)
    lines = result.logs.strip().splitlines()
    if result.exit_code != 0 or not lines or lines[-1].strip() != python:
        raise KitError(f"{image}: python3 does not run as expected (exit {result.exit_code})", details=lines[-10:])


# ---- the TensorFlow CPU base --------------------------------------------------------------


def manylinux_platforms() -> list[str]:
    # pip does not expand manylinux_2_X to older tags: list every one bookworm's glibc runs.
    return ["manylinux2014_x86_64"] + [f"manylinux_2_{m}_x86_64" for m in range(DEBIAN_GLIBC_MINOR, 16, -1)]


def download_wheels(tensorflow: str, python: str, progress: Progress | None = None) -> Path:
    """tensorflow-cpu==X, numpy and their dependencies as wheels for the image's
    Python, in ~/.cache/kit/wheels/<tf>/ (reused; written atomically)."""
    progress = progress or quiet
    dest = cache_dir() / "wheels" / f"tf{tensorflow}-py{python}"
    if dest.is_dir() and any(dest.glob("tensorflow_cpu-*.whl")):
        progress(f"wheels: reused {dest} ({len(list(dest.glob('*.whl')))} wheels)")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tf{tensorflow}-", dir=dest.parent))
    try:
        progress(f"wheels: pip download tensorflow-cpu=={tensorflow} for Python {python} (a few hundred MB)")
        argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
                "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                "--abi", "cp" + python.replace(".", ""), "--dest", str(tmp)]
        for plat in manylinux_platforms():
            argv += ["--platform", plat]
        argv += [f"tensorflow-cpu=={tensorflow}", "numpy"]
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = proc.stdout.decode(errors="replace").strip().splitlines()[-12:]
            raise KitError(f"pip download of tensorflow-cpu=={tensorflow} failed (exit {proc.returncode})",
                           details=tail, hint="check that PyPI (or your PIP_INDEX_URL mirror) is reachable "
                           "and that this TensorFlow version has Linux x86-64 wheels for Python " + python)
        return publish_wheels(tmp, dest, progress)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_wheels(tmp: Path, dest: Path, progress: Progress) -> Path:
    """Put a fully downloaded wheel directory in place of `dest` (never a half-filled one) and say what it holds."""
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    size = sum(p.stat().st_size for p in dest.glob("*.whl"))
    progress(f"wheels: {len(list(dest.glob('*.whl')))} wheels, {size / 1e6:.0f} MB in {dest}")
    return dest


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # same filesystem: no copy of a few hundred MB
    except OSError:
        shutil.copy2(src, dst)


def ensure_tf_base(engine: Engine, tensorflow: str = CPU_STACK.tensorflow, progress: Progress | None = None,
                   force: bool = False) -> str:
    """The TF CPU base image name, built (with the Debian base under it) if missing."""
    return tf_base(engine, tensorflow, progress, force).image


def tf_base(engine: Engine, tensorflow: str = CPU_STACK.tensorflow, progress: Progress | None = None,
            force: bool = False, debian: BaseImage | None = None) -> BaseImage:
    progress = progress or quiet
    if not _VERSION.match(tensorflow or ""):
        raise UsageError(f"--tensorflow must be a full version like {CPU_STACK.tensorflow}, got {tensorflow!r}")
    image = tf_base_image(tensorflow)
    start = time.monotonic()

    def reused() -> BaseImage:
        info = engine.image_inspect(image)
        progress(f"{image}: present, reused")
        return BaseImage(image, info.id, True, time.monotonic() - start, info.size,
                         info.labels.get(lb.PYTHON, ""), info.labels.get(lb.TENSORFLOW, tensorflow))

    if engine.image_exists(image) and not force:
        return reused()
    debian = debian or debian_base(engine, progress)
    with exclusive(image, progress):
        if engine.image_exists(image) and not force:
            return reused()  # made by the run we waited for
        remove_stale_temps(engine, image)
        return _build_tf(engine, image, tensorflow, debian, progress, force, start)


def _build_tf(engine: Engine, image: str, tensorflow: str, debian: BaseImage, progress: Progress, force: bool,
              start: float) -> BaseImage:
    """Wheels on the host, a build context carrying them, build under a temporary tag, verify, retag."""
    python = debian.python or engine.image_inspect(DEBIAN_BASE).labels.get(lb.PYTHON, "")
    if python != CPU_STACK.python:
        raise PreflightError(
            f"{DEBIAN_BASE} carries Python {python or 'unknown'}, but the CPU stack's wheels are for "
            f"Python {CPU_STACK.python}",
            hint=f"rebuild the Debian base from {DEBIAN_SUITE}: kit base --force")
    wheels = download_wheels(tensorflow, python, progress)

    with build_context("kit-tf-base-") as context:
        (context / "wheels").mkdir()
        for whl in wheels.glob("*.whl"):
            link_or_copy(whl, context / "wheels" / whl.name)
        shutil.copy2(dockerfile_path(TF_BASE_DOCKERFILE), context / "Dockerfile")
        progress(f"{image}: docker build (installs the wheels into /opt/kit/venv; a few minutes)")
        spec = BaseBuild(
            image, buildargs={"DEBIAN_BASE": DEBIAN_BASE, "TENSORFLOW": tensorflow, "PYTHON": python},
            install_stage=f"tf-cpu-base-install-{tensorflow}",
            check=Check(["python", "-c", "import tensorflow as tf; print('tensorflow', tf.__version__)"],
                        expect=f"tensorflow {tensorflow}", failure="`import tensorflow` failed in the built image"),
            python=python, tensorflow=tensorflow)
        return build_verified(engine, context, spec, progress, force, start)


# ---- building a base from a context: shared by the TF CPU base and the twin ----------------------


@dataclass(frozen=True)
class Check:
    """A command run in the freshly built image: it must exit 0 and print `expect`."""

    argv: list[str]
    expect: str
    failure: str  # what it means when it does not, for the error message


@dataclass(frozen=True)
class BaseBuild:
    """What a base's Dockerfile build needs besides its context."""

    image: str
    buildargs: dict[str, str]
    install_stage: str  # the lb.BUILD_STAGE label of its untagged install stage, pruned afterwards
    check: Check
    python: str
    tensorflow: str


@contextlib.contextmanager
def build_context(prefix: str) -> Iterator[Path]:
    """A fresh build-context folder in the cache dir (same filesystem as the wheels: they hard-link),
    removed afterwards whatever happens."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix=prefix, dir=cache_dir()))
    try:
        yield context
    finally:
        shutil.rmtree(context, ignore_errors=True)


def build_verified(engine: Engine, context: Path, spec: BaseBuild, progress: Progress, force: bool,
                   start: float) -> BaseImage:
    """Build `context` under a temporary tag, run spec.check in it, and only then tag it spec.image, so
    a failed or interrupted build never leaves a final image behind. The temporary tag and the untagged
    install stage are removed whatever happens."""
    image = spec.image
    temp_tag = f"{image}-tmp-{uuid.uuid4().hex[:8]}"
    try:
        engine.build(
            str(context), tag=temp_tag, dockerfile="Dockerfile", buildargs=spec.buildargs,
            labels={lb.OCI_CREATED: utc_timestamp()},
            on_line=lambda line: progress("  | " + line) if line.strip() else None,
            nocache=force,
        )
        progress(f"{image}: verifying that it runs and prints {spec.check.expect!r}")
        result = engine.run_to_completion(temp_tag, spec.check.argv, env={"TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
        if result.exit_code != 0 or spec.check.expect not in result.logs:
            raise DockerError(f"{temp_tag}: {spec.check.failure} (exit {result.exit_code})",
                              details=[f"expected: {spec.check.expect}"] + result.logs.strip().splitlines()[-12:])
        engine.tag(temp_tag, image)
        info = engine.image_inspect(image)
        seconds = time.monotonic() - start
        progress(f"{image}: built and verified in {seconds:.0f}s ({info.size / 1e6:.0f} MB)")
        return BaseImage(image, info.id, False, seconds, info.size, spec.python, spec.tensorflow)
    finally:
        engine.remove_image(temp_tag)
        try:
            engine.prune_images({lb.BUILD_STAGE: spec.install_stage})
        except DockerError:
            pass  # the install stage only holds the wheels: a leftover costs disk, not correctness


# ---- `kit base` ---------------------------------------------------------------------------


def build_bases(tensorflow: str | None = None, force: bool = False, progress: Progress | None = None,
                host: str | None = None, stack: str | None = None) -> BasesResult:
    """Core of `kit base`: make sure the Debian base and the stack's TensorFlow base exist (reuse, or build).
    stack: cpu (default; --tensorflow picks its TensorFlow) or twin (its pins are fixed)."""
    from kit.docker_api import connect

    stack = stack or CPU_STACK.name
    if stack not in CPU_STACKS:
        raise UsageError(f"--stack must be one of {', '.join(CPU_STACKS)}, got {stack!r}")
    if stack == TWIN_STACK.name and tensorflow not in (None, TWIN_STACK.tensorflow):
        raise UsageError(f"the twin stack pins TensorFlow {TWIN_STACK.tensorflow}; --tensorflow does not apply",
                         hint="drop --tensorflow, or build a cpu base: kit base --tensorflow VERSION")
    tensorflow = tensorflow or CPU_STACK.tensorflow
    if not _VERSION.match(tensorflow):
        raise UsageError(f"--tensorflow must be a full version like {CPU_STACK.tensorflow}, got {tensorflow!r}")
    with connect(host) as engine:
        debian = debian_base(engine, progress, force=force)
        if stack == TWIN_STACK.name:
            from kit.build.twin_base import twin_base

            tf = twin_base(engine, progress, force=force, debian=debian)
        else:
            tf = tf_base(engine, tensorflow, progress, force=force, debian=debian)
    return BasesResult(debian, tf)
