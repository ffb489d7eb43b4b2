"""What runs on the devices of a fleet, read from each device's engine.

Also the helpers the rollout uses to find a device's model container: the
compose project `kit-<fleet>`, service `model` (labels set by docker-compose
v1 and Compose v2 alike)."""

from __future__ import annotations

import dataclasses
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from kit import labels as lb
from kit.errors import DockerError
from kit.fleet import compose
from kit.fleet.state import fleet_dir, load_record
from kit.net import device_address  # noqa: F401  (the rollout imports it from here)

READY_TIMEOUT = 2.0  # seconds for one readiness probe from the control host


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
    port: int | None = None  # KIT_PORT in the container's environment
    slot: str = compose.BLUE  # the compose project (slot) it runs in
    env: dict | None = None  # the container's environment
    others: tuple = ()  # the fleet's containers in the other slot (a start-first update in progress)

    @property
    def reuse_port(self) -> bool:
        """Started with SO_REUSEPORT: a new server may bind its port beside it."""
        return (self.env or {}).get("KIT_REUSE_PORT") == "1"

    @property
    def exists(self) -> bool:
        return self.container is not None

    @property
    def healthy(self) -> bool:
        return self.status == "running" and self.health in ("healthy", None)


def ready(address: str, port: int, timeout: float = READY_TIMEOUT, slot: str | None = None) -> bool:
    """GET /v2/health/ready answers 200: what the image's own health probe checks.
    With `slot`, only an answer from that slot's server (Kit-Slot header) counts: during a
    start-first update two servers share the port and the kernel picks one per connection."""
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/v2/health/ready", timeout=timeout) as r:
            return r.status == 200 and (slot is None or r.headers.get("Kit-Slot") == slot)
    except (OSError, ValueError):
        return False


def ready_while_starting(dep: Deployment, host: str) -> bool:
    """Docker still says `starting` (its first probe comes one interval after start)
    but the server already answers ready: as healthy, as the rollout judged it."""
    return (dep.status == "running" and dep.health == "starting" and dep.restart_count == 0
            and dep.port is not None and ready(device_address(host), dep.port))


def _container(engine, c, slot: str, with_labels: bool) -> Deployment:
    d = engine.container_inspect(c.id)
    state = d.get("State") or {}
    labels = None
    if with_labels:
        try:
            labels = engine.image_inspect(d.get("Image") or c.image).labels
        except DockerError:
            labels = {}
    env = dict(e.partition("=")[::2] for e in (d.get("Config") or {}).get("Env") or [])
    port = int(env["KIT_PORT"]) if str(env.get("KIT_PORT", "")).isdigit() else None
    return Deployment(container=c.id, image=c.image, status=c.status, health=c.health, port=port,
                      restart_count=int(d.get("RestartCount") or 0), started_at=state.get("StartedAt"),
                      exit_code=state.get("ExitCode"), labels=labels, slot=slot, env=env)


def deployment(engine, fleet: str, with_labels: bool = False, slot: str | None = None) -> Deployment:
    """The fleet's model container on this engine (in `slot`, or in either), or an empty
    Deployment. Two at once (a start-first update between start and switch): the running,
    healthy, newest one, the other in `others`."""
    found = []
    for s in ([slot] if slot else compose.SLOTS):
        for c in engine.containers(labels={"com.docker.compose.project": compose.project_name(fleet, s),
                                           "com.docker.compose.service": compose.SERVICE}):
            found.append(_container(engine, c, s, with_labels))
    if not found:
        return Deployment()
    found.sort(key=lambda d: d.started_at or "", reverse=True)
    found.sort(key=lambda d: (d.status != "running", not d.healthy))
    return dataclasses.replace(found[0], others=tuple(found[1:]))


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
    healthy = dep.healthy or ready_while_starting(dep, device.host)
    return DeviceStatus(device.name, device.host, True, digest=dep.image, state=dep.status, healthy=healthy,
                        model=labels.get(lb.OCI_TITLE),
                        version=labels.get(lb.OCI_VERSION), **last)


def fleet_status(fleet_path: str | Path) -> FleetStatus:
    from kit.manifest.load import load_fleet

    fleet = load_fleet(Path(fleet_path))
    record = load_record(fleet_dir(fleet.file, fleet.name) / "rollout.json")
    if fleet.swarm is not None:
        return swarm_status(fleet, record)
    workers = max(1, min(8, len(fleet.devices)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        rows = list(pool.map(lambda d: device_status(d, fleet.name, record), fleet.devices))
    return FleetStatus(fleet=fleet.name, image=fleet.image, last_rollout_status=record.status if record else None,
                       devices=tuple(rows))


def swarm_status(fleet, record) -> FleetStatus:
    """A swarm fleet's status from the manager: nodes (kit's device labels) and the service's tasks."""
    from kit.docker_api import connect
    from kit.fleet import swarm

    def last(name):
        rec = record.devices.get(name) if record else None
        return dict(last_result=rec.result if rec else None,
                    last_rollout=(record.finished_at or record.started_at) if rec else None)

    try:
        engine = connect(fleet.swarm.manager, timeout=20)
    except DockerError as e:
        rows = [DeviceStatus(d.name, d.host, False, error=f"swarm manager: {e.message}", **last(d.name))
                for d in fleet.devices]
        return FleetStatus(fleet.name, fleet.image, record.status if record else None, tuple(rows))
    try:
        nodes = engine.nodes()
        service = engine.service_inspect(swarm.service_name(fleet.name))
        tasks = swarm.tasks_by_node(engine.tasks(swarm.service_name(fleet.name))) if service else {}
        by_device = {((n.get("Spec") or {}).get("Labels") or {}).get(swarm.device_label(fleet.name)): n
                     for n in nodes}
        versions: dict = {}
        rows = []
        for d in fleet.devices:
            node = by_device.get(d.name)
            if node is None:
                rows.append(DeviceStatus(d.name, d.host, False, error="no swarm node carries this device's label "
                                         "(not rolled out to yet, or not in the swarm)", **last(d.name)))
                continue
            state = (node.get("Status") or {}).get("State")
            task = tasks.get(node["ID"])
            version = None
            if task and task.image:
                if task.image not in versions:
                    try:
                        versions[task.image] = engine.image_inspect(task.image).labels.get(
                            "org.opencontainers.image.version")
                    except DockerError:
                        versions[task.image] = None
                version = versions[task.image]
            rows.append(DeviceStatus(d.name, d.host, state == "ready",
                                     error="" if state == "ready" else f"swarm node {state}",
                                     digest=task.image if task else None, state=task.state if task else None,
                                     healthy=task.running if task else None, version=version, **last(d.name)))
    finally:
        engine.close()
    return FleetStatus(fleet.name, fleet.image, record.status if record else None, tuple(rows))
