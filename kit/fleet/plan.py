"""Planning a compose rollout, read-only: per device, connect, read its facts, gate on the image's
fingerprint, choose start-first or stop-first, render its compose file. Refused and unreachable
devices are never touched; devices already running the digest, healthy, with the same compose file
are "unchanged"."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from kit import labels as lb
from kit.errors import DockerError
from kit.fleet import compose
from kit.fleet import state as st
from kit.fleet.facts import DeviceFacts, connect_device, read_facts, unreachable
from kit.fleet.gate import Decision, check
from kit.fleet.release import Release
from kit.fleet.status import Deployment, deployment, device_address, ready
from kit.labels import Fingerprint
from kit.manifest.load import FleetDevice, FleetManifest
from kit.net import DEFAULT_PORT

DEFAULT_START_PERIOD = 300.0  # seconds: a Nano loading TF and engines is slow

UPDATE, UNCHANGED, REFUSED, UNREACHABLE = "update", "unchanged", "refused", "unreachable"


@dataclass
class DevicePlan:
    device: FleetDevice
    action: str  # update | unchanged | refused | unreachable
    reason: str = ""
    port: int = DEFAULT_PORT
    facts: DeviceFacts | None = None
    running: str | None = None  # repository@sha256 running now
    healthy: bool | None = None
    compose_text: str | None = None
    command: list = field(default_factory=list)
    force_recreate: bool = False
    strategy: str = ""  # start-first | stop-first (see choose_strategy)
    strategy_reason: str = ""
    slot: str = compose.BLUE  # the compose project the new file runs in
    running_slot: str | None = None  # the slot of what serves now (None: nothing)
    finish_switch: bool = False  # the digest already serves in `slot`; only the old copy is left to stop

    def to_dict(self) -> dict:
        return {"device": self.device.name, "host": self.device.host, "profile": self.device.device,
                "action": self.action, "reason": self.reason, "port": self.port, "running": self.running,
                "healthy": self.healthy, "facts": self.facts.to_dict() if self.facts else None,
                "strategy": self.strategy, "strategy_reason": self.strategy_reason, "slot": self.slot,
                "command": self.command, "compose": self.compose_text}


def service_spec(fleet: FleetManifest, resolved, fp: Fingerprint | None, device: str, port: int, image: str,
                 health=None, nvidia: bool = False, grpc_port: int | None = None, slot: str = compose.BLUE,
                 reuse_port: bool = False) -> compose.ServiceSpec:
    """What runs on a device (compose) or on every node (swarm), from the resolved image."""
    mem = None
    if fp is not None and fp.memory_limit:
        from kit.profiles import MEMORY_RESERVE_BYTES

        # TF's GPU memory limit plus room for the Python process around it
        mem = fp.memory_limit + MEMORY_RESERVE_BYTES
    return compose.ServiceSpec(
        fleet=fleet.name, device=device, image=image, port=port, nvidia=nvidia,
        health_test=tuple(health or resolved.health_test or compose.DEFAULT_HEALTH_TEST),
        start_period=resolved.health_start_period or DEFAULT_START_PERIOD, mem_limit=mem,
        grpc_port=grpc_port, slot=slot, reuse_port=reuse_port)


def record_plans(record: st.RolloutRecord, plans) -> None:
    """Every planned device in the record before anything runs: refused, unreachable and
    unchanged ones with their reason; updates start as their current digest."""
    for p in plans:
        rec = st.DeviceRecord(name=p.device.name, host=p.device.host, before=p.running, after=p.running,
                              strategy=getattr(p, "strategy", ""), strategy_reason=getattr(p, "strategy_reason", ""))
        if p.action == REFUSED:
            rec.result, rec.reason, rec.phase = st.REFUSED, p.reason, "gate"
        elif p.action == UNREACHABLE:
            rec.result, rec.reason, rec.phase = st.UNTOUCHED, p.reason, "facts"
        elif p.action == UNCHANGED:
            rec.result, rec.reason, rec.phase = st.UNCHANGED, p.reason, "gate"
        record.devices[p.device.name] = rec


# ---- start-first or stop-first -----------------------------------------------------------


START_FIRST, STOP_FIRST = "start-first", "stop-first"


def copy_bytes(fp: Fingerprint | None) -> int | None:
    """Memory one running copy of the model takes: TF's limit plus the process around it
    (the compose file's mem_limit), None when the image does not say."""
    from kit.profiles import MEMORY_RESERVE_BYTES

    return fp.memory_limit + MEMORY_RESERVE_BYTES if fp is not None and fp.memory_limit else None


def choose_strategy(new: Fingerprint | None, facts: DeviceFacts | None, dep: Deployment) -> tuple[str, str]:
    """start-first when the new copy can run beside the old one: both servers can share the
    port (image label kit.reuse_port, the running one started with KIT_REUSE_PORT=1) and the
    device's memory holds both copies (the images' kit.memory_limit); else stop-first."""
    from kit.units import format_size

    if not dep.exists or dep.status != "running":
        return STOP_FIRST, "nothing serves there now"
    if new is None or not new.reuse_port:
        return STOP_FIRST, f"the image cannot share its port (no {lb.REUSE_PORT}=true label)"
    if not dep.reuse_port:
        return STOP_FIRST, ("the running container holds its port alone (started without KIT_REUSE_PORT=1); "
                            "the next update can start first")
    need_new = copy_bytes(new)
    if need_new is None:
        return STOP_FIRST, f"the image states no memory need ({lb.MEMORY_LIMIT})"
    need_old = copy_bytes(Fingerprint.from_labels(dep.labels or {})) or need_new
    total = facts.memory_bytes if facts is not None else 0
    if not total:
        return STOP_FIRST, "the device's memory is unknown"
    if need_old + need_new > total:
        return STOP_FIRST, (f"two copies do not fit: {format_size(need_old)} + {format_size(need_new)} > "
                            f"{format_size(total)} of memory")
    return START_FIRST, f"two copies fit: {format_size(need_old)} + {format_size(need_new)} <= {format_size(total)}"


# A connection the plan opened is handed to the device's update when that starts within this many
# seconds (the first wave, at once): over ssh:// each new connection is an ssh session to the
# device. A device of a later wave connects afresh: an idle connection may have gone stale.
KEEP_CONNECTION = 30.0


class ComposePlanner(Release):
    """What each device of a compose fleet gets, decided before anything changes."""

    def __init__(self, fleet, resolved, progress=None):
        super().__init__(fleet, resolved, progress)
        self._kept: dict[str, tuple[object, float]] = {}  # device -> (engine the plan opened, when)
        self._kept_lock = threading.Lock()

    @contextlib.contextmanager
    def engine_for(self, device: FleetDevice, timeout: int = 60):
        """The device's engine for one step: the plan's connection if it is fresh, else a new one;
        closed afterwards."""
        with self._kept_lock:
            engine, opened = self._kept.pop(device.name, (None, 0.0))
        if engine is not None and time.monotonic() - opened > KEEP_CONNECTION:
            engine.close()
            engine = None
        if engine is None:
            engine = connect_device(device, timeout=timeout)
        try:
            yield engine
        finally:
            engine.close()

    def close_kept(self) -> None:
        """Close the connections no update took (refused or unchanged devices, a stopped rollout)."""
        with self._kept_lock:
            kept, self._kept = list(self._kept.values()), {}
        for engine, _ in kept:
            with contextlib.suppress(Exception):
                engine.close()

    def spec(self, device: FleetDevice, port: int, image: str | None = None, health=None, nvidia=None,
             slot: str = compose.BLUE):
        return service_spec(self.fleet, self.resolved, self.fp, device.name, port, image=image or self.digest_ref,
                            health=health, nvidia=device.device != "cpu" if nvidia is None else nvidia,
                            grpc_port=self.device_grpc_port(device), slot=slot,
                            reuse_port=bool(self.fp and self.fp.reuse_port) and image is None)

    def device_grpc_port(self, device: FleetDevice) -> int | None:
        """The device's own gRPC port when the fleet gives one, else the image's (KIT_GRPC_PORT)."""
        return device.grpc_port if device.grpc_port is not None else self.grpc_port

    def plan_device(self, device: FleetDevice, dry_run: bool) -> DevicePlan:
        self.progress(device.name, "facts", f"connecting to {device.host}")
        port = int(device.port or self.resolved.env.get("KIT_PORT") or DEFAULT_PORT)
        files = st.DeviceFiles(self.root, device.name)
        try:
            with self._planning(device, keep=not dry_run) as engine:
                dep = deployment(engine, self.fleet.name, with_labels=True)
                probe = dep.image if dep.exists else None
                facts = read_facts(engine, device, probe_image=probe)
                if (facts.l4t is None and facts.architecture == "arm64" and facts.nvidia and not dry_run
                        and self.fp is not None and self.fp.jetson):
                    # Nothing of ours runs there to read the release with: pull the
                    # image (that changes nothing that runs) and read it with that.
                    self.progress(device.name, "facts", "pulling the image to read /etc/nv_tegra_release")
                    engine.pull(self.digest_ref)
                    facts = read_facts(engine, device, probe_image=self.digest_ref)
        except DockerError as e:
            self.progress(device.name, "facts", f"unreachable: {e.message}")
            return DevicePlan(device, UNREACHABLE, reason=f"unreachable: {e.message}", port=port,
                              facts=unreachable(device, e))
        if facts.live_restore is False:
            self.progress(device.name, "facts", "live-restore is off: a dockerd restart would stop the model "
                          "(set \"live-restore\": true in /etc/docker/daemon.json)")
        if dep.exists and not dep.healthy and dep.status == "running" and dep.health == "starting" \
                and dep.restart_count == 0 and ready(device_address(device.host), port):
            # ready, Docker's first probe still to come (see wait_healthy): as healthy
            dep = dataclasses.replace(dep, health="healthy")
        strategy, why = choose_strategy(self.fp, facts, dep)
        running_slot = dep.slot if dep.exists else None
        same = compose.render(self.spec(device, port, slot=running_slot or compose.BLUE))
        slot = compose.other_slot(running_slot) if strategy == START_FIRST else (running_slot or compose.BLUE)
        text = compose.render(self.spec(device, port, slot=slot))
        plan = DevicePlan(device, UPDATE, port=port, facts=facts, running=dep.image, healthy=dep.healthy
                          if dep.exists else None, compose_text=text,
                          command=compose.up_argv(self.fleet.name, files.current, slot=slot),
                          strategy=strategy, strategy_reason=why, slot=slot, running_slot=running_slot)
        decision: Decision = check(self.fp, device, facts)
        if not decision.ok:
            plan.action, plan.reason = REFUSED, decision.reason
            self.progress(device.name, "gate", f"refused: {decision.reason}")
            return plan
        current = files.read(files.current)
        on_digest = dep.exists and dep.image == self.digest_ref
        if on_digest and dep.healthy and dep.others:
            # a start-first update stopped between start and switch (kill -9): finish it
            plan.reason = f"runs this digest in slot {dep.slot}; the old copy still runs beside it"
            plan.finish_switch, plan.slot, plan.compose_text = True, dep.slot, same
        elif on_digest and dep.healthy and current in (None, same):
            plan.action, plan.reason = UNCHANGED, "already runs this digest and is healthy"
            if current is None and not dry_run:  # state dir lost: adopt what runs
                files.write_current(same)
                files.write_last_good(same)
        elif on_digest:
            plan.reason = "compose file changed" if dep.healthy else "runs this digest but is not healthy"
            if not dep.healthy:  # nothing healthy to keep serving: recreate in place
                plan.strategy, plan.strategy_reason = STOP_FIRST, "what runs is not healthy"
                plan.slot, plan.compose_text = running_slot, same
                plan.force_recreate = True
            plan.command = compose.up_argv(self.fleet.name, files.current, force_recreate=plan.force_recreate,
                                           slot=plan.slot)
        else:
            plan.reason = f"runs {dep.image}" if dep.exists else "runs nothing of this fleet"
        self.progress(device.name, "gate", f"{plan.action}: {plan.reason}"
                      + (f" ({plan.strategy}: {plan.strategy_reason})" if plan.action == UPDATE else ""))
        return plan

    @contextlib.contextmanager
    def _planning(self, device: FleetDevice, keep: bool):
        """The plan's connection to the device, kept for its update (engine_for) when `keep` and
        nothing failed; closed otherwise."""
        engine = connect_device(device, timeout=30)
        try:
            yield engine
        except BaseException:
            engine.close()
            raise
        if keep:
            with self._kept_lock:
                self._kept[device.name] = (engine, time.monotonic())
        else:
            engine.close()

    def plan(self, dry_run: bool) -> list[DevicePlan]:
        devices = list(self.fleet.devices)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(devices)))) as pool:
            return list(pool.map(lambda d: self.plan_device(d, dry_run), devices))
