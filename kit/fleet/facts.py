"""Device facts: what a device's Docker engine says it is.

Read over the device's own Docker endpoint (unix://, tcp://, ssh://), never
assumed from the fleet file. The L4T release comes, in order, from:

  1. the engine label `kit.l4t` (dockerd --label kit.l4t=32.4.4, or "labels"
     in /etc/docker/daemon.json): the operator states it once per device.
     The test devices here are amd64 dockerd instances; their L4T label is
     the one faked fact (there is no Jetson on CI).
  2. /etc/nv_tegra_release, read by a short container run on the device
     (bind-mounted read-only) with an image that is already there.
An engine label `kit.tensorrt` overrides the TensorRT implied by the L4T."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from kit import labels as lb
from kit.errors import DockerError
from kit.manifest.load import FleetDevice
from kit.profiles import parse_nv_tegra_release

NV_TEGRA_RELEASE = "/etc/nv_tegra_release"


@dataclass(frozen=True)
class DeviceFacts:
    name: str
    host: str
    reachable: bool
    error: str = ""  # why not reachable
    architecture: str = ""  # amd64 | arm64
    docker_version: str = ""
    runtimes: tuple = ()
    l4t: str | None = None
    l4t_detail: str = ""  # where the L4T came from, or why it is unknown
    tensorrt: str | None = None  # only when the engine states it (label)
    memory_bytes: int = 0
    live_restore: bool | None = None  # containers survive a dockerd restart (recommended on devices)
    labels: tuple = ()  # engine labels as (key, value) pairs
    default_runtime: str = ""  # the engine's default runtime (swarm services cannot pick one)
    swarm_node_id: str = ""  # docker info's Swarm.NodeID ("" when not in a swarm)
    swarm_state: str = ""  # Swarm.LocalNodeState (active when in a swarm)

    @property
    def nvidia(self) -> bool:
        return "nvidia" in self.runtimes

    def to_dict(self) -> dict:
        return {
            "name": self.name, "host": self.host, "reachable": self.reachable, "error": self.error,
            "architecture": self.architecture, "docker_version": self.docker_version,
            "runtimes": list(self.runtimes), "nvidia": self.nvidia, "l4t": self.l4t,
            "l4t_detail": self.l4t_detail, "tensorrt": self.tensorrt, "memory_bytes": self.memory_bytes,
            "live_restore": self.live_restore, "labels": dict(self.labels),
            "default_runtime": self.default_runtime, "swarm_node_id": self.swarm_node_id,
            "swarm_state": self.swarm_state,
        }


def read_facts(engine, device: FleetDevice, probe_image: str | None = None) -> DeviceFacts:
    """Facts of a connected device. probe_image: an image present on the device
    used to read /etc/nv_tegra_release when no engine label states the L4T."""
    info = engine.info()
    labels = info.labels
    l4t, detail = engine_l4t(engine, info, probe_image)
    return DeviceFacts(
        name=device.name, host=device.host, reachable=True, architecture=info.architecture,
        docker_version=info.server_version, runtimes=tuple(info.runtimes), l4t=l4t, l4t_detail=detail,
        tensorrt=labels.get(lb.TENSORRT) or None, memory_bytes=info.memory_bytes,
        live_restore=info.live_restore, labels=tuple(sorted(labels.items())),
        default_runtime=info.default_runtime, swarm_node_id=info.swarm_node_id, swarm_state=info.swarm_state,
    )


def engine_l4t(engine, info, probe_image: str | None) -> tuple[str | None, str]:
    """(L4T release or None, where it came from or why not) of the machine an engine runs on,
    asked through the engine (it may be a device on the network): the engine label kit.l4t,
    else /etc/nv_tegra_release read in a short container on arm64, else not a Jetson."""
    if info.labels.get(lb.L4T):
        return info.labels[lb.L4T], f"engine label {lb.L4T}"
    if info.architecture == "arm64":
        return read_release_in_container(engine, probe_image)
    return None, f"the engine at {info.host} runs on {info.architecture}: not a Jetson"


def read_release_in_container(engine, image: str | None) -> tuple[str | None, str]:
    """Read the device's /etc/nv_tegra_release with a throwaway container."""
    from kit.docker_api import Mount

    if not image:
        return None, (f"no image on the device to read {NV_TEGRA_RELEASE} with; "
                      f"set the engine label {lb.L4T}=<release> on the device")
    try:
        result = engine.run_to_completion(
            image, ["cat", "/kit-host/nv_tegra_release"], entrypoint=[], timeout=60,
            mounts=[Mount(NV_TEGRA_RELEASE, "/kit-host/nv_tegra_release", read_only=True)],
        )
    except DockerError as e:
        return None, f"cannot read {NV_TEGRA_RELEASE} on the device: {e.message}"
    if result.exit_code != 0:
        return None, f"cannot read {NV_TEGRA_RELEASE} on the device (exit {result.exit_code})"
    try:
        return parse_nv_tegra_release(result.logs), f"{NV_TEGRA_RELEASE} on the device"
    except ValueError:
        return None, f"{NV_TEGRA_RELEASE} on the device is not an L4T release file"


def unreachable(device: FleetDevice, error: DockerError | str) -> DeviceFacts:
    message = error.message if isinstance(error, DockerError) else str(error)
    return DeviceFacts(name=device.name, host=device.host, reachable=False, error=message)


def connect_device(device: FleetDevice, timeout: int = 60):
    """A connection to the device's engine (the caller closes it)."""
    from kit.docker_api import connect

    return connect(device.host, timeout=timeout)


@contextlib.contextmanager
def connected(device: FleetDevice, timeout: int = 60):
    """A connection to the device's engine, closed afterwards."""
    engine = connect_device(device, timeout=timeout)
    try:
        yield engine
    finally:
        engine.close()
