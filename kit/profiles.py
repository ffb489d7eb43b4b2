"""Device profiles and pinned software stacks, as data.

Facts from ../shared/reference/tf-trt-jetpack-facts.md. A profile says what
the hardware can do; a stack pins every version an engine depends on (engines
are specific to the GPU arch and the TensorRT version)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

GiB = 1024**3

# Memory kept for the OS, the container runtime and the server process when
# checking optimize.memory_limit against a device's RAM (documented in README).
MEMORY_RESERVE_BYTES = 1 * GiB


@dataclass(frozen=True)
class Stack:
    """One pinned software stack (a JetPack release, or the CPU development stack)."""

    name: str  # "4.4.1" for JetPack, "cpu" for the CPU stack
    l4t: str | None  # "32.4.4"
    tensorflow: str  # major.minor.patch the images carry
    tensorrt: str | None
    cuda: str | None
    cudnn: str | None
    python: str
    base_image: str  # default base of builder and runtime images


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    gpu_arch: str | None  # "sm_53"; None on cpu
    memory_bytes: int
    shared_memory: bool  # GPU and CPU share RAM (all Jetsons)
    fp16: bool
    int8: bool
    tensorrt: bool  # False on cpu: precision must be native
    jetpacks: tuple[str, ...]  # stacks this device can run
    architecture: str  # docker/OCI architecture

    @property
    def precisions(self) -> tuple[str, ...]:
        if not self.tensorrt:
            return ("native",)
        out = ["fp32"]
        if self.fp16:
            out.append("fp16")
        if self.int8:
            out.append("int8")
        out.append("native")
        return tuple(out)

    @property
    def max_memory_limit(self) -> int:
        """Largest optimize.memory_limit accepted: device RAM minus the reserve."""
        return self.memory_bytes - MEMORY_RESERVE_BYTES


JETPACK_441 = Stack(
    name="4.4.1",
    l4t="32.4.4",
    tensorflow="2.3.1",
    tensorrt="7.1.3",
    cuda="10.2",
    cudnn="8.0",
    python="3.6",
    base_image="nvcr.io/nvidia/l4t-tensorflow:r32.4.4-tf2.3-py3",
)

# The CPU stack: what `kit base` assembles offline from Debian and PyPI wheels.
CPU_TENSORFLOW = "2.17.1"
CPU_STACK = Stack(
    name="cpu",
    l4t=None,
    tensorflow=CPU_TENSORFLOW,
    tensorrt=None,
    cuda=None,
    cudnn=None,
    python="3.11",
    base_image="kit/tf-cpu-base:tf" + CPU_TENSORFLOW,
)

# The twin of JetPack 4.4.1's Python side on x86-64: the same Python 3.6, tensorflow-cpu 2.3.1, numpy 1.16.1
# and protobuf 3.8.0 as the Jetson's image, less aarch64, CUDA and TensorRT (`kit base --stack twin`
# assembles it from this host's pyenv Python 3.6.15 and PyPI wheels). For the cpu profile only:
# `target.stack: twin` runs the builder and the runtime on the target's Python and TensorFlow.
TWIN_STACK = Stack(
    name="twin",
    l4t=None,
    tensorflow=JETPACK_441.tensorflow,
    tensorrt=None,
    cuda=None,
    cudnn=None,
    python=JETPACK_441.python,
    base_image=f"kit/tf-cpu-base:tf{JETPACK_441.tensorflow}-py{JETPACK_441.python}",
)

STACKS: dict[str, Stack] = {JETPACK_441.name: JETPACK_441}
# The stacks of the cpu profile, by target.stack (absent: cpu).
CPU_STACKS: dict[str, Stack] = {CPU_STACK.name: CPU_STACK, TWIN_STACK.name: TWIN_STACK}

PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile("jetson-nano", "Jetson Nano 4 GB (Maxwell)", "sm_53", 4 * GiB, True, True, False, True, ("4.4.1",), "arm64"),
        DeviceProfile("jetson-tx2", "Jetson TX2 8 GB (Pascal)", "sm_62", 8 * GiB, True, True, True, True, ("4.4.1",), "arm64"),
        DeviceProfile("jetson-xavier-nx", "Jetson Xavier NX 8 GB (Volta)", "sm_72", 8 * GiB, True, True, True, True, ("4.4.1",), "arm64"),
        DeviceProfile("jetson-agx-xavier", "Jetson AGX Xavier 16/32 GB (Volta)", "sm_72", 16 * GiB, True, True, True, True, ("4.4.1",), "arm64"),
        DeviceProfile("cpu", "x86-64 CPU, no TensorRT (development, CI, CPU edge boxes)", None, 0, False, False, False, False, (), "amd64"),
    )
}


def stack_for(profile: DeviceProfile, jetpack: str | None, stack: str | None = None) -> Stack:
    """The stack a (validated) manifest targets: a JetPack on Jetsons, target.stack (default cpu) on cpu."""
    if not profile.tensorrt:
        return CPU_STACKS[stack or CPU_STACK.name]
    return STACKS[jetpack]  # type: ignore[index]


def profile_table() -> list[dict]:
    """Rows for `kit profiles` (also its --json output)."""
    rows = []
    for p in PROFILES.values():
        row = asdict(p)
        row["precisions"] = list(p.precisions)
        row["jetpacks"] = list(p.jetpacks)
        row["stacks"] = ([asdict(STACKS[j]) for j in p.jetpacks] if p.tensorrt
                         else [asdict(s) for s in CPU_STACKS.values()])
        rows.append(row)
    return rows


# "# R32 (release), REVISION: 4.4, GCID: 23942405, BOARD: t210ref, EABI: aarch64, DATE: ..."
_RELEASE_RE = re.compile(r"^#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)", re.MULTILINE)


def parse_nv_tegra_release(text: str) -> str:
    """/etc/nv_tegra_release's "# R32 (release), REVISION: 4.4, ..." -> "32.4.4" (the L4T
    release that names a stack). ValueError if the text has no release line."""
    m = _RELEASE_RE.search(text)
    if not m:
        raise ValueError("no '# R<major> (release), REVISION: <x>.<y>' line")
    return f"{int(m.group(1))}.{int(m.group(2))}.{int(m.group(3))}"
