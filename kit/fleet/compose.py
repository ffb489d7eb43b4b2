"""The compose file kit renders for a device, and running compose against a
device's Docker endpoint.

Format: the Compose Specification without a `version:` key. docker-compose
>= 1.27 reads it (and accepts `runtime:` there; 1.17-1.26 would need file
format 2.3+, compose 3.x has no `runtime` at all), and so does Compose v2.
Checked against docker-compose 1.29.2's own schema (`config -q`)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from kit import labels as lb
from kit.errors import DockerError

SERVICE = "model"
# SD cards wear out: cap the json-file log at 3 x 10 MB per container.
LOG_MAX_SIZE = "10m"
LOG_MAX_FILE = "3"
HEALTH_INTERVAL = "5s"
HEALTH_TIMEOUT = "10s"
HEALTH_RETRIES = 3
# The image's own probe when it has none (every kit runtime image has one).
DEFAULT_HEALTH_TEST = ["CMD", "python3", "-m", "kit.runtime.serving.main", "--probe"]
COMPOSE_TIMEOUT = 600  # seconds for one compose call (pulls happen before, via the API)


# Start-first updates run the new container beside the old one: each in its own compose
# project ("slot"), so `compose up` of one never recreates the other. Blue is the project
# kit always used (kit-<fleet>), green the second one (kit-<fleet>-green).
BLUE, GREEN = "blue", "green"
SLOTS = (BLUE, GREEN)


def project_name(fleet: str, slot: str = BLUE) -> str:
    return f"kit-{fleet}" if slot == BLUE else f"kit-{fleet}-{slot}"


def other_slot(slot: str | None) -> str:
    return GREEN if slot == BLUE else BLUE


@dataclass(frozen=True)
class ServiceSpec:
    """Everything a device's compose file says."""

    fleet: str
    device: str
    image: str  # repository@sha256:...
    port: int
    nvidia: bool  # runtime: nvidia (Jetson profiles)
    health_test: tuple = tuple(DEFAULT_HEALTH_TEST)
    start_period: float = 300.0  # seconds before failed probes count
    mem_limit: int | None = None  # bytes
    grpc_port: int | None = None  # the image's KIT_GRPC_PORT (0: off); None: the image says nothing
    reuse_port: bool = False  # the image can start beside an old copy (label kit.reuse_port)
    slot: str = BLUE  # the compose project this file runs in


def healthcheck(spec: ServiceSpec) -> dict:
    return {
        "test": list(spec.health_test),
        "interval": HEALTH_INTERVAL,
        "timeout": HEALTH_TIMEOUT,
        "retries": HEALTH_RETRIES,
        "start_period": f"{int(spec.start_period)}s",
    }


def logging_options() -> dict:
    return {"driver": "json-file", "options": {"max-size": LOG_MAX_SIZE, "max-file": LOG_MAX_FILE}}


def render(spec: ServiceSpec) -> str:
    service: dict = {
        "image": spec.image,
        "network_mode": "host",
        "restart": "unless-stopped",
    }
    if spec.nvidia:
        service["runtime"] = "nvidia"
    service["environment"] = {"KIT_PORT": str(spec.port)}
    if spec.grpc_port is not None:
        service["environment"]["KIT_GRPC_PORT"] = str(spec.grpc_port)
    if spec.reuse_port:
        service["environment"]["KIT_REUSE_PORT"] = "1"
    if spec.reuse_port or spec.slot != BLUE:
        service["environment"]["KIT_SLOT"] = spec.slot
    service["healthcheck"] = healthcheck(spec)
    service["logging"] = logging_options()
    if spec.mem_limit:
        service["mem_limit"] = int(spec.mem_limit)
    service["labels"] = {lb.FLEET: spec.fleet, lb.FLEET_DEVICE: spec.device}
    header = (f"# Rendered by kit for device {spec.device} of fleet {spec.fleet}. Do not edit:\n"
              f"# the next `kit rollout` rewrites it. Project: {project_name(spec.fleet, spec.slot)}\n")
    return header + yaml.safe_dump({"services": {SERVICE: service}}, sort_keys=False, default_flow_style=False)


def image_of(text: str | None) -> str | None:
    """The image a rendered compose file runs (None for no file)."""
    if not text:
        return None
    try:
        return yaml.safe_load(text)["services"][SERVICE]["image"]
    except (yaml.YAMLError, KeyError, TypeError):
        return None


def slot_of(text: str | None) -> str:
    """The slot (compose project) a rendered compose file runs in; blue for files without one."""
    try:
        env = yaml.safe_load(text)["services"][SERVICE].get("environment") or {}
    except (yaml.YAMLError, KeyError, TypeError, AttributeError):
        return BLUE
    return env.get("KIT_SLOT") if env.get("KIT_SLOT") in SLOTS else BLUE


def compose_argv(fleet: str, file: Path, *args: str, slot: str = BLUE) -> list[str]:
    from kit.docker_api import compose_command

    return compose_command() + ["-p", project_name(fleet, slot), "-f", str(file), *args]


def up_argv(fleet: str, file: Path, force_recreate: bool = False, slot: str = BLUE) -> list[str]:
    extra = ["--force-recreate"] if force_recreate else []
    return compose_argv(fleet, file, "up", "-d", "--remove-orphans", *extra, slot=slot)


def down_argv(fleet: str, file: Path, slot: str = BLUE) -> list[str]:
    return compose_argv(fleet, file, "down", slot=slot)


def run_compose(argv: list[str], endpoint: str, timeout: float = COMPOSE_TIMEOUT) -> str:
    """Run a compose command against `endpoint` (DOCKER_HOST); DockerError with
    compose's own output on failure."""
    env = dict(os.environ)
    env["DOCKER_HOST"] = endpoint
    env.pop("DOCKER_CONTEXT", None)  # a context would win over DOCKER_HOST in Compose v2
    env.setdefault("COMPOSE_HTTP_TIMEOUT", "120")
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              env=env, timeout=timeout, text=True)
    except subprocess.TimeoutExpired as e:
        raise DockerError(f"`{' '.join(argv[:1] + argv[-3:])}` on {endpoint} did not finish in {timeout:g}s") from e
    except OSError as e:
        raise DockerError(f"cannot run {argv[0]}: {e}") from e
    if proc.returncode != 0:
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()][-15:]
        raise DockerError(f"compose failed on {endpoint} (exit {proc.returncode}): "
                          f"{lines[-1] if lines else 'no output'}", details=lines[:-1])
    return proc.stdout
