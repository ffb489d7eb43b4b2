"""Jetson telemetry on /metrics, read from a fake Jetson Nano tree (tests/fake_jetson.py:
the one mocked thing) and checked with Prometheus's own `promtool check metrics`."""

import os
import shutil
import subprocess

import pytest

import fake_jetson
from kit.runtime.serving.metrics import ServerMetrics
from kit.runtime.serving.telemetry import SYSFS_ROOT_ENV, JetsonTelemetry

PROMTOOL = shutil.which("promtool")


def _page(root, **kw):
    return ServerMetrics(telemetry=JetsonTelemetry(str(root), **kw)).render().decode()


def _values(page):
    out = {}
    for line in page.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def promtool_check(page):
    if PROMTOOL is None:  # scripts/setup-host installs Debian's prometheus package
        pytest.fail("promtool not found: run scripts/setup-host (Debian package prometheus)")
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=page.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode()


def test_every_fact_of_the_fake_nano_appears(tmp_path):
    root = fake_jetson.make_tree(tmp_path)
    v = _values(_page(root))
    assert v["kit_device_gpu_load_ratio"] == pytest.approx(fake_jetson.GPU_LOAD / 1000.0)
    assert v["kit_device_gpu_frequency_hertz"] == fake_jetson.GPU_FREQ
    assert v["kit_device_memory_total_bytes"] == 4051032 * 1024
    assert v["kit_device_memory_available_bytes"] == 2621440 * 1024
    assert v["kit_device_swap_total_bytes"] == v["kit_device_swap_free_bytes"] == 2025512 * 1024
    assert v["kit_device_gpu_memory_bytes"] == 550004 * 1024
    for zone, milli in fake_jetson.THERMAL:
        assert v['kit_device_temperature_celsius{zone="%s"}' % zone] == pytest.approx(milli / 1000.0)
    for rail, mw, ma, mv in fake_jetson.RAILS.values():
        assert v['kit_device_power_watts{rail="%s"}' % rail] == pytest.approx(mw / 1000.0)
        assert v['kit_device_current_amperes{rail="%s"}' % rail] == pytest.approx(ma / 1000.0)
        assert v['kit_device_voltage_volts{rail="%s"}' % rail] == pytest.approx(mv / 1000.0)


def test_page_with_telemetry_passes_promtool(tmp_path):
    page = _page(fake_jetson.make_tree(tmp_path))
    assert "kit_device_power_watts" in page and "kit_requests_total" in page
    rc, out = promtool_check(page)
    assert rc == 0, out


def test_promtool_is_strict_enough_to_catch_a_broken_page(tmp_path):
    page = _page(fake_jetson.make_tree(tmp_path))
    broken = page.replace("# TYPE kit_device_power_watts gauge\n", "# TYPE kit_device_power_watts gauge\n"
                          "# TYPE kit_device_power_watts counter\n")
    rc, out = promtool_check(broken)
    assert rc != 0, out


def test_absent_files_give_no_metric_and_no_error(tmp_path):
    page = _page(tmp_path)  # an empty root: nothing to read
    assert "kit_device_" not in page
    assert promtool_check(page)[0] == 0


def test_unreadable_and_garbage_files_are_skipped(tmp_path):
    root = fake_jetson.make_tree(tmp_path, debugfs=False)
    with open(os.path.join(str(root), "sys/devices/gpu.0/load"), "w") as f:
        f.write("not a number\n")
    os.remove(os.path.join(str(root), "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/in_power1_input"))
    os.mkdir(os.path.join(str(root), "sys/devices/virtual/thermal/thermal_zone0/temp.d"))
    os.remove(os.path.join(str(root), "sys/devices/virtual/thermal/thermal_zone0/temp"))
    v = _values(_page(root))
    assert "kit_device_gpu_load_ratio" not in v and "kit_device_gpu_memory_bytes" not in v
    assert 'kit_device_power_watts{rail="POM_5V_GPU"}' not in v
    assert 'kit_device_current_amperes{rail="POM_5V_GPU"}' in v
    assert 'kit_device_temperature_celsius{zone="AO-therm"}' not in v
    assert 'kit_device_temperature_celsius{zone="CPU-therm"}' in v


def test_reading_is_cached_between_scrapes(tmp_path):
    now = [100.0]
    t = JetsonTelemetry(str(fake_jetson.make_tree(tmp_path)), ttl=1.0, clock=lambda: now[0])
    m = ServerMetrics(telemetry=t)
    m.render(), m.render()
    assert t.reads == 1
    path = os.path.join(str(tmp_path), "sys/devices/gpu.0/load")
    with open(path, "w") as f:
        f.write("900\n")
    assert _values(m.render().decode())["kit_device_gpu_load_ratio"] == pytest.approx(0.437)
    now[0] += 1.5
    assert _values(m.render().decode())["kit_device_gpu_load_ratio"] == pytest.approx(0.9)
    assert t.reads == 2


def test_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(SYSFS_ROOT_ENV, str(fake_jetson.make_tree(tmp_path)))
    assert "kit_device_gpu_load_ratio 0.437" in ServerMetrics().render().decode()
