"""Builder and runtime images: build contexts, content digests, labels, builds.

Build contexts are small directories assembled here (never the repo root):
kit/__init__.py and kit/runtime/** (plus, for the runtime image, the optimized
model under model/). Every file and directory in a context gets a fixed mode
and mtime, so the same content always gives the same layer, whatever the
checkout's timestamps.

Labels describe what was really built: versions seen inside the container
and engines counted by the audit come from the optimizer's report.json, not
from what the manifest asked for.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Callable

import kit
from kit import labels as lb
from kit.build import wheels as _wheels
from kit.errors import KitError

LineCallback = Callable[[str], None]

DOCKER_DIR = Path(kit.__file__).resolve().parent / "docker"
KIT_PACKAGE = Path(kit.__file__).resolve().parent

# Where things live inside both images (the Dockerfiles say the same).
RUNTIME_USER = "10001:44"  # 44: the video group (GPU device nodes on a Jetson)
VIDEO_GID = 44

# The build args runtime.Dockerfile declares for the serve settings.
SERVE_BUILD_ARGS = ("KIT_MODEL_NAME", "KIT_MODEL_VERSION", "KIT_SIGNATURE", "KIT_PORT", "KIT_GRPC_PORT", "KIT_BATCH_SIZES",
                    "KIT_MAX_BATCH_DELAY", "KIT_MAX_QUEUE", "KIT_WARMUP", "KIT_WARMUP_SAMPLES", "KIT_MAX_CONNECTIONS",
                    "KIT_MAX_HEADER_BYTES", "KIT_MAX_HEADERS", "KIT_MAX_JSON_BODY", "KIT_MAX_BODY", "KIT_MAX_BUFFERED",
                    "KIT_IDLE_TIMEOUT", "KIT_BODY_TIMEOUT")

# serve.warmup samples inside the runtime image (the context's warmup/ directory).
WARMUP_DIR = "/opt/kit/warmup"

# 1980-01-01: a fixed mtime for every file put in a build context.
FIXED_MTIME = 315532800

BUILDER_REPOSITORY = "kit/builder"


def dockerfile(name: str) -> Path:
    """kit/docker/<name>.Dockerfile (package data, so it ships with kit)."""
    path = DOCKER_DIR / f"{name}.Dockerfile"
    if not path.is_file():
        raise KitError(f"kit's {path.name} is missing from {DOCKER_DIR}", hint="reinstall kit (pip install -e .)")
    return path


# ---- digests ---------------------------------------------------------------------


def _files(root: Path) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every regular file under root, sorted, skipping bytecode caches."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in filenames:
            if name.endswith((".pyc", ".pyo")):
                continue
            p = Path(dirpath) / name
            if p.is_file():
                out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path, executable bit and content: "sha256:<hex>".

    The same files give the same digest wherever they sit and whatever their mtimes."""
    root = Path(root)
    if not root.is_dir():
        raise KitError(f"{root} is not a directory")
    h = hashlib.sha256()
    for rel, p in _files(root):
        h.update(rel.encode() + b"\0")
        h.update(b"x" if os.access(p, os.X_OK) else b"-")
        fh = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                fh.update(chunk)
        h.update(fh.digest())
    return "sha256:" + h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def kit_code_files(snapshot: Path | None = None) -> list[tuple[str, Path]]:
    """What goes into the images from kit: kit/__init__.py and kit/runtime/**,
    from the installed package or from a snapshot of it."""
    if snapshot is not None:
        return [("kit/" + rel, p) for rel, p in _files(Path(snapshot) / "kit")]
    files = [("kit/__init__.py", KIT_PACKAGE / "__init__.py")]
    files += [("kit/runtime/" + rel, p) for rel, p in _files(KIT_PACKAGE / "runtime")]
    return files


def runtime_code_hash(snapshot: Path | None = None) -> str:
    """Digest of the kit code the images carry: relative paths and contents."""
    h = hashlib.sha256()
    for rel, p in kit_code_files(snapshot):
        h.update(rel.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return "sha256:" + h.hexdigest()


def snapshot_kit_code(dest: Path) -> Path:
    """Copy kit's in-image code to dest/kit/ once per build, so the builder and
    the runtime image carry the very same files even if the checkout changes
    in between. Returns dest."""
    for rel, p in kit_code_files():
        target = Path(dest) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
    return Path(dest)


def combine(*parts) -> str:
    """A cache key from several values (strings, numbers, dicts): "sha256:<hex>"."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# ---- build contexts -------------------------------------------------------------------


def _normalize(root: Path) -> None:
    """Fixed modes (0644 files, 0755 dirs and executables) and a fixed mtime, bottom-up."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            p = os.path.join(dirpath, name)
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                continue
            os.chmod(p, 0o755 if mode & 0o111 else 0o644)
            os.utime(p, (FIXED_MTIME, FIXED_MTIME))
        for name in dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                os.chmod(p, 0o755)
                os.utime(p, (FIXED_MTIME, FIXED_MTIME))
    os.chmod(root, 0o755)
    os.utime(root, (FIXED_MTIME, FIXED_MTIME))


def _copy_tree(src: Path, dst: Path) -> None:
    for rel, p in _files(src):
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
        if os.access(p, os.X_OK):
            os.chmod(target, 0o755)


def label_instruction(labels: dict) -> str:
    """One LABEL instruction for all labels (the engine's build-time labels
    would commit one image per label: slow on a Nano, for nothing)."""
    def quote(text) -> str:
        text = str(text)
        if any(c in text for c in "\n\r"):
            raise KitError(f"a label value may not span lines: {text!r}")
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    pairs = [f"{quote(k)}={quote(v)}" for k, v in sorted(labels.items())]
    return "LABEL " + " \\\n      ".join(pairs) + "\n"


def assemble_context(dest: Path, name: str, model_dir: Path | None = None, labels: dict | None = None,
                     kit_snapshot: Path | None = None, wheels: list[Path] | None = None,
                     warmup_samples: Path | None = None) -> Path:
    """Fill the empty directory `dest` with a build context for `name` ("builder"
    or "runtime"): Dockerfile, kit/, and (runtime) model/. Labels become one
    LABEL instruction appended to the Dockerfile: config only, after the last
    layer, so they never invalidate a layer. Returns dest."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    text = dockerfile(name).read_text()
    if labels:
        text = text.rstrip("\n") + "\n\n# Added by kit: this image's labels.\n" + label_instruction(labels)
    (dest / "Dockerfile").write_text(text)
    for rel, p in kit_code_files(kit_snapshot):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, target)
    # pylib/: unpacked wheels (the server's tornado) copied onto the image's PYTHONPATH.
    _wheels.unpack(list(wheels or []), dest / "pylib")
    if name == "runtime":
        if model_dir is None:
            raise KitError("the runtime image needs the optimized model directory")
        _copy_tree(Path(model_dir), dest / "model")
        # warmup/: serve.warmup samples (empty when the manifest names none; the Dockerfile copies it either way).
        (dest / "warmup").mkdir()
        if warmup_samples is not None:
            shutil.copyfile(warmup_samples, dest / "warmup" / f"samples{Path(warmup_samples).suffix.lower()}")
    _normalize(dest)
    return dest


# ---- tags, build args, labels ------------------------------------------------------------


def builder_tag(stack_name: str, key: str) -> str:
    """kit/builder:<stack>-<key12>: one builder per base and kit code version."""
    return f"{BUILDER_REPOSITORY}:{stack_name}-{key.split(':')[-1][:12]}"


def serve_build_args(manifest) -> dict[str, str]:
    """The KIT_* serve settings runtime.Dockerfile bakes in as ENV."""
    return {
        "KIT_MODEL_NAME": manifest.model_name,
        "KIT_MODEL_VERSION": _model_version(manifest.version),
        "KIT_SIGNATURE": manifest.model.signature,
        "KIT_PORT": str(manifest.serve.port),
        "KIT_GRPC_PORT": str(manifest.serve.grpc_port),
        "KIT_BATCH_SIZES": ",".join(str(b) for b in manifest.optimize.batch_sizes),
        "KIT_MAX_BATCH_DELAY": _seconds(manifest.serve.max_batch_delay),
        "KIT_MAX_QUEUE": str(manifest.serve.max_queue),
        "KIT_WARMUP": "1" if manifest.serve.warmup else "0",
        "KIT_WARMUP_SAMPLES": warmup_samples_in_image(manifest) or "",
        **manifest.serve.limit_settings(),
    }


def warmup_samples_in_image(manifest) -> str | None:
    """Where the image holds the manifest's serve.warmup samples (None: it has none)."""
    samples = manifest.serve.warmup_samples
    return f"{WARMUP_DIR}/samples{samples.suffix.lower()}" if samples else None


def _seconds(value: float) -> str:
    """A duration the server parses, in milliseconds: 0.002 -> "2ms"."""
    return format(round(float(value) * 1000, 6), "g") + "ms"


def _model_version(version: str) -> str:
    """TF Serving clients expect an integer version: the manifest's version when it
    is one, else 1 (the semver stays in the image's labels)."""
    return str(int(version)) if str(version).isdigit() else "1"


def labels_for(manifest, report, model_digest: str, base_ref: str, created: str) -> dict[str, str]:
    """The image's fingerprint labels (keys: kit.labels), from what the optimizer's report (an
    OptimizeReport) says was built.

    created: when the optimized model was made (the report's time), so the
    same optimize output always gives the same labels and the same image."""
    env = report.environment
    optimization = report.optimization or "native"
    return {
        lb.OCI_TITLE: manifest.name,
        lb.OCI_VERSION: manifest.version,
        lb.OCI_CREATED: created,
        lb.OCI_DESCRIPTION: f"{manifest.name} {manifest.version} served by kit ({optimization}, {manifest.profile.name})",
        lb.OCI_BASE_NAME: base_ref,
        lb.OCI_REF_NAME: manifest.tag,
        lb.OCI_VENDOR: "kit",
        lb.OCI_LICENSES: "NOASSERTION",  # the model's license is not known to kit
        lb.KIT_VERSION: kit.__version__,
        lb.STACK: manifest.stack.name,
        lb.DEVICE: manifest.profile.name,
        # Versions as seen inside the builder container by the optimizer.
        lb.L4T: lb.text(env.l4t),
        lb.JETPACK: lb.text(env.jetpack),
        lb.TENSORRT: lb.text(env.tensorrt),
        lb.CUDA: lb.text(env.cuda),
        lb.TENSORFLOW: lb.text(env.tensorflow),
        lb.PYTHON: lb.text(env.python),
        lb.GPU_ARCH: lb.text(manifest.profile.gpu_arch),
        lb.PRECISION: lb.text(report.precision or manifest.optimize.precision),
        lb.BATCH_SIZES: lb.text(report.batch_sizes or list(manifest.optimize.batch_sizes)),
        lb.MEMORY_LIMIT: str(manifest.optimize.memory_limit),
        lb.MODEL_DIGEST: model_digest,
        lb.OPTIMIZATION: lb.text(optimization),
        lb.ENGINES: lb.text(report.engines if report.engines is not None else 0),
        lb.REUSE_PORT: "true",  # kit.runtime.serving honours KIT_REUSE_PORT and KIT_SLOT
    }


# ---- builds ---------------------------------------------------------------------


def build_image(engine, context: Path, tag: str, buildargs: dict | None = None,
                on_line: LineCallback | None = None) -> str:
    """docker build of an assembled context (labels are in its Dockerfile); returns the image id."""
    return engine.build(str(context), tag=tag, dockerfile="Dockerfile", buildargs=buildargs or {}, on_line=on_line)
