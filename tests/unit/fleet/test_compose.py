"""The compose file kit renders, checked by the real docker-compose (1.29.2 here)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from kit.fleet import compose

DIGEST = "127.0.0.1:5000/vision/resnet50@sha256:" + "0" * 64


def spec(**over):
    base = dict(fleet="warehouse", device="nano-01", image=DIGEST, port=8601, nvidia=True, mem_limit=3 << 30)
    base.update(over)
    return compose.ServiceSpec(**base)


def test_jetson_service_has_everything_the_contract_asks_for():
    doc = yaml.safe_load(compose.render(spec()))
    assert "version" not in doc  # the Compose Specification: no version key
    svc = doc["services"]["model"]
    assert svc["image"] == DIGEST
    assert svc["runtime"] == "nvidia"
    assert svc["network_mode"] == "host"
    assert svc["restart"] == "unless-stopped"
    assert svc["environment"] == {"KIT_PORT": "8601"}
    assert svc["healthcheck"]["test"] == ["CMD", "python3", "-m", "kit.runtime.serving.main", "--probe"]
    assert svc["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
    assert svc["mem_limit"] == 3 << 30
    assert svc["labels"] == {"kit.fleet": "warehouse", "kit.fleet.device": "nano-01"}


def test_cpu_service_has_no_runtime_and_no_mem_limit_when_unknown():
    svc = yaml.safe_load(compose.render(spec(nvidia=False, mem_limit=None)))["services"]["model"]
    assert "runtime" not in svc and "mem_limit" not in svc


def test_image_of_reads_back_the_digest():
    assert compose.image_of(compose.render(spec())) == DIGEST
    assert compose.image_of(None) is None
    assert compose.image_of("services: [") is None


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed")
@pytest.mark.parametrize("nvidia", [True, False])
def test_docker_compose_accepts_the_file(tmp_path, nvidia):
    path = tmp_path / "compose.yml"
    path.write_text(compose.render(spec(nvidia=nvidia)))
    proc = subprocess.run(["docker-compose", "-p", "kit-warehouse", "-f", str(path), "config"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 0, proc.stderr
    parsed = yaml.safe_load(proc.stdout)["services"]["model"]
    assert parsed["image"] == DIGEST
    assert parsed.get("runtime") == ("nvidia" if nvidia else None)
    assert parsed["healthcheck"]["interval"] == "5s"


def test_up_and_down_argv_name_the_project_and_file(tmp_path):
    f = tmp_path / "compose.yml"
    up = compose.up_argv("warehouse", f)
    assert ["-p", "kit-warehouse", "-f", str(f)] == up[up.index("-p"):up.index("-p") + 4]
    assert up[-3:] == ["up", "-d", "--remove-orphans"]
    assert compose.up_argv("warehouse", f, force_recreate=True)[-1] == "--force-recreate"
    assert compose.down_argv("warehouse", f)[-1] == "down"


def test_run_compose_failure_carries_composes_message(tmp_path):
    from kit.errors import DockerError

    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  model:\n    image: x\n    restart: [not-a-string]\n")
    with pytest.raises(DockerError) as e:
        compose.run_compose(compose.compose_argv("t", bad, "config", "-q"), "unix:///nonexistent.sock")
    assert "compose failed on unix:///nonexistent.sock" in e.value.message


def test_mem_limit_comes_from_the_kit_memory_limit_label_of_the_built_image(tmp_path):
    # The label as kit/build/images.py writes it, read back by the rollout into the compose file.
    from pathlib import Path

    from kit.build import images
    from kit.build.report import OptimizeReport
    from kit.fleet.rollout import ComposeRollout
    from kit.manifest.load import FleetDevice, FleetManifest, load_model
    from kit.profiles import MEMORY_RESERVE_BYTES
    from kit.fleet.registry import ResolvedImage

    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "manifests" / "valid" / "model.json"
    model = load_model(fixture, check_files=False)  # optimize.memory_limit: 4GiB
    report = {"optimization": "tensorrt", "precision": "fp32", "batch_sizes": [2], "engines": 1,
              "environment": {"tensorflow": "2.3.1+nv20.12", "tensorrt": "7.1.3", "cuda": "10.2",
                              "l4t": "32.4.4", "jetpack": "4.4.1"}}
    labels = images.labels_for(model, OptimizeReport.from_dict(report), "sha256:abc", "base:1", "t")
    repository, _, digest = DIGEST.partition("@")
    resolved = ResolvedImage(ref=repository + ":3", repository=repository, digest=digest, labels=labels,
                             architecture="arm64", health_test=(), env={})
    device = FleetDevice(name="tx2-01", host="tcp://10.0.0.7:2375", device="jetson-tx2")
    fleet = FleetManifest(file=tmp_path / "fleet.yaml", name="warehouse", image=resolved.ref, devices=(device,))
    svc = yaml.safe_load(compose.render(ComposeRollout(fleet, resolved, None).spec(device, 8601)))["services"]["model"]
    assert svc["mem_limit"] == (4 << 30) + MEMORY_RESERVE_BYTES
