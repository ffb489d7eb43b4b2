"""`kit doctor`: can this device (or the one at --host) build and serve kit images?

Facts first (DoctorFacts: read from the files and the engine), then judged by
a pure function into checks, each ok / warn / fail with the reason and the fix:

  l4t       /etc/nv_tegra_release parses (L4T release, board) and maps to a pinned JetPack
  engine    the Docker engine answers, its version, whether this user may use it
  nvidia    the nvidia runtime is registered
  default-runtime  "default-runtime": "nvidia" (GPU during `docker build`), else warn
  memory    RAM + swap; against optimize.memory_limit when a manifest is given
  disk      free disk under the engine's data root / the manifest's .kit/
  base      the base image is present, or the registry has it (pullable)
  trt-smoke (--trt-smoke) a tiny TF-TRT conversion in the builder image, engines
            built and saved, reported through kit.runtime.trtlog's findings

The L4T release and memory come from kit.build.preflight's readers. For a
local engine they are read from this host's files, under KIT_HOST_ROOT
(default /: tests point it at a fake Jetson tree); for a remote --host, from
the engine (label kit.l4t, else /etc/nv_tegra_release in a short container).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from kit.build import preflight
from kit.errors import EXIT_OK, EXIT_PREFLIGHT, DockerError
from kit.profiles import JETPACK_441, MEMORY_RESERVE_BYTES, STACKS
from kit.units import format_size

HOST_ROOT_ENV = "KIT_HOST_ROOT"
GiB = 1 << 30
# A Nano building engines: 4 GB RAM is tight; NVIDIA's guides add swap.
RECOMMENDED_SWAP = 1 * GiB  # JetPack 4.4 sets up about 2 GB of zram; none at all is the trap
DISK_WANT = preflight.BASE_IMAGE_ESTIMATE_BYTES + preflight.DISK_MARGIN_BYTES
OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class DoctorCheck:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: Optional[str] = None


@dataclass(frozen=True)
class DoctorFacts:
    host: str
    local: bool
    engine_error: Optional[str] = None
    engine_permission_denied: bool = False
    engine_version: str = ""
    api_version: str = ""
    architecture: str = ""
    runtimes: tuple = ()
    default_runtime: str = ""
    engine_memory: int = 0
    l4t: Optional[str] = None
    l4t_detail: str = ""
    meminfo: dict = field(default_factory=dict)
    meminfo_detail: str = ""
    disk: dict = field(default_factory=dict)  # where -> free bytes
    base_image: str = ""
    base_present: Optional[bool] = None
    base_pullable: Optional[bool] = None
    base_detail: str = ""
    trt_smoke: Optional[dict] = None  # the in-container result, or {"skipped": reason}


@dataclass(frozen=True)
class DoctorReport:
    host: str
    manifest: Optional[str]
    checks: tuple
    facts: DoctorFacts

    @property
    def failed(self) -> list:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def exit_code(self) -> int:
        return EXIT_PREFLIGHT if self.failed else EXIT_OK

    def to_dict(self) -> dict:
        return {"host": self.host, "manifest": self.manifest, "ok": not self.failed,
                "exit_code": self.exit_code, "checks": [asdict(c) for c in self.checks],
                "facts": asdict(self.facts)}


def host_root() -> Path:
    return Path(os.environ.get(HOST_ROOT_ENV) or "/")


def jetpack_for(l4t: Optional[str]):
    """The pinned stack whose L4T is `l4t`, or None."""
    for stack in STACKS.values():
        if stack.l4t == l4t:
            return stack
    return None


# ---- facts ----------------------------------------------------------------------------


def gather(host: Optional[str] = None, manifest=None, trt_smoke: bool = False, root: Optional[Path] = None,
           connect=None) -> DoctorFacts:
    from kit.docker_api import connect as docker_connect, default_host

    connect = connect or docker_connect
    root = Path(root) if root is not None else host_root()
    shown = host or default_host()
    local = shown.startswith("unix://")
    facts = {"host": shown, "local": local}
    if local:
        release = Path(os.environ.get(preflight.NV_TEGRA_RELEASE_ENV) or root / "etc" / "nv_tegra_release")
        facts["l4t"], facts["l4t_detail"] = preflight.read_l4t(release)
        meminfo = root / "proc" / "meminfo"
        try:
            facts["meminfo"] = preflight.read_meminfo(meminfo)
            facts["meminfo_detail"] = str(meminfo)
        except OSError as e:
            facts["meminfo_detail"] = f"cannot read {meminfo}: {e.strerror or e}"
    base = manifest.base_image if manifest is not None else JETPACK_441.base_image
    facts["base_image"] = base

    engine = None
    try:
        engine = connect(host)
    except DockerError as e:
        facts["engine_error"] = e.message
        facts["engine_permission_denied"] = "permission denied" in e.message.lower()
    if engine is not None:
        try:
            _engine_facts(engine, facts, base, manifest, trt_smoke, local)
        except DockerError as e:
            facts.setdefault("engine_error", e.message)
        finally:
            engine.close()
    return DoctorFacts(**facts)


def _engine_facts(engine, facts: dict, base: str, manifest, trt_smoke: bool, local: bool) -> None:
    from kit.fleet.facts import engine_l4t

    info = engine.info()
    facts.update(engine_version=info.server_version, api_version=info.api_version,
                 architecture=info.architecture, runtimes=tuple(info.runtimes),
                 default_runtime=info.default_runtime, engine_memory=info.memory_bytes)
    if not local:
        probe = base if info.architecture == "arm64" and engine.image_exists(base) else None
        facts["l4t"], facts["l4t_detail"] = engine_l4t(engine, info, probe)
        facts["meminfo_detail"] = "remote engine: RAM from docker info, swap unknown"
    disk = {}
    if manifest is not None:
        out = manifest.file.parent / ".kit"
        disk[f"output dir {out}"] = preflight.free_bytes(out)
    data_root = Path("/var/lib/docker")
    if local and data_root.exists():
        disk[f"docker data root {data_root}"] = preflight.free_bytes(data_root)
    facts["disk"] = disk

    facts["base_present"] = engine.image_exists(base)
    if facts["base_present"]:
        facts["base_detail"] = f"{base} is present"
    else:
        try:
            digest = engine.distribution_digest(base)
            facts["base_pullable"] = True
            facts["base_detail"] = f"{base} is not present; the registry has it ({digest[:19]})"
        except DockerError as e:
            facts["base_pullable"] = False
            facts["base_detail"] = f"{base} is not present and cannot be pulled: {e.message}"
    if trt_smoke:
        facts["trt_smoke"] = run_trt_smoke(engine, base, facts)


def _smoke_image(engine, base: str, present: bool):
    """(image, uploads) to run the smoke in: the newest builder image of the stack, else the base
    with kit copied in (through the engine's API: a device reached over ssh:// gets it too)."""
    from kit.docker_api import Upload

    builders = engine.image_refs(f"kit/builder:{JETPACK_441.name}-*")
    if builders:
        return builders[-1], []
    if present:
        import kit

        return base, [Upload(str(Path(kit.__file__).parent), "/opt/kit-doctor/kit")]
    return None, []


def run_trt_smoke(engine, base: str, facts: dict) -> dict:
    """The tiny TF-TRT conversion, in a container with the nvidia runtime; its JSON result."""
    from kit.runtime.trt_smoke import RESULT_PREFIX

    if "nvidia" not in facts.get("runtimes", ()):
        return {"skipped": "the nvidia runtime is not registered, so no container here can reach a GPU or TensorRT"}
    image, uploads = _smoke_image(engine, base, bool(facts.get("base_present")))
    if image is None:
        return {"skipped": f"no kit/builder:{JETPACK_441.name}-* image and {base} is not present here"}
    env = {"PYTHONPATH": "/opt/kit-doctor"} if uploads else {}
    result = engine.run_to_completion(image, ["python3", "-m", "kit.runtime.trt_smoke"], runtime="nvidia",
                                      uploads=uploads, env=env, entrypoint=[], timeout=3600)
    for line in reversed(result.logs.splitlines()):
        if line.startswith(RESULT_PREFIX):
            out = json.loads(line[len(RESULT_PREFIX):])
            out["image"] = image
            return out
    return {"ok": False, "image": image, "exit_code": result.exit_code,
            "error": {"kind": "internal", "message": "no result line; last output: " + result.logs[-800:]},
            "findings_summary": []}


# ---- judging ----------------------------------------------------------------------------


def evaluate(facts: DoctorFacts, manifest=None) -> tuple:
    """The checks, in the order a Jetson owner fixes them. Pure."""
    checks = [_l4t(facts, manifest)]
    checks += _engine(facts)
    checks.append(_memory(facts, manifest))
    checks.append(_disk(facts))
    if not facts.engine_error:
        checks.append(_base(facts))
    if facts.trt_smoke is not None:
        checks.append(_trt_smoke(facts.trt_smoke))
    return tuple(checks)


def _l4t(facts: DoctorFacts, manifest) -> DoctorCheck:
    if facts.l4t is None:
        return DoctorCheck("l4t", FAIL, facts.l4t_detail or "L4T release unknown",
                           "run kit doctor on the Jetson (JetPack 4.4.1 = L4T 32.4.4), or point --host at its engine; "
                           "TF-TRT engines are built on the device they run on")
    stack = jetpack_for(facts.l4t)
    if stack is None:
        pinned = ", ".join(f"JetPack {s.name} (L4T {s.l4t})" for s in STACKS.values())
        return DoctorCheck("l4t", FAIL, f"{facts.l4t_detail}: no pinned JetPack for L4T {facts.l4t}",
                           f"flash a pinned release: {pinned}")
    if manifest is not None and manifest.profile.tensorrt and manifest.stack.l4t != facts.l4t:
        return DoctorCheck("l4t", FAIL, f"{facts.l4t_detail} but the manifest pins JetPack {manifest.stack.name} "
                           f"(L4T {manifest.stack.l4t})", "set target.jetpack to this device's JetPack, or reflash")
    return DoctorCheck("l4t", OK, f"{facts.l4t_detail}: JetPack {stack.name} (TensorRT {stack.tensorrt}, "
                       f"CUDA {stack.cuda})")


def _engine(facts: DoctorFacts) -> list:
    if facts.engine_error:
        if facts.engine_permission_denied:
            fix = ("add yourself to the docker group: sudo usermod -aG docker $USER, then log out and in "
                   "(or newgrp docker)")
        else:
            fix = "start Docker (sudo systemctl start docker), or point --host / DOCKER_HOST at a running engine"
        return [DoctorCheck("engine", FAIL, facts.engine_error, fix),
                DoctorCheck("nvidia", FAIL, "not checked: the engine did not answer", "fix the engine first")]
    out = [DoctorCheck("engine", OK, f"Docker {facts.engine_version} (API {facts.api_version}, "
                       f"{facts.architecture}) at {facts.host}; this user may use it")]
    if "nvidia" in facts.runtimes:
        out.append(DoctorCheck("nvidia", OK, "nvidia runtime registered"))
        if facts.default_runtime == "nvidia":
            out.append(DoctorCheck("default-runtime", OK, "default-runtime is nvidia (the GPU is visible during "
                                   "docker build)"))
        else:
            out.append(DoctorCheck("default-runtime", WARN, f"default-runtime is {facts.default_runtime or 'runc'}: "
                                   "docker build steps get no GPU (kit's optimize step uses --runtime nvidia itself)",
                                   'add "default-runtime": "nvidia" to /etc/docker/daemon.json and restart docker'))
    else:
        not_jetson = facts.architecture != "arm64"
        out.append(DoctorCheck("nvidia", FAIL,
                               f"no nvidia runtime registered (runtimes: {', '.join(facts.runtimes) or 'none'})"
                               + ("; this engine runs on " + facts.architecture + ", not a Jetson" if not_jetson else ""),
                               "on a Jetson: sudo apt-get install nvidia-docker2 (JetPack's nvidia-container-runtime), "
                               'register it in /etc/docker/daemon.json ("runtimes": {"nvidia": {"path": '
                               '"nvidia-container-runtime", "runtimeArgs": []}}) and restart docker'))
    return out


def _memory(facts: DoctorFacts, manifest) -> DoctorCheck:
    mem = facts.meminfo
    if not mem.get("MemTotal"):
        if facts.engine_memory:
            return DoctorCheck("memory", WARN, f"{format_size(facts.engine_memory)} RAM (docker info); "
                               f"{facts.meminfo_detail or 'available memory and swap unknown'}",
                               "run kit doctor on the device itself to see available memory and swap")
        return DoctorCheck("memory", FAIL, facts.meminfo_detail or "memory unknown", "run kit doctor on the device")
    total, avail = mem.get("MemTotal", 0), mem.get("MemAvailable", 0)
    swap_total, swap_free = mem.get("SwapTotal", 0), mem.get("SwapFree", 0)
    detail = (f"{format_size(avail)} of {format_size(total)} RAM available, swap {format_size(swap_free)} free "
              f"of {format_size(swap_total)}")
    if manifest is not None and manifest.profile.tensorrt:
        limit = manifest.optimize.memory_limit
        need = limit + MEMORY_RESERVE_BYTES
        detail += f"; memory_limit {format_size(limit)} + {format_size(MEMORY_RESERVE_BYTES)} reserve"
        if avail + swap_free < need:
            return DoctorCheck("memory", FAIL, "not enough memory: " + detail,
                               f"free {format_size(need - avail - swap_free)} (stop containers, "
                               "sudo systemctl isolate multi-user.target stops the desktop), add swap, "
                               "or lower optimize.memory_limit")
        if avail < need:
            return DoctorCheck("memory", WARN, "the build will use swap: " + detail,
                               "stop the desktop and other containers for a faster engine build")
    if swap_total < RECOMMENDED_SWAP and total <= 4 * GiB + GiB // 2:
        return DoctorCheck("memory", WARN, detail + f"; under {format_size(RECOMMENDED_SWAP)} swap on a 4 GB device",
                           "add a swap file: sudo fallocate -l 4G /swapfile && sudo chmod 600 /swapfile && "
                           "sudo mkswap /swapfile && sudo swapon /swapfile (and add it to /etc/fstab)")
    return DoctorCheck("memory", OK, detail)


def _disk(facts: DoctorFacts) -> DoctorCheck:
    known = {w: f for w, f in facts.disk.items() if f is not None}
    if not known:
        return DoctorCheck("disk", WARN, "free disk unknown (remote engine: its data root is not visible from here)",
                           "check on the device: df -h /var/lib/docker")
    detail = ", ".join(f"{w} {format_size(f)} free" for w, f in known.items())
    short = [w for w, f in known.items() if f < DISK_WANT]
    if short:
        return DoctorCheck("disk", FAIL, f"under {format_size(DISK_WANT)} free (base image + build): {detail}",
                           "free disk space: docker system prune removes unused images and build cache")
    return DoctorCheck("disk", OK, detail)


def _base(facts: DoctorFacts) -> DoctorCheck:
    if facts.base_present or facts.base_pullable:
        return DoctorCheck("base", OK, facts.base_detail)
    return DoctorCheck("base", FAIL, facts.base_detail,
                       f"on the Jetson: docker pull {facts.base_image} (NGC, no login needed), or docker load it "
                       "from a file; kit never pulls it silently")


def _trt_smoke(result: dict) -> DoctorCheck:
    if result.get("skipped"):
        return DoctorCheck("trt-smoke", FAIL, "cannot run: " + result["skipped"],
                           "run kit doctor --trt-smoke on a Jetson with the nvidia runtime and the base or builder image")
    findings = "; ".join(result.get("findings_summary") or []) or "no TF-TRT log findings"
    if result.get("ok"):
        return DoctorCheck("trt-smoke", OK, f"{result.get('engines')} TensorRT engine(s) built and saved in "
                           f"{result.get('image')}; log: {findings}")
    error = result.get("error") or {}
    return DoctorCheck("trt-smoke", FAIL, f"no engine proven in {result.get('image')}: "
                       f"{error.get('message') or 'optimizer exit ' + str(result.get('exit_code'))}; log: {findings}",
                       error.get("hint") or "see the findings above; kit build would fail the same way")


def doctor(host: Optional[str] = None, manifest_path=None, trt_smoke: bool = False,
           root: Optional[Path] = None, connect=None) -> DoctorReport:
    """Gather and judge. Never raises for a failing check: the report says it."""
    manifest = None
    if manifest_path is not None:
        from kit.manifest.load import load_model

        manifest = load_model(manifest_path)
    facts = gather(host, manifest, trt_smoke, root, connect)
    return DoctorReport(host=facts.host, manifest=str(manifest_path) if manifest_path else None,
                        checks=evaluate(facts, manifest), facts=facts)


