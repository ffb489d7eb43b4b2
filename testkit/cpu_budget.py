"""A CPU budget for an emulated device: its daemons and containers share a CFS quota.

Three fleet devices on one 2-core host otherwise share the same two cores, so a rollout to
all three at once measures how they queue for the CPU, where a real fleet gives each device
its own. With a budget each device gets at most `cpus` cores (cgroup v1 `cpu` controller:
cpu.cfs_quota_us / cpu.cfs_period_us), like a small machine of its own: containerd and dockerd
start inside the group (preexec_fn) and dockerd's `--cgroup-parent` puts every container
(runc init, the model server) below it, where the quota of the parent bounds them too.
Not a mock: the same daemons and containers, each device given its own share of the host."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

CPU_ROOT = Path("/sys/fs/cgroup/cpu")  # cgroup v1, as on this machine kind (docker info: Cgroup Version 1)
CGROUP_ROOT = CPU_ROOT.parent
PERIOD_US = 20_000  # a short period: a throttled device waits at most this long for its next slice


class CpuBudget:
    """The cgroup /<name> of the cpu hierarchy; `cpus=None` is no limit (the quota -1)."""

    def __init__(self, name: str):
        self.name, self.path = name, CPU_ROOT / name

    @staticmethod
    def available() -> bool:
        return (CPU_ROOT / "cgroup.procs").exists() and os.access(CPU_ROOT, os.W_OK)

    @property
    def cgroup_parent(self) -> str:
        """dockerd's --cgroup-parent (cgroupfs driver): containers go to /<name>/<id>."""
        return "/" + self.name

    def create(self, cpus: float | None) -> "CpuBudget":
        if not self.available():
            raise RuntimeError(f"a CPU budget needs the cgroup v1 cpu controller, writable, at {CPU_ROOT}")
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        self.set(cpus)
        return self

    def set(self, cpus: float | None) -> None:
        """Change the budget of a running device (takes effect within a period)."""
        quota = -1 if cpus is None else max(1000, int(cpus * PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(quota))

    def enter(self) -> None:
        """preexec_fn of a daemon: the child joins the group before it execs."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def throttled_seconds(self) -> float:
        """How long the group waited for its quota so far (cpu.stat throttled_time, ns)."""
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "throttled_time":
                return int(value) / 1e9
        return 0.0

    def remove(self) -> None:
        """Once the daemons and containers are gone: the group in every hierarchy dockerd made it in."""
        for path in CGROUP_ROOT.glob(f"*/{self.name}"):
            for child in sorted(path.rglob("*"), reverse=True):  # containers' groups left behind, deepest first
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            for _ in range(20):  # the last exiting task can take a moment to leave
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
