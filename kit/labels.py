"""Image label keys: the wire contract between `kit build` and its readers.

`kit build` (kit.build.images.labels_for) writes these labels onto every
runtime image; the fleet gate, compose rendering and `kit fleet status`
(kit.fleet) and `kit bench` (kit.serve) read them back, here and nowhere
else. A key is renamed in this module or not at all: images already pushed
carry the old names.

Values are strings ("none" for a fact that does not apply, lists joined by
commas); `Fingerprint.from_labels` turns them back into typed fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.profiles import PROFILES
from kit.units import parse_size

# ---- OCI image annotations (org.opencontainers.image.*) -------------------------------

OCI_TITLE = "org.opencontainers.image.title"  # the model's name
OCI_VERSION = "org.opencontainers.image.version"  # the manifest's version
OCI_CREATED = "org.opencontainers.image.created"
OCI_DESCRIPTION = "org.opencontainers.image.description"
OCI_BASE_NAME = "org.opencontainers.image.base.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"
OCI_VENDOR = "org.opencontainers.image.vendor"
OCI_LICENSES = "org.opencontainers.image.licenses"

# ---- kit's fingerprint: what the engines in the image were built for -------------------

KIT_VERSION = "kit.version"
STACK = "kit.stack"
DEVICE = "kit.device"  # the device profile (cpu, jetson-nano, ...)
L4T = "kit.l4t"
JETPACK = "kit.jetpack"
TENSORRT = "kit.tensorrt"
CUDA = "kit.cuda"
TENSORFLOW = "kit.tensorflow"
GPU_ARCH = "kit.gpu_arch"
PRECISION = "kit.precision"
BATCH_SIZES = "kit.batch_sizes"  # "1,8": one engine each
MEMORY_LIMIT = "kit.memory_limit"  # bytes: TF's GPU memory limit
MODEL_DIGEST = "kit.model_digest"
OPTIMIZATION = "kit.optimization"  # tensorrt | native
ENGINES = "kit.engines"  # TRTEngineOps counted by the audit
# "true": the server binds with SO_REUSEPORT under KIT_REUSE_PORT=1 and names itself by
# KIT_SLOT (Kit-Slot header), so a rollout may start the new one beside the old (start-first).
REUSE_PORT = "kit.reuse_port"

# Without these an image is not a kit runtime image.
REQUIRED = (DEVICE, OPTIMIZATION, MODEL_DIGEST)

# ---- other labels kit puts on images and containers -----------------------------------

PYTHON = "kit.python"  # the Python version of an offline base, or (runtime images) the optimizer's, as it saw it
DEBIAN = "kit.debian"  # the offline Debian base's suite
BUILDER_KEY = "kit.builder.key"  # cache key of a builder image
BUILD_STAGE = "kit.build.pipeline-stage"  # intermediate stage of a base build (pruned)
SMOKE_CONTAINER = "kit.build.smoke"  # a build's smoke-test container
BENCH_CONTAINER = "kit.bench"  # a `kit bench` container
FLEET = "kit.fleet"  # a fleet's model container (compose service label)
FLEET_DEVICE = "kit.fleet.device"

# Label values that mean "no value".
EMPTY = ("", "none", "null", "-")


def text(value) -> str:
    """A label value: "none" for None, lists joined by commas."""
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def value(labels: dict, key: str) -> str | None:
    """A label's value, None when absent or one of the EMPTY spellings."""
    v = (labels or {}).get(key)
    if v is None or str(v).strip().lower() in EMPTY:
        return None
    return str(v).strip()


def batch_sizes(labels: dict) -> list[int]:
    """kit.batch_sizes as integers; [] when absent or unreadable."""
    try:
        return [int(b) for b in str(value(labels, BATCH_SIZES) or "").split(",") if b.strip()]
    except ValueError:
        return []


@dataclass(frozen=True)
class Fingerprint:
    """The labels of a kit runtime image that gating and compose rendering use."""

    device: str
    optimization: str  # tensorrt | native
    model_digest: str
    l4t: str | None = None
    jetpack: str | None = None
    tensorrt: str | None = None
    cuda: str | None = None
    tensorflow: str | None = None
    gpu_arch: str | None = None
    precision: str | None = None
    batch_sizes: str | None = None
    engines: str | None = None
    version: str | None = None  # org.opencontainers.image.version
    memory_limit: int | None = None  # kit.memory_limit (bytes) when the image carries it
    reuse_port: bool = False  # kit.reuse_port: the server can start beside an old one on its port
    architecture: str = ""  # the image config's CPU architecture

    @property
    def jetson(self) -> bool:
        profile = PROFILES.get(self.device)
        return bool(profile and profile.tensorrt)

    @classmethod
    def from_labels(cls, labels: dict, architecture: str = "") -> "Fingerprint | None":
        """None when the image is not a kit runtime image (labels missing)."""
        labels = dict(labels or {})
        if any(value(labels, k) is None for k in REQUIRED):
            return None
        memory = None
        raw = value(labels, MEMORY_LIMIT)
        if raw is not None:
            try:
                memory = parse_size(raw)
            except Exception:  # a label we cannot read is not a reason to refuse
                memory = None
        return cls(**{name: value(labels, key) for name, key in _FINGERPRINT_FIELDS.items()},
                   memory_limit=memory, architecture=architecture or "",
                   reuse_port=(value(labels, REUSE_PORT) or "").lower() == "true")


# Fingerprint field -> the label it is read from (memory_limit is parsed apart).
_FINGERPRINT_FIELDS = {
    "device": DEVICE, "optimization": OPTIMIZATION, "model_digest": MODEL_DIGEST, "l4t": L4T, "jetpack": JETPACK,
    "tensorrt": TENSORRT, "cuda": CUDA, "tensorflow": TENSORFLOW, "gpu_arch": GPU_ARCH, "precision": PRECISION,
    "batch_sizes": BATCH_SIZES, "engines": ENGINES, "version": OCI_VERSION,
}
