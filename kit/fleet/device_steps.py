"""The steps a compose rollout takes on one device, shared by its update and its rollback: timing
each step into the record, the compose file to roll back to, waiting healthy, the smoke check,
waiting for the canary, `compose down` of a slot."""

from __future__ import annotations

import dataclasses
import threading
import time

from kit.errors import KitError, RolloutError
from kit.fleet import compose
from kit.fleet import state as st
from kit.fleet.plan import ComposePlanner, DevicePlan
from kit.fleet.smoke import grpc_smoke, smoke
from kit.fleet.status import Deployment, deployment, device_address, ready

STOP_TIMEOUT = 10  # seconds from SIGTERM to SIGKILL, as `compose down`
STATE_EVERY = 0.5  # seconds between container state reads while the readiness probe says no
POLL = 0.1  # seconds between readiness probes while waiting for health (was 0.25 with a container read each)


class Interrupted(KitError):
    """SIGINT/SIGTERM arrived: a device not yet switched stops where it is safe to."""


class DeviceSteps(ComposePlanner):
    """What the devices of one rollout share (the record, who switched, the canary, a stop) and
    the steps any of them takes."""

    def __init__(self, fleet, resolved, progress):
        super().__init__(fleet, resolved, progress)
        self.store: st.RecordStore | None = None
        self.rollback_to: dict[str, str | None] = {}  # switched device -> compose text to restore (None: down)
        self.lock = threading.Lock()
        self._phase_at: dict[str, tuple[str, float]] = {}  # device -> (step, when it began)
        self.canary_passed = threading.Event()  # no non-canary device switches before it is set
        self.stopping = threading.Event()  # a device failed or a signal came: start nothing new
        self.signal_name: str | None = None

    def step(self, name: str, phase: str, message: str) -> None:
        self.close_step(name, phase)
        self.progress(name, phase, message)

    def close_step(self, name: str, phase: str | None = None) -> None:
        """Time spent in the device's last step goes into its record; `phase` begins now."""
        now = time.monotonic()
        last = self._phase_at.pop(name, None)
        rec = self.store.record.devices[name]
        durations = dict(rec.durations)
        if last is not None:
            durations[last[0]] = round(durations.get(last[0], 0.0) + now - last[1], 3)
        if phase is not None:
            self._phase_at[name] = (phase, now)
            self.store.device(name, phase=phase, durations=durations)
        else:
            self.store.device(name, durations=durations)

    def rollback_text(self, engine, plan: DevicePlan, files: st.DeviceFiles, dep: Deployment) -> str | None:
        """The compose file that restores what runs now (None: nothing runs, roll back with `down`).
        Keeps it as last-good when what runs now is healthy."""
        current, last_good = files.read(files.current), files.read(files.last_good)
        if dep.exists and dep.healthy:
            if compose.image_of(current) == dep.image and compose.slot_of(current) == dep.slot:
                text = current
            elif compose.image_of(last_good) == dep.image and compose.slot_of(last_good) == dep.slot:
                text = last_good
            else:  # deployed by another machine or state lost: describe the running container
                text = self._describe_running(engine, plan, dep)
            files.write_last_good(text)
            return text
        if last_good:
            return last_good
        if dep.exists and current:
            return current
        return None

    def _describe_running(self, engine, plan: DevicePlan, dep: Deployment) -> str:
        d = engine.container_inspect(dep.container)
        cfg, host_cfg = d.get("Config") or {}, d.get("HostConfig") or {}
        env = dict(item.partition("=")[::2] for item in cfg.get("Env") or [])
        port = int(env.get("KIT_PORT") or plan.port)
        health = (cfg.get("Healthcheck") or {}).get("Test")
        spec = self.spec(plan.device, port, image=dep.image, health=health,
                         nvidia=host_cfg.get("Runtime") == "nvidia", slot=dep.slot)
        return compose.render(dataclasses.replace(spec, reuse_port=dep.reuse_port))

    def wait_healthy(self, engine, image: str, address: str | None = None, port: int | None = None,
                     slot: str | None = None, shared: bool = False) -> Deployment:
        """Until the fleet's container on this engine runs `image` and is healthy.
        Fails early when it turns unhealthy, exits or restarts.

        Docker runs a container's first health probe only one interval (5 s)
        after start. With `address`/`port`, kit asks the same question the
        image's probe asks (GET /v2/health/ready) itself while Docker still
        says `starting`, so a server that is ready in 1 s is not waited on for
        5 s; the smoke prediction that follows is the proof either way.
        `shared`: another server shares the port (start-first), so only kit's
        own probe answered by `slot` counts (Docker's probe may reach the old one)."""
        deadline = time.monotonic() + self.timeout
        dep = Deployment()
        while True:
            dep = deployment(engine, self.fleet.name, slot=slot)
            if dep.exists and dep.image == image:
                if dep.status == "running" and dep.health == "healthy" and not shared:
                    return dep
                if (address and port and dep.status == "running" and dep.health in ("starting", "healthy", None)
                        and dep.restart_count == 0 and ready(address, port, slot=slot if shared else None)):
                    return dep
                if dep.health == "unhealthy" or dep.restart_count > 0 or dep.status in ("exited", "dead"):
                    tail = engine.logs(dep.container, tail=10).splitlines()
                    raise RolloutError(
                        f"the container is {dep.health if dep.health == 'unhealthy' else dep.status}"
                        + (f" (exit {dep.exit_code})" if dep.status != "running" else "")
                        + (f", restarted {dep.restart_count} times" if dep.restart_count else ""), details=tail)
            if time.monotonic() >= deadline:
                state = f"status {dep.status}, health {dep.health}" if dep.exists else "no container"
                raise RolloutError(f"not healthy within {self.timeout:g}s ({state})")
            if shared and self.stopping.is_set() and self.signal_name:
                raise Interrupted(f"{self.signal_name} before the new container was healthy")
            if address and port:
                self._probe_until(address, port, slot if shared else None, min(deadline, time.monotonic() + STATE_EVERY))
            else:
                time.sleep(POLL)

    def _probe_until(self, address: str, port: int, slot: str | None, until: float) -> None:
        """Between two reads of the container (a list and an inspect on the device's dockerd), only
        the cheap readiness probe, every POLL; a ready answer ends the wait so the container is read
        at once. Three devices polled at once on a busy host: the dockerd reads were the costly part."""
        while True:
            time.sleep(POLL)
            if time.monotonic() >= until or ready(address, port, slot=slot):
                return

    def smoke_device(self, name: str, plan: DevicePlan, slot: str | None = None) -> None:
        address = device_address(plan.device.host)
        self.step(name, "smoke", f"one prediction on http://{address}:{plan.port}"
                   + (f" answered by slot {slot}" if slot else ""))
        smoke(address, plan.port, self.model, slot=slot)
        grpc_port = self.device_grpc_port(plan.device)
        if grpc_port:
            self.step(name, "smoke", f"gRPC readiness on {address}:{grpc_port}")
            grpc_smoke(address, grpc_port, self.model)

    def wait_for_canary(self, name: str, canary: bool) -> None:
        """A device past the canary waits here, before it changes what serves, until the canary
        devices are done; a failure or a signal meanwhile stops it (Interrupted)."""
        if canary or self.canary_passed.is_set():
            return
        self.step(name, "wait-canary", "waiting for the canary")
        while not self.canary_passed.wait(POLL):
            if self.stopping.is_set():
                break
        if self.stopping.is_set():
            raise Interrupted(f"the rollout stopped ({self.signal_name or 'a device failed'}) before this "
                              "device switched")

    def down(self, slot: str, files: st.DeviceFiles, host: str) -> None:
        compose.run_compose(compose.down_argv(self.fleet.name, files.current, slot=slot), host)

    def stop_slot(self, engine, slot: str) -> None:
        """What `compose down` does to a slot of this fleet (host networking: no network or volume
        to remove), through the engine already connected: one compose process less per switch."""
        for c in engine.containers(labels={"com.docker.compose.project": compose.project_name(self.fleet.name, slot)}):
            engine.stop(c.id, timeout=STOP_TIMEOUT)  # SIGTERM: the server drains, then exits
            engine.remove_container(c.id)

    def unstage(self, plan: DevicePlan, files: st.DeviceFiles, old_text: str | None) -> str:
        """Remove a new container that never took over; the old one never stopped."""
        try:
            self.down(plan.slot, files, plan.device.host)
        except KitError as e:
            return f"; the new container (slot {plan.slot}) could not be removed: {e.message}"
        finally:
            if old_text is not None:
                files.write_current(old_text)
        return "; the new container was removed, the old one kept serving"
