"""`kit rollout` onto a real Docker swarm: three dockerd in their own network
namespaces, joined in one swarm, the registry on the bridge's address
(testkit/swarm_harness.py).

Faked, because no Jetson exists here: nothing in these tests (the devices are
cpu devices; a node declared jetson-nano is refused on its real facts).
Everything else is real: swarm init/join, node labels, `docker stack deploy`,
the swarm's health-gated rolling update and its automatic rollback, a node
whose dockerd is killed in the middle of an update."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from testkit import fleet_harness as fh  # noqa: E402
from testkit import swarm_harness as sh  # noqa: E402

from kit.cli import main  # noqa: E402
from kit.docker_api import connect  # noqa: E402
from kit.fleet import state as st  # noqa: E402
from kit.fleet import swarm  # noqa: E402
from kit.fleet.registry import push  # noqa: E402
from kit.fleet.rollout import rollout  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="session")
def cluster(engine):
    for tool in ("dockerd", "containerd", "docker-registry", "docker", "ip", "nsenter"):
        if not shutil.which(tool):
            pytest.fail(f"the swarm tests need {tool} (scripts/setup-host installs it)", pytrace=False)
    with sh.Swarm(3) as s:
        yield s


class Images:
    """Fixture images built on the manager node and pushed to the bridge registry."""

    def __init__(self, host_engine, cluster, base: str, state_root: Path):
        cluster.load_image(host_engine, base)
        self.engine = connect(cluster.manager.host)
        repo = f"{cluster.registry.address}/kit-test/swarm-fixture"
        self.refs = {"v1": f"{repo}:v1", "v2": f"{repo}:v2", "crash": f"{repo}:crash"}
        fh.build_fixture_image(self.engine, self.refs["v1"], "1", base=base)
        fh.build_fixture_image(self.engine, self.refs["v2"], "2", base=base)
        fh.build_fixture_image(self.engine, self.refs["crash"], "3", mode="crash", base=base)
        # start-first pairs: shares its port, two copies fit ("sf"); shares it, but one copy
        # claims all of the node's memory, so two never fit ("big")
        big = {"kit.reuse_port": "true", "kit.memory_limit": str(self.engine.info().memory_bytes)}
        for kind, labels in (("sf", fh.START_FIRST_LABELS), ("big", big)):
            for v in ("1", "2"):
                self.refs[f"{kind}{v}"] = f"{repo}-{kind}:v{v}"
                # sf v2 loads for 3 s before it listens: its probe must not take the old task's answer
                delay = 3 if (kind, v) == ("sf", "2") else 0
                fh.build_fixture_image(self.engine, self.refs[f"{kind}{v}"], v, base=base, labels=labels,
                                       start_delay=delay)
        self.digest = {k: push(ref, state_root=state_root, engine=self.engine).digest_ref
                       for k, ref in self.refs.items()}


@pytest.fixture(scope="session")
def images(engine, cluster, debian_base, tmp_path_factory):
    imgs = Images(engine, cluster, debian_base, tmp_path_factory.mktemp("swarm-push"))
    yield imgs
    imgs.engine.close()


def versions(cluster) -> dict:
    return {n.name: sh.predict(n.address, n.port, "fixture", [[2.0]])["model_version"] for n in cluster.nodes}


def tasks(cluster, name="lab") -> dict:
    """device -> (image, state) of the fleet service's task on its node."""
    with connect(cluster.manager.host) as eng:
        by_node = swarm.tasks_by_node(eng.tasks(swarm.service_name(name)))
    out = {}
    for n in cluster.nodes:
        with connect(n.host) as eng:
            task = by_node.get(eng.info().swarm_node_id)
        out[n.name] = (task.image, task.state) if task else None
    return out


def ensure(cluster, tmp_path, images, key="v1"):
    result = rollout(cluster.write_fleet(tmp_path / "fleet.yaml", "lab", images.refs[key], health_timeout="30s"))
    assert result.status == "done", result.to_dict()
    return result


def test_swarm_rollout_labels_nodes_deploys_by_digest_and_status_reads_tasks(cluster, images, tmp_path, capsys):
    path = cluster.write_fleet(tmp_path / "fleet.yaml", "lab", images.refs["v1"], health_timeout="30s")
    code = main(["rollout", str(path), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    record = result["record"]
    assert record["orchestrator"] == "swarm" and record["status"] == "done", record
    assert {d["result"] for d in record["devices"]} <= {"done", "unchanged"}
    assert "smoke" in captured.err
    # every node serves v1 from the pinned digest, on its own address
    assert versions(cluster) == {"dev-1": "1", "dev-2": "1", "dev-3": "1"}
    assert set(tasks(cluster).values()) == {(images.digest["v1"], "running")}
    # the stack file: global, host network, constraints from the fingerprint, update_config from the policy
    stack = yaml.safe_load((tmp_path / ".kit/fleet/lab/stack.yml").read_text())
    svc = stack["services"]["model"]
    assert svc["image"] == images.digest["v1"] and svc["deploy"]["mode"] == "global"
    assert stack["networks"]["hostnet"] == {"external": True, "name": "host"}
    assert "node.labels.kit.device == cpu" in svc["deploy"]["placement"]["constraints"]
    assert "node.labels.kit.fleet.lab == true" in svc["deploy"]["placement"]["constraints"]
    assert svc["deploy"]["update_config"]["parallelism"] == 3
    assert svc["deploy"]["update_config"]["monitor"] == "30s"
    assert svc["deploy"]["update_config"]["failure_action"] == "rollback"
    # node labels carry each device's fingerprint
    with connect(cluster.manager.host) as eng:
        labels = {n["Spec"]["Labels"].get("kit.fleet.lab.device"): n["Spec"]["Labels"] for n in eng.nodes()}
    assert labels["dev-2"]["kit.device"] == "cpu" and labels["dev-2"]["kit.fleet.lab"] == "true"
    assert labels["dev-2"]["kit.l4t"] == "none"

    code = main(["fleet", "status", str(path), "--json"])
    status = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [(d["name"], d["reachable"], d["digest"], d["healthy"], d["version"]) for d in status["devices"]] == [
        (n.name, True, images.digest["v1"], True, "1") for n in cluster.nodes]

    # a model update: v1 -> v2, the swarm's rolling update
    result = rollout(path, image=images.refs["v2"])
    assert result.status == "done", result.to_dict()
    assert versions(cluster) == {"dev-1": "2", "dev-2": "2", "dev-3": "2"}
    assert all(r.before == images.digest["v1"] and r.after == images.digest["v2"]
               for r in result.record.devices.values())
    assert images.digest["v1"] in (tmp_path / ".kit/fleet/lab/stack.last-good.yml").read_text()

    # a re-run changes nothing
    again = rollout(path, image=images.refs["v2"])
    assert again.status == "done"
    assert [r.result for r in again.record.devices.values()] == ["unchanged"] * 3


def test_broken_image_is_rolled_back_by_the_swarm(cluster, images, tmp_path):
    ensure(cluster, tmp_path, images, "v1")
    path = cluster.write_fleet(tmp_path / "fleet.yaml", "lab", images.refs["crash"], health_timeout="20s")
    result = rollout(path)
    assert result.status == "rolled-back", result.to_dict()
    assert "rolled the update back" in result.reason
    assert {r.result for r in result.record.devices.values()} == {"rolled-back"}
    assert all(r.after == images.digest["v1"] for r in result.record.devices.values())
    # the swarm put v1 back everywhere, and it serves
    sh.wait_for(lambda: set(tasks(cluster).values()) == {(images.digest["v1"], "running")}, 60, "v1 back")
    assert versions(cluster) == {"dev-1": "1", "dev-2": "1", "dev-3": "1"}
    on_disk = st.load_record(tmp_path / ".kit/fleet/lab/rollout.json")
    assert on_disk.status == "rolled-back" and on_disk.orchestrator == "swarm"


def test_node_whose_facts_do_not_match_gets_no_task(cluster, images, tmp_path):
    ensure(cluster, tmp_path, images, "v1")
    entries = [{"name": n.name, "host": n.tcp_host, "device": "cpu", "port": n.port} for n in cluster.nodes]
    entries[2]["device"] = "jetson-nano"  # declared a Nano; its engine says amd64, no nvidia runtime
    path = cluster.write_fleet(tmp_path / "fleet.yaml", "lab", images.refs["v2"], devices=entries,
                               health_timeout="30s")
    result = rollout(path)
    assert result.status == "partial", result.to_dict()
    recs = result.record.devices
    assert recs["dev-3"].result == "refused"
    assert "device reports amd64, profile jetson-nano is arm64" in recs["dev-3"].reason
    assert [recs[n].result for n in ("dev-1", "dev-2")] == ["done", "done"]
    now = tasks(cluster)
    assert now["dev-1"] == now["dev-2"] == (images.digest["v2"], "running")
    assert now["dev-3"] is None or now["dev-3"][1] != "running"  # the swarm placed nothing there
    with pytest.raises(OSError):
        sh.predict(cluster.node("dev-3").address, 8501, "fixture", [[1.0]], timeout=2)
    with connect(cluster.manager.host) as eng:
        labels = {n["Spec"]["Labels"].get("kit.fleet.lab.device"): n["Spec"]["Labels"] for n in eng.nodes()}
    assert labels["dev-3"]["kit.device"] == "jetson-nano" and labels["dev-3"]["kit.fleet.lab"] == "false"


def test_jetson_node_without_nvidia_default_runtime_is_refused_with_the_fix(cluster, images, tmp_path):
    """The swarm cannot pick a runtime per service; the message says what to set."""
    from kit.fleet.facts import DeviceFacts
    from kit.fleet.swarm_rollout import SwarmRollout
    from kit.manifest.load import load_fleet
    from kit.fleet.registry import resolve

    path = cluster.write_fleet(tmp_path / "fleet.yaml", "lab", images.refs["v1"])
    fleet = load_fleet(path)
    with connect(cluster.manager.host) as eng:
        run = SwarmRollout(fleet, resolve(images.refs["v1"], engine=eng))
        node_id = eng.info().swarm_node_id
        nodes = {n["ID"]: n for n in eng.nodes()}
    # Only the Jetson side is made up: an engine that registers nvidia, default runc.
    facts = DeviceFacts(name="nano", host="tcp://x", reachable=True, architecture="arm64", runtimes=("nvidia", "runc"),
                        default_runtime="runc", l4t="32.4.4", swarm_node_id=node_id, swarm_state="active")
    import kit.fleet.swarm_rollout as sr

    real = sr.read_facts
    sr.read_facts = lambda engine, device: facts
    try:
        from kit.manifest.load import FleetDevice

        plan = run.plan_device(FleetDevice(name="nano", host=cluster.manager.tcp_host, device="jetson-nano"),
                               nodes, {})
    finally:
        sr.read_facts = real
    assert plan.action == "refused"
    assert '"default-runtime": "nvidia"' in plan.reason and "/etc/docker/daemon.json" in plan.reason


def test_node_down_in_the_middle_of_an_update(cluster, images, tmp_path):
    ensure(cluster, tmp_path, images, "v1")
    victim = cluster.node("dev-2")

    def progress(device, phase, message):
        if device == "*" and phase == "deploy":
            victim.kill()  # SIGKILL dockerd as the update starts

    path = cluster.write_fleet(tmp_path / "fleet.yaml", "lab", images.refs["v2"], health_timeout="30s")
    try:
        result = rollout(path, progress=progress)
        recs = result.record.devices
        assert result.status == "partial", result.to_dict()
        assert recs["dev-2"].result == "failed" and "went down" in recs["dev-2"].reason
        assert [recs[n].result for n in ("dev-1", "dev-3")] == ["done", "done"]
        dev1 = cluster.node("dev-1")
        assert sh.predict(dev1.address, dev1.port, "fixture", [[1.0]])["model_version"] == "2"
    finally:
        victim.start()
    # back up, the node rejoins the swarm (the record above told what it missed)
    sh.wait_for(lambda: cluster.node_state("dev-2") == "ready", 60, "dev-2 ready again")
    dev3 = cluster.node("dev-3")
    assert sh.predict(dev3.address, dev3.port, "fixture", [[1.0]])["model_version"] == "2"


def update_order(cluster, name="lab") -> str:
    with connect(cluster.manager.host) as eng:
        return eng.service_inspect(swarm.service_name(name))["Spec"]["UpdateConfig"]["Order"]


def one_task_running_per_node(cluster, name="lab") -> bool:
    with connect(cluster.manager.host) as eng:
        running = [t["NodeID"] for t in eng.tasks(swarm.service_name(name))
                   if (t.get("Status") or {}).get("State") == "running"]
    return len(running) == len(set(running)) == len(cluster.nodes)


def test_start_first_update_on_the_swarm_fails_no_request(cluster, images, tmp_path):
    """Two copies fit on every node: the swarm starts each new task beside the old one on the
    same port (SO_REUSEPORT), and a client per node opening new connections sees no failure.
    v2 takes 3 s to listen: the old task answers the new one's health probe meanwhile, which
    must not count (the probe wants its own task's Kit-Slot), or the swarm would stop the old
    task early and the clients would see refused connections."""
    path = cluster.write_fleet(tmp_path / "fleet.yaml", "lab", images.refs["sf1"], health_timeout="30s")
    first = rollout(path)
    assert first.status == "done", first.to_dict()
    with sh.NodeHammer(cluster.nodes, "fixture", [[1.0]]) as h:
        result = rollout(path, image=images.refs["sf2"])
        # the old tasks drain once the new ones are healthy (kit is done before that)
        sh.wait_for(lambda: one_task_running_per_node(cluster), 60, "one task per node")
    assert result.status == "done", result.to_dict()
    assert update_order(cluster) == "start-first"
    for rec in result.record.devices.values():
        assert rec.strategy == "start-first" and "two copies fit" in rec.strategy_reason, rec
        assert rec.durations["health"] >= 3 and "smoke" in rec.durations, rec.durations
    assert {n: h.failures[n][:3] for n in h.failures} == {n.name: [] for n in cluster.nodes}
    for n in cluster.nodes:
        assert len(h.answers[n.name]) > 20, h.answers[n.name]
        assert h.versions(n.name)[0] == "1" and h.versions(n.name)[-1] == "2", h.versions(n.name)
    assert yaml.safe_load((tmp_path / ".kit/fleet/lab/stack.yml").read_text())["services"]["model"][
        "environment"]["KIT_REUSE_PORT"] == "1"


def test_stop_first_on_the_swarm_when_two_copies_do_not_fit(cluster, images, tmp_path):
    path = cluster.write_fleet(tmp_path / "fleet.yaml", "lab", images.refs["big1"], health_timeout="30s")
    assert rollout(path).status == "done"
    result = rollout(path, image=images.refs["big2"])
    assert result.status == "done", result.to_dict()
    assert update_order(cluster) == "stop-first"
    for rec in result.record.devices.values():
        assert rec.strategy == "stop-first" and "two copies do not fit" in rec.strategy_reason, rec
        assert "stop-old" in rec.durations, rec.durations
    assert versions(cluster) == {"dev-1": "2", "dev-2": "2", "dev-3": "2"}
