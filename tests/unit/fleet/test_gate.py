"""Fingerprint gating rules. Jetson device facts are written out as data: there
is no Jetson here, so these are the facts a Nano/Xavier engine would report."""

from __future__ import annotations

import pytest

from kit.fleet.facts import DeviceFacts
from kit.fleet.gate import check, tensorrt_for_l4t
from kit.labels import Fingerprint
from kit.manifest.load import FleetDevice

NANO_LABELS = {
    "kit.device": "jetson-nano", "kit.l4t": "32.4.4", "kit.jetpack": "4.4.1", "kit.tensorrt": "7.1.3",
    "kit.cuda": "10.2", "kit.tensorflow": "2.3.1", "kit.gpu_arch": "sm_53", "kit.precision": "fp16",
    "kit.batch_sizes": "1,8", "kit.model_digest": "sha256:" + "a" * 64, "kit.optimization": "tensorrt",
    "kit.engines": "2", "org.opencontainers.image.version": "1.0.0",
}
CPU_LABELS = {
    "kit.device": "cpu", "kit.l4t": "none", "kit.tensorrt": "none", "kit.gpu_arch": "none",
    "kit.precision": "native", "kit.model_digest": "sha256:" + "b" * 64, "kit.optimization": "native",
}


def jetson_facts(**over) -> DeviceFacts:
    base = dict(name="nano-01", host="ssh://nvidia@nano-01", reachable=True, architecture="arm64",
                docker_version="19.03.6", runtimes=("nvidia", "runc"), l4t="32.4.4", l4t_detail="engine label")
    base.update(over)
    return DeviceFacts(**base)


def cpu_facts(**over) -> DeviceFacts:
    base = dict(name="box-01", host="unix:///tmp/x.sock", reachable=True, architecture="amd64",
                docker_version="20.10.24", runtimes=("runc",), l4t=None, l4t_detail="amd64 device: no L4T")
    base.update(over)
    return DeviceFacts(**base)


def dev(profile: str, name: str = "d") -> FleetDevice:
    return FleetDevice(name=name, host="unix:///tmp/x.sock", device=profile)


def nano_fp(**over):
    labels = dict(NANO_LABELS, **over)
    return Fingerprint.from_labels(labels, "arm64")


def test_labels_none_mean_absent_and_missing_required_is_not_a_kit_image():
    fp = Fingerprint.from_labels(CPU_LABELS, "amd64")
    assert fp.l4t is None and fp.tensorrt is None and fp.gpu_arch is None and not fp.jetson
    assert Fingerprint.from_labels({"kit.device": "cpu"}) is None
    d = check(None, dev("cpu"), cpu_facts())
    assert not d.ok and "fingerprint labels" in d.reason


def test_memory_limit_label_is_read_as_bytes():
    assert Fingerprint.from_labels(dict(CPU_LABELS, **{"kit.memory_limit": "2GiB"})).memory_limit == 2 << 30
    assert Fingerprint.from_labels(dict(CPU_LABELS, **{"kit.memory_limit": "junk"})).memory_limit is None


def test_cpu_image_goes_to_cpu_amd64_devices_only():
    fp = Fingerprint.from_labels(CPU_LABELS, "amd64")
    assert check(fp, dev("cpu"), cpu_facts()).ok
    refused = check(fp, dev("jetson-nano"), jetson_facts())
    assert not refused.ok
    assert "image is built for cpu, device is jetson-nano" in refused.reason
    assert "image is amd64, device reports arm64" in refused.reason
    # declared cpu but the engine says arm64: the facts win
    wrong = check(fp, dev("cpu"), cpu_facts(architecture="arm64"))
    assert not wrong.ok and "profile cpu is amd64" in wrong.reason


def test_matching_nano_passes():
    assert check(nano_fp(), dev("jetson-nano"), jetson_facts()).ok


def test_engines_for_one_gpu_arch_refused_on_another():
    d = check(nano_fp(), dev("jetson-xavier-nx"), jetson_facts())
    assert not d.ok and "engines are built for sm_53" in d.reason and "sm_72" in d.reason


def test_xavier_nx_engines_run_on_agx_xavier_same_arch():
    fp = nano_fp(**{"kit.device": "jetson-xavier-nx", "kit.gpu_arch": "sm_72", "kit.precision": "int8"})
    assert check(fp, dev("jetson-agx-xavier"), jetson_facts()).ok


def test_l4t_mismatch_unknown_and_tensorrt_mismatch():
    d = check(nano_fp(), dev("jetson-nano"), jetson_facts(l4t="32.5.0"))
    assert not d.ok and "L4T 32.4.4" in d.reason and "L4T 32.5.0" in d.reason
    assert "TensorRT version is unknown" in d.reason  # 32.5.0 is not a pinned stack
    d = check(nano_fp(), dev("jetson-nano"), jetson_facts(l4t=None, l4t_detail="cannot read it"))
    assert not d.ok and "L4T release is unknown (cannot read it)" in d.reason
    d = check(nano_fp(), dev("jetson-nano"), jetson_facts(tensorrt="7.1.0"))
    assert not d.ok and "engines need TensorRT 7.1.3, device has 7.1.0" in d.reason


def test_no_nvidia_runtime_refused():
    d = check(nano_fp(), dev("jetson-nano"), jetson_facts(runtimes=("runc",)))
    assert not d.ok and "nvidia runtime" in d.reason


def test_jetson_image_refused_on_cpu_device_and_int8_on_nano():
    d = check(nano_fp(), dev("cpu"), cpu_facts())
    assert not d.ok and "device is cpu (no TensorRT)" in d.reason
    d = check(nano_fp(**{"kit.precision": "int8"}), dev("jetson-nano"), jetson_facts())
    assert not d.ok and "precision int8 is not supported on jetson-nano" in d.reason


def test_native_jetson_image_needs_l4t_but_not_gpu_arch():
    fp = nano_fp(**{"kit.optimization": "native", "kit.engines": "0"})
    assert check(fp, dev("jetson-xavier-nx"), jetson_facts()).ok
    assert not check(fp, dev("jetson-xavier-nx"), jetson_facts(l4t="32.6.1")).ok


def test_unknown_profile_refused():
    d = check(nano_fp(), dev("jetson-orin"), jetson_facts())
    assert not d.ok and "unknown device profile" in d.reason


@pytest.mark.parametrize("l4t,trt", [("32.4.4", "7.1.3"), ("32.5.0", None), (None, None)])
def test_tensorrt_for_l4t(l4t, trt):
    assert tensorrt_for_l4t(l4t) == trt


# What `kit build` writes on an image of the twin stack (Python 3.6 + TF 2.3.1 on x86-64): the Jetson's
# TensorFlow version, but no L4T, no TensorRT, no GPU arch, and kit.device cpu.
TWIN_LABELS = dict(CPU_LABELS, **{"kit.stack": "twin", "kit.tensorflow": "2.3.1", "kit.python": "3.6.15",
                                  "kit.jetpack": "none", "kit.cuda": "none"})


def test_twin_image_is_a_cpu_image_never_a_jetson_one():
    fp = Fingerprint.from_labels(TWIN_LABELS, "amd64")
    assert not fp.jetson and fp.tensorflow == "2.3.1" and fp.l4t is None and fp.tensorrt is None
    assert check(fp, dev("cpu"), cpu_facts()).ok
    for profile in ("jetson-nano", "jetson-xavier-nx"):
        refused = check(fp, dev(profile), jetson_facts())
        assert not refused.ok
        assert f"image is built for cpu, device is {profile}" in refused.reason
        assert "image is amd64, device reports arm64" in refused.reason
    # Even an engine that wrongly reported amd64 and a matching L4T does not make a Nano take it.
    assert not check(fp, dev("jetson-nano"), jetson_facts(architecture="amd64")).ok
