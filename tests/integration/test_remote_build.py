"""`kit build --host` and `kit doctor --host` against a second, separate Docker engine
that the test starts (fleet_harness.Device: its own containerd, dockerd, unix socket,
data-root, exec-root, pidfile), standing in for a device's engine reached from a
workstation. The base image is moved into it with docker save | docker load (no registry
of bases exists here). The device engine shares this machine's filesystem and network,
which the optimizer's bind mounts and the smoke test's 127.0.0.1 need (README, "kit on
the Nano")."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from testkit.fleet_harness import Device
from kit.net import free_port
from test_build import kit, record_of, statuses, trained_example, write_manifest

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def device(tf_base):
    dev = Device("kit-test-nano-dev", Path(f"/tmp/kdn{os.getpid()}"), free_port())
    dev.root.mkdir(parents=True, exist_ok=True)
    dev.start()
    try:
        save = subprocess.Popen(["docker", "save", tf_base], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", dev.host, "load", "-q"], stdin=save.stdout,
                              capture_output=True, text=True, timeout=900)
        save.stdout.close()
        assert save.wait(900) == 0 and load.returncode == 0, load.stderr
        yield dev
    finally:
        dev.close()


def test_build_on_another_engine(device, engine, tmp_path):
    trained_example(tmp_path, epochs=2)
    repository = f"kit-test-nano/remote-{uuid.uuid4().hex[:8]}"
    manifest = write_manifest(tmp_path, repository=repository, parity=None)
    record = record_of(kit("build", manifest, "--host", device.host, "--json", timeout=1500))
    assert set(statuses(record).values()) <= {"ran", "reused"} and statuses(record)["smoke"] == "ran"
    with device.client() as remote:
        assert remote.image_exists(record["image"])  # built there ...
    assert not engine.image_exists(record["image"])  # ... and not on this machine's engine


def test_doctor_asks_the_other_engine(device):
    proc = kit("doctor", "--host", device.host, "--json")
    data = json.loads(proc.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert proc.returncode == 3 and data["host"] == device.host
    assert checks["engine"]["status"] == "ok" and device.host in checks["engine"]["detail"]
    assert checks["l4t"]["status"] == "fail" and "not a Jetson" in checks["l4t"]["detail"]
    assert checks["nvidia"]["status"] == "fail"  # an amd64 dockerd: no nvidia runtime
