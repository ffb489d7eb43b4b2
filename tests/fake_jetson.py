"""A fake Jetson Nano file tree: THE one mocked thing in the telemetry and
doctor tests (there is no Jetson here). Contents follow what L4T R32.4.4
shows on a Nano (t210ref): /etc/nv_tegra_release, /proc/meminfo, the GPU's
sysfs load and devfreq files, thermal zones, the INA3221 power monitor at
i2c 6-0040 with its three rails, and nvmap's debugfs client list."""

import os

NV_TEGRA_RELEASE = ("# R32 (release), REVISION: 4.4, GCID: 23942405, BOARD: t210ref, EABI: aarch64, "
                    "DATE: Fri Oct 16 19:44:43 UTC 2020\n"
                    "# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n")

MEMINFO = """MemTotal:        4051032 kB
MemFree:          512000 kB
MemAvailable:    2621440 kB
Buffers:           81234 kB
Cached:          1406168 kB
SwapCached:            0 kB
SwapTotal:       2025512 kB
SwapFree:        2025512 kB
"""

THERMAL = [("AO-therm", 41500), ("CPU-therm", 38000), ("GPU-therm", 37500), ("PLL-therm", 36250),
           ("PMIC-Die", 100000), ("thermal-fan-est", 37900)]
# channel -> (rail, mW, mA, mV)
RAILS = {0: ("POM_5V_IN", 3584, 711, 5040), 1: ("POM_5V_GPU", 1237, 248, 4992), 2: ("POM_5V_CPU", 825, 165, 5000)}
GPU_LOAD = 437  # per mille
GPU_FREQ = 921600000
NVMAP = """CLIENT                        PROCESS      PID        SIZE
user                          python3      4711     524288K
user                          gnome-shell  7380      25716K
total                                               550004K
"""


def _write(root, rel, text):
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def make_tree(root, debugfs=True):
    """Write the fake Nano under `root`; returns root."""
    _write(root, "etc/nv_tegra_release", NV_TEGRA_RELEASE)
    _write(root, "proc/meminfo", MEMINFO)
    _write(root, "sys/devices/gpu.0/load", "%d\n" % GPU_LOAD)
    _write(root, "sys/devices/gpu.0/devfreq/57000000.gpu/cur_freq", "%d\n" % GPU_FREQ)
    for i, (name, temp) in enumerate(THERMAL):
        _write(root, "sys/devices/virtual/thermal/thermal_zone%d/type" % i, name + "\n")
        _write(root, "sys/devices/virtual/thermal/thermal_zone%d/temp" % i, "%d\n" % temp)
    dev = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0/"
    for ch, (rail, mw, ma, mv) in RAILS.items():
        _write(root, dev + "rail_name_%d" % ch, rail + "\n")
        _write(root, dev + "in_power%d_input" % ch, "%d\n" % mw)
        _write(root, dev + "in_current%d_input" % ch, "%d\n" % ma)
        _write(root, dev + "in_voltage%d_input" % ch, "%d\n" % mv)
    if debugfs:
        _write(root, "sys/kernel/debug/nvmap/iovmm/clients", NVMAP)
    return root
