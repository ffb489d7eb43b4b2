"""Jetson telemetry for /metrics: GPU load and clock, memory (the RAM the GPU
shares with the CPU), temperatures and power rails, read from the files
tegrastats reads on L4T R32. (Triton on Jetson exports no GPU metrics.)

Every source is optional: a file that is absent or unreadable gives no
sample, never an error, so the same server runs on a CPU box (where only the
memory and any thermal zones appear). Values are read at scrape time, at most
once per `ttl` seconds (concurrent scrapes share one reading), so the request
path never touches sysfs. KIT_SYSFS_ROOT points the reader at another root
directory (tests use a fake Jetson tree).

Sources (paths relative to the root):
  sys/devices/gpu.0/load                         GPU load, per mille (0-1000)
  sys/devices/gpu.0/devfreq/*/cur_freq           GPU clock, Hz
  proc/meminfo                                   MemTotal, MemAvailable, SwapTotal, SwapFree (kB)
  sys/kernel/debug/nvmap/iovmm/clients           nvmap's "total" line: RAM held for the GPU (K)
                                                 (debugfs, root only: absent in a container)
  sys/devices/virtual/thermal/thermal_zone*/     type (zone name) and temp (millidegrees C)
  sys/bus/i2c/drivers/ina3221x/*/iio:device*/    rail_name_N, in_powerN_input (mW),
                                                 in_currentN_input (mA), in_voltageN_input (mV)
"""

import glob
import os
import re
import threading
import time

SYSFS_ROOT_ENV = "KIT_SYSFS_ROOT"

GPU_LOAD_FILES = (
    "sys/devices/gpu.0/load",
    "sys/devices/platform/host1x/57000000.gpu/load",  # Nano / TX1 (gpu.0 links here)
    "sys/devices/platform/host1x/17000000.gp10b/load",  # TX2
    "sys/devices/platform/host1x/17000000.gv11b/load",  # Xavier
)
GPU_FREQ_GLOB = "sys/devices/gpu.0/devfreq/*/cur_freq"
MEMINFO = "proc/meminfo"
NVMAP_CLIENTS = "sys/kernel/debug/nvmap/iovmm/clients"
THERMAL_GLOB = "sys/devices/virtual/thermal/thermal_zone*"
INA3221_GLOB = "sys/bus/i2c/drivers/ina3221x/*/iio:device*"

# name -> (type, help). The order here is the order on the page.
FAMILIES = (
    ("kit_device_gpu_load_ratio", "gauge", "GPU load, 0-1 (sysfs gpu.0/load / 1000)."),
    ("kit_device_gpu_frequency_hertz", "gauge", "GPU clock (devfreq cur_freq)."),
    ("kit_device_memory_total_bytes", "gauge", "RAM, shared by CPU and GPU on a Jetson (MemTotal)."),
    ("kit_device_memory_available_bytes", "gauge", "RAM available to new work, CPU or GPU (MemAvailable)."),
    ("kit_device_swap_total_bytes", "gauge", "Swap (SwapTotal)."),
    ("kit_device_swap_free_bytes", "gauge", "Free swap (SwapFree)."),
    ("kit_device_gpu_memory_bytes", "gauge", "Shared RAM held for the GPU (nvmap iovmm total; needs debugfs)."),
    ("kit_device_temperature_celsius", "gauge", "Thermal zone temperature, by zone."),
    ("kit_device_power_watts", "gauge", "INA3221 power rail reading, by rail."),
    ("kit_device_current_amperes", "gauge", "INA3221 rail current, by rail."),
    ("kit_device_voltage_volts", "gauge", "INA3221 rail voltage, by rail."),
)

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_MEMINFO_KEYS = (("MemTotal", "kit_device_memory_total_bytes"),
                 ("MemAvailable", "kit_device_memory_available_bytes"),
                 ("SwapTotal", "kit_device_swap_total_bytes"),
                 ("SwapFree", "kit_device_swap_free_bytes"))


def _read(path, limit=65536):
    """The file's text, stripped, or None when it cannot be read (absent, permission, EIO...)."""
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace").strip()
    except (OSError, IOError, ValueError):
        return None


def _number(path):
    text = _read(path, 64)
    if text is None:
        return None
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


class JetsonTelemetry(object):
    """Reads the device's telemetry files under `root`; samples() is cached for `ttl` seconds."""

    def __init__(self, root=None, ttl=1.0, clock=time.monotonic):
        self.root = root if root is not None else (os.environ.get(SYSFS_ROOT_ENV) or "/")
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cached = None
        self._cached_at = None
        self.reads = 0  # how many times the files were read (tests check the cache)

    def _path(self, rel):
        return os.path.join(self.root, rel)

    def _glob(self, pattern):
        return sorted(glob.glob(os.path.join(self.root, pattern)))

    def samples(self):
        """[(family, labels tuple of (name, value), value)], at most one reading per ttl."""
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._cached_at >= self.ttl:
                self._cached = self._read_all()
                self._cached_at = now
                self.reads += 1
            return self._cached

    def _read_all(self):
        out = []
        for rel in GPU_LOAD_FILES:
            load = _number(self._path(rel))
            if load is not None:
                out.append(("kit_device_gpu_load_ratio", (), load / 1000.0))
                break
        for path in self._glob(GPU_FREQ_GLOB)[:1]:
            freq = _number(path)
            if freq is not None:
                out.append(("kit_device_gpu_frequency_hertz", (), freq))
        out.extend(self._meminfo())
        gpu_mem = self._nvmap_total()
        if gpu_mem is not None:
            out.append(("kit_device_gpu_memory_bytes", (), gpu_mem))
        out.extend(self._thermal())
        out.extend(self._rails())
        return out

    def _meminfo(self):
        text = _read(self._path(MEMINFO))
        if not text:
            return []
        values = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key.strip()] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1].lower() == "kb" else 1)
        return [(name, (), float(values[key])) for key, name in _MEMINFO_KEYS if key in values]

    def _nvmap_total(self):
        # "total                                   1234567K" (sizes in K)
        text = _read(self._path(NVMAP_CLIENTS))
        if not text:
            return None
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "total":
                size = parts[-1]
                if size.endswith("K") and size[:-1].isdigit():
                    return float(int(size[:-1]) * 1024)
        return None

    def _thermal(self):
        out, seen = [], set()
        for zone in self._glob(THERMAL_GLOB):
            name = _read(os.path.join(zone, "type"), 256)
            temp = _number(os.path.join(zone, "temp"))
            if not name or temp is None:
                continue
            if name in seen:  # two zones with one name: keep both, tell them apart
                name = "%s (%s)" % (name, os.path.basename(zone))
            seen.add(name)
            out.append(("kit_device_temperature_celsius", (("zone", name),), temp / 1000.0))
        return out

    def _rails(self):
        out, seen = [], set()
        for device in self._glob(INA3221_GLOB):
            for name_file in sorted(glob.glob(os.path.join(device, "rail_name_*"))):
                channel = name_file.rsplit("_", 1)[-1]
                rail = _read(name_file, 256)
                if not rail or not channel.isdigit() or rail in seen:
                    continue
                seen.add(rail)
                labels = (("rail", rail),)
                for family, stem in (("kit_device_power_watts", "in_power"),
                                     ("kit_device_current_amperes", "in_current"),
                                     ("kit_device_voltage_volts", "in_voltage")):
                    value = _number(os.path.join(device, "%s%s_input" % (stem, channel)))
                    if value is not None:
                        out.append((family, labels, value / 1000.0))  # mW, mA, mV
        return out


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value):
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class TelemetryMetrics(object):
    """The telemetry as metric families for metrics.Registry: a family with no sample is left out."""

    def __init__(self, registry, telemetry):
        self.telemetry = telemetry
        registry.metrics.append(self)

    def render(self):
        by_family = {}
        for family, labels, value in self.telemetry.samples():
            by_family.setdefault(family, []).append((labels, value))
        lines = []
        for name, kind, help_text in FAMILIES:
            rows = by_family.get(name)
            if not rows:
                continue
            assert _METRIC_NAME.match(name)
            lines.append("# HELP %s %s" % (name, help_text))
            lines.append("# TYPE %s %s" % (name, kind))
            for labels, value in rows:
                text = ",".join('%s="%s"' % (k, _escape(v)) for k, v in labels)
                lines.append("%s%s %s" % (name, "{" + text + "}" if text else "", _format(value)))
        return lines
