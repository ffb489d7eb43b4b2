"""`kit rollout`: one image, pinned to its digest, onto every device of a fleet.

  resolve   the image's registry digest, ONCE, and its config (labels, health
            probe, env). Registry down: fail here, before any device is touched.
  plan      per device, read-only: connect, read facts, gate on the image's
            fingerprint, render its compose file. Refused and unreachable
            devices are never touched; devices already running the digest,
            healthy, with the same compose file are "unchanged".
  canary    the first `rollout.canary` devices to update, then waves of
            `rollout.max_parallel` devices in parallel (threads). A wave starts
            only when every device of the one before is done.
  device    pull by digest (the old model keeps serving meanwhile), keep the
            running compose file as last-good, `compose up -d` with DOCKER_HOST
            set to the device, wait healthy (rollout.health_timeout), send one
            smoke prediction, record last-good = the new file.
  failure   on_failure=rollback: every device this rollout touched gets its
            last-good file back (or `compose down` if nothing ran before) and the
            rollout stops; halt: stop, touch nothing else.

The record (.kit/fleet/<fleet>/rollout.json) is rewritten atomically after
every step, so a rollout killed at any point says where it stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kit.errors import DockerError, KitError, RolloutError, UsageError
from kit import labels as lb
from kit.labels import Fingerprint
from kit.fleet import compose
from kit.fleet import state as st
from kit.fleet.facts import DeviceFacts, connected, read_facts, unreachable
from kit.fleet.gate import Decision, check
from kit.fleet.release import Release
from kit.fleet.status import Deployment, deployment, device_address, ready
from kit.manifest.load import FleetDevice, FleetManifest
from kit.net import DEFAULT_PORT, http_json
from kit.units import utc_timestamp

# progress(device, phase, message): called from worker threads, one call per step.
Progress = Callable[[str, str, str], None]

DEFAULT_START_PERIOD = 300.0  # seconds: a Nano loading TF and engines is slow
SMOKE_TIMEOUT = 60.0
POLL = 0.25  # seconds between container state reads while waiting for health

UPDATE, UNCHANGED, REFUSED, UNREACHABLE = "update", "unchanged", "refused", "unreachable"


def _quiet(device: str, phase: str, message: str) -> None:
    pass


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


@dataclass
class RolloutResult:
    fleet: str
    image: str
    digest_ref: str
    dry_run: bool
    status: str  # planned (dry run) | done | partial | rolled-back | halted | failed
    reason: str
    plans: list
    record: st.RolloutRecord | None = None
    record_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("done", "planned")

    def to_dict(self) -> dict:
        d = {"fleet": self.fleet, "image": self.image, "digest_ref": self.digest_ref, "dry_run": self.dry_run,
             "status": self.status, "reason": self.reason, "record_path": self.record_path,
             "plan": [p.to_dict() for p in self.plans]}
        if self.record is not None:
            d["record"] = self.record.to_dict()
        return d


# ---- smoke -----------------------------------------------------------------------------


_ZERO = {"DT_STRING": "", "DT_BOOL": False}


def zero_example(tensor: dict):
    """Zeros of one example of a TF Serving metadata tensor (unknown dims as 1)."""
    dims = [int(d.get("size", -1)) for d in (tensor.get("tensor_shape") or {}).get("dim", [])]
    zero = _ZERO.get(tensor.get("dtype"), 0.0 if "FLOAT" in str(tensor.get("dtype")) or
                     "DOUBLE" in str(tensor.get("dtype")) or "HALF" in str(tensor.get("dtype")) else 0)
    value = zero
    for d in reversed(dims[1:]):
        value = [value] * (d if d > 0 else 1)
    return value


SLOT_TRIES = 40  # requests until one reaches the new server while the old one shares the port


def _http_json(url: str, payload: dict | None = None, timeout: float = SMOKE_TIMEOUT, slot: str | None = None) -> dict:
    """With `slot`: retried until the server of that slot answers (Kit-Slot header): during a
    start-first update the kernel hands each new connection to the old or the new server."""
    for _ in range(SLOT_TRIES if slot else 1):
        reply = http_json(url, payload, timeout, error=RolloutError)
        if slot is None or (reply.headers or {}).get("Kit-Slot") == slot:
            break
    else:
        raise RolloutError(f"{url}: {SLOT_TRIES} requests, none answered by the new server (slot {slot})")
    if reply.status >= 400:
        raise RolloutError(f"{url} answered {reply.status}: {str(reply.body)[:300]}")
    if not isinstance(reply.body, dict):
        raise RolloutError(f"{url}: the reply is not a JSON object: {str(reply.body)[:200]}")
    return reply.body


def smoke(address: str, port: int, model: str, timeout: float = SMOKE_TIMEOUT, slot: str | None = None) -> dict:
    """One real prediction: zeros shaped like the default signature's inputs
    (from the server's TF Serving metadata), batch of one; with `slot`, by that slot's server."""
    base = f"http://{address}:{port}/v1/models/{model}"
    meta = _http_json(base + "/metadata", timeout=timeout, slot=slot)
    sigs = ((meta.get("metadata") or {}).get("signature_def") or {}).get("signature_def") or {}
    name = "serving_default" if "serving_default" in sigs else next(iter(sigs), None)
    if name is None:
        raise RolloutError(f"{base}/metadata lists no signature")
    inputs = {key: [zero_example(t)] for key, t in (sigs[name].get("inputs") or {}).items()}
    body = _http_json(base + ":predict", {"signature_name": name, "inputs": inputs}, timeout=timeout, slot=slot)
    outputs = body.get("outputs", body.get("predictions"))
    if "error" in body or not outputs:
        raise RolloutError(f"smoke prediction on {base} gave no outputs: {str(body)[:200]}")
    return body


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


def grpc_smoke(address: str, port: int, model: str, timeout: float = SMOKE_TIMEOUT) -> None:
    """The gRPC side answers: KServe v2 ServerReady and ModelReady are true."""
    try:
        import grpc
    except ImportError as e:
        raise RolloutError("the image serves gRPC but grpcio is not installed here", hint="pip install grpcio") from e
    from kit.runtime.serving.grpc_messages import messages

    m = messages()
    target = f"{address}:{port}"
    with grpc.insecure_channel(target) as channel:
        def call(method, request, response):
            rpc = channel.unary_unary(f"/inference.GRPCInferenceService/{method}",
                                      request_serializer=m["inference." + request].SerializeToString,
                                      response_deserializer=m["inference." + response].FromString)
            return rpc(m["inference." + request](**({"name": model} if method == "ModelReady" else {})),
                       timeout=timeout)
        try:
            ready = call("ServerReady", "ServerReadyRequest", "ServerReadyResponse").ready
            model_ready = call("ModelReady", "ModelReadyRequest", "ModelReadyResponse").ready
        except grpc.RpcError as e:
            raise RolloutError(f"gRPC on {target}: {e.code().name}: {e.details()}") from e
    if not (ready and model_ready):
        raise RolloutError(f"gRPC on {target} says not ready (server {ready}, model {model_ready})")


# ---- the rollout -----------------------------------------------------------------------


@contextlib.contextmanager
def fleet_lock(root: Path):
    """One rollout per fleet at a time (on this machine)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another `kit rollout` of this fleet is running (lock {root / 'lock'})",
                             hint="wait for it to finish") from None
        yield


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


class Interrupted(KitError):
    """SIGINT/SIGTERM arrived: a device not yet switched stops where it is safe to."""


class ComposeRollout(Release):
    def __init__(self, fleet: FleetManifest, resolved, progress: Progress | None):
        super().__init__(fleet, resolved, progress)
        self.store: st.RecordStore | None = None
        self.rollback_to: dict[str, str | None] = {}  # switched device -> compose text to restore (None: down)
        self._lock = threading.Lock()
        self._phase_at: dict[str, tuple[str, float]] = {}  # device -> (step, when it began)
        self.canary_passed = threading.Event()  # no non-canary device switches before it is set
        self.stopping = threading.Event()  # a device failed or a signal came: start nothing new
        self.signal_name: str | None = None

    # -- plan (read-only) --

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
            with connected(device, timeout=30) as engine:
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

    def plan(self, dry_run: bool) -> list[DevicePlan]:
        devices = list(self.fleet.devices)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(devices)))) as pool:
            return list(pool.map(lambda d: self.plan_device(d, dry_run), devices))

    # -- update one device --

    def _step(self, name: str, phase: str, message: str) -> None:
        self._close_step(name, phase)
        self.progress(name, phase, message)

    def _close_step(self, name: str, phase: str | None = None) -> None:
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

    def _rollback_text(self, engine, plan: DevicePlan, files: st.DeviceFiles, dep: Deployment) -> str | None:
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
            time.sleep(POLL)

    def _smoke(self, name: str, plan: DevicePlan, slot: str | None = None) -> None:
        address = device_address(plan.device.host)
        self._step(name, "smoke", f"one prediction on http://{address}:{plan.port}"
                   + (f" answered by slot {slot}" if slot else ""))
        smoke(address, plan.port, self.model, slot=slot)
        grpc_port = self.device_grpc_port(plan.device)
        if grpc_port:
            self._step(name, "smoke", f"gRPC readiness on {address}:{grpc_port}")
            grpc_smoke(address, grpc_port, self.model)

    def _wait_for_canary(self, name: str, canary: bool) -> None:
        """A device past the canary waits here, before it changes what serves, until the canary
        devices are done; a failure or a signal meanwhile stops it (Interrupted)."""
        if canary or self.canary_passed.is_set():
            return
        self._step(name, "wait-canary", "waiting for the canary")
        while not self.canary_passed.wait(POLL):
            if self.stopping.is_set():
                break
        if self.stopping.is_set():
            raise Interrupted(f"the rollout stopped ({self.signal_name or 'a device failed'}) before this "
                              "device switched")

    def _down(self, slot: str, files: st.DeviceFiles, host: str) -> None:
        compose.run_compose(compose.down_argv(self.fleet.name, files.current, slot=slot), host)

    def update_device(self, plan: DevicePlan, wave: int, canary: bool = True) -> bool:
        name, host = plan.device.name, plan.device.host
        files = st.DeviceFiles(self.root, name)
        self.store.device(name, result=st.RUNNING, wave=wave, started_at=utc_timestamp(),
                          strategy=plan.strategy, strategy_reason=plan.strategy_reason)
        self._step(name, "connect", f"wave {wave}: connecting to {host} ({plan.strategy}: {plan.strategy_reason})")
        phase, staged, dep, old_text = "connect", False, Deployment(), None
        try:
            with connected(plan.device, timeout=60) as engine:
                dep = deployment(engine, self.fleet.name)
                self.store.device(name, before=dep.image, after=dep.image)
                phase = "pull"
                self._step(name, phase, f"pulling {self.digest_ref}")
                engine.pull(self.digest_ref)
                if plan.finish_switch:
                    rollback = None
                elif plan.strategy == START_FIRST:
                    rollback = self._rollback_text(engine, plan, files, dep)
                    old_text = files.read(files.current)
                    phase, staged = "start", True
                    self._step(name, phase, f"starting the new container beside the old one (slot {plan.slot})")
                    if any(o.slot == plan.slot for o in [dep, *dep.others] if o.exists and o is not dep):
                        self._down(plan.slot, files, host)  # a leftover of an interrupted update
                    files.write_current(plan.compose_text)
                    compose.run_compose(compose.up_argv(self.fleet.name, files.current, slot=plan.slot), host)
                    phase = "health"
                    self._step(name, phase, f"waiting up to {self.timeout:g}s for the new container (slot {plan.slot})")
                    address = device_address(host)
                    self.wait_healthy(engine, self.digest_ref, address, plan.port, slot=plan.slot, shared=True)
                    phase = "smoke"
                    self._smoke(name, plan, slot=plan.slot)
                    if self.signal_name:  # not switched yet: the safe place to stop
                        raise Interrupted(f"{self.signal_name} before the switch")
                    phase = "wait-canary"
                    self._wait_for_canary(name, canary)
                else:
                    phase = "wait-canary"
                    self._wait_for_canary(name, canary)
                    rollback = self._rollback_text(engine, plan, files, dep)
                phase = "switch" if plan.strategy == START_FIRST or plan.finish_switch else "up"
                with self._lock:
                    self.rollback_to[name] = rollback
                staged = False
                self.store.device(name, after=self.digest_ref)
                if phase == "switch":
                    old = [o for o in [dep, *dep.others] if o.exists and o.slot != plan.slot]
                    self._step(name, phase, "stopping the old container (it drains first): "
                               + ", ".join(f"slot {o.slot}" for o in old))
                    for slot in sorted({o.slot for o in old}):
                        self._down(slot, files, host)
                    if plan.finish_switch:
                        files.write_current(plan.compose_text)
                else:
                    self._step(name, phase, " ".join(plan.command))
                    for o in dep.others:  # a copy left in the other slot would hold the port
                        if o.slot != plan.slot:
                            self._down(o.slot, files, host)
                    files.write_current(plan.compose_text)
                    compose.run_compose(compose.up_argv(self.fleet.name, files.current, plan.force_recreate,
                                                        slot=plan.slot), host)
                    phase = "health"
                    self._step(name, phase, f"waiting up to {self.timeout:g}s for healthy")
                    self.wait_healthy(engine, self.digest_ref, device_address(host), plan.port, slot=plan.slot)
                    phase = "smoke"
                    self._smoke(name, plan)
                files.write_last_good(plan.compose_text)
        except KitError as e:
            if staged:  # the new container never took over: remove it, the old one kept serving
                note = self._unstage(plan, files, old_text)
            else:
                note = "" if name in self.rollback_to else "; not touched"
            self._close_step(name)
            if isinstance(e, Interrupted):
                self.store.device(name, result=st.UNTOUCHED, reason=f"{phase}: {e.message}{note}",
                                  after=dep.image if dep.exists else None, finished_at=utc_timestamp())
                self.progress(name, "stopped", f"{phase}: {e.message}{note}")
                return True
            self.store.device(name, result=st.FAILED, reason=f"{phase}: {e.message}{note}", finished_at=utc_timestamp(),
                              **({"after": dep.image} if staged or name not in self.rollback_to else {}))
            self.progress(name, "failed", f"{phase}: {e.message}{note}")
            return False
        self._close_step(name)
        self.store.device(name, result=st.DONE, reason="", phase="done", finished_at=utc_timestamp())
        self.progress(name, "done", f"runs {self.digest_ref}, healthy, smoke prediction answered")
        return True

    def _unstage(self, plan: DevicePlan, files: st.DeviceFiles, old_text: str | None) -> str:
        """Remove a new container that never took over; the old one never stopped."""
        try:
            self._down(plan.slot, files, plan.device.host)
        except KitError as e:
            return f"; the new container (slot {plan.slot}) could not be removed: {e.message}"
        finally:
            if old_text is not None:
                files.write_current(old_text)
        return "; the new container was removed, the old one kept serving"

    def rollback_device(self, plan: DevicePlan, why: str) -> None:
        name, host = plan.device.name, plan.device.host
        files = st.DeviceFiles(self.root, name)
        text = self.rollback_to[name]
        rec = self.store.record.devices[name]
        reason = rec.reason if rec.result == st.FAILED else why
        self._step(name, "rollback", "restoring last-good" if text else "nothing ran before: compose down")
        try:
            with connected(plan.device, timeout=60) as engine:
                now = deployment(engine, self.fleet.name)
                running = {o.slot for o in [now, *now.others] if o.exists}
                if text is None:
                    for slot in sorted(running):
                        self._down(slot, files, host)
                    after = None
                else:
                    slot = compose.slot_of(text)
                    # beside what runs when both share the port (start-first back), else stop it first
                    beside = "KIT_REUSE_PORT" in text and now.reuse_port and plan.strategy == START_FIRST
                    if not beside:
                        for other in sorted(running - {slot}):
                            self._down(other, files, host)
                    files.write_current(text)
                    after = compose.image_of(text)
                    compose.run_compose(compose.up_argv(self.fleet.name, files.current, slot=slot), host)
                    self.wait_healthy(engine, after, device_address(host), plan.port, slot=slot,
                                      shared=beside and slot != now.slot)
                    for other in sorted(running - {slot}) if beside else ():
                        self._down(other, files, host)
        except KitError as e:
            self._close_step(name)
            self.store.device(name, result=st.FAILED, reason=f"{reason}; rollback failed: {e.message}",
                              finished_at=utc_timestamp())
            self.progress(name, "failed", f"rollback failed: {e.message}")
            return
        self._close_step(name)
        self.store.device(name, result=st.ROLLED_BACK, reason=reason, after=after, finished_at=utc_timestamp())
        self.progress(name, "rolled-back", f"runs {after or 'nothing (as before)'}")

    # -- interrupt --

    def interrupt(self, signal_name: str) -> None:
        """SIGINT/SIGTERM: start no device, stop those not yet switched where it is safe, let
        those already switching finish; the record says so at once."""
        if self.stopping.is_set() and self.signal_name:
            self.progress("*", "interrupt", f"{signal_name} again: still finishing the devices in progress")
            return
        self.signal_name = signal_name
        self.stopping.set()
        record = self.store.record
        at = {r.name: r.phase for r in record.devices.values() if r.result == st.RUNNING}
        self.progress("*", "interrupt", f"{signal_name}: starting no other device; finishing "
                      + (", ".join(f"{n} ({p})" for n, p in at.items()) or "nothing") + " first")
        # Written by a thread: the signal handler may run while this thread holds the store's lock.
        threading.Thread(target=self.store.update, kwargs={"status": st.INTERRUPTED, "interrupted": {
            "signal": signal_name, "at": utc_timestamp(), "devices": at}}, daemon=True).start()

    # -- waves --

    def run(self, plans: list[DevicePlan], image: str, durations: dict | None = None) -> st.RolloutRecord:
        record = st.RolloutRecord(fleet=self.fleet.name, image=image, digest_ref=self.digest_ref,
                                  on_failure=self.fleet.rollout.on_failure, durations=dict(durations or {}))
        record_plans(record, plans)
        self.store = st.RecordStore(self.root / "rollout.json", record)
        self.store.save()
        started = time.monotonic()

        todo = [p for p in plans if p.action == UPDATE]
        canary = min(max(0, int(self.fleet.rollout.canary)), len(todo))
        width = max(1, int(self.fleet.rollout.max_parallel))
        wave_of = {p.device.name: number for number, wave in enumerate(plan_waves(todo, canary, width)) for p in wave}
        canary_names = {p.device.name for p in todo[:canary]}
        left = [len(canary_names)]
        if not canary_names:
            self.canary_passed.set()

        def work(p: DevicePlan) -> bool:
            name = p.device.name
            if self.stopping.is_set():
                return True  # never started: pending, marked below
            ok = self.update_device(p, wave_of[name], canary=name in canary_names)
            if not ok:
                self.stopping.set()
            elif name in canary_names:
                with self._lock:
                    left[0] -= 1
                    if left[0] == 0:
                        self.canary_passed.set()
            return ok

        # At most max_parallel devices at once, canary devices first. Past the canary a device
        # may pull and, start-first, start and prove its new container beside the old one while
        # the canary is checked; it switches (or, stop-first, stops the old) only after it.
        with ThreadPoolExecutor(max_workers=min(width, max(1, len(todo)))) as pool:
            ok = list(pool.map(work, todo))
        failed = [p.device.name for p, good in zip(todo, ok) if not good]
        record.durations["update"] = round(time.monotonic() - started, 3)

        if self.signal_name and not failed:
            for r in record.devices.values():
                if r.result == st.PENDING:
                    r.result, r.reason = st.UNTOUCHED, f"{self.signal_name} came before the rollout reached it"
            done = sum(r.result == st.DONE for r in record.devices.values())
            where = "; ".join(f"{n} at {p}" for n, p in (record.interrupted or {}).get("devices", {}).items())
            self.store.finish(st.INTERRUPTED, f"{self.signal_name} while {where or 'no device was in progress'}; "
                              f"{done} device(s) done, the others kept what they ran: run `kit rollout` "
                              "again to resume")
            return record

        if not failed:
            partial = [r for r in record.devices.values() if r.result in (st.REFUSED, st.UNTOUCHED)]
            status = "partial" if partial else "done"
            reason = (f"{len(partial)} device(s) not updated: " + ", ".join(f"{r.name} ({r.result})" for r in partial)
                      if partial else "")
            self.store.finish(status, reason)
            return record

        first = failed[0]
        cause = f"{'canary ' if first in canary_names else ''}{first} failed " \
                f"({record.devices[first].reason})"
        for r in record.devices.values():
            if r.result == st.PENDING:
                r.result, r.reason = st.UNTOUCHED, f"rollout stopped: {first} failed"
        self.store.save()
        if self.fleet.rollout.on_failure == "rollback":
            touched = [p for p in todo if p.device.name in self.rollback_to]
            with ThreadPoolExecutor(max_workers=max(1, min(width, len(touched) or 1))) as pool:
                list(pool.map(lambda p: self.rollback_device(p, f"rolled back: {cause}"), touched))
            bad = [r.name for r in record.devices.values() if r.result == st.FAILED and r.name in self.rollback_to
                   and "rollback failed" in r.reason]
            status = "failed" if bad else "rolled-back"
            self.store.finish(status, cause + (f"; rollback failed on {', '.join(bad)}" if bad else ""))
        else:
            self.store.finish("halted", cause)
        return record


def plan_waves(items: list, canary: int, width: int) -> list[list]:
    """Canary devices first (in groups of at most `width`), then the rest in waves of `width`."""
    n = min(max(0, canary), len(items))
    head, tail = items[:n], items[n:]
    return [head[i:i + width] for i in range(0, len(head), width)] + \
        [tail[i:i + width] for i in range(0, len(tail), width)]


def rollout(fleet_path: str | Path, image: str | None = None, dry_run: bool = False,
            progress: Progress | None = None) -> RolloutResult:
    from kit.manifest.load import load_fleet
    from kit.fleet.registry import resolve

    fleet = load_fleet(Path(fleet_path))
    ref = image or fleet.image
    if not ref:
        raise UsageError("no image to roll out", hint="set `image:` in the fleet manifest or pass --image")
    if fleet.swarm is not None:
        from kit.fleet.swarm_rollout import rollout_swarm

        return rollout_swarm(fleet, ref, dry_run, progress)
    # Resolve ONCE, before any device: a registry that is down stops everything here.
    t0 = time.monotonic()
    (progress or _quiet)("*", "resolve", f"resolving {ref} to a digest")
    resolved = resolve(ref)
    (progress or _quiet)("*", "resolve", f"{ref} is {resolved.digest_ref}")
    run = ComposeRollout(fleet, resolved, progress)
    if dry_run:
        plans = run.plan(dry_run=True)
        return RolloutResult(fleet.name, ref, resolved.digest_ref, True, "planned", "", plans)
    with fleet_lock(run.root):
        t1 = time.monotonic()
        plans = run.plan(dry_run=False)
        durations = {"resolve": round(t1 - t0, 3), "plan": round(time.monotonic() - t1, 3)}
        with _signals_stop(run):
            record = run.run(plans, ref, durations)
    return RolloutResult(fleet.name, ref, resolved.digest_ref, False, record.status, record.reason, plans,
                         record, str(run.root / "rollout.json"))


@contextlib.contextmanager
def _signals_stop(run: ComposeRollout):
    """While devices are updated, SIGINT (Ctrl-C) and SIGTERM stop the rollout between safe
    points instead of killing it mid-step (see ComposeRollout.interrupt). Main thread only."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
    before = {sig: signal.signal(sig, lambda signum, _frame: run.interrupt(names[signum])) for sig in names}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
