"""Docker Swarm mode: the stack file kit renders for a fleet, the node labels
that carry each device's fingerprint, deploying, and reading the swarm's tasks.

One global service `kit-<fleet>_model` on the `host` network (an external
network named host), rendered from the same ServiceSpec as a device's compose
file. Differences the swarm imposes:

  - `runtime:` does not exist for services: a Jetson node must make nvidia its
    engine's default runtime (checked by the rollout, with the fix).
  - Placement: constraints on node labels that kit writes from each device's
    facts (kit.device, kit.l4t, kit.tensorrt, kit.gpu_arch) and on fleet
    membership (kit.fleet.<fleet>=true), equal to the image's fingerprint
    labels: a node whose facts do not match gets no task.
  - update_config from the rollout policy: parallelism = max_parallel,
    monitor = health_timeout, failure_action rollback (or pause for halt).
  - deploy.resources.limits.memory instead of mem_limit; restart_policy
    instead of restart.
  - One spec for every node, so one port (KIT_PORT) for the whole fleet.

Deploying: `docker stack deploy` (the docker CLI, against the manager with
DOCKER_HOST) rather than the services API through docker-py. Why: the stack
file kit writes is then exactly what the swarm runs, an operator can re-run or
diff it by hand, and the CLI owns the compose-file -> service-spec translation
(healthcheck durations, external networks, update/rollback config) that would
otherwise be re-implemented here. `--resolve-image never` keeps the image as
kit pinned it (repository@sha256:...), so every node pulls that digest.
Reading state (nodes, service, tasks) goes through docker-py (kit.docker_api)."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from kit.fleet import compose
from kit.fleet.gate import Fingerprint
from kit.profiles import PROFILES

STACK_FILE_VERSION = "3.8"  # Docker >= 19.03 (JetPack 4.4.1 ships 19.03)
HOST_NETWORK = "hostnet"  # the stack's name for the external network `host`
NODE_LABELS = ("kit.device", "kit.l4t", "kit.tensorrt", "kit.gpu_arch")
PLATFORM_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
STACK_TIMEOUT = 300  # seconds for one `docker stack deploy`
# The swarm calls a task running (and moves on: stops the old task, takes the next batch)
# only after its first passing health probe, which Docker 19.03/20.10 runs one interval
# after the container started: at compose's 5 s that was most of a swarm update. 2 s, and
# retries raised so that a server stays as long unresponsive (16 s vs 15 s) before it is
# called unhealthy. Not 1 s: the probe is a python3 process each time (~0.07 s of CPU here,
# several times that on a Nano's A57 cores), forever, not only during updates (Docker < 25
# has no start_interval).
HEALTH_INTERVAL = "2s"
HEALTH_RETRIES = 8
# Each task names itself in KIT_SLOT (a swarm template, expanded per task) and the kit server
# and the fixture send it back as the Kit-Slot header. Start-first: old and new task share the
# port and the kernel hands each connection to one of the listening servers, so the new task's
# probe may reach the old server. The image's own probe (kit.runtime.serving.healthcheck) reads
# KIT_SLOT and counts only its own task's answer, so the stack file keeps the image's test.
TASK_SLOT = "{{.Task.ID}}"


def stack_name(fleet: str) -> str:
    return compose.project_name(fleet)


def service_name(fleet: str) -> str:
    return f"{stack_name(fleet)}_{compose.SERVICE}"


def member_label(fleet: str) -> str:
    """Node label naming fleet membership: kit.fleet.<fleet>=true on the nodes kit admits."""
    return f"kit.fleet.{fleet}"


def device_label(fleet: str) -> str:
    """Node label naming the fleet device a node is: kit.fleet.<fleet>.device=<name>."""
    return f"kit.fleet.{fleet}.device"


@dataclass(frozen=True)
class UpdatePolicy:
    """The rollout policy, as the swarm's update_config says it."""

    parallelism: int  # rollout.max_parallel
    monitor: float  # rollout.health_timeout, seconds
    on_failure: str  # rollout.on_failure: rollback | halt
    order: str = "stop-first"  # start-first when every node holds two copies (SwarmRollout.choose_order)

    @property
    def failure_action(self) -> str:
        return "rollback" if self.on_failure == "rollback" else "pause"


def node_labels(fleet: str, device, facts, admitted: bool) -> dict:
    """What kit writes on a device's swarm node: its fingerprint, from its facts
    and declared profile, plus fleet membership."""
    from kit.fleet.gate import tensorrt_for_l4t

    profile = PROFILES.get(device.device)
    trt = facts.tensorrt or tensorrt_for_l4t(facts.l4t)
    return {
        "kit.device": device.device,
        "kit.l4t": facts.l4t or "none",
        "kit.tensorrt": trt or "none",
        "kit.gpu_arch": (profile.gpu_arch if profile and profile.gpu_arch else None) or "none",
        member_label(fleet): "true" if admitted else "false",
        device_label(fleet): device.name,
    }


def constraints(fleet: str, fp: Fingerprint | None) -> list[str]:
    """Placement constraints: the node's kit labels must equal the image's fingerprint."""
    out = [f"node.labels.{member_label(fleet)} == true"]
    if fp is None:
        return out
    out.append(f"node.labels.kit.device == {fp.device}")
    if fp.jetson:
        out.append(f"node.labels.kit.l4t == {fp.l4t or 'none'}")
        if fp.optimization == "tensorrt":
            if fp.tensorrt:
                out.append(f"node.labels.kit.tensorrt == {fp.tensorrt}")
            if fp.gpu_arch:
                out.append(f"node.labels.kit.gpu_arch == {fp.gpu_arch}")
    if fp.architecture in PLATFORM_ARCH:
        out.append(f"node.platform.arch == {PLATFORM_ARCH[fp.architecture]}")
    return out


def _duration(seconds: float) -> str:
    return f"{int(round(seconds))}s" if seconds >= 1 else f"{int(seconds * 1000)}ms"


def environment(spec: compose.ServiceSpec) -> dict:
    env = {"KIT_PORT": str(spec.port)}
    if spec.reuse_port:
        # every task binds with SO_REUSEPORT, so the next update can start its task beside this one
        env["KIT_REUSE_PORT"] = "1"
        env["KIT_SLOT"] = TASK_SLOT
    return env


def healthcheck(spec: compose.ServiceSpec) -> dict:
    """The compose healthcheck (the image's own probe, slot-aware through KIT_SLOT), probed
    every HEALTH_INTERVAL: the swarm calls a task running only after its first passing probe,
    which Docker runs one interval after the start."""
    return dict(compose.healthcheck(spec), interval=HEALTH_INTERVAL, retries=HEALTH_RETRIES)


def render(spec: compose.ServiceSpec, policy: UpdatePolicy, placement: list[str]) -> str:
    """The stack file: the compose service of `spec`, as a global swarm service."""
    service: dict = {
        "image": spec.image,
        "environment": environment(spec),
        "healthcheck": healthcheck(spec),
        "logging": compose.logging_options(),
        "labels": {"kit.fleet": spec.fleet},
        "networks": [HOST_NETWORK],
    }
    update = {
        "parallelism": int(policy.parallelism),
        "delay": "0s",
        "monitor": _duration(policy.monitor),
        "failure_action": policy.failure_action,
        "max_failure_ratio": 0,
        "order": policy.order,
    }
    deploy: dict = {
        "mode": "global",
        "placement": {"constraints": list(placement)},
        "update_config": update,
        "rollback_config": {"parallelism": int(policy.parallelism), "delay": "0s", "monitor": update["monitor"],
                            "failure_action": "pause", "order": policy.order},
        "restart_policy": {"condition": "any", "delay": "2s"},
        "labels": {"kit.fleet": spec.fleet},
    }
    if spec.mem_limit:
        deploy["resources"] = {"limits": {"memory": str(int(spec.mem_limit))}}
    service["deploy"] = deploy
    doc = {"version": STACK_FILE_VERSION, "services": {compose.SERVICE: service},
           "networks": {HOST_NETWORK: {"external": True, "name": "host"}}}
    header = (f"# Rendered by kit for fleet {spec.fleet} (Docker Swarm mode). Do not edit: the next\n"
              f"# `kit rollout` rewrites it. Stack: {stack_name(spec.fleet)}\n")
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def image_of(text: str | None) -> str | None:
    return compose.image_of(text)


def deploy_argv(fleet: str, file) -> list[str]:
    return ["docker", "stack", "deploy", "--compose-file", str(file), "--resolve-image", "never", "--prune",
            stack_name(fleet)]


def deploy(fleet: str, file, manager: str) -> str:
    """`docker stack deploy` against the manager; DockerError with the CLI's output on failure."""
    return compose.run_compose(deploy_argv(fleet, file), manager, timeout=STACK_TIMEOUT)


# ---- reading the swarm -------------------------------------------------------------------


@dataclass(frozen=True)
class NodeTask:
    """The newest task of the fleet's service on one node."""

    node_id: str
    image: str | None = None  # repository@sha256:... the task runs
    state: str | None = None  # Status.State: new ... starting, running, failed, shutdown, rejected
    desired: str | None = None  # DesiredState
    message: str = ""  # Status.Err or Status.Message
    container: str | None = None

    @property
    def running(self) -> bool:
        return self.state == "running" and self.desired == "running"


def task_image(task: dict) -> str | None:
    return (((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Image")) or None


def tasks_by_node(tasks: list[dict]) -> dict[str, NodeTask]:
    """node id -> the task that matters there: the one meant to run, else the newest."""
    out: dict[str, NodeTask] = {}
    order = sorted(tasks, key=lambda t: (t.get("DesiredState") == "running", t.get("UpdatedAt") or ""))
    for t in order:  # later entries win: desired running, then newest
        status = t.get("Status") or {}
        node = t.get("NodeID")
        if not node:
            continue
        out[node] = NodeTask(node_id=node, image=task_image(t), state=status.get("State"), desired=t.get("DesiredState"),
                             message=status.get("Err") or status.get("Message") or "",
                             container=(status.get("ContainerStatus") or {}).get("ContainerID"))
    return out


def update_state(service: dict | None) -> tuple[str | None, str]:
    """(UpdateStatus.State, its message): None when the service never updated."""
    status = (service or {}).get("UpdateStatus") or {}
    return status.get("State"), status.get("Message") or ""


def nodes_down(nodes: list[dict]) -> set[str]:
    return {n["ID"] for n in nodes if ((n.get("Status") or {}).get("State")) != "ready"
            or (n.get("Spec") or {}).get("Availability") != "active"}
