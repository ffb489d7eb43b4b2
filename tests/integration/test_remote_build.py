"""`kit build --host` and `kit doctor --host` against a second Docker engine that, like a Nano on
the network, does NOT see this machine's files.

The device (testkit.fleet_harness.RemoteDevice) is its own containerd and dockerd (own data-root,
exec-root, pidfile, sockets) running in a separate mount namespace in which the directory holding
the test's models and .kit/ workspaces (WORK) is an empty tmpfs. It is reached over
tcp://127.0.0.1:PORT, and over ssh://root@127.0.0.1:PORT through Debian's sshd (a throwaway key
whose one allowed command is `docker system dial-stdio` on the device's socket). The first test
proves the premise: a bind mount of a path under WORK fails on that engine, so a build that
bind-mounted the model or the workspace (what kit did before) cannot pass here. The base image is
moved into the device with docker save | docker load (no registry of bases exists here).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from kit.net import free_port
from test_build import kit, record_of, statuses, trained_example, write_manifest
from testkit.fleet_harness import RemoteDevice, SshEndpoint

pytestmark = pytest.mark.docker

WORK = Path(f"/tmp/kit-test-nano-ws{os.getpid()}")  # on this machine only: the device sees an empty tmpfs


@pytest.fixture(scope="module")
def device(tf_base):
    WORK.mkdir(parents=True, exist_ok=True)
    dev = RemoteDevice("kit-test-nano-dev", Path(f"/tmp/kdn{os.getpid()}"), free_port(), hidden=(str(WORK),),
                       tcp_port=free_port())
    try:
        dev.start()
        save = subprocess.Popen(["docker", "save", tf_base], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "-H", dev.host, "load", "-q"], stdin=save.stdout,
                              capture_output=True, text=True, timeout=900)
        save.stdout.close()
        assert save.wait(900) == 0 and load.returncode == 0, load.stderr
        yield dev
    finally:
        dev.close()
        shutil.rmtree(WORK, ignore_errors=True)


@pytest.fixture(scope="module")
def ssh_endpoint(device):
    endpoint = SshEndpoint(Path(f"/tmp/kit-test-nano-ssh{os.getpid()}"), device.host)
    try:
        yield endpoint.start()
    finally:
        endpoint.close()


@pytest.fixture(scope="module")
def digits(device) -> Path:
    """The example's model, trained once, under WORK (invisible to the device)."""
    return trained_example(WORK / "trained", epochs=2)


def test_the_device_engine_cannot_see_this_machines_files(device, tf_base):
    probe = WORK / "premise"
    probe.mkdir(exist_ok=True)
    (probe / "seen").write_text("here")
    # A bind mount as kit made them (docker.types.Mount, type bind) ...
    mount = ["--mount", f"type=bind,source={probe},target=/p,readonly"]
    proc = subprocess.run(["docker", "-H", device.tcp_host, "run", "--rm", "--network", "host", *mount, tf_base,
                           "cat", "/p/seen"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "bind source path does not exist" in proc.stderr, proc.stderr
    # ... and the CLI's -v, which creates a missing source: an empty directory over there.
    legacy = subprocess.run(["docker", "-H", device.tcp_host, "run", "--rm", "--network", "host",
                             "-v", f"{probe}:/p", tf_base, "ls", "-A", "/p"], capture_output=True, text=True, timeout=120)
    assert legacy.returncode == 0 and legacy.stdout == "", legacy.stderr
    here = subprocess.run(["docker", "run", "--rm", "--network", "host", *mount, tf_base, "cat", "/p/seen"],
                          capture_output=True, text=True, timeout=120)
    assert here.returncode == 0 and here.stdout == "here"  # the same mount on this machine's engine works


@pytest.mark.parametrize("transport", ["tcp", "ssh"])
def test_build_on_a_device_that_does_not_see_this_disk(transport, request, device, digits, engine):
    ws = WORK / transport
    shutil.copytree(digits, ws / "digits")
    repository = f"kit-test-nano/remote-{uuid.uuid4().hex[:8]}"
    manifest = write_manifest(ws, repository=repository)  # parity samples: copied in too
    if transport == "ssh":
        endpoint = request.getfixturevalue("ssh_endpoint")
        host, env = endpoint.host, endpoint.env()
    else:
        host, env = device.tcp_host, {}

    proc = kit("build", manifest, "--host", host, "--json", env=env, timeout=1500)
    record = record_of(proc)
    assert "Traceback" not in proc.stderr  # the ssh transport's connections closed cleanly too

    steps = statuses(record)
    assert set(steps.values()) <= {"ran", "reused"}
    assert steps["optimize"] == "ran" and steps["reference"] == "ran" and steps["smoke"] == "ran"
    # The optimizer read the uploaded model and its /out came back into this machine's workspace:
    out = ws / ".kit" / "digits" / "optimize"
    report = json.loads((out / "report.json").read_text())
    assert report["optimization"] == "native" and (out / "model" / "saved_model.pb").is_file()
    assert report["parity"]["passed"] is True  # parity.npy reached the container
    assert not (ws / ".kit" / "digits" / "optimize.partial").exists()
    # The smoke prediction went to the device's address (tcp:// and ssh:// 127.0.0.1 here) and matched.
    assert record["smoke"]["passed"] and record["smoke"]["url"].startswith(f"http://127.0.0.1:{record['smoke']['port']}/")
    with device.client() as remote:
        assert remote.image_exists(record["image"])  # built there ...
        leftovers = [c.name for c in remote.containers() if c.name.startswith(("kit-optimize", "kit-reference",
                                                                                "kit-smoke"))]
    assert not engine.image_exists(record["image"])  # ... and not on this machine's engine
    assert leftovers == []


def test_doctor_asks_the_other_engine(device):
    proc = kit("doctor", "--host", device.tcp_host, "--json")
    data = json.loads(proc.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert proc.returncode == 3 and data["host"] == device.tcp_host
    assert checks["engine"]["status"] == "ok" and device.tcp_host in checks["engine"]["detail"]
    assert checks["l4t"]["status"] == "fail" and "not a Jetson" in checks["l4t"]["detail"]
    assert checks["nvidia"]["status"] == "fail"  # an amd64 dockerd: no nvidia runtime
