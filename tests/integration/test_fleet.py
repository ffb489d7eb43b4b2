"""Fleet rollouts against real parts: Debian's docker-registry on 127.0.0.1 and
three extra dockerd daemons as devices (testkit/fleet_harness.py).

Faked, because no Jetson exists here: dev-3's engine carries the label
kit.l4t=32.4.4 in place of /etc/nv_tegra_release. Everything else is real:
pushes, pulls by digest, docker-compose 1.29.2 against each daemon, health
checks, predictions over HTTP, a registry outage, a daemon killed mid-rollout.

Most tests use the fixture image (fleet_harness.build_fixture_image, a stdlib
server standing in for the runtime image, so rollout mechanics run in seconds);
test_real_kit_build_image_rolls_out runs the image `kit build` makes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from testkit import fleet_harness as fh  # noqa: E402
from testkit import manifests  # noqa: E402

from kit.cli import main  # noqa: E402
from kit.errors import DockerError  # noqa: E402
from kit.fleet import state as st  # noqa: E402
from kit.fleet.compose import other_slot  # noqa: E402
from kit.fleet.rollout import rollout  # noqa: E402
from kit.fleet.status import deployment, fleet_status  # noqa: E402
from kit.fleet.registry import push  # noqa: E402
from kit.net import free_port  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_L4T = {"kit.l4t": "32.4.4"}  # dev-3 states an L4T release (the one faked fact)


@pytest.fixture(scope="session")
def fleet(engine):
    if not (shutil.which("dockerd") and shutil.which("docker-registry") and shutil.which("docker-compose")):
        pytest.fail("the fleet tests need dockerd, docker-registry and docker-compose installed", pytrace=False)
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.fail("the fleet tests need Compose v2 as a docker CLI plugin (scripts/setup-host installs it)",
                    pytrace=False)
    # Each device in a CPU budget of its own (unlimited unless a test sets one), as bench/rollout.py runs them.
    with fh.Fleet(3, engine_labels={"dev-3": FAKE_L4T}, budget=True) as f:
        yield f


@pytest.fixture(params=["v1", "v2"])
def compose_flavour(request, monkeypatch):
    """Run the test with docker-compose 1.29 (v1) and with Compose v2 (the CLI plugin)."""
    monkeypatch.setenv("KIT_COMPOSE", request.param)
    return request.param


def compose_major(fleet, name="lab") -> dict:
    """device -> the major version of the compose that created its model container."""
    out = {}
    for d in fleet.devices:
        with d.client() as eng:
            dep = deployment(eng, name)
            out[d.name] = eng.container_inspect(dep.container)["Config"]["Labels"].get(
                "com.docker.compose.version", "?").split(".")[0] if dep.exists else None
    return out


class Images:
    """Fixture images pushed to the harness registry: v1, v2 (model-only change), broken."""

    def __init__(self, engine, fleet, base, state_root: Path, repository: str = "fixture", labels=None):
        self.engine = engine
        repo = f"{fleet.registry.address}/kit-test/{repository}"
        self.refs = {"v1": f"{repo}:v1", "v2": f"{repo}:v2", "broken": f"{repo}:broken"}
        fh.build_fixture_image(engine, self.refs["v1"], "1", base=base, labels=labels)
        fh.build_fixture_image(engine, self.refs["v2"], "2", base=base, labels=labels)
        fh.build_fixture_image(engine, self.refs["broken"], "3", mode="never-healthy", base=base, labels=labels)
        self.digest = {k: push(ref, state_root=state_root, engine=engine).digest_ref for k, ref in self.refs.items()}

    def cleanup(self):
        for ref in list(self.refs.values()) + list(self.digest.values()):
            self.engine.remove_image(ref, force=True)


@pytest.fixture(scope="session")
def images(engine, fleet, debian_base, tmp_path_factory):
    imgs = Images(engine, fleet, debian_base, tmp_path_factory.mktemp("push"))
    yield imgs
    imgs.cleanup()


def fleet_file(fleet, tmp_path, image, name="lab", **rollout_opts) -> Path:
    rollout_opts.setdefault("health_timeout", "30s")
    return fleet.write_fleet(tmp_path / "fleet.yaml", name, image, **rollout_opts)


def snapshot(fleet, name="lab") -> dict:
    """device -> (container id, StartedAt, image) of the fleet's model container."""
    out = {}
    for d in fleet.devices:
        with d.client() as eng:
            dep = deployment(eng, name)
            out[d.name] = (dep.container, dep.started_at, dep.image)
    return out


def serving_versions(fleet) -> dict:
    return {d.name: fh.predict(d.port, "fixture", [[2.0]])["model_version"] for d in fleet.devices}


def ensure(fleet, tmp_path, images, key: str, name="lab"):
    """Bring every device to images[key] (a precondition, itself checked)."""
    result = rollout(fleet_file(fleet, tmp_path, images.refs[key], name=name))
    assert result.status == "done", result.to_dict()
    return result


def wait_ready(port: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fh.ready(port):
            return True
        time.sleep(0.3)
    return False


# ---- push -------------------------------------------------------------------------------


def test_push_prints_and_records_the_registry_digest(engine, fleet, images, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["push", images.refs["v1"], "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    # the registry's own answer for the tag is the digest kit printed
    _, headers = fleet.registry._get("/v2/kit-test/fixture/manifests/v1",
                                     "application/vnd.docker.distribution.manifest.v2+json")
    assert out["digest"] == headers["Docker-Content-Digest"]
    assert out["digest_ref"] == images.digest["v1"]
    record = json.loads((tmp_path / ".kit" / "fixture" / "push.json").read_text())
    assert record["digest_ref"] == images.digest["v1"] and record["ref"] == images.refs["v1"]
    assert "auth" not in json.dumps(record).lower()


def test_push_to_a_registry_that_is_down_names_its_address(engine, fleet, images, tmp_path):
    fleet.registry.stop()
    try:
        with pytest.raises(DockerError) as e:
            push(images.refs["v1"], state_root=tmp_path, engine=engine)
        assert f"registry {fleet.registry.address} is unreachable" in e.value.message
        assert not (tmp_path / ".kit").exists()
    finally:
        fleet.registry.restart()


# ---- rollout ------------------------------------------------------------------------------


def remove_fleet_containers(fleet, name="lab") -> None:
    """Every device back to running nothing of the fleet (so a rollout starts from scratch)."""
    for d in fleet.devices:
        with d.client() as eng:
            for c in eng.containers(labels={"com.docker.compose.project": f"kit-{name}"}):
                eng.remove_container(c.id, force=True)


def test_rollout_to_three_devices_then_status_shows_the_digest(compose_flavour, fleet, images, tmp_path, capsys):
    remove_fleet_containers(fleet)
    path = fleet_file(fleet, tmp_path, images.refs["v1"])
    code = main(["rollout", str(path), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    assert result["digest_ref"] == images.digest["v1"]
    record = result["record"]
    assert record["status"] == "done"
    assert {d["result"] for d in record["devices"]} <= {"done", "unchanged"}
    assert [d["wave"] for d in record["devices"] if d["result"] == "done"] in ([0, 1, 1], [])
    assert "dev-1" in captured.err and "smoke" in captured.err  # per-device progress on stderr
    # every device serves the model from the pinned digest, and the compose file says so
    for d in fleet.devices:
        assert fh.predict(d.port, "fixture", [[3.0]])["predictions"] == [[3.5]]
        text = (tmp_path / ".kit" / "fleet" / "lab" / d.name / "compose.yml").read_text()
        svc = yaml.safe_load(text)["services"]["model"]
        assert svc["image"] == images.digest["v1"] and svc["environment"]["KIT_PORT"] == str(d.port)
    assert snapshot(fleet)["dev-2"][2] == images.digest["v1"]
    assert set(compose_major(fleet).values()) == {{"v1": "1", "v2": "2"}[compose_flavour]}

    code = main(["fleet", "status", str(path), "--json"])
    status = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [(d["name"], d["reachable"], d["digest"], d["healthy"], d["version"]) for d in status["devices"]] == [
        (d.name, True, images.digest["v1"], True, "1") for d in fleet.devices]
    assert {d["last_result"] for d in status["devices"]} <= {"done", "unchanged"}


def test_rerun_of_a_finished_rollout_changes_nothing(fleet, images, tmp_path):
    ensure(fleet, tmp_path, images, "v1")
    before = snapshot(fleet)
    files = {d.name: (tmp_path / ".kit/fleet/lab" / d.name / "compose.yml").stat().st_mtime_ns for d in fleet.devices}
    result = rollout(fleet_file(fleet, tmp_path, images.refs["v1"]))
    assert result.status == "done"
    assert [r.result for r in result.record.devices.values()] == ["unchanged"] * 3
    assert snapshot(fleet) == before  # same containers, not restarted
    assert files == {d.name: (tmp_path / ".kit/fleet/lab" / d.name / "compose.yml").stat().st_mtime_ns
                     for d in fleet.devices}


def test_the_plans_connection_serves_the_first_waves_update(fleet, images, tmp_path, monkeypatch):
    """One connection per device for plan and update (over ssh:// each is an ssh session), a
    fresh one when the update starts later than KEEP_CONNECTION after the plan."""
    import kit.docker_api
    from kit.fleet import plan as fleet_plan

    ensure(fleet, tmp_path, images, "v1")
    real_connect, opened = kit.docker_api.connect, []

    def counting_connect(host=None, *args, **kwargs):  # a spy: the real connection, counted
        opened.append(host)
        return real_connect(host, *args, **kwargs)

    monkeypatch.setattr(kit.docker_api, "connect", counting_connect)
    for image, keep, per_device in (("v2", 30.0, 1), ("v1", 0.0, 2)):
        monkeypatch.setattr(fleet_plan, "KEEP_CONNECTION", keep)
        opened.clear()
        result = rollout(fleet_file(fleet, tmp_path, images.refs[image], max_parallel=3, canary=0))
        assert result.status == "done", result.to_dict()
        assert {d.host: opened.count(d.host) for d in fleet.devices} == {d.host: per_device for d in fleet.devices}
    assert serving_versions(fleet) == {d.name: "1" for d in fleet.devices}


def test_a_devices_cpu_budget_holds_its_daemons_and_its_containers(fleet, images, tmp_path):
    """What bench/rollout.py's per-device CPUs rest on: dockerd, containerd and the model
    container of a device sit in its group, and its quota throttles work in that container."""
    ensure(fleet, tmp_path, images, "v1")
    device = fleet.devices[0]
    group = f":/{device.budget.name}"

    def cgroup_of(pid: int) -> str:
        return next(line for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                    if "cpu" in line.split(":")[1].split(","))  # the cpu controller's line

    assert group in cgroup_of(device.proc.pid) and group in cgroup_of(device.containerd.pid)
    with device.client() as eng:
        container = deployment(eng, "lab").container
        assert f"{group}/" in cgroup_of(eng.container_inspect(container)["State"]["Pid"])
    device.budget.set(0.1)
    try:
        throttled = device.budget.throttled_seconds()
        busy = subprocess.run(["docker", "-H", device.host, "exec", container, "python3", "-c",
                               "import time\nend = time.monotonic() + 1.0\nwhile time.monotonic() < end: pass"],
                              capture_output=True, text=True, timeout=60)
        assert busy.returncode == 0, busy.stderr
        assert device.budget.throttled_seconds() - throttled > 0.5  # 0.1 core for a second of busy work
    finally:
        device.budget.set(None)
    assert fh.predict(device.port, "fixture", [[2.0]])["model_version"] == "1"


def test_model_update_then_dry_run_plans_without_touching(compose_flavour, fleet, images, tmp_path, capsys):
    ensure(fleet, tmp_path, images, "v1")
    before = snapshot(fleet)
    record_before = (tmp_path / ".kit/fleet/lab/rollout.json").read_text()
    path = fleet_file(fleet, tmp_path, images.refs["v1"])
    code = main(["rollout", str(path), "--image", images.refs["v2"], "--dry-run", "--json"])
    plan = json.loads(capsys.readouterr().out)
    assert code == 0 and plan["status"] == "planned" and plan["digest_ref"] == images.digest["v2"]
    assert [p["action"] for p in plan["plan"]] == ["update"] * 3
    assert all(images.digest["v2"] in p["compose"] for p in plan["plan"])
    assert snapshot(fleet) == before
    assert (tmp_path / ".kit/fleet/lab/rollout.json").read_text() == record_before

    result = rollout(path, image=images.refs["v2"])
    assert result.status == "done"
    assert serving_versions(fleet) == {"dev-1": "2", "dev-2": "2", "dev-3": "2"}
    assert set(compose_major(fleet).values()) == {{"v1": "1", "v2": "2"}[compose_flavour]}
    recs = result.record.devices
    assert all(r.before == images.digest["v1"] and r.after == images.digest["v2"] for r in recs.values())
    last_good = (tmp_path / ".kit/fleet/lab/dev-1/last-good.yml").read_text()
    assert images.digest["v2"] in last_good


def test_broken_image_canary_fails_is_rolled_back_others_never_touched(compose_flavour, fleet, images, tmp_path, capsys):
    ensure(fleet, tmp_path, images, "v1")
    before = snapshot(fleet)
    path = fleet_file(fleet, tmp_path, images.refs["broken"], health_timeout="12s")
    code = main(["rollout", str(path)])
    captured = capsys.readouterr()
    assert code == 6  # RolloutError
    assert "rolled-back" in captured.err and "canary dev-1 failed" in captured.err
    record = st.load_record(tmp_path / ".kit/fleet/lab/rollout.json")
    assert record.status == "rolled-back"
    canary = record.devices["dev-1"]
    assert canary.result == "rolled-back" and canary.reason.startswith("health: not healthy within 12s")
    assert canary.before == images.digest["v1"] and canary.after == images.digest["v1"]
    for name in ("dev-2", "dev-3"):
        assert record.devices[name].result == "untouched"
        assert record.devices[name].after == images.digest["v1"]
    after = snapshot(fleet)
    assert after["dev-2"] == before["dev-2"] and after["dev-3"] == before["dev-3"]  # never touched
    assert after["dev-1"][2] == images.digest["v1"] and after["dev-1"][0] != before["dev-1"][0]
    assert serving_versions(fleet) == {"dev-1": "1", "dev-2": "1", "dev-3": "1"}
    compose_now = (tmp_path / ".kit/fleet/lab/dev-1/compose.yml").read_text()
    assert images.digest["v1"] in compose_now


def test_daemon_killed_mid_rollout_stops_and_rolls_back(compose_flavour, fleet, images, tmp_path):
    ensure(fleet, tmp_path, images, "v1")
    victim = fleet.device("dev-2")

    def progress(device, phase, message):
        if device == "dev-2" and phase == "pull":
            victim.kill()  # SIGKILL dockerd just as the rollout reaches dev-2

    path = fleet_file(fleet, tmp_path, images.refs["v2"], max_parallel=1, on_failure="rollback")
    try:
        result = rollout(path, progress=progress)
        assert result.status == "rolled-back"
        recs = result.record.devices
        assert recs["dev-1"].result == "rolled-back" and recs["dev-1"].after == images.digest["v1"]
        assert recs["dev-2"].result == "failed" and recs["dev-2"].phase == "pull"
        assert "not touched" in recs["dev-2"].reason and recs["dev-2"].after == images.digest["v1"]
        assert recs["dev-3"].result == "untouched"
        on_disk = st.load_record(tmp_path / ".kit/fleet/lab/rollout.json")
        assert on_disk.to_dict() == result.record.to_dict()
        # dockerd is down, the device's model is not (live-restore)
        assert fh.predict(victim.port, "fixture", [[0.0]])["model_version"] == "1"
    finally:
        victim.start()
    # no device is left without a running model
    assert all(wait_ready(d.port) for d in fleet.devices)
    assert serving_versions(fleet) == {"dev-1": "1", "dev-2": "1", "dev-3": "1"}


def test_daemon_killed_with_halt_leaves_old_and_new_both_running(fleet, images, tmp_path):
    ensure(fleet, tmp_path, images, "v1")
    victim = fleet.device("dev-3")

    def progress(device, phase, message):
        if device == "dev-3" and phase == "pull":
            victim.kill()

    path = fleet_file(fleet, tmp_path, images.refs["v2"], max_parallel=1, on_failure="halt")
    try:
        result = rollout(path, progress=progress)
        assert result.status == "halted" and "dev-3 failed" in result.reason
        recs = result.record.devices
        assert [recs[n].result for n in ("dev-1", "dev-2", "dev-3")] == ["done", "done", "failed"]
    finally:
        victim.start()
    assert all(wait_ready(d.port) for d in fleet.devices)
    assert serving_versions(fleet) == {"dev-1": "2", "dev-2": "2", "dev-3": "1"}


def test_device_whose_facts_do_not_match_is_refused_and_untouched(fleet, images, tmp_path):
    ensure(fleet, tmp_path, images, "v1")
    before = snapshot(fleet)
    entries = [{"name": d.name, "host": d.host, "device": "cpu", "port": d.port} for d in fleet.devices]
    entries[2]["device"] = "jetson-nano"  # declared a Nano; the engine says amd64, no nvidia runtime
    path = fleet.write_fleet(tmp_path / "fleet.yaml", "lab", images.refs["v2"], devices=entries,
                             health_timeout="30s")
    result = rollout(path)
    assert result.status == "partial"
    refused = result.record.devices["dev-3"]
    assert refused.result == "refused"
    assert "image is built for cpu, device is jetson-nano" in refused.reason
    assert "device reports amd64, profile jetson-nano is arm64" in refused.reason
    assert snapshot(fleet)["dev-3"] == before["dev-3"]
    assert serving_versions(fleet) == {"dev-1": "2", "dev-2": "2", "dev-3": "1"}
    plan = {p.device.name: p for p in result.plans}
    assert plan["dev-3"].facts.l4t == "32.4.4" and plan["dev-3"].facts.l4t_detail == "engine label kit.l4t"


def test_jetson_image_refused_on_amd64_devices_with_every_reason(engine, fleet, debian_base, tmp_path):
    """A fixture image labelled as Nano TF-TRT engines (labels only: no engines exist here)."""
    ref = f"{fleet.registry.address}/kit-test/fixture:nano"
    labels = {"kit.device": "jetson-nano", "kit.l4t": "32.4.4", "kit.tensorrt": "7.1.3", "kit.gpu_arch": "sm_53",
              "kit.precision": "fp16", "kit.optimization": "tensorrt", "kit.engines": "2"}
    fh.build_fixture_image(engine, ref, "9", base=debian_base, labels=labels)
    try:
        digest = push(ref, state_root=tmp_path, engine=engine).digest_ref
        entries = [{"name": d.name, "host": d.host, "device": "jetson-nano", "port": d.port} for d in fleet.devices]
        path = fleet.write_fleet(tmp_path / "fleet.yaml", "nano", ref, devices=entries)
        result = rollout(path)
        assert result.digest_ref == digest and result.status == "partial"
        for rec in result.record.devices.values():
            assert rec.result == "refused"
            assert "nvidia runtime is not registered" in rec.reason
            assert "device reports amd64, profile jetson-nano is arm64" in rec.reason
        assert "L4T release is unknown" in result.record.devices["dev-1"].reason
        assert "L4T release is unknown" not in result.record.devices["dev-3"].reason  # label read
        for d in fleet.devices:
            with d.client() as eng:
                assert not eng.image_exists(digest)  # refused devices never pulled it
    finally:
        engine.remove_image(ref, force=True)


def test_registry_down_changes_nothing_on_any_device(fleet, images, tmp_path):
    ensure(fleet, tmp_path, images, "v1")
    before = snapshot(fleet)
    record_before = (tmp_path / ".kit/fleet/lab/rollout.json").read_text()
    path = fleet_file(fleet, tmp_path, images.refs["v2"])
    fleet.registry.stop()
    try:
        code = main(["rollout", str(path)])
        assert code == 4  # DockerError: resolution failed before any device
        with pytest.raises(DockerError) as e:
            rollout(path)
        assert f"registry {fleet.registry.address} is unreachable" in e.value.message
    finally:
        fleet.registry.restart()
    assert snapshot(fleet) == before
    assert (tmp_path / ".kit/fleet/lab/rollout.json").read_text() == record_before
    assert serving_versions(fleet) == {"dev-1": "1", "dev-2": "1", "dev-3": "1"}


def test_status_reports_an_unreachable_device(fleet, images, tmp_path):
    ensure(fleet, tmp_path, images, "v1")
    entries = [{"name": d.name, "host": d.host, "device": "cpu", "port": d.port} for d in fleet.devices]
    entries.append({"name": "gone", "host": "unix:///tmp/kit-no-such-daemon.sock", "device": "cpu"})
    path = fleet.write_fleet(tmp_path / "fleet.yaml", "lab", images.refs["v1"], devices=entries)
    status = fleet_status(path)
    rows = {d.name: d for d in status.devices}
    assert not rows["gone"].reachable and "unix:///tmp/kit-no-such-daemon.sock" in rows["gone"].error
    assert rows["dev-1"].healthy and rows["dev-1"].digest == images.digest["v1"]
    result = rollout(path)  # the unreachable device is left untouched, the rest unchanged
    assert result.status == "partial"
    assert result.record.devices["gone"].result == "untouched"
    assert result.record.devices["gone"].reason.startswith("unreachable")


# ---- the real runtime image ---------------------------------------------------------------


def test_real_kit_build_image_rolls_out(engine, fleet, tf_base, tmp_path, capsys):
    """`kit build` on the bundled digits example, `kit push` of its manifest, rollout to all three."""
    example = REPO_ROOT / "manifests" / "examples"
    work = tmp_path / "model"
    # Train the example for real into this test's copy (a clean clone has no trained model).
    subprocess.run([sys.executable, str(example / "digits" / "train.py"), "--out", str(work / "digits"),
                    "--epochs", "2"], check=True, timeout=600, capture_output=True)
    manifests.write_model(work / "kit.yaml",
                          manifests.digits_example(image={"repository": f"{fleet.registry.address}/kit-test/digits"}))
    assert main(["build", str(work / "kit.yaml")]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main(["push", str(work / "kit.yaml"), "--json"]) == 0
    pushed = json.loads(capsys.readouterr().out)
    recorded = json.loads((work / ".kit" / "digits" / "push.json").read_text())
    assert recorded["digest_ref"] == pushed["digest_ref"]
    try:
        # ports of their own: the fixture fleet "lab" keeps serving on the devices' ports
        ports = {d.name: free_port() for d in fleet.devices}
        # The three devices share this host's network: a gRPC port each too (8500 would clash).
        entries = [{"name": d.name, "host": d.host, "device": "cpu", "port": ports[d.name], "grpc_port": free_port()}
                   for d in fleet.devices]
        path = fleet.write_fleet(tmp_path / "fleet" / "fleet.yaml", "digits", pushed["ref"], devices=entries,
                                 health_timeout="180s")
        code = main(["rollout", str(path), "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        assert json.loads(out.out)["record"]["status"] == "done"
        assert main(["fleet", "status", str(path), "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert [(d["digest"], d["healthy"], d["version"]) for d in status["devices"]] == \
            [(pushed["digest_ref"], True, "0.1.0")] * 3
        pixels = [[[[0.0]] * 8] * 8]
        for d in fleet.devices:
            body = fh.predict(ports[d.name], "digits", pixels, timeout=30)
            assert len(body["predictions"][0]) == 10  # ten digit classes
    finally:
        # the devices' copies go with the daemons; the local image is this test's
        engine.remove_image(pushed["ref"], force=True)


# ---- zero-downtime (start-first) updates and Ctrl-C -------------------------------------


@pytest.fixture(scope="session")
def sf_images(engine, fleet, debian_base, tmp_path_factory):
    """Fixture images that can start beside an old copy: labels kit.reuse_port=true and a
    64 MiB kit.memory_limit (two copies fit on the test devices)."""
    imgs = Images(engine, fleet, debian_base, tmp_path_factory.mktemp("push-sf"), repository="fixture-sf",
                  labels=fh.START_FIRST_LABELS)
    yield imgs
    imgs.cleanup()


def containers_of(fleet, name="lab") -> dict:
    """device -> [(slot, image)] of every model container of the fleet (both slots)."""
    out = {}
    for d in fleet.devices:
        with d.client() as eng:
            dep = deployment(eng, name)
            out[d.name] = sorted((c.slot, c.image) for c in [dep, *dep.others] if c.exists)
    return out


def hammer(fleet):
    return fh.Hammer({d.name: d.port for d in fleet.devices}, "fixture", [[1.0]])


def test_start_first_update_loses_no_request(compose_flavour, fleet, sf_images, tmp_path):
    """v1 -> v2 with a client on every device the whole time: not one failed request."""
    ensure(fleet, tmp_path, sf_images, "v1")  # now started with KIT_REUSE_PORT=1
    slots = {n: c[0][0] for n, c in containers_of(fleet).items()}
    with hammer(fleet) as h:
        result = rollout(fleet_file(fleet, tmp_path, sf_images.refs["v2"]))
    assert result.status == "done", result.to_dict()
    for rec in result.record.devices.values():
        assert rec.strategy == "start-first" and rec.strategy_reason.startswith("two copies fit"), rec
        assert {"start", "health", "smoke", "switch"} <= set(rec.durations), rec.durations
    assert h.failures == {d.name: [] for d in fleet.devices}
    for d in fleet.devices:
        seen = h.versions(d.name)  # both answer while they share the port, then only the new one
        assert seen[0] == "1" and seen[-1] == "2" and set(seen) == {"1", "2"}, (d.name, seen)
        print(d.name, result.record.devices[d.name].durations, len(h.answers[d.name]), "answers")
    # one container per device, in the other slot; the old one is gone
    assert containers_of(fleet) == {n: [(other_slot(s), sf_images.digest["v2"])] for n, s in slots.items()}


def test_start_first_new_container_never_ready_old_one_keeps_serving(fleet, sf_images, tmp_path):
    ensure(fleet, tmp_path, sf_images, "v1")
    before = snapshot(fleet)
    with hammer(fleet) as h:
        result = rollout(fleet_file(fleet, tmp_path, sf_images.refs["broken"], health_timeout="8s"))
    assert result.status == "rolled-back", result.to_dict()
    canary = result.record.devices["dev-1"]
    assert canary.strategy == "start-first" and canary.result == "failed"
    assert canary.reason.startswith("health: not healthy within 8s") and "the old one kept serving" in canary.reason
    assert canary.after == sf_images.digest["v1"]
    for name in ("dev-2", "dev-3"):  # staged beside the old one while the canary was checked, or not yet
        rec = result.record.devices[name]
        assert rec.after == sf_images.digest["v1"] and (
            rec.result == "untouched" or (rec.result == "failed" and "the old one kept serving" in rec.reason)), rec
    assert h.failures == {d.name: [] for d in fleet.devices}
    assert snapshot(fleet) == before  # the very same containers, never restarted
    assert {n: [img for _, img in c] for n, c in containers_of(fleet).items()} == \
        {d.name: [sf_images.digest["v1"]] for d in fleet.devices}  # the broken one was removed


def test_two_copies_that_do_not_fit_update_stop_first(engine, fleet, images, sf_images, debian_base, tmp_path):
    """The device's memory (facts) and the image's kit.memory_limit decide; the plan says why."""
    ensure(fleet, tmp_path, sf_images, "v1")
    big = f"{fleet.registry.address}/kit-test/fixture-sf:big"
    fh.build_fixture_image(engine, big, "4", base=debian_base,
                           labels={**fh.START_FIRST_LABELS, "kit.memory_limit": str(1 << 40)})  # 1 TiB
    try:
        push(big, state_root=tmp_path, engine=engine)
        plans = rollout(fleet_file(fleet, tmp_path, big), dry_run=True).plans
        assert {p.strategy for p in plans} == {"stop-first"}
        assert all(p.strategy_reason.startswith("two copies do not fit: 1.1 GiB + 1025.0 GiB >") for p in plans), plans[0]
        plans = rollout(fleet_file(fleet, tmp_path, sf_images.refs["v2"]), dry_run=True).plans
        assert {p.strategy for p in plans} == {"start-first"}
        # the old fixture image cannot share its port at all
        assert {p.strategy_reason for p in rollout(fleet_file(fleet, tmp_path, images.refs["v1"]),
                                                   dry_run=True).plans} == \
            {"the image cannot share its port (no kit.reuse_port=true label)"}
    finally:
        engine.remove_image(big, force=True)


def test_sigint_mid_rollout_leaves_every_device_serving_and_a_rerun_resumes(engine, fleet, sf_images, debian_base,
                                                                             tmp_path):
    """Ctrl-C to a real `kit rollout` process while it updates dev-2 (canary dev-1 done)."""
    ensure(fleet, tmp_path, sf_images, "v1")
    slow = f"{fleet.registry.address}/kit-test/fixture-sf:v2-slow"  # 3 s to ready: a window to hit
    fh.build_fixture_image(engine, slow, "2", base=debian_base, labels=fh.START_FIRST_LABELS, start_delay=3)
    push(slow, state_root=tmp_path, engine=engine)
    path = fleet_file(fleet, tmp_path, slow, max_parallel=1)
    record_path = tmp_path / ".kit/fleet/lab/rollout.json"
    record_path.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "kit.cli", "rollout", str(path), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        rec = st.load_record(record_path)
        if rec and rec.devices["dev-2"].result == "running" and rec.devices["dev-2"].phase == "health":
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 6, err  # RolloutError: not done
    record = json.loads(out)["record"]
    assert record["status"] == "interrupted" and "run `kit rollout` again to resume" in record["reason"]
    assert record["interrupted"]["signal"] == "SIGINT"
    assert record["interrupted"]["devices"] == {"dev-2": "health"}
    devices = {d["name"]: d for d in record["devices"]}
    assert devices["dev-1"]["result"] == "done"
    # dev-2 was not switched yet: its new container was removed, the old one kept serving
    assert devices["dev-2"]["result"] == "untouched" and "SIGINT" in devices["dev-2"]["reason"]
    assert devices["dev-3"]["result"] == "untouched"
    assert serving_versions(fleet) == {"dev-1": "2", "dev-2": "1", "dev-3": "1"}
    assert {n: len(c) for n, c in containers_of(fleet).items()} == {"dev-1": 1, "dev-2": 1, "dev-3": 1}

    again = rollout(path)
    assert again.status == "done", again.to_dict()
    assert [again.record.devices[n].result for n in ("dev-1", "dev-2", "dev-3")] == ["unchanged", "done", "done"]
    assert serving_versions(fleet) == {"dev-1": "2", "dev-2": "2", "dev-3": "2"}
    engine.remove_image(slow, force=True)
