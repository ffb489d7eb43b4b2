"""A real Docker Swarm of three "devices" on one machine, each its own network
host. Used by tests/integration/test_swarm.py and bench/rollout.py.

    bridge ktsw<T>br 10.214.T.1/24 (host namespace; the registry listens here)
      +-- veth -- netns kit-test-swarm-<tag>-n1  10.214.T.11  containerd + dockerd (manager)
      +-- veth -- netns kit-test-swarm-<tag>-n2  10.214.T.12  containerd + dockerd (worker)
      +-- veth -- netns kit-test-swarm-<tag>-n3  10.214.T.13  containerd + dockerd (worker)

Each node's containerd and dockerd are started through
`nsenter --net=/run/netns/NAME`, entering the network namespace only: `ip netns
exec` would also remount /sys, and dockerd would then not find the cgroups.
A container on the `host` network shares its node's namespace, so every node
serves the model on the same port at its own address, as separate devices do.
dockerd listens on its unix socket (kit's endpoint for the device in tests)
and on tcp://<node address>:2375 (so a rollout reaches the model's port at the
endpoint's host name, as on a real fleet). The registry (Debian's
docker-registry) listens on the bridge address and is in every node's
--insecure-registry list. Images are built on a node's engine, which reaches
the registry, and pushed from there.

Faked, because no Jetson exists: engine labels (kit.l4t=...) stand in for
/etc/nv_tegra_release, as in fleet_harness. Everything else is real: swarm
init/join, raft, the dispatcher, rolling updates, health checks.

Needs root (ip netns, veth, a bridge). Subnet 10.214.T.0/24 with T picked so no
route on this host already covers it; names carry the harness's tag and are
removed on close()."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from testkit import fleet_harness as fh
from kit.net import free_port
from testkit.harness import Harness

SUBNET_PREFIX = "10.214"  # issue 14; a /24 of it per harness
NAME_PREFIX = "kit-test-swarm"
DOCKER_TCP_PORT = 2375


def _sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _free_subnet(start: int) -> int:
    routes = _sh("ip", "-4", "route", "show", "table", "all").stdout
    used = set()
    for line in routes.splitlines():
        word = line.split()[0] if line.split() else ""
        with contextlib.suppress(ValueError):
            used.add(ipaddress.ip_network(word, strict=False))
    for i in range(250):
        t = (start + i) % 250 + 1
        net = ipaddress.ip_network(f"{SUBNET_PREFIX}.{t}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return t
    raise RuntimeError(f"no free /24 in {SUBNET_PREFIX}.0.0/16")


@dataclass
class Node(fh.Device):
    """A device in its own network namespace (a fleet_harness.Device that
    starts its daemons through nsenter)."""

    netns: str = ""
    address: str = ""  # the node's IPv4 address on the bridge
    insecure_registry: str = ""
    extra_args: list = field(default_factory=list)

    @property
    def tcp_host(self) -> str:
        return f"tcp://{self.address}:{DOCKER_TCP_PORT}"

    def wrap(self, argv: list[str]) -> list[str]:
        # containerd too: the shims, runc and the containers on the host
        # network must live in the node's namespace.
        return ["nsenter", f"--net=/run/netns/{self.netns}"] + list(argv)

    def argv(self) -> list[str]:
        # No --live-restore: dockerd refuses swarm mode with it.
        argv = [a for a in super().argv() if a != "--live-restore"]
        return argv + ["-H", self.tcp_host, "--insecure-registry", self.insecure_registry,
                                 *self.extra_args]


class Swarm(Harness):
    """Bridge + netns + three nodes in one swarm + a registry on the bridge address.
    A context manager; close() removes all of it."""

    def __init__(self, n_nodes: int = 3, tag: str | None = None, engine_labels: dict | None = None):
        self.tag = tag or str(os.getpid() % 100000)
        self.t = _free_subnet(int(self.tag) % 250)
        self.bridge = f"ktsw{self.t}br"
        self.gateway = f"{SUBNET_PREFIX}.{self.t}.1"
        self.root = Path(f"/tmp/{NAME_PREFIX}-{self.tag}")
        self.registry = fh.Registry(free_port(), host=self.gateway)
        self.model_port = 8501  # the same on every node: each has its own network
        self.nodes = [
            Node(name=f"dev-{i + 1}", root=self.root / f"n{i + 1}", port=self.model_port,
                 engine_labels=dict((engine_labels or {}).get(f"dev-{i + 1}", {})),
                 netns=f"{NAME_PREFIX}-{self.tag}-n{i + 1}", address=f"{SUBNET_PREFIX}.{self.t}.{11 + i}")
            for i in range(n_nodes)]
        self._links: list[str] = []

    @property
    def devices(self):
        return self.nodes

    @property
    def manager(self) -> Node:
        return self.nodes[0]

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    # -- network --

    def _network(self) -> None:
        _sh("ip", "link", "add", self.bridge, "type", "bridge")
        self._links.append(self.bridge)
        _sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _sh("ip", "link", "set", self.bridge, "up")
        for i, n in enumerate(self.nodes):
            host_end, inner = f"ktsw{self.t}n{i + 1}", f"ktsw{self.t}p{i + 1}"
            _sh("ip", "netns", "add", n.netns)
            _sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", inner)
            self._links.append(host_end)
            _sh("ip", "link", "set", host_end, "master", self.bridge)
            _sh("ip", "link", "set", host_end, "up")
            _sh("ip", "link", "set", inner, "netns", n.netns)
            ns = ["ip", "-n", n.netns]
            _sh(*ns, "link", "set", "lo", "up")
            _sh(*ns, "link", "set", inner, "name", "eth0")
            _sh(*ns, "addr", "add", f"{n.address}/24", "dev", "eth0")
            _sh(*ns, "link", "set", "eth0", "up")
            _sh(*ns, "route", "add", "default", "via", self.gateway)

    def _teardown_network(self) -> None:
        for n in self.nodes:
            _sh("ip", "netns", "delete", n.netns, check=False)
        for link in reversed(self._links):
            _sh("ip", "link", "delete", link, check=False)

    # -- lifecycle --

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._network()
        self.registry.start()
        for n in self.nodes:
            n.insecure_registry = self.registry.address
        # In parallel: dockerd 20.10 waits 15 s when it listens on TCP without TLS.
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n.start(), self.nodes))
        m = self.manager
        _sh("docker", "-H", m.host, "swarm", "init", "--advertise-addr", m.address,
            "--listen-addr", f"{m.address}:2377")
        token = _sh("docker", "-H", m.host, "swarm", "join-token", "-q", "worker").stdout.strip()
        for n in self.nodes[1:]:
            _sh("docker", "-H", n.host, "swarm", "join", "--token", token, "--advertise-addr", n.address,
                "--listen-addr", f"{n.address}:2377", f"{m.address}:2377")
        fh._wait(lambda: self.ready_nodes() == len(self.nodes), 60, "every node ready in the swarm")

    def ready_nodes(self) -> int:
        out = _sh("docker", "-H", self.manager.host, "node", "ls", "--format", "{{.Status}}", check=False).stdout
        return sum(1 for line in out.split() if line == "Ready")

    def node_state(self, name: str) -> str:
        """ready | down | unknown, as the manager sees the node."""
        node_id = _sh("docker", "-H", self.node(name).host, "info", "--format", "{{.Swarm.NodeID}}",
                      check=False).stdout.strip()
        if not node_id:
            return "unknown"
        out = _sh("docker", "-H", self.manager.host, "node", "inspect", node_id, "--format", "{{.Status.State}}",
                  check=False).stdout.strip()
        return out or "unknown"

    def close(self) -> None:
        for n in self.nodes:
            with contextlib.suppress(Exception):
                if not n.running and n.root.exists():
                    n.start()
        with contextlib.suppress(Exception):
            for s in _sh("docker", "-H", self.manager.host, "service", "ls", "-q", check=False).stdout.split():
                _sh("docker", "-H", self.manager.host, "service", "rm", s, check=False)
        for n in reversed(self.nodes):
            with contextlib.suppress(Exception):
                _sh("docker", "-H", n.host, "swarm", "leave", "--force", check=False, timeout=60)
            with contextlib.suppress(Exception):
                n.close()
        with contextlib.suppress(Exception):
            self.registry.close()
        self._teardown_network()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- images --

    def load_image(self, engine, ref: str, node: Node | None = None) -> None:
        """Copy an image from `engine` (the host's) onto a node (docker save | docker load)."""
        node = node or self.manager
        save = subprocess.Popen(["docker", "-H", engine.host, "save", ref], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", node.host, "load", "-q"], stdin=save.stdout,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise RuntimeError(f"copying {ref} to {node.name} failed: {load.stderr.strip()}")

    def write_fleet(self, path: Path, name: str, image: str, devices: list[dict] | None = None,
                    **rollout) -> Path:
        """A fleet manifest with `swarm: {manager: ...}` for these nodes (tcp endpoints)."""
        entries = devices if devices is not None else [
            {"name": n.name, "host": n.tcp_host, "device": "cpu", "port": n.port} for n in self.nodes]
        doc = {"apiVersion": "kit/v1", "kind": "Fleet", "metadata": {"name": name}, "image": image,
               "swarm": {"manager": self.manager.tcp_host}, "devices": entries,
               "rollout": {"canary": 1, "max_parallel": 3, "health_timeout": "60s", "on_failure": "rollback",
                           **rollout}}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path


def predict(address: str, port: int, name: str, instances, timeout: float = 5) -> dict:
    import json
    import urllib.request

    data = json.dumps({"instances": instances}).encode()
    req = urllib.request.Request(f"http://{address}:{port}/v1/models/{name}:predict", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class NodeHammer(fh.Hammer):
    """fleet_harness.Hammer against swarm nodes: one client per node, each at the node's own
    address (every node serves on the same port in its own network namespace)."""

    def __init__(self, nodes, model: str, instances, port: int | None = None, **kw):
        super().__init__({n.name: port or n.port for n in nodes}, model, instances, **kw)
        self.addresses = {n.name: n.address for n in nodes}

    def predict(self, name: str) -> dict:
        return predict(self.addresses[name], self.ports[name], self.model, self.instances, timeout=self.timeout)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling; report the last error
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:g}s (last: {last!r})")
