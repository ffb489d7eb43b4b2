"""A real fleet on one machine: Debian's docker-registry on 127.0.0.1 and
extra dockerd instances acting as devices. Used by tests/integration/test_fleet.py
(session fixture) and bench/rollout.py.

Each device is a containerd plus `dockerd --bridge=none --iptables=false
--ip-masq=false --live-restore --containerd <its socket>` with its own
--data-root, --exec-root, --pidfile and unix socket under /tmp/kd<tag>-<n>/
(short: unix socket paths are limited to 108 bytes). Found on docker.io 20.10
/ containerd 1.6: several dockerd may each start their own containerd (config
and socket under <exec-root>/containerd/, no namespace options needed), but
that containerd dies with a SIGKILLed dockerd while the container shims live
on, and the restarted dockerd then times out waiting for its new containerd
("timeout waiting for containerd to start"). So each device runs containerd
as its own process, as JetPack's Ubuntu does (containerd.service), and a
killed dockerd can come back.

Devices are amd64 with no nvidia runtime, so they are `cpu` devices. What
cannot exist here is faked in one visible place: an engine label
(dockerd --label kit.l4t=...) stands in for /etc/nv_tegra_release.

The fixture image (build_fixture_image) is a throwaway stand-in for the
runtime image, for rollout mechanics: a stdlib HTTP server with kit's
fingerprint labels, kit's own HEALTHCHECK probe (healthcheck.py, slot-aware),
/v2/health/ready and a TF-Serving-shaped :predict (y = x/2 + 2), whose health
(FIXTURE_MODE=healthy|never-healthy|crash) is baked into the image's env and
whose port comes from KIT_PORT."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kit.net import free_port
from kit.runtime.serving import healthcheck, reuseport
from testkit.cpu_budget import CpuBudget
from testkit.harness import Harness

REGISTRY_PORT = 5000
OWNER_FILE = Path("/tmp/kit-fleet-registry.json")  # marks a registry this harness started

FIXTURE_SERVER = r'''
import json, os, signal, socket, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn

PORT = int(os.environ.get("KIT_PORT", "8501"))
REUSE_PORT = os.environ.get("KIT_REUSE_PORT") == "1"  # as kit.runtime.serving: share the port
SLOT = os.environ.get("KIT_SLOT", "")
HOST = os.environ.get("KIT_HOST", "0.0.0.0")
NAME = os.environ.get("KIT_MODEL_NAME", "fixture")
VERSION = os.environ.get("FIXTURE_VERSION", "1")
HEALTHY = os.environ.get("FIXTURE_MODE", "healthy") == "healthy"
if os.environ.get("FIXTURE_MODE") == "crash" and "--probe" not in sys.argv:
    sys.exit(3)  # a broken image that dies at start

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # kit's modules copied beside it
if "--probe" in sys.argv:  # as kit's `main --probe`: the image's probe, healthcheck.py
    from healthcheck import main as probe_main
    sys.exit(probe_main([a for a in sys.argv[1:] if a != "--probe"]))


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        if SLOT:
            self.send_header("Kit-Slot", SLOT)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v2/health/ready":
            return self.reply(200 if HEALTHY else 503, {"ready": HEALTHY, "version": VERSION})
        if self.path == "/v1/models/" + NAME:
            return self.reply(200, {"model_version_status": [{"version": VERSION, "state": "AVAILABLE"}]})
        if self.path == "/v1/models/%s/metadata" % NAME:
            sig = {"inputs": {"x": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}, {"size": "1"}]}}},
                   "outputs": {"y": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}, {"size": "1"}]}}}}
            return self.reply(200, {"model_spec": {"name": NAME, "version": VERSION},
                                    "metadata": {"signature_def": {"signature_def": {"serving_default": sig}}}})
        return self.reply(404, {"error": "not found: " + self.path})

    def do_POST(self):
        if self.path != "/v1/models/%s:predict" % NAME:
            return self.reply(404, {"error": "not found: " + self.path})
        if not HEALTHY:
            return self.reply(503, {"error": "not ready"})
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if "inputs" in body:  # columnar request, columnar answer (TF Serving's rule)
            x = body["inputs"]["x"] if isinstance(body["inputs"], dict) else body["inputs"]
            return self.reply(200, {"outputs": [[float(v) / 2 + 2 for v in row] for row in x],
                                    "model_version": VERSION})
        rows = body.get("instances", [])
        return self.reply(200, {"predictions": [[float(v) / 2 + 2 for v in row] for row in rows],
                                "model_version": VERSION})


class Server(ThreadingMixIn, HTTPServer):
    daemon_threads = False  # server_close() joins the requests in flight (the drain)
    allow_reuse_address = True

    def server_bind(self):
        if REUSE_PORT:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        HTTPServer.server_bind(self)

    def drain_backlog(self):
        """Closing a listener resets what waits in its backlog: serve that first."""
        self.socket.setblocking(False)
        while True:
            try:
                request, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            request.setblocking(True)
            self.process_request(request, address)


import time
time.sleep(float(os.environ.get("FIXTURE_START_DELAY") or 0))  # a model that loads slowly
if REUSE_PORT and not HEALTHY:
    # As kit's server: on a shared port, take connections only once ready (here: never).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()
server = Server((HOST, PORT), Handler)
if REUSE_PORT:  # as kit's server once ready: every new connection of the shared port comes here
    from reuseport import steer_to
    steer_to(server.socket)
# PID 1 ignores SIGTERM unless it handles it. Drain as the real server does: stop
# accepting, serve the backlog and the requests in flight, exit.
signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
server.serve_forever(poll_interval=0.05)
server.drain_backlog()
server.server_close()
'''

FIXTURE_DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ENV KIT_MODEL_NAME=fixture KIT_PORT=8501 KIT_HOST=0.0.0.0
# Same code, same build cache hit, same layer digest in every version (the
# directories COPY creates get the build's time, so only a cache hit keeps it).
COPY app/ /opt/fixture/
# kit's own probe (slot-aware through KIT_SLOT), as in the runtime image
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=3 \\
  CMD ["python3", "/opt/fixture/healthcheck.py"]
CMD ["python3", "/opt/fixture/server.py"]
ARG FIXTURE_MODE=healthy
ARG FIXTURE_VERSION=1
ARG FIXTURE_START_DELAY=0
ENV FIXTURE_MODE=${FIXTURE_MODE} FIXTURE_VERSION=${FIXTURE_VERSION} FIXTURE_START_DELAY=${FIXTURE_START_DELAY}
COPY model/ /opt/fixture/model/
"""


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def stop_process(proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM a daemon this harness started and wait up to `timeout` s for it; SIGKILL it if it stays."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:g}s")


def _unmount_under(root: Path) -> None:
    """Lazily unmount anything a daemon left mounted under `root` (deepest first)."""
    prefix = str(root).rstrip("/") + "/"
    with open("/proc/self/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---- registry ----------------------------------------------------------------------------


class Registry:
    """Debian's docker-registry (distribution 2.x) serving a temp dir on 127.0.0.1."""

    def __init__(self, port: int = REGISTRY_PORT, host: str = "127.0.0.1"):
        self.port = port
        self.host = host  # the address it listens on (a bridge's, for the swarm harness)
        self.proc: subprocess.Popen | None = None
        self.dir: Path | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> "Registry":
        if _port_open(self.port):
            owner = self._owner()
            if owner and owner.get("port") == self.port and not _pid_alive(owner.get("session", 0)) \
                    and _pid_alive(owner["pid"]):
                # ours, orphaned by a session that died without teardown: replace it
                os.kill(owner["pid"], signal.SIGTERM)
                _wait(lambda: not _port_open(self.port), 10, "orphaned registry exit")
            else:
                self.port = free_port()  # another live session's, or not ours: leave it alone
        self.dir = Path(tempfile.mkdtemp(prefix="kit-registry-"))
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.dir / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.address},
        }
        (self.dir / "config.yml").write_text(yaml.safe_dump(config))
        self._spawn()
        return self

    def _spawn(self) -> None:
        log = open(self.dir / "registry.log", "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.dir / "config.yml")],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        _wait(self.answers, 30, f"registry on {self.address}")
        if self.port == REGISTRY_PORT:
            OWNER_FILE.write_text(json.dumps({"pid": self.proc.pid, "session": os.getpid(), "port": self.port,
                                              "dir": str(self.dir)}))

    def _owner(self) -> dict | None:
        try:
            return json.loads(OWNER_FILE.read_text())
        except (OSError, ValueError):
            return None

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/v2/", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """Stop the registry (a registry outage, or teardown)."""
        stop_process(self.proc, 10)
        _wait(lambda: not _port_open(self.port), 10, "registry port closed")

    def restart(self) -> None:
        """Start again on the same port and storage (after stop())."""
        self._spawn()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        owner = self._owner()
        if owner and owner.get("dir") == str(self.dir):
            with contextlib.suppress(OSError):
                OWNER_FILE.unlink()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    # -- reading the registry directly (benchmarks: bytes a pull transfers) --

    def _get(self, path: str, accept: str | None = None) -> tuple[bytes, dict]:
        req = urllib.request.Request(self.url + path)
        if accept:
            req.add_header("Accept", accept)
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read(), dict(r.headers)

    def manifest(self, repository: str, reference: str) -> dict:
        body, _ = self._get(f"/v2/{repository}/manifests/{reference}",
                            "application/vnd.docker.distribution.manifest.v2+json")
        return json.loads(body)

    def layer_sizes(self, repository: str, reference: str) -> dict[str, int]:
        """Compressed layer blob digest -> size, as a pull transfers them."""
        return {layer["digest"]: int(layer["size"]) for layer in self.manifest(repository, reference)["layers"]}


# ---- devices -----------------------------------------------------------------------------


@dataclass
class Device:
    """One device: its own containerd and a dockerd using it, like a JetPack
    (Ubuntu) host where containerd.service and docker.service are separate.

    dockerd runs with --live-restore, the setting kit recommends for devices:
    measured here, a dockerd killed WITHOUT it comes back and kills the model
    container (exit 137) without restarting it, although restart is
    unless-stopped; with it, the model keeps serving while dockerd is down and
    dockerd reattaches in well under a second."""

    name: str
    root: Path
    port: int  # the model's port on this device (host network)
    engine_labels: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    containerd: subprocess.Popen | None = None
    budget: CpuBudget | None = None  # its daemons and containers in one cgroup (testkit/cpu_budget.py)
    cpus: float | None = None  # that group's limit in cores (None: none)

    @property
    def sock(self) -> Path:
        return self.root / "d.sock"

    @property
    def containerd_sock(self) -> Path:
        return self.root / "c.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.sock}"

    @property
    def pidfile(self) -> Path:
        return self.root / "d.pid"

    def wrap(self, argv: list[str]) -> list[str]:
        """How the device's daemons are started (the swarm harness enters a netns)."""
        return argv

    def argv(self) -> list[str]:
        argv = ["dockerd", "--bridge=none", "--iptables=false", "--ip-masq=false", "--live-restore",
                "--containerd", str(self.containerd_sock),
                "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "x"),
                "--pidfile", str(self.pidfile), "-H", self.host, "--log-level", "warn"]
        for key, value in self.engine_labels.items():
            argv += ["--label", f"{key}={value}"]
        if self.budget is not None:
            argv += ["--cgroup-parent", self.budget.cgroup_parent]
        return argv

    def popen(self, argv: list[str], log) -> subprocess.Popen:
        """A daemon of this device, in its CPU budget when it has one."""
        return subprocess.Popen(self.wrap(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=self.budget.enter if self.budget else None)

    def _start_containerd(self) -> None:
        if self.containerd is not None and self.containerd.poll() is None:
            return
        config = self.root / "containerd.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.root / "ctrd"}"\n'
            f'state = "{self.root / "cs"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.containerd_sock}"\n')
        log = open(self.root / "containerd.log", "ab")
        self.containerd = self.popen(["containerd", "--config", str(config), "--log-level", "warn"], log)
        log.close()
        _wait(self.containerd_sock.exists, 30, f"containerd for {self.name}")

    def start(self) -> "Device":
        """Start the device (containerd if needed, then dockerd)."""
        self.root.mkdir(parents=True, exist_ok=True)
        assert len(str(self.sock)) < 100, self.sock
        if self.budget is not None:
            self.budget.create(self.cpus)
        self._start_containerd()
        log = open(self.root / "dockerd.log", "ab")
        self.proc = self.popen(self.argv(), log)
        log.close()
        _wait(self.answers, 60, f"dockerd for {self.name}", interval=0.2)
        return self

    def answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"dockerd for {self.name} exited: "
                               + (self.root / "dockerd.log").read_text(errors="replace")[-2000:])
        if not self.sock.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.sock))
                s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
                return b"OK" in s.recv(1024)
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL dockerd (a crash); containerd and the containers live on."""
        if self.running:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM dockerd (with --live-restore its containers keep running)."""
        stop_process(self.proc, timeout)

    def close(self) -> None:
        """Teardown: remove every container, stop dockerd and containerd, unmount, delete."""
        with contextlib.suppress(Exception):
            if not self.running and self.root.exists():
                self.start()
        with contextlib.suppress(Exception):
            subprocess.run(f"docker -H {self.host} ps -aq | xargs -r docker -H {self.host} rm -f",
                           shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
        self.stop()
        stop_process(self.containerd, 30)
        self.release()
        if self.budget is not None:
            self.budget.remove()
        _unmount_under(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def release(self) -> None:
        """What else the device holds once its daemons stopped (a namespace, for RemoteDevice)."""

    def client(self):
        from kit.docker_api import connect

        return connect(self.host)


@dataclass
class RemoteDevice(Device):
    """A device engine that does NOT see this machine's files, as a Nano on the network would not:
    its containerd and dockerd run in their own mount namespace, where each directory in `hidden`
    is an empty tmpfs (on this machine they keep their content). A bind mount of a path under
    them fails there ("bind source path does not exist"). Besides its unix socket the dockerd
    listens on tcp://127.0.0.1:tcp_port (plain HTTP on loopback: a test engine only)."""

    hidden: tuple = ()
    tcp_port: int = 0
    holder: subprocess.Popen | None = None  # `sleep infinity` keeping the namespace alive

    @property
    def tcp_host(self) -> str:
        return f"tcp://127.0.0.1:{self.tcp_port}"

    def start(self) -> "RemoteDevice":
        if self.holder is None or self.holder.poll() is not None:
            mounts = "".join(f"mount -t tmpfs -o size=1m,mode=0755 kit-hidden {shlex.quote(str(d))} && "
                             for d in self.hidden)
            self.holder = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", mounts + "echo ready && exec sleep infinity"],
                stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
            line = self.holder.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"could not make the mount namespace for {self.name} (exit {self.holder.wait(10)})")
        return super().start()

    def wrap(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--mount=/proc/{self.holder.pid}/ns/mnt", "--"] + argv

    def argv(self) -> list[str]:
        return super().argv() + ["-H", self.tcp_host]

    def release(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait()


class SshEndpoint:
    """Debian's sshd on 127.0.0.1:port (its own config, host key and a throwaway client key) whose
    one authorized key may only run `docker -H <device socket> system dial-stdio`: what
    `ssh://root@127.0.0.1:port` needs from a device for the docker SDK's ssh transport.

    The ssh client reads ~/.ssh/config from the passwd home, not $HOME, so `env()` puts a
    two-line `ssh` first on PATH that adds `-F <this endpoint's client config>` (identity,
    known_hosts with the host key, BatchMode) and execs the real /usr/bin/ssh."""

    def __init__(self, root: Path, device_host: str, port: int | None = None):
        self.root = Path(root)
        self.device_host = device_host
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def start(self) -> "SshEndpoint":
        r = self.root
        (r / "bin").mkdir(parents=True, exist_ok=True)
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(r / key)], check=True)
        client_pub = (r / "client_key.pub").read_text().strip()
        (r / "authorized_keys").write_text(
            f'command="docker -H {self.device_host} system dial-stdio",restrict {client_pub}\n')
        (r / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {r / 'host_key'}\n"
            f"AuthorizedKeysFile {r / 'authorized_keys'}\nPidFile {r / 'sshd.pid'}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n")
        host_pub = (r / "host_key.pub").read_text().split()
        (r / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (r / "ssh_config").write_text(
            f"Host 127.0.0.1\n  IdentityFile {r / 'client_key'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {r / 'known_hosts'}\n  StrictHostKeyChecking yes\n  BatchMode yes\n")
        wrapper = r / "bin" / "ssh"
        wrapper.write_text(f"#!/bin/sh\nexec /usr/bin/ssh -F {r / 'ssh_config'} \"$@\"\n")
        wrapper.chmod(0o755)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        log = open(r / "sshd.log", "ab")
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(r / "sshd_config")], stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        _wait(lambda: self.proc.poll() is not None or _port_open(self.port), 30, f"sshd on 127.0.0.1:{self.port}")
        if self.proc.poll() is not None:
            raise RuntimeError("sshd exited: " + (r / "sshd.log").read_text(errors="replace")[-2000:])
        return self

    def env(self) -> dict:
        """The environment a client needs to reach `host` (the ssh wrapper first on PATH)."""
        return {"PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}

    def close(self) -> None:
        stop_process(self.proc, 10)
        shutil.rmtree(self.root, ignore_errors=True)


class Fleet(Harness):
    """Registry + devices; a context manager that tears everything down."""

    def __init__(self, n_devices: int = 3, registry_port: int = REGISTRY_PORT, tag: str | None = None,
                 engine_labels: dict | None = None, budget: bool = False, cpus: float | None = None):
        """engine_labels: device name -> {label: value} given to that dockerd (--label).
        budget: each device in a CPU budget of its own, of `cpus` cores (None: unlimited until
        device.budget.set() says otherwise; testkit/cpu_budget.py)."""
        tag = tag or str(os.getpid() % 100000)
        self.registry = Registry(registry_port)
        # Model ports picked free per session: a concurrent session (another
        # developer's test run) has its own devices on the same host network.
        self.devices = [Device(f"dev-{i + 1}", Path(f"/tmp/kd{tag}-{i + 1}"), free_port(),
                               dict((engine_labels or {}).get(f"dev-{i + 1}", {})),
                               budget=CpuBudget(f"kit-kd{tag}-{i + 1}") if budget or cpus else None, cpus=cpus)
                        for i in range(n_devices)]

    def start(self) -> None:
        self.registry.start()
        for d in self.devices:
            d.start()

    def close(self) -> None:
        for d in self.devices:
            with contextlib.suppress(Exception):
                d.close()
        self.registry.close()

    def device(self, name: str) -> Device:
        return next(d for d in self.devices if d.name == name)

    def write_fleet(self, path: Path, name: str, image: str, devices: list[dict] | None = None,
                    **rollout) -> Path:
        """A fleet manifest (kind: Fleet) for these devices; `devices` overrides entries."""
        entries = devices if devices is not None else [
            {"name": d.name, "host": d.host, "device": "cpu", "port": d.port} for d in self.devices]
        doc = {"apiVersion": "kit/v1", "kind": "Fleet", "metadata": {"name": name}, "image": image,
               "devices": entries,
               "rollout": {"canary": 1, "max_parallel": 3, "health_timeout": "60s", "on_failure": "rollback",
                           **rollout}}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path


# ---- the fixture image -------------------------------------------------------------------


# The fixture's labels for start-first updates: it shares its port (kit.reuse_port) and a
# copy needs 64 MiB + kit's 1 GiB reserve, so two fit on any test machine.
START_FIRST_LABELS = {"kit.reuse_port": "true", "kit.memory_limit": str(64 << 20)}


def fixture_labels(version: str, model_digest: str, **overrides) -> dict:
    labels = {
        "org.opencontainers.image.title": "fixture",
        "org.opencontainers.image.version": version,
        "kit.device": "cpu", "kit.l4t": "none", "kit.jetpack": "none", "kit.tensorrt": "none",
        "kit.cuda": "none", "kit.tensorflow": "none", "kit.gpu_arch": "none", "kit.precision": "native",
        "kit.batch_sizes": "1", "kit.model_digest": model_digest, "kit.optimization": "native",
        "kit.engines": "0", "kit.stack": "cpu",
    }
    labels.update(overrides)
    return labels


def build_fixture_image(engine, ref: str, version: str = "1", mode: str = "healthy", model_bytes: int = 1 << 20,
                        base: str | None = None, labels: dict | None = None, start_delay: float = 0) -> str:
    """Build the fixture image as `ref` on `engine`; returns ref. The model layer
    (last) is `model_bytes` of data derived from `version`, so two versions share
    every layer but the last (a model-only update)."""
    if base is None:
        from kit.build.base import ensure_debian_base

        base = ensure_debian_base(engine)
    ctx = Path(tempfile.mkdtemp(prefix="kit-fixture-"))
    try:
        (ctx / "app").mkdir()
        (ctx / "app" / "server.py").write_text(FIXTURE_SERVER)
        # kit's own steering of a shared port (start-first) and its own health probe, the
        # modules the runtime image runs (both stdlib only, standalone)
        shutil.copy(reuseport.__file__, ctx / "app" / "reuseport.py")
        shutil.copy(healthcheck.__file__, ctx / "app" / "healthcheck.py")
        (ctx / "Dockerfile").write_text(FIXTURE_DOCKERFILE)
        (ctx / "model").mkdir()
        seed = hashlib.sha256(f"fixture-model-{version}".encode()).digest()
        blob = bytearray()
        while len(blob) < model_bytes:  # incompressible, so blob sizes reflect model_bytes
            seed = hashlib.sha256(seed).digest()
            blob += seed
        (ctx / "model" / "weights.bin").write_bytes(bytes(blob[:model_bytes]))
        for path in [ctx, *ctx.rglob("*")]:  # fixed modes and mtimes: same content, same layer digest
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
            os.utime(path, (1_000_000_000, 1_000_000_000))
        digest = "sha256:" + hashlib.sha256(bytes(blob[:model_bytes])).hexdigest()
        all_labels = fixture_labels(version, digest, **(labels or {}))
        engine.build(str(ctx), tag=ref, buildargs={"BASE_IMAGE": base, "FIXTURE_MODE": mode,
                                                    "FIXTURE_VERSION": version,
                                                    "FIXTURE_START_DELAY": str(start_delay)}, labels=all_labels)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return ref


# ---- probing a device's model ------------------------------------------------------------


def ready(port: int, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=timeout) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


def predict(port: int, name: str, instances, timeout: float = 5) -> dict:
    data = json.dumps({"instances": instances}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/{name}:predict", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Hammer:
    """While it is open, one client per device sends predictions back to back (a new
    connection each, every `interval` s) and keeps every answer and every failure."""

    def __init__(self, ports: dict, model: str, instances, interval: float = 0.02, timeout: float = 5):
        import threading

        self.ports, self.model, self.instances = ports, model, instances
        self.interval, self.timeout = interval, timeout
        self.answers: dict = {name: [] for name in ports}  # name -> [(monotonic, model_version)]
        self.failures: dict = {name: [] for name in ports}  # name -> [(monotonic, error)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(name,), daemon=True) for name in ports]

    def _run(self, name: str) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                body = self.predict(name)
                self.answers[name].append((time.monotonic(), str(body.get("model_version"))))
            except Exception as e:  # every kind of failure counts: refused, reset, 5xx, timeout
                self.failures[name].append((time.monotonic(), f"{type(e).__name__}: {e}"))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def predict(self, name: str) -> dict:
        """One prediction from the device `name` (on this host: 127.0.0.1 at its port)."""
        return predict(self.ports[name], self.model, self.instances, timeout=self.timeout)

    def __enter__(self) -> "Hammer":
        for t in self._threads:
            t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.3)
        self._stop.set()
        for t in self._threads:
            t.join()

    def versions(self, name: str) -> list:
        """The model versions that answered, in order, repeats folded."""
        out: list = []
        for _, v in self.answers[name]:
            if not out or out[-1] != v:
                out.append(v)
        return out

    def longest_gap(self, name: str) -> float:
        """Seconds between two answered predictions, at most (failed requests fall inside gaps)."""
        ts = [t for t, _ in self.answers[name]]
        return max((b - a for a, b in zip(ts, ts[1:])), default=float("nan"))


class ProcessHammer(Hammer):
    """The same clients in a process of their own, as a fleet's clients are other machines: in
    kit's process their threads would hold the GIL kit's rollout threads need. Timestamps are
    CLOCK_MONOTONIC, the same clock in both processes."""

    def __enter__(self) -> "ProcessHammer":
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=self._serve, args=(child,), daemon=True)
        self._proc.start()
        if not self._pipe.poll(30):
            raise RuntimeError("the client process did not start")
        self._pipe.recv()
        return self

    def _serve(self, pipe) -> None:
        Hammer.__enter__(self)
        pipe.send("started")
        pipe.recv()  # until told to stop
        Hammer.__exit__(self)
        pipe.send((self.answers, self.failures))

    def __exit__(self, *exc) -> None:
        self._pipe.send("stop")
        self.answers, self.failures = self._pipe.recv()
        self._proc.join(30)
