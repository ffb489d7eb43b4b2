"""The stack file and node labels kit renders for a swarm (deployed for real in
tests/integration/test_swarm.py)."""

from __future__ import annotations

import yaml

from kit.fleet import compose, swarm
from kit.fleet.facts import DeviceFacts
from kit.fleet.gate import Fingerprint
from kit.manifest.load import FleetDevice

DIGEST = "reg:5000/vision/resnet50@sha256:" + "0" * 64
NANO = Fingerprint(device="jetson-nano", optimization="tensorrt", model_digest="sha256:1", l4t="32.4.4",
                   tensorrt="7.1.3", gpu_arch="sm_53", precision="fp16", architecture="arm64")


def spec(**over):
    base = dict(fleet="warehouse", device="*", image=DIGEST, port=8601, nvidia=False, mem_limit=3 << 30)
    base.update(over)
    return compose.ServiceSpec(**base)


def stack(policy=None, fp=NANO):
    policy = policy or swarm.UpdatePolicy(parallelism=4, monitor=120, on_failure="rollback")
    return yaml.safe_load(swarm.render(spec(), policy, swarm.constraints("warehouse", fp)))


def test_stack_is_a_global_service_on_the_host_network_with_the_compose_health_and_logging():
    doc = stack()
    svc = doc["services"]["model"]
    assert doc["version"] == "3.8"
    assert doc["networks"] == {"hostnet": {"external": True, "name": "host"}}
    assert svc["networks"] == ["hostnet"] and svc["image"] == DIGEST
    assert svc["deploy"]["mode"] == "global"
    assert svc["healthcheck"] == dict(compose.healthcheck(spec()), interval="2s", retries=8)
    assert svc["logging"] == compose.logging_options()
    assert svc["environment"] == {"KIT_PORT": "8601"}
    assert "runtime" not in svc and "mem_limit" not in svc and "restart" not in svc  # swarm has none of these
    assert svc["deploy"]["resources"] == {"limits": {"memory": str(3 << 30)}}


def test_update_config_follows_the_rollout_policy():
    rollback = stack()["services"]["model"]["deploy"]["update_config"]
    assert (rollback["parallelism"], rollback["monitor"], rollback["failure_action"]) == (4, "120s", "rollback")
    halt = stack(swarm.UpdatePolicy(parallelism=1, monitor=30, on_failure="halt"))
    assert halt["services"]["model"]["deploy"]["update_config"]["failure_action"] == "pause"


def test_placement_asks_for_the_image_fingerprint():
    got = stack()["services"]["model"]["deploy"]["placement"]["constraints"]
    assert got == ["node.labels.kit.fleet.warehouse == true", "node.labels.kit.device == jetson-nano",
                   "node.labels.kit.l4t == 32.4.4", "node.labels.kit.tensorrt == 7.1.3",
                   "node.labels.kit.gpu_arch == sm_53", "node.platform.arch == aarch64"]
    cpu = Fingerprint(device="cpu", optimization="native", model_digest="sha256:1", architecture="amd64")
    assert swarm.constraints("lab", cpu) == ["node.labels.kit.fleet.lab == true", "node.labels.kit.device == cpu",
                                             "node.platform.arch == x86_64"]


def test_node_labels_from_facts_match_the_constraints_of_a_matching_image():
    facts = DeviceFacts(name="nano-01", host="ssh://n", reachable=True, architecture="arm64", l4t="32.4.4")
    labels = swarm.node_labels("warehouse", FleetDevice("nano-01", "ssh://n", "jetson-nano"), facts, admitted=True)
    for c in swarm.constraints("warehouse", NANO):
        key, _, want = c.partition(" == ")
        if key.startswith("node.labels."):
            assert labels[key[len("node.labels."):]] == want, c
    assert labels["kit.fleet.warehouse.device"] == "nano-01"
    refused = swarm.node_labels("warehouse", FleetDevice("nano-01", "ssh://n", "jetson-nano"), facts, admitted=False)
    assert refused["kit.fleet.warehouse"] == "false"


def test_tasks_by_node_prefers_the_task_meant_to_run():
    tasks = [
        {"NodeID": "n1", "DesiredState": "shutdown", "UpdatedAt": "2", "Status": {"State": "shutdown"},
         "Spec": {"ContainerSpec": {"Image": "old"}}},
        {"NodeID": "n1", "DesiredState": "running", "UpdatedAt": "1", "Status": {"State": "starting"},
         "Spec": {"ContainerSpec": {"Image": "new"}}},
    ]
    got = swarm.tasks_by_node(tasks)["n1"]
    assert (got.image, got.state, got.running) == ("new", "starting", False)


def test_a_swarm_fleet_needs_one_port_for_every_device(tmp_path):
    from kit.manifest.load import inspect

    doc = {"apiVersion": "kit/v1", "kind": "Fleet", "metadata": {"name": "lab"}, "image": "reg:5000/a/b:1",
           "swarm": {"manager": "tcp://10.0.0.1:2375"},
           "devices": [{"name": "a", "host": "tcp://10.0.0.1:2375", "device": "cpu", "port": 8501},
                       {"name": "b", "host": "tcp://10.0.0.2:2375", "device": "cpu", "port": 8502}]}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(doc))
    problems = inspect(path, True, expect="Fleet").problems
    assert [p.path for p in problems] == [("devices", 1, "port")]
    assert "same port" in problems[0].message
    del doc["swarm"]  # without a swarm, two hosts may use two ports
    path.write_text(yaml.safe_dump(doc))
    assert inspect(path, True, expect="Fleet").problems == []


def test_start_first_order_and_reuse_port_go_into_update_and_rollback_config():
    policy = swarm.UpdatePolicy(parallelism=3, monitor=30, on_failure="rollback", order="start-first")
    svc = yaml.safe_load(swarm.render(spec(reuse_port=True), policy, []))["services"]["model"]
    assert svc["deploy"]["update_config"]["order"] == "start-first"
    assert svc["deploy"]["rollback_config"]["order"] == "start-first"
    assert svc["environment"] == {"KIT_PORT": "8601", "KIT_REUSE_PORT": "1", "KIT_SLOT": "{{.Task.ID}}"}
    # A shared port keeps the image's own probe, which reads KIT_SLOT and counts only its own
    # task's answer (tests/unit/runtime/serving/test_healthcheck.py); the swarm only probes faster.
    assert svc["healthcheck"]["test"] == compose.DEFAULT_HEALTH_TEST
    image_probe = ("CMD", "python3", "-m", "kit.runtime.serving.healthcheck")
    shared = yaml.safe_load(swarm.render(spec(reuse_port=True, health_test=image_probe), policy, []))
    assert shared["services"]["model"]["healthcheck"] == dict(
        compose.healthcheck(spec(health_test=image_probe)), interval="2s", retries=8)
    assert shared["services"]["model"]["healthcheck"]["test"] == list(image_probe)
    assert stack()["services"]["model"]["deploy"]["update_config"]["order"] == "stop-first"


def _plan(name, strategy, reason, action="update"):
    from kit.fleet.plan import DevicePlan

    return DevicePlan(FleetDevice(name, "tcp://" + name, "cpu"), action, strategy=strategy, strategy_reason=reason)


def test_one_node_that_cannot_hold_two_copies_makes_the_whole_service_stop_first():
    from kit.fleet.swarm_rollout import choose_order

    fits = [_plan("a", "start-first", "two copies fit"), _plan("b", "start-first", "two copies fit"),
            _plan("c", "stop-first", "", action="unchanged")]
    assert choose_order(fits) == "start-first"
    assert [p.strategy for p in fits[:2]] == ["start-first", "start-first"]
    tight = [_plan("a", "start-first", "two copies fit"), _plan("b", "stop-first", "two copies do not fit: ...")]
    assert choose_order(tight) == "stop-first"
    assert tight[0].strategy == "stop-first"
    assert "b cannot start first (two copies do not fit" in tight[0].strategy_reason
    assert choose_order([]) == "stop-first"


def test_timeline_reads_the_swarm_task_timestamps_into_phases():
    from kit.fleet.swarm_timeline import NodeTimeline, parse_time

    assert parse_time("2026-12-02T04:20:00.5Z") - parse_time("2026-12-02T04:20:00Z") == 0.5
    assert parse_time("0001-01-01T00:00:00Z") is None and parse_time(None) is None
    base = parse_time("2026-12-02T04:20:00Z")

    def task(image, desired, state, created, stamp):
        return {"NodeID": "n1", "DesiredState": desired, "CreatedAt": f"2026-12-02T04:20:{created}Z",
                "Status": {"State": state, "Timestamp": f"2026-12-02T04:20:{stamp}Z"},
                "Spec": {"ContainerSpec": {"Image": image}}}

    tl = NodeTimeline()
    tl.observe([task("old", "shutdown", "running", "00.0", "00.0"), task("new", "ready", "preparing", "01.0", "01.0")],
               "n1", "new", base + 1.1)
    tl.observe([task("old", "shutdown", "running", "00.0", "00.0"), task("new", "ready", "ready", "01.0", "01.5")],
               "n1", "new", base + 1.6)
    tl.observe([task("old", "shutdown", "shutdown", "00.0", "02.000000001"),
                task("new", "running", "starting", "01.0", "02.5")], "n1", "new", base + 2.6)
    tl.observe([task("old", "shutdown", "shutdown", "00.0", "02.0"),
                task("new", "running", "running", "01.0", "07.5")], "n1", "new", base + 7.75)
    tl.smoke = 0.1
    got = tl.durations(base + 0.5, start_first=False)
    assert got == {"schedule": 0.5, "prepare": 0.5, "stop-old": 0.5, "start": 0.5, "health": 5.0, "observe": 0.25,
                   "smoke": 0.1}
    assert set(tl.durations(base + 0.5, start_first=True)) == {"schedule", "prepare", "start", "health", "observe",
                                                               "smoke", "drain-old"}
