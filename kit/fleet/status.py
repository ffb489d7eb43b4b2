"""What runs on the devices of a fleet, read from each device's engine.

Also the helpers the rollout uses to find a device's model container: the
compose project `kit-<fleet>`, service `model` (labels set by docker-compose
v1 and Compose v2 alike)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from kit import labels as lb
from kit.errors import DockerError
from kit.fleet import compose
from kit.fleet.state import fleet_dir, load_record


@dataclass(frozen=True)
class Deployment:
    """The model container of a fleet on one device (None fields: nothing there)."""

    container: str | None = None
    image: str | None = None  # what the compose file asked for: repository@sha256:...
    status: str | None = None  # running | restarting | exited | ...
    health: str | None = None
    restart_count: int = 0
    started_at: str | None = None
    exit_code: int | None = None
    labels: dict | None = None  # the running image's labels

    @property
    def exists(self) -> bool:
        return self.container is not None

    @property
    def healthy(self) -> bool:
        return self.status == "running" and self.health in ("healthy", None)


def deployment(engine, fleet: str, with_labels: bool = False) -> Deployment:
    """The fleet's model container on this engine, or an empty Deployment."""
    found = engine.containers(labels={"com.docker.compose.project": compose.project_name(fleet),
                                      "com.docker.compose.service": compose.SERVICE})
    if not found:
        return Deployment()
    # One replica; if compose left an old one next to a new one, prefer the running one.
    found.sort(key=lambda c: c.status != "running")
    c = found[0]
    d = engine.container_inspect(c.id)
    state = d.get("State") or {}
    labels = None
    if with_labels:
        try:
            labels = engine.image_inspect(d.get("Image") or c.image).labels
        except DockerError:
            labels = {}
    return Deployment(container=c.id, image=c.image, status=c.status, health=c.health,
                      restart_count=int(d.get("RestartCount") or 0), started_at=state.get("StartedAt"),
                      exit_code=state.get("ExitCode"), labels=labels)


@dataclass(frozen=True)
class DeviceStatus:
    name: str
    host: str
    reachable: bool
    error: str = ""
    digest: str | None = None  # repository@sha256:... running (or last started)
    state: str | None = None  # container status
    healthy: bool | None = None
    model: str | None = None
    version: str | None = None  # org.opencontainers.image.version of the running image
    last_result: str | None = None  # this device's result in the last rollout
    last_rollout: str | None = None  # when that rollout finished (or started, if it did not)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class FleetStatus:
    fleet: str
    image: str
    last_rollout_status: str | None
    devices: tuple

    def to_dict(self) -> dict:
        return {"fleet": self.fleet, "image": self.image, "last_rollout_status": self.last_rollout_status,
                "devices": [d.to_dict() for d in self.devices]}


def device_status(device, fleet: str, record=None) -> DeviceStatus:
    from kit.docker_api import connect

    rec = record.devices.get(device.name) if record else None
    last = dict(last_result=rec.result if rec else None,
                last_rollout=(record.finished_at or record.started_at) if rec else None)
    try:
        engine = connect(device.host, timeout=20)
    except DockerError as e:
        return DeviceStatus(device.name, device.host, False, error=e.message, **last)
    try:
        dep = deployment(engine, fleet, with_labels=True)
    except DockerError as e:
        return DeviceStatus(device.name, device.host, False, error=e.message, **last)
    finally:
        engine.close()
    if not dep.exists:
        return DeviceStatus(device.name, device.host, True, **last)
    labels = dep.labels or {}
    return DeviceStatus(device.name, device.host, True, digest=dep.image, state=dep.status, healthy=dep.healthy,
                        model=labels.get(lb.OCI_TITLE),
                        version=labels.get(lb.OCI_VERSION), **last)


def fleet_status(fleet_path: str | Path) -> FleetStatus:
    from kit.manifest.load import load_fleet

    fleet = load_fleet(Path(fleet_path))
    record = load_record(fleet_dir(fleet.file, fleet.name) / "rollout.json")
    workers = max(1, min(8, len(fleet.devices)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(lambda d: device_status(d, fleet.name, record), fleet.devices))
    return FleetStatus(fleet=fleet.name, image=fleet.image, last_rollout_status=record.status if record else None,
                       devices=tuple(rows))
