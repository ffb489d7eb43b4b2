"""`kit doctor` on a fake Jetson Nano: the L4T file, /proc/meminfo (tests/fake_jetson.py) and the
engine's `docker info` answers (FakeNanoEngine below) are THE mocked things (no Jetson here);
every fact is read through kit.build.preflight's readers and judged. Then the real verdict here."""

import json
from pathlib import Path

import pytest

import fake_jetson
from kit.build import doctor as kd
from kit.cli import main
from kit.docker_api import EngineInfo, RunResult
from kit.errors import DockerError
from kit.runtime.trt_smoke import RESULT_PREFIX
from testkit import manifests

SMOKE_OK = {"ok": True, "exit_code": 0, "optimization": "tensorrt", "engines": 1,
            "findings_summary": ["1 candidate segment(s)", "1 engine(s) built"], "error": None}


class FakeNanoEngine:
    """docker info of JetPack 4.4.1's Docker 19.03 with the nvidia runtime (mocked: no Jetson here)."""

    host = "unix:///var/run/docker.sock"

    def __init__(self, default_runtime="nvidia", base_present=True, builders=(), smoke=SMOKE_OK):
        self.default_runtime, self.base_present, self.builders, self.smoke = default_runtime, base_present, builders, smoke
        self.ran = []

    def info(self):
        return EngineInfo(host=self.host, server_version="19.03.6", api_version="1.40", architecture="arm64",
                          os="Ubuntu 18.04.5 LTS", kernel="4.9.140-tegra", runtimes=("nvidia", "runc"),
                          default_runtime=self.default_runtime, memory_bytes=4051032 * 1024, cpus=4)

    def image_exists(self, ref):
        return self.base_present

    def distribution_digest(self, ref):
        raise DockerError("dial tcp: lookup nvcr.io: no such host")

    def image_refs(self, pattern):
        return list(self.builders)

    def run_to_completion(self, image, command, **kw):
        self.ran.append((image, command, kw))
        return RunResult(0, "TF log line\n" + RESULT_PREFIX + json.dumps(self.smoke) + "\n")

    def close(self):
        pass


def run_doctor(tmp_path, engine, **kw):
    root = fake_jetson.make_tree(tmp_path)
    return kd.doctor(root=root, connect=lambda host: engine, **kw)


def by_name(report):
    return {c.name: c for c in report.checks}


def test_fake_nano_reads_every_fact_and_passes(tmp_path):
    engine = FakeNanoEngine(builders=["kit/builder:4.4.1-0123456789ab"])
    report = run_doctor(tmp_path, engine, trt_smoke=True)
    f = report.facts
    assert f.l4t == "32.4.4" and "t210ref" in f.l4t_detail
    assert f.meminfo["MemTotal"] == 4051032 * 1024 and f.meminfo["SwapFree"] == 2025512 * 1024
    assert f.engine_version == "19.03.6" and f.architecture == "arm64"
    assert f.runtimes == ("nvidia", "runc") and f.default_runtime == "nvidia" and f.base_present is True
    checks = by_name(report)
    assert [c.name for c in report.checks] == ["l4t", "engine", "nvidia", "default-runtime", "memory", "disk",
                                               "base", "trt-smoke"]
    assert all(c.status == "ok" for c in report.checks), [(c.name, c.status, c.detail) for c in report.checks]
    assert "JetPack 4.4.1" in checks["l4t"].detail and "TensorRT 7.1.3" in checks["l4t"].detail
    assert "2.5 GiB of 3.9 GiB RAM available" in checks["memory"].detail
    assert "1 TensorRT engine(s) built and saved in kit/builder:4.4.1-0123456789ab" in checks["trt-smoke"].detail
    image, command, kw = engine.ran[0]
    assert command == ["python3", "-m", "kit.runtime.trt_smoke"] and kw["runtime"] == "nvidia"
    assert report.exit_code == 0


def test_warnings_do_not_fail(tmp_path):
    report = run_doctor(tmp_path, FakeNanoEngine(default_runtime="runc"))
    c = by_name(report)["default-runtime"]
    assert c.status == "warn" and '"default-runtime": "nvidia"' in c.fix
    assert report.exit_code == 0


def test_manifest_memory_limit_against_meminfo(tmp_path):
    from kit.manifest.load import load_model  # noqa: F401  (the same loader doctor uses)

    manifest = tmp_path / "m" / "kit.yaml"
    manifest.parent.mkdir()
    (manifest.parent / "sm").mkdir()
    (manifest.parent / "sm" / "saved_model.pb").write_bytes(b"")
    manifests.write_model(manifest, manifests.model_doc(**manifests.NANO), metadata={"name": "big"},
                          model={"path": "./sm"}, optimize={"max_workspace_size": "1GiB", "memory_limit": "3GiB"},
                          image={"repository": "registry.example.com/big"})
    report = run_doctor(tmp_path / "root", FakeNanoEngine(), manifest_path=manifest)
    c = by_name(report)["memory"]
    # 2.5 GiB available + 1.9 GiB swap vs 3 GiB + 1 GiB reserve: fits only with swap
    assert c.status == "warn" and "memory_limit 3.0 GiB" in c.detail and "swap" in c.detail
    (tmp_path / "root" / "proc" / "meminfo").write_text(fake_jetson.MEMINFO.replace("2025512", "0"))
    report = kd.doctor(root=tmp_path / "root", connect=lambda h: FakeNanoEngine(), manifest_path=manifest)
    assert by_name(report)["memory"].status == "fail" and report.exit_code == 3


def test_failed_smoke_reports_the_log_findings(tmp_path):
    smoke = {"ok": False, "exit_code": 5, "engines": 0, "optimization": None,
             "findings_summary": ["1 engine creation failure(s): fell back to native"],
             "error": {"kind": "gate", "message": "no engine for batch size 1", "hint": "lower max_workspace_size"}}
    report = run_doctor(tmp_path, FakeNanoEngine(smoke=smoke, builders=["kit/builder:4.4.1-x"]), trt_smoke=True)
    c = by_name(report)["trt-smoke"]
    assert c.status == "fail" and "no engine for batch size 1" in c.detail and "fell back to native" in c.detail
    assert c.fix == "lower max_workspace_size" and report.exit_code == 3


def test_smoke_falls_back_to_the_base_image_with_kit_copied_in(tmp_path):
    engine = FakeNanoEngine()
    run_doctor(tmp_path, engine, trt_smoke=True)
    image, _, kw = engine.ran[0]
    assert image == "nvcr.io/nvidia/l4t-tensorflow:r32.4.4-tf2.3-py3"
    assert kw["uploads"][0].target == "/opt/kit-doctor/kit" and kw["env"] == {"PYTHONPATH": "/opt/kit-doctor"}
    assert (Path(kw["uploads"][0].source) / "runtime" / "trt_smoke.py").is_file()


def test_base_missing_and_not_pullable_fails(tmp_path):
    c = by_name(run_doctor(tmp_path, FakeNanoEngine(base_present=False)))["base"]
    assert c.status == "fail" and "no such host" in c.detail and "docker pull" in c.fix


def test_permission_denied_on_the_socket_says_docker_group(tmp_path):
    def refuse(host):
        raise DockerError("connecting to unix:///var/run/docker.sock: Permission denied")

    report = kd.doctor(root=fake_jetson.make_tree(tmp_path), connect=refuse)
    c = by_name(report)["engine"]
    assert c.status == "fail" and "usermod -aG docker" in c.fix and report.exit_code == 3
    assert by_name(report)["l4t"].status == "ok"  # the files were still read


def test_unknown_l4t_release(tmp_path):
    root = fake_jetson.make_tree(tmp_path)
    (root / "etc" / "nv_tegra_release").write_text("# R32 (release), REVISION: 6.1, GCID: 1, BOARD: t210ref\n")
    c = by_name(kd.doctor(root=root, connect=lambda h: FakeNanoEngine()))["l4t"]
    assert c.status == "fail" and "L4T 32.6.1" in c.detail and "JetPack 4.4.1 (L4T 32.4.4)" in c.fix


@pytest.mark.docker
def test_real_verdict_here_is_honest(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(kd.HOST_ROOT_ENV, str(tmp_path))  # this machine has no /etc/nv_tegra_release anyway
    code = main(["doctor", "--json", "--trt-smoke"])
    data = json.loads(capsys.readouterr().out)
    assert code == 3 and data["exit_code"] == 3
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["l4t"]["status"] == "fail" and "not a Jetson" in checks["l4t"]["detail"]
    assert checks["engine"]["status"] == "ok"
    assert checks["nvidia"]["status"] == "fail" and "not a Jetson" in checks["nvidia"]["detail"]
    assert checks["trt-smoke"]["status"] == "fail" and "nvidia runtime is not registered" in checks["trt-smoke"]["detail"]


@pytest.mark.docker
def test_real_table_here_has_no_traceback(capsys):
    code = main(["doctor"])
    captured = capsys.readouterr()
    assert code == 3 and "Traceback" not in captured.out + captured.err
    assert "fail" in captured.out and "not a Jetson" in captured.out


@pytest.mark.tf
def test_trt_smoke_module_here_says_tensorrt_is_absent(tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "kit.runtime.trt_smoke"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=600, cwd=str(tmp_path))
    line = [x for x in p.stdout.decode().splitlines() if x.startswith(RESULT_PREFIX)][-1]
    result = json.loads(line[len(RESULT_PREFIX):])
    assert p.returncode == 3 and result["ok"] is False and result["error"]["kind"] == "preflight"
    assert "TensorRT is not available" in result["error"]["message"]
    assert list(tmp_path.iterdir()) == []  # nothing left behind in the cwd
