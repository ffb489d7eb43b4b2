"""The validated manifests as frozen dataclasses: what core code sees
(never raw dicts). Built by kit.manifest.load; field names follow the schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kit.net import DEFAULT_PORT
from kit.profiles import PROFILES, DeviceProfile, Stack, stack_for


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple  # per-example shape, no batch dimension; None for an unknown dim
    dtype: str  # numpy dtype name: float32, uint8, int32, ...


@dataclass(frozen=True)
class ModelSource:
    path: Path  # absolute path of the SavedModel directory
    signature: str = "serving_default"
    inputs: dict = field(default_factory=dict)  # name -> TensorSpec; empty: read from the signature


@dataclass(frozen=True)
class Target:
    device: str
    jetpack: str | None = None
    base_image: str | None = None
    stack: str | None = None  # cpu profile only: cpu (default) or twin


@dataclass(frozen=True)
class Parity:
    samples: Path | None = None  # .npy (single input) or .npz (name -> array)
    max_abs_error: float = 0.05
    min_top1_agreement: float = 0.99


@dataclass(frozen=True)
class Optimize:
    precision: str  # fp32 | fp16 | int8 | native
    batch_sizes: tuple  # of int, sorted ascending, unique
    max_workspace_size: int = 1 << 30  # bytes
    memory_limit: int = 2 << 30  # bytes
    minimum_segment_size: int = 3
    maximum_cached_engines: int = 0  # resolved: len(batch_sizes) when absent
    allow_native_fallback: bool = False
    calibration_samples: Path | None = None
    parity: Parity = field(default_factory=Parity)


@dataclass(frozen=True)
class ImageSpec:
    repository: str
    tag: str | None = None  # resolved default: {version}-r{l4t}-{precision} (the stack's name, cpu or twin, for r{l4t} on cpu)


@dataclass(frozen=True)
class Serve:
    model_name: str | None = None  # the name clients use; None: metadata.name (see ModelManifest.model_name)
    warmup: bool = True  # False: no warm-up
    warmup_samples: Path | None = None  # samples run at every built batch size (instead of the default warm-up)
    port: int = DEFAULT_PORT
    grpc_port: int = 8500  # 0: no gRPC
    max_batch_delay: float = 0.002  # seconds
    max_queue: int = 64
    # What one client can make the server hold; defaults sized for a 4 GB Jetson Nano (docs/serve.md).
    max_connections: int = 2048
    max_header_bytes: int = 64 << 10
    max_headers: int = 100
    max_json_body: int = 16 << 20
    max_body: int = 64 << 20
    max_buffered: int = 256 << 20
    idle_timeout: float = 20.0  # seconds
    body_timeout: float = 60.0  # seconds

    def limit_settings(self) -> dict[str, str]:
        """The limits as the server's KIT_* settings (bytes, milliseconds): image ENV, `kit serve --local` flags."""
        return {
            "KIT_MAX_CONNECTIONS": str(self.max_connections),
            "KIT_MAX_HEADER_BYTES": str(self.max_header_bytes),
            "KIT_MAX_HEADERS": str(self.max_headers),
            "KIT_MAX_JSON_BODY": str(self.max_json_body),
            "KIT_MAX_BODY": str(self.max_body),
            "KIT_MAX_BUFFERED": str(self.max_buffered),
            "KIT_IDLE_TIMEOUT": milliseconds(self.idle_timeout),
            "KIT_BODY_TIMEOUT": milliseconds(self.body_timeout),
        }


def milliseconds(seconds: float) -> str:
    """A duration as the server parses it, in milliseconds: 0.002 -> "2ms"."""
    return format(round(float(seconds) * 1000, 6), "g") + "ms"


@dataclass(frozen=True)
class ModelManifest:
    file: Path  # the manifest file (absolute)
    name: str
    version: str
    model: ModelSource
    target: Target
    optimize: Optimize
    image: ImageSpec
    serve: Serve

    @property
    def model_name(self) -> str:
        """The name clients use on REST and gRPC (serve.model_name, default metadata.name)."""
        return self.serve.model_name or self.name

    @property
    def profile(self) -> DeviceProfile:
        return PROFILES[self.target.device]

    @property
    def stack(self) -> Stack:
        return stack_for(self.profile, self.target.jetpack, self.target.stack)

    @property
    def base_image(self) -> str:
        return self.target.base_image or self.stack.base_image

    @property
    def tag(self) -> str:
        if self.image.tag:
            return self.image.tag
        platform = "r" + self.stack.l4t if self.stack.l4t else self.stack.name  # cpu, twin
        return f"{self.version}-{platform}-{self.optimize.precision}"

    @property
    def image_ref(self) -> str:
        return f"{self.image.repository}:{self.tag}"


@dataclass(frozen=True)
class FleetDevice:
    name: str
    host: str  # docker endpoint: ssh://, tcp://, unix://
    device: str  # profile name
    port: int | None = None  # None: the model's serve.port
    labels: dict = field(default_factory=dict)
    grpc_port: int | None = None  # None: the model's serve.grpc_port


@dataclass(frozen=True)
class Rollout:
    canary: int = 1
    max_parallel: int = 4
    health_timeout: float = 120.0  # seconds
    on_failure: str = "rollback"  # rollback | halt


@dataclass(frozen=True)
class Swarm:
    manager: str  # docker endpoint of a swarm manager


@dataclass(frozen=True)
class FleetManifest:
    file: Path
    name: str
    image: str  # repository:tag or repository@sha256:...
    devices: tuple  # of FleetDevice
    rollout: Rollout = field(default_factory=Rollout)
    swarm: Swarm | None = None  # roll out through Docker Swarm mode


# ---- loading --------------------------------------------------------------------
