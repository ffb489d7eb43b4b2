"""testkit.cpu_budget for real: a busy process inside a budget gets at most its quota of CPU,
the group counts the time it waited, and remove() leaves no group behind. Needs root and the
cgroup v1 cpu controller (this machine kind; CI's too)."""

import os
import subprocess
import sys
import time

import pytest

from testkit.cpu_budget import CPU_ROOT, CpuBudget

BUSY = "import time\nend = time.monotonic() + float(__import__('sys').argv[1])\nwhile time.monotonic() < end: pass\n"


def cpu_seconds(proc: subprocess.Popen) -> float:
    """CPU time of a finished child (its rusage, user + system)."""
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime


@pytest.fixture
def budget():
    if not CpuBudget.available():
        pytest.fail(f"the cgroup v1 cpu controller is not writable at {CPU_ROOT}: run as root", pytrace=False)
    b = CpuBudget(f"kit-test-budget-{os.getpid()}")
    yield b
    b.remove()


def run_busy(budget, seconds: float) -> float:
    proc = subprocess.Popen([sys.executable, "-c", BUSY, str(seconds)], preexec_fn=budget.enter)
    return cpu_seconds(proc)


def test_a_budgeted_process_gets_its_quota_and_no_more(budget):
    budget.create(0.25)
    began = time.monotonic()
    used = run_busy(budget, 1.6)
    wall = time.monotonic() - began
    assert used < 0.25 * wall * 1.3 + 0.05, (used, wall)  # a quarter core, give or take a period
    assert used > 0.25 * wall * 0.5, (used, wall)  # it did run
    assert budget.throttled_seconds() > 0.5


def test_set_lifts_the_limit_of_a_live_group(budget):
    budget.create(0.25)
    budget.set(None)
    assert (budget.path / "cpu.cfs_quota_us").read_text().strip() == "-1"
    began = time.monotonic()
    used = run_busy(budget, 0.8)
    assert used > 0.6 * (time.monotonic() - began), used  # a core of its own, near enough
    assert budget.throttled_seconds() == 0.0


def test_remove_leaves_no_group_even_with_children(budget):
    budget.create(None)
    (budget.path / "container-1").mkdir()  # as dockerd's --cgroup-parent makes them
    run_busy(budget, 0.05)
    budget.remove()
    assert not budget.path.exists()
