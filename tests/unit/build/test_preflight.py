"""Host preflight rules, judged on real release files and /proc/meminfo-format
files written here. The nv_tegra_release file is the one faked thing: there is
no Jetson on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.build import preflight
from kit.errors import PreflightError
from kit.manifest.load import ImageSpec, ModelManifest, ModelSource, Optimize, Serve, Target
from kit.build.preflight import HostFacts
from kit.profiles import parse_nv_tegra_release

GiB = 1 << 30
NANO_4_4 = "# R32 (release), REVISION: 4.4, GCID: 23942405, BOARD: t210ref, EABI: aarch64, DATE: Fri Oct 16 19:44:43 UTC 2020\n"
NANO_4_3 = "# R32 (release), REVISION: 4.3, GCID: 21589087, BOARD: t210ref, EABI: aarch64, DATE: Fri Jun 26 04:38:25 UTC 2020\n"


def manifest(tmp_path: Path, device="jetson-nano", memory_limit=2 * GiB) -> ModelManifest:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "saved_model.pb").write_bytes(b"x" * 1000)
    jetpack = None if device == "cpu" else "4.4.1"
    precision = "native" if device == "cpu" else "fp16"
    return ModelManifest(
        file=tmp_path / "kit.yaml", name="m", version="1.0.0", model=ModelSource(path=model),
        target=Target(device=device, jetpack=jetpack),
        optimize=Optimize(precision=precision, batch_sizes=(1,), max_workspace_size=GiB // 2, memory_limit=memory_limit),
        image=ImageSpec(repository="example.com/m"), serve=Serve(),
    )


def good_facts(**kw) -> HostFacts:
    base = dict(engine_host="unix:///var/run/docker.sock", engine_version="19.03.6", engine_architecture="arm64",
                runtimes=("nvidia", "runc"), l4t="32.4.4", l4t_detail="L4T 32.4.4 (t210ref)",
                mem_available=3 * GiB, swap_free=2 * GiB, model_bytes=100 << 20, disk={"output dir": 20 * GiB})
    base.update(kw)
    return HostFacts(**base)


@pytest.mark.parametrize("text,expected", [
    (NANO_4_4, "32.4.4"),
    (NANO_4_3, "32.4.3"),
    ("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t186ref, EABI: aarch64, DATE: x\n", "32.7.1"),
    ("# R35 (release), REVISION: 1.0, GCID: 31346300, BOARD: t186ref, EABI: aarch64, DATE: x\n", "35.1.0"),
])
def test_parse_nv_tegra_release(text, expected):
    assert parse_nv_tegra_release(text) == expected


@pytest.mark.parametrize("text", ["", "Debian GNU/Linux 12\n", "R32 REVISION 4.4\n"])
def test_parse_nv_tegra_release_rejects_other_text(text):
    with pytest.raises(ValueError):
        parse_nv_tegra_release(text)


def test_read_l4t_from_env_path(tmp_path, monkeypatch):
    fake = tmp_path / "nv_tegra_release"  # faked: no Jetson here
    fake.write_text(NANO_4_4)
    monkeypatch.setenv(preflight.NV_TEGRA_RELEASE_ENV, str(fake))
    release, detail = preflight.read_l4t()
    assert release == "32.4.4"
    assert "t210ref" in detail and str(fake) in detail


def test_read_l4t_missing_file_says_not_a_jetson(tmp_path, monkeypatch):
    monkeypatch.setenv(preflight.NV_TEGRA_RELEASE_ENV, str(tmp_path / "absent"))
    release, detail = preflight.read_l4t()
    assert release is None and "not a Jetson" in detail


def test_read_meminfo_real_file():
    mem = preflight.read_meminfo()
    assert mem["MemTotal"] > mem["MemAvailable"] > 0
    assert "SwapFree" in mem


def test_read_meminfo_units(tmp_path):
    f = tmp_path / "meminfo"
    f.write_text("MemTotal:        4059712 kB\nMemAvailable:    3000000 kB\nSwapFree:        2029852 kB\nHugePages_Total:       0\n")
    mem = preflight.read_meminfo(f)
    assert mem["MemAvailable"] == 3000000 * 1024 and mem["HugePages_Total"] == 0


def test_all_good_passes(tmp_path):
    result = preflight.check(preflight.evaluate(manifest(tmp_path), good_facts()))
    assert result.ok and [c.name for c in result.checks] == ["engine", "l4t", "nvidia", "memory", "disk"]


def test_engine_down_is_the_only_failure_reported(tmp_path):
    facts = HostFacts(engine_error="no Docker engine answers at unix:///var/run/docker.sock")
    with pytest.raises(PreflightError) as e:
        preflight.check(preflight.evaluate(manifest(tmp_path), facts))
    assert "no Docker engine answers" in e.value.message and "start the Docker engine" in e.value.hint


def test_l4t_mismatch_refused_with_the_fix(tmp_path):
    with pytest.raises(PreflightError) as e:
        preflight.check(preflight.evaluate(manifest(tmp_path), good_facts(l4t="32.4.3")))
    assert "L4T 32.4.3" in e.value.message and "32.4.4" in e.value.message
    assert "JetPack 4.4.1" in e.value.hint
    assert e.value.exit_code == 3


def test_not_a_jetson_refused(tmp_path):
    with pytest.raises(PreflightError) as e:
        preflight.check(preflight.evaluate(manifest(tmp_path), good_facts(l4t=None, l4t_detail="/etc/nv_tegra_release does not exist: this host is not a Jetson running L4T")))
    assert "not a Jetson" in e.value.message and "jetson-nano" in e.value.hint


def test_nvidia_runtime_missing(tmp_path):
    with pytest.raises(PreflightError) as e:
        preflight.check(preflight.evaluate(manifest(tmp_path), good_facts(runtimes=("runc",))))
    assert "nvidia container runtime is not registered" in e.value.message
    assert "daemon.json" in e.value.hint


def test_memory_counts_swap(tmp_path):
    m = manifest(tmp_path, memory_limit=2 * GiB)
    # 2.5 GiB RAM alone is short of 2 GiB + 1 GiB reserve; with 1 GiB swap it fits.
    assert preflight.evaluate(m, good_facts(mem_available=5 * GiB // 2, swap_free=GiB)).ok
    with pytest.raises(PreflightError) as e:
        preflight.check(preflight.evaluate(m, good_facts(mem_available=5 * GiB // 2, swap_free=0)))
    assert e.value.message.startswith("memory: not enough memory") and "memory_limit" in e.value.hint


def test_disk_short(tmp_path):
    with pytest.raises(PreflightError) as e:
        preflight.check(preflight.evaluate(manifest(tmp_path), good_facts(disk={"output dir /x": 100 << 20})))
    assert "not enough free disk" in e.value.message and "prune" in e.value.hint


def test_disk_needs_room_for_a_missing_base(tmp_path):
    facts = good_facts(disk={"docker data root": 2 * GiB}, model_bytes=1 << 20)
    assert preflight.evaluate(manifest(tmp_path), facts).ok
    assert not preflight.evaluate(manifest(tmp_path), good_facts(disk={"docker data root": 2 * GiB}, model_bytes=1 << 20,
                                                                 base_present=False)).ok


def test_several_failures_all_listed(tmp_path):
    with pytest.raises(PreflightError) as e:
        preflight.check(preflight.evaluate(manifest(tmp_path), good_facts(l4t="32.5.0", runtimes=("runc",), swap_free=0, mem_available=GiB)))
    assert e.value.message.startswith("l4t:")
    assert [d.split(":")[0] for d in e.value.details] == ["nvidia", "memory"]


def test_cpu_profile_skips_jetson_checks(tmp_path):
    facts = good_facts(l4t=None, runtimes=("runc",), mem_available=None, swap_free=None, engine_architecture="amd64")
    result = preflight.check(preflight.evaluate(manifest(tmp_path, device="cpu"), facts))
    assert [c.name for c in result.checks] == ["engine", "disk"]


def test_gather_facts_on_this_host_without_engine(tmp_path, monkeypatch):
    fake = tmp_path / "nv_tegra_release"  # faked: no Jetson here
    fake.write_text(NANO_4_3)
    monkeypatch.setenv(preflight.NV_TEGRA_RELEASE_ENV, str(fake))
    m = manifest(tmp_path)
    facts = preflight.gather_facts(m, engine=None, engine_error="down")
    assert facts.l4t == "32.4.3" and facts.model_bytes == 1000
    assert facts.mem_available and facts.mem_available > 0
    assert all(v is not None and v > 0 for v in facts.disk.values())


class RemoteNanoEngine:
    """A Nano's engine reached over ssh:// (MOCKED: no Jetson here): docker info's answer, and a
    container that prints the device's /etc/nv_tegra_release when asked."""

    def __init__(self, labels=None):
        from kit.docker_api import EngineInfo

        self.host = "ssh://nvidia@nano-01.local"
        self.info_ = EngineInfo(host=self.host, server_version="19.03.6", api_version="1.40", architecture="arm64",
                                os="Ubuntu 18.04.5 LTS", kernel="4.9.140-tegra", runtimes=("nvidia", "runc"),
                                default_runtime="nvidia", memory_bytes=4 * GiB, cpus=4, labels=dict(labels or {}))
        self.ran = []

    def info(self):
        return self.info_

    def image_exists(self, ref):
        return True

    def run_to_completion(self, image, command, **kw):
        from kit.docker_api import RunResult

        self.ran.append((image, command, kw))
        return RunResult(0, NANO_4_4)


def test_a_remote_engine_is_asked_for_the_l4t_and_memory_not_this_machine(tmp_path, monkeypatch):
    here = tmp_path / "nv_tegra_release"
    here.write_text(NANO_4_3)  # this machine's (fake) release: must NOT be what the device is judged by
    monkeypatch.setenv(preflight.NV_TEGRA_RELEASE_ENV, str(here))
    m = manifest(tmp_path)
    engine = RemoteNanoEngine()
    facts = preflight.gather_facts(m, engine)
    assert facts.l4t == "32.4.4" and facts.l4t_detail == "/etc/nv_tegra_release on the device"
    image, command, kw = engine.ran[0]
    assert image == m.base_image and kw["mounts"][0].source == "/etc/nv_tegra_release"  # the device's own file
    assert facts.mem_available == 4 * GiB and "docker info at ssh://nvidia@nano-01.local" in facts.memory_detail
    result = preflight.evaluate(m, facts)
    checks = {c.name: c for c in result.checks}
    assert checks["l4t"].ok and checks["memory"].ok and "swap are not visible from here" in checks["memory"].detail
    labelled = preflight.gather_facts(m, RemoteNanoEngine(labels={"kit.l4t": "32.4.3"}))
    assert labelled.l4t == "32.4.3" and not {c.name: c for c in preflight.evaluate(m, labelled).checks}["l4t"].ok


def test_a_local_engine_still_reads_this_machines_release(tmp_path, monkeypatch):
    here = tmp_path / "nv_tegra_release"
    here.write_text(NANO_4_3)
    monkeypatch.setenv(preflight.NV_TEGRA_RELEASE_ENV, str(here))
    engine = RemoteNanoEngine()
    engine.host = "unix:///var/run/docker.sock"
    object.__setattr__(engine.info_, "host", "unix:///var/run/docker.sock")
    facts = preflight.gather_facts(manifest(tmp_path), engine)
    assert facts.l4t == "32.4.3" and engine.ran == []
