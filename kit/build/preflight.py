"""Host preflight for `kit build`: can this host build and optimize this model?

Checks, in order, each failure a PreflightError that says what to do:
  engine   the Docker engine answers
  l4t      (Jetson profiles) /etc/nv_tegra_release parses and matches the
           manifest's pinned L4T: engines are tied to the host's TensorRT,
           which the nvidia runtime mounts into the container from the host
  nvidia   (Jetson profiles) the nvidia runtime is registered with the engine
  memory   (Jetson profiles) RAM + swap available leave room for
           optimize.memory_limit plus kit's reserve
  disk     free disk under the engine's data root and the output dir covers
           the images and the optimized model

The facts are gathered first (HostFacts), then judged by a pure function, so
the rules are tested on real files and real `docker info` answers alike.
KIT_NV_TEGRA_RELEASE overrides the release file's path (for tests: there is
no Jetson on CI)."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from kit.errors import DockerError, PreflightError
from kit.profiles import MEMORY_RESERVE_BYTES, parse_nv_tegra_release
from kit.units import format_size

NV_TEGRA_RELEASE = "/etc/nv_tegra_release"
NV_TEGRA_RELEASE_ENV = "KIT_NV_TEGRA_RELEASE"
MEMINFO = "/proc/meminfo"

# Disk needed beyond the model itself: the runtime image's config and the
# kit layer are small; this covers the build contexts and the engine's scratch.
DISK_MARGIN_BYTES = 1 << 30
# A base image that is not present yet must be pulled (l4t-tensorflow r32.4.4
# is about 2.5 GB unpacked).
BASE_IMAGE_ESTIMATE_BYTES = 3 << 30

_BOARD_RE = re.compile(r"BOARD:\s*([A-Za-z0-9_]+)")


def release_file() -> Path:
    return Path(os.environ.get(NV_TEGRA_RELEASE_ENV) or NV_TEGRA_RELEASE)


def read_l4t(path: Path | None = None) -> tuple[str | None, str]:
    """(release or None, what was read or why not) from the nv_tegra_release file."""
    path = Path(path) if path else release_file()
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return None, f"{path} does not exist: this host is not a Jetson running L4T"
    except OSError as e:
        return None, f"cannot read {path}: {e.strerror or e}"
    try:
        release = parse_nv_tegra_release(text)
    except ValueError:
        first = text.strip().splitlines()[0] if text.strip() else "(empty)"
        return None, f"{path} is not an L4T release file (first line: {first[:120]!r})"
    board = _BOARD_RE.search(text)
    return release, f"L4T {release}" + (f" ({board.group(1)})" if board else "") + f" from {path}"


def read_meminfo(path: str | Path = MEMINFO) -> dict[str, int]:
    """/proc/meminfo as bytes per key ("MemAvailable", "SwapFree", ...)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            continue
        factor = 1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1
        out[key.strip()] = int(parts[0]) * factor
    return out


def tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem holding `path` (its nearest existing parent); None if unknowable."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


# ---- facts ----------------------------------------------------------------------


@dataclass(frozen=True)
class HostFacts:
    """What preflight judges. `engine_error` set means the engine did not answer."""

    engine_error: str | None = None
    engine_host: str = ""
    engine_version: str = ""
    engine_architecture: str = ""
    runtimes: tuple = ()
    l4t: str | None = None
    l4t_detail: str = ""
    mem_available: int | None = None  # bytes; None: unknown
    swap_free: int | None = None
    memory_detail: str = ""  # where the memory figures come from, when not this host's /proc/meminfo
    model_bytes: int = 0
    base_present: bool = True
    disk: dict = field(default_factory=dict)  # label -> free bytes (None: unknown)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    hint: str | None = None


@dataclass(frozen=True)
class PreflightResult:
    checks: tuple  # of Check

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> list[dict]:
        return [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks]


def gather_facts(manifest, engine=None, engine_error: str | None = None, output_dir: Path | None = None,
                 meminfo: str | Path = MEMINFO) -> HostFacts:
    """Collect the facts for `manifest` from this host and the connected engine (None if it did not answer)."""
    jetson = manifest.profile.tensorrt
    info = None
    base_present = True
    if engine is not None:
        try:
            info = engine.info()
            base_present = engine.image_exists(manifest.base_image)
        except DockerError as e:
            engine_error = e.message
    # A tcp:// or ssh:// engine is a device elsewhere: ask it, not this machine's files.
    remote = info is not None and not info.host.startswith(("unix://", "npipe://"))
    l4t, l4t_detail, mem, memory_detail = None, "", {}, ""
    if jetson and remote:
        from kit.fleet.facts import engine_l4t

        l4t, l4t_detail = engine_l4t(engine, info, manifest.base_image if base_present else None)
        if info.memory_bytes:
            mem = {"MemAvailable": info.memory_bytes}
            memory_detail = f"the device's total RAM from docker info at {info.host} (free RAM and swap are not visible from here)"
    elif jetson:
        l4t, l4t_detail = read_l4t()
        try:
            mem = read_meminfo(meminfo)
        except OSError:
            mem = {}
    disk = {}
    out = Path(output_dir) if output_dir else manifest.file.parent / ".kit"
    disk[f"output dir {out}"] = free_bytes(out)
    # The engine's data root is only visible from here when the engine is local.
    root = Path("/var/lib/docker")
    if info is not None and info.host.startswith("unix://") and root.exists():
        disk[f"docker data root {root}"] = free_bytes(root)
    return HostFacts(
        engine_error=engine_error,
        engine_host=info.host if info else (engine.host if engine is not None else ""),
        engine_version=info.server_version if info else "",
        engine_architecture=info.architecture if info else "",
        runtimes=tuple(info.runtimes) if info else (),
        l4t=l4t,
        l4t_detail=l4t_detail,
        mem_available=mem.get("MemAvailable"),
        swap_free=mem.get("SwapFree"),
        memory_detail=memory_detail,
        model_bytes=tree_size(manifest.model.path) if manifest.model.path.is_dir() else 0,
        base_present=base_present,
        disk=disk,
    )


# ---- judging ----------------------------------------------------------------------


def evaluate(manifest, facts: HostFacts) -> PreflightResult:
    """Judge the facts against the manifest. Pure: no I/O."""
    checks = []
    if facts.engine_error:
        checks.append(Check("engine", False, facts.engine_error,
                            "start the Docker engine (bash scripts/setup-host, or systemctl start docker) "
                            "or point DOCKER_HOST at one"))
        return PreflightResult(tuple(checks))
    checks.append(Check("engine", True, f"Docker {facts.engine_version} ({facts.engine_architecture}) at {facts.engine_host}"))

    profile, stack = manifest.profile, manifest.stack
    if profile.tensorrt:
        want = stack.l4t
        if facts.l4t is None:
            checks.append(Check("l4t", False, facts.l4t_detail,
                                f"run kit build on the {profile.name} itself (JetPack {stack.name}, L4T {want}): "
                                "TF-TRT engines are built on the device they run on"))
        elif facts.l4t != want:
            checks.append(Check("l4t", False,
                                f"this host runs L4T {facts.l4t} but the manifest pins JetPack {stack.name} (L4T {want})",
                                f"flash the device with JetPack {stack.name}, or set target.jetpack to the stack "
                                f"matching L4T {facts.l4t} (engines only run on the TensorRT they were built with)"))
        else:
            checks.append(Check("l4t", True, facts.l4t_detail))

        if "nvidia" in facts.runtimes:
            checks.append(Check("nvidia", True, "nvidia runtime registered"))
        else:
            checks.append(Check("nvidia", False,
                                "the nvidia container runtime is not registered with the Docker engine "
                                f"(runtimes: {', '.join(facts.runtimes) or 'none'})",
                                "install nvidia-container-runtime (JetPack's nvidia-docker2 package) and register "
                                'it in /etc/docker/daemon.json: {"runtimes": {"nvidia": {"path": '
                                '"nvidia-container-runtime", "runtimeArgs": []}}}, then restart docker'))

        limit = manifest.optimize.memory_limit
        need = limit + MEMORY_RESERVE_BYTES
        if facts.mem_available is None:
            checks.append(Check("memory", False, f"cannot read {MEMINFO}",
                                "run kit on the Jetson itself (Linux with /proc mounted)"))
        else:
            have = facts.mem_available + (facts.swap_free or 0)
            detail = (f"{format_size(facts.mem_available)} RAM + {format_size(facts.swap_free or 0)} swap available; "
                      f"memory_limit {format_size(limit)} + {format_size(MEMORY_RESERVE_BYTES)} reserve"
                      + (f" ({facts.memory_detail})" if facts.memory_detail else ""))
            if have >= need:
                checks.append(Check("memory", True, detail))
            else:
                checks.append(Check("memory", False, "not enough memory: " + detail,
                                    f"free {format_size(need - have)} (stop other containers, close the desktop), "
                                    "add swap, or lower optimize.memory_limit (keep it above max_workspace_size)"))

    need_disk = 3 * facts.model_bytes + DISK_MARGIN_BYTES + (0 if facts.base_present else BASE_IMAGE_ESTIMATE_BYTES)
    short = [(where, free) for where, free in facts.disk.items() if free is not None and free < need_disk]
    known = {w: f for w, f in facts.disk.items() if f is not None}
    detail = f"need about {format_size(need_disk)}; free: " + (
        ", ".join(f"{w} {format_size(f)}" for w, f in known.items()) or "unknown")
    if short:
        checks.append(Check("disk", False, "not enough free disk: " + detail,
                            "free disk space (docker system prune removes unused images and build cache)"))
    else:
        checks.append(Check("disk", True, detail))
    return PreflightResult(tuple(checks))


def check(result: PreflightResult) -> PreflightResult:
    """Raise a PreflightError for the first failed check (the others as details)."""
    failed = [c for c in result.checks if not c.ok]
    if not failed:
        return result
    first = failed[0]
    details = [f"{c.name}: {c.detail}" for c in failed[1:]]
    raise PreflightError(f"{first.name}: {first.detail}", hint=first.hint, details=details)


def run(manifest, engine=None, engine_error: str | None = None, output_dir: Path | None = None) -> PreflightResult:
    """Gather, judge, and raise on failure; returns the passed checks."""
    return check(evaluate(manifest, gather_facts(manifest, engine, engine_error, output_dir)))
