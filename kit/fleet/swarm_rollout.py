"""`kit rollout` onto a Docker swarm (`swarm: {manager: ENDPOINT}` in the fleet).

  resolve   the digest, once, through the MANAGER's engine (the swarm's nodes
            pull from the registry the manager reaches).
  plan      per device, read-only, through the device's own endpoint: facts
            (as for compose), its swarm node (docker info's Swarm.NodeID), the
            fingerprint gate, and on a Jetson profile: nvidia must be the
            engine's default runtime (services have no `runtime:`).
  labels    each device's node gets its fingerprint as node labels (kit.device,
            kit.l4t, kit.tensorrt, kit.gpu_arch) and kit.fleet.<fleet>=true
            (false when refused); the stack's placement constraints ask for
            the image's fingerprint, so a node that does not match gets no task.
  deploy    the stack file (kit/fleet/swarm.py) with `docker stack deploy`
            against the manager; the swarm runs the rolling update:
            max_parallel nodes at a time, each monitored for health_timeout,
            failure_action rollback (or pause for on_failure: halt).
  converge  watch the service's UpdateStatus and tasks until every admitted
            node runs the digest; smoke-test each node as its task runs.
            A node that goes down is recorded failed; the swarm updates it when
            it returns. A rollback by the swarm is recorded as rolled-back.

Canary on a swarm: the swarm updates `max_parallel` nodes per batch and starts
the next batch only when the last one stayed healthy through `monitor`; so the
first batch is the canary, and `rollout.canary` is not used (see
docs/fleet-swarm.md). The record is the same as compose's, with
orchestrator: swarm."""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import ThreadPoolExecutor

from kit.errors import DockerError, KitError, RolloutError
from kit.fleet import swarm
from kit.fleet.plan import START_FIRST, STOP_FIRST, UPDATE, choose_strategy
from kit.fleet.status import Deployment
from kit.fleet.swarm_timeline import NodeTimeline
from kit.units import utc_timestamp
from kit.fleet import state as st
from kit.fleet.facts import connected, read_facts, unreachable
from kit.fleet.release import Release
from kit.fleet.gate import check
from kit.manifest.load import FleetDevice, FleetManifest

POLL = 0.2  # seconds between reads of the service and its tasks (3 API calls to the manager each)
SETTLE = 60.0  # seconds beyond the update's own budget before kit gives up waiting


def _quiet(device: str, phase: str, message: str) -> None:
    pass


class SwarmRollout(Release):
    def __init__(self, fleet: FleetManifest, resolved, progress=None):
        from kit.fleet.rollout import DEFAULT_PORT

        super().__init__(fleet, resolved, progress)
        self.manager = fleet.swarm.manager
        first = fleet.devices[0]
        self.port = int(first.port or resolved.env.get("KIT_PORT") or DEFAULT_PORT)
        self.policy = swarm.UpdatePolicy(parallelism=max(1, int(fleet.rollout.max_parallel)),
                                         monitor=self.timeout, on_failure=fleet.rollout.on_failure)
        self.stack_file = self.root / "stack.yml"
        self.last_good = self.root / "stack.last-good.yml"
        self.store: st.RecordStore | None = None

    # -- plan --

    def stack_text(self, image: str | None = None) -> str:
        from kit.fleet.rollout import service_spec

        spec = service_spec(self.fleet, self.resolved, self.fp, "*", self.port, image=image or self.digest_ref,
                            nvidia=False, grpc_port=self.grpc_port, reuse_port=bool(self.fp and self.fp.reuse_port))
        return swarm.render(spec, self.policy, swarm.constraints(self.fleet.name, self.fp))

    def plan_device(self, device: FleetDevice, nodes: dict, running: dict):
        from kit.fleet.rollout import DevicePlan, REFUSED, UNCHANGED, UNREACHABLE

        self.progress(device.name, "facts", f"connecting to {device.host}")
        argv = swarm.deploy_argv(self.fleet.name, self.stack_file)
        try:
            with connected(device, timeout=30) as engine:
                facts = read_facts(engine, device)
                serving = running_copy(engine, running.get(facts.swarm_node_id))
        except DockerError as e:
            self.progress(device.name, "facts", f"unreachable: {e.message}")
            return DevicePlan(device, UNREACHABLE, reason=f"unreachable: {e.message}", port=self.port,
                              facts=unreachable(device, e))
        task = running.get(facts.swarm_node_id)
        plan = DevicePlan(device, UPDATE, port=self.port, facts=facts, running=task.image if task else None,
                          healthy=task.running if task else None, command=argv)
        reasons = list(check(self.fp, device, facts).reasons)
        if facts.swarm_state != "active" or not facts.swarm_node_id:
            reasons.append(f"the device's engine is not in a swarm (state {facts.swarm_state or 'unknown'}): "
                           f"join it with `docker swarm join --token <worker token> <manager>:2377`")
        elif facts.swarm_node_id not in nodes:
            reasons.append(f"the device is node {facts.swarm_node_id[:12]} of another swarm than {self.manager}'s")
        if device.device != "cpu" and facts.nvidia and facts.default_runtime != "nvidia":
            reasons.append("swarm services cannot choose a runtime (compose's `runtime: nvidia` does not exist "
                           "there), and the engine's default runtime is "
                           f"{facts.default_runtime or 'runc'}: set \"default-runtime\": \"nvidia\" in "
                           "/etc/docker/daemon.json on the device and restart dockerd")
        if reasons:
            plan.action, plan.reason = REFUSED, "; ".join(reasons)
            self.progress(device.name, "gate", f"refused: {plan.reason}")
            return plan
        if task is not None and task.running and task.image == self.digest_ref:
            plan.action, plan.reason = UNCHANGED, "already runs this digest and is healthy"
        else:
            plan.reason = f"runs {task.image} ({task.state})" if task else "runs nothing of this fleet"
            plan.strategy, plan.strategy_reason = choose_strategy(self.fp, facts, serving)
        self.progress(device.name, "gate", f"{plan.action}: {plan.reason}")
        return plan

    def plan(self, manager_engine) -> list:
        nodes = {n["ID"]: n for n in manager_engine.nodes()}
        running = swarm.tasks_by_node(manager_engine.tasks(swarm.service_name(self.fleet.name))) \
            if manager_engine.service_inspect(swarm.service_name(self.fleet.name)) else {}
        devices = list(self.fleet.devices)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(devices)))) as pool:
            plans = list(pool.map(lambda d: self.plan_device(d, nodes, running), devices))
        self.policy = dataclasses.replace(self.policy, order=choose_order(plans))
        text = self.stack_text()
        for p in plans:
            p.compose_text = text
        return plans

    # -- run --

    def label_nodes(self, engine, plans) -> None:
        from kit.fleet.rollout import REFUSED, UNCHANGED

        for p in plans:
            if p.facts is None or not p.facts.reachable or not p.facts.swarm_node_id:
                continue
            if p.action == REFUSED and "another swarm" in p.reason:
                continue
            admitted = p.action in (UPDATE, UNCHANGED)
            labels = swarm.node_labels(self.fleet.name, p.device, p.facts, admitted)
            self.progress(p.device.name, "labels", ", ".join(f"{k}={v}" for k, v in labels.items()))
            engine.set_node_labels(p.facts.swarm_node_id, labels)

    def run(self, engine, plans, image: str, durations: dict | None = None) -> st.RolloutRecord:
        from kit.fleet.rollout import record_plans

        record = st.RolloutRecord(fleet=self.fleet.name, image=image, digest_ref=self.digest_ref,
                                  on_failure=self.fleet.rollout.on_failure, orchestrator="swarm",
                                  durations=dict(durations or {}))
        record_plans(record, plans)
        self.store = st.RecordStore(self.root / "rollout.json", record)
        self.store.save()

        t = time.monotonic()
        self.label_nodes(engine, plans)
        record.durations["labels"] = round(time.monotonic() - t, 3)
        text = plans[0].compose_text if plans else self.stack_text()
        current = _read(self.stack_file)
        todo = [p for p in plans if p.action == UPDATE]
        if not todo and current == text:
            return self._finish(record)
        service = engine.service_inspect(swarm.service_name(self.fleet.name))
        if service is not None and current and swarm.update_state(service)[0] in (None, "completed"):
            st_write(self.last_good, current)  # what ran, converged: the file to go back to
        st_write(self.stack_file, text)
        for p in todo:
            self.store.device(p.device.name, result=st.RUNNING, phase="deploy", started_at=utc_timestamp(), wave=0)
        self.progress("*", "deploy", " ".join(swarm.deploy_argv(self.fleet.name, self.stack_file)))
        t = time.monotonic()
        try:
            swarm.deploy(self.fleet.name, self.stack_file, self.manager)
            record.durations["deploy"] = round(time.monotonic() - t, 3)
        except KitError as e:
            for p in todo:
                self.store.device(p.device.name, result=st.FAILED, reason=f"deploy: {e.message}; not touched",
                                  after=p.running, finished_at=utc_timestamp())
            self.store.finish("failed", f"docker stack deploy failed: {e.message}")
            return record
        for p in todo:
            self.store.device(p.device.name, phase="update", after=self.digest_ref)
        t = time.monotonic()
        self.converge(engine, todo)
        record.durations["converge"] = round(time.monotonic() - t, 3)
        return self._finish(record)

    def converge(self, engine, todo) -> None:
        """Watch the swarm's update until each device is done, failed, or rolled back."""
        name = swarm.service_name(self.fleet.name)
        batches = math.ceil(max(1, len(todo)) / self.policy.parallelism)
        start_period = self.resolved.health_start_period or 0
        deadline = time.monotonic() + batches * (self.timeout + min(start_period, self.timeout)) + SETTLE
        pending = {p.facts.swarm_node_id: p for p in todo}
        deployed = time.time()
        timelines = {node: NodeTimeline() for node in pending}
        while pending:
            service = engine.service_inspect(name)
            update, message = swarm.update_state(service)
            raw = engine.tasks(name)
            for node, timeline in timelines.items():
                timeline.observe(raw, node, self.digest_ref, time.time())
            tasks = swarm.tasks_by_node(raw)
            down = swarm.nodes_down(engine.nodes())
            if update in ("rollback_started", "rollback_paused", "rollback_completed"):
                if update == "rollback_started":
                    self._tick(pending, "rollback", f"the swarm rolls back: {message}")
                    time.sleep(POLL)
                    continue
                self._rolled_back(pending, tasks, f"the swarm rolled the update back: {message}",
                                  update == "rollback_completed")
                return
            if update == "paused":
                for node, p in list(pending.items()):
                    task = tasks.get(node)
                    reason = f"update paused by the swarm (on_failure halt): {message}"
                    after = task.image if task else None
                    self.store.device(p.device.name, result=st.FAILED, reason=reason, after=after,
                                      finished_at=utc_timestamp())
                    self.progress(p.device.name, "failed", reason)
                self.store.record.reason = message
                return
            for node, p in list(pending.items()):
                task = tasks.get(node)
                if node in down:
                    after = task.image if task and task.running else p.running
                    reason = ("the node went down during the update; the swarm updates it when it is back"
                              if task is None or task.image != self.digest_ref or not task.running
                              else "the node went down after its task started")
                    self.store.device(p.device.name, result=st.FAILED, phase="update", reason=reason, after=after,
                                      finished_at=utc_timestamp())
                    self.progress(p.device.name, "failed", reason)
                    del pending[node]
                elif task is not None and task.image == self.digest_ref and task.running:
                    t = time.monotonic()
                    self._smoke(p)
                    timelines[node].smoke = time.monotonic() - t
                    self.store.device(p.device.name, durations=timelines[node].durations(
                        deployed, self.policy.order == START_FIRST))
                    del pending[node]
            if not pending:
                return
            if time.monotonic() >= deadline:
                for node, p in pending.items():
                    task = tasks.get(node)
                    state = f"task {task.state}: {task.message}" if task else "no task on its node"
                    self.store.device(p.device.name, result=st.FAILED, reason=f"not converged in time ({state})",
                                      finished_at=utc_timestamp())
                return
            time.sleep(POLL)

    def _tick(self, pending, phase, message) -> None:
        for p in pending.values():
            if self.store.record.devices[p.device.name].phase != phase:
                self.store.device(p.device.name, phase=phase)
                self.progress(p.device.name, phase, message)

    def _rolled_back(self, pending, tasks, reason, completed) -> None:
        for rec in self.store.record.devices.values():
            if rec.result in (st.RUNNING, st.DONE):
                self.store.device(rec.name, result=st.ROLLED_BACK if completed else st.FAILED,
                                  reason=reason if completed else f"{reason} (rollback paused)",
                                  after=rec.before, finished_at=utc_timestamp())
                self.progress(rec.name, "rolled-back", reason)
        self.store.record.reason = reason

    def _smoke(self, plan) -> None:
        from kit.fleet.rollout import device_address, grpc_smoke, smoke

        name = plan.device.name
        address = device_address(plan.device.host)
        self.store.device(name, phase="smoke")
        self.progress(name, "smoke", f"one prediction on http://{address}:{self.port}")
        try:
            smoke(address, self.port, self.model)
            if self.grpc_port:
                grpc_smoke(address, self.grpc_port, self.model)
        except KitError as e:
            self.store.device(name, result=st.FAILED, reason=f"smoke: {e.message}", finished_at=utc_timestamp())
            self.progress(name, "failed", f"smoke: {e.message}")
            return
        self.store.device(name, result=st.DONE, reason="", phase="done", finished_at=utc_timestamp())
        self.progress(name, "done", f"runs {self.digest_ref}, healthy, smoke prediction answered")

    def _finish(self, record: st.RolloutRecord) -> st.RolloutRecord:
        results = [r.result for r in record.devices.values()]
        reason = record.reason
        if st.ROLLED_BACK in results:
            status = "rolled-back"
        elif any(r.result == st.FAILED and "paused by the swarm" in r.reason for r in record.devices.values()):
            status = "halted"
        elif st.FAILED in results or st.REFUSED in results or st.UNTOUCHED in results:
            bad = [r for r in record.devices.values() if r.result in (st.FAILED, st.REFUSED, st.UNTOUCHED)]
            status = "failed" if all(r.result == st.FAILED for r in bad) and \
                not any(r.result == st.DONE for r in record.devices.values()) else "partial"
            reason = f"{len(bad)} device(s) not updated: " + ", ".join(f"{r.name} ({r.result})" for r in bad)
        else:
            status = "done"
        self.store.finish(status, reason)
        return record


def running_copy(engine, task) -> Deployment:
    """The node's running task as choose_strategy reads a deployment: its container's
    environment (KIT_REUSE_PORT) and its image's labels (kit.memory_limit)."""
    if task is None or not task.running or not task.container:
        return Deployment()
    try:
        d = engine.container_inspect(task.container)
        labels = engine.image_inspect(d.get("Image") or task.image).labels
    except DockerError:
        return Deployment()  # gone meanwhile: treat as nothing serving, stop-first
    env = dict(e.partition("=")[::2] for e in (d.get("Config") or {}).get("Env") or [])
    return Deployment(container=task.container, image=task.image, status="running", labels=labels, env=env)


def choose_order(plans) -> str:
    """One update_config for the whole service: start-first only when every node to update
    can run the new task beside the old one; the others' plans then say why not."""
    todo = [p for p in plans if p.action == UPDATE]
    blocking = [p for p in todo if p.strategy != START_FIRST]
    if todo and not blocking:
        return START_FIRST
    first = blocking[0] if blocking else None
    for p in todo:
        if p.strategy == START_FIRST and first is not None:
            p.strategy, p.strategy_reason = STOP_FIRST, (
                f"one update order for the whole swarm service, and {first.device.name} cannot start first "
                f"({first.strategy_reason}); this node could ({p.strategy_reason})")
    return STOP_FIRST


def _read(path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def st_write(path, text: str) -> None:
    from kit.atomic import write_text_atomic

    write_text_atomic(path, text)


def rollout_swarm(fleet: FleetManifest, ref: str, dry_run: bool, progress=None):
    from kit.docker_api import connect
    from kit.fleet.registry import resolve
    from kit.fleet.rollout import RolloutResult, fleet_lock

    say = progress or _quiet
    t0 = time.monotonic()
    say("*", "resolve", f"resolving {ref} to a digest through the swarm manager {fleet.swarm.manager}")
    engine = connect(fleet.swarm.manager, timeout=60)
    try:
        resolved = resolve(ref, engine=engine)
        say("*", "resolve", f"{ref} is {resolved.digest_ref}")
        run = SwarmRollout(fleet, resolved, progress)
        if dry_run:
            plans = run.plan(engine)
            return RolloutResult(fleet.name, ref, resolved.digest_ref, True, "planned", "", plans)
        with fleet_lock(run.root):
            t1 = time.monotonic()
            plans = run.plan(engine)
            durations = {"resolve": round(t1 - t0, 3), "plan": round(time.monotonic() - t1, 3)}
            record = run.run(engine, plans, ref, durations)
    finally:
        engine.close()
    if record.status not in ("done",) and not record.reason:
        raise RolloutError("swarm rollout ended without a reason")  # a bug, never a silent result
    return RolloutResult(fleet.name, ref, resolved.digest_ref, False, record.status, record.reason, plans,
                         record, str(run.root / "rollout.json"))
