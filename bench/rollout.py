"""Rollout benchmarks on a real registry and three dockerd devices.

    .venv/bin/python -m bench.rollout [--skip-real] [--repeats N]

Prints, side by side in one run:
  1. rollout wall time to three devices, max_parallel 1 vs 3 (canary 1), and
     canary 0 / max_parallel 3, each an update v1 -> v2 of the fixture image
     with both images already on the devices (so it times kit, compose and
     health, not the network);
  2. bytes a device pulls for a model-only update vs for the whole image:
     from the registry's blob sizes of the layers the device lacked, and the
     device daemon's own layer disk usage before/after (docker system df);
  3. per-device downtime during an update: the predict endpoint polled every
     ~50 ms, longest gap between two answered predictions.
(1) and (3) use the fixture image (testkit/fleet_harness.py);
(2) and (3) are repeated with the runtime image `kit build` makes from the
bundled digits example (two versions, the second retrained: a model-only change).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from testkit import fleet_harness as fh  # noqa: E402
from testkit import manifests  # noqa: E402

from kit.build.base import ensure_debian_base  # noqa: E402
from kit.docker_api import connect  # noqa: E402
from kit.fleet.rollout import rollout  # noqa: E402
from kit.fleet.registry import push  # noqa: E402
from kit.imageref import split_ref  # noqa: E402

MB = 1e6


class Poller:
    """Polls every device's predict endpoint every ~50 ms; records answered times."""

    def __init__(self, devices, model: str, instances, interval: float = 0.05):
        self.devices, self.model, self.instances, self.interval = devices, model, instances, interval
        self.ok: dict[str, list[float]] = {d.name: [] for d in devices}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._poll, args=(d,), daemon=True) for d in devices]

    def _poll(self, device):
        while not self._stop.is_set():
            t = time.monotonic()
            try:
                fh.predict(device.port, self.model, self.instances, timeout=1)
                self.ok[device.name].append(time.monotonic())
            except Exception:
                pass
            time.sleep(max(0.0, self.interval - (time.monotonic() - t)))

    def __enter__(self):
        for t in self._threads:
            t.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self._stop.set()
        for t in self._threads:
            t.join()

    def longest_gap(self, name: str) -> float:
        ts = self.ok[name]
        return max((b - a for a, b in zip(ts, ts[1:])), default=float("nan"))


def layer_bytes(registry: fh.Registry, ref: str) -> dict[str, int]:
    repo, tag, digest = split_ref(ref)
    repo = repo.split("/", 1)[1]  # strip the registry address
    return registry.layer_sizes(repo, digest or tag)


def layers_disk(device: fh.Device) -> int:
    with device.client() as eng:
        return int(eng.api.df().get("LayersSize") or 0)


def timed_rollout(path: Path, image: str) -> tuple[float, str]:
    t = time.monotonic()
    result = rollout(path, image=image)
    seconds = time.monotonic() - t
    if result.status != "done":
        for rec in result.record.devices.values():
            print(f"  {rec.name}: {rec.result} {rec.reason}", flush=True)
        raise SystemExit(f"rollout of {image} ended {result.status}: {result.reason}")
    return seconds, result.status


def take_down(fleet: fh.Fleet, work: Path, name: str) -> None:
    """compose down the bench fleet on every device (frees the ports for the next one)."""
    from kit.fleet import compose
    from kit.fleet.state import DeviceFiles, fleet_dir

    root = fleet_dir(work / "fleet.yaml", name)
    for d in fleet.devices:
        compose.run_compose(compose.down_argv(name, DeviceFiles(root, d.name).current), d.host)


def bench_fixture(fleet: fh.Fleet, engine, base: str, work: Path, repeats: int) -> dict:
    repo = f"{fleet.registry.address}/kit-bench/fixture"
    refs = {v: f"{repo}:v{v}" for v in ("1", "2")}
    for v, ref in refs.items():
        fh.build_fixture_image(engine, ref, v, base=base, model_bytes=16 << 20)
        push(ref, state_root=work, engine=engine)
    whole = layer_bytes(fleet.registry, refs["2"])
    only = {k: v for k, v in whole.items() if k not in layer_bytes(fleet.registry, refs["1"])}

    path = fleet.write_fleet(work / "fleet.yaml", "bench", refs["1"], health_timeout="60s")
    disk0 = [layers_disk(d) for d in fleet.devices]
    first, status = timed_rollout(path, refs["1"])
    assert status == "done", status
    disk1 = [layers_disk(d) for d in fleet.devices]
    t, status = timed_rollout(path, refs["2"])  # also puts v2 on every device
    assert status == "done", status
    disk2 = [layers_disk(d) for d in fleet.devices]

    configs = [("max_parallel 1, canary 1", 1, 1), ("max_parallel 3, canary 1", 3, 1), ("max_parallel 3, canary 0", 3, 0)]
    times = {label: [] for label, _, _ in configs}
    gaps = {d.name: [] for d in fleet.devices}
    for _ in range(repeats):
        for label, width, canary in configs:
            p = fleet.write_fleet(work / "fleet.yaml", "bench", refs["1"], health_timeout="60s",
                                  max_parallel=width, canary=canary)
            _, status = timed_rollout(p, refs["1"])
            assert status == "done", status
            with Poller(fleet.devices, "fixture", [[1.0]]) as poll:
                seconds, status = timed_rollout(p, refs["2"])
            assert status == "done", status
            times[label].append(seconds)
            for d in fleet.devices:
                gaps[d.name].append(poll.longest_gap(d.name))
    take_down(fleet, work, "bench")
    for ref in refs.values():
        engine.remove_image(ref, force=True)
    return {"first": first, "times": times, "gaps": gaps, "whole": sum(whole.values()), "only": sum(only.values()),
            "layers": (len(whole), len(only)),
            "disk_first": [b - a for a, b in zip(disk0, disk1)], "disk_update": [b - a for a, b in zip(disk1, disk2)]}


def kit(*args: str, log) -> None:
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "kit"), *args], stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"kit {' '.join(args)} failed (exit {proc.returncode}); see {log.name}")


def bench_real(fleet: fh.Fleet, engine, work: Path) -> dict:
    """The runtime image of the digits example, v0.1.0 and a retrained v0.2.0."""
    example = ROOT / "manifests" / "examples"
    log = open(work / "real.log", "w")
    refs = {}
    for version, epochs in (("0.1.0", None), ("0.2.0", 29)):
        d = work / f"digits-{version}"
        shutil.copytree(example / "digits", d / "digits", ignore=shutil.ignore_patterns(".kit"))
        if epochs is not None:  # a different model, same everything else
            subprocess.run([sys.executable, str(d / "digits" / "train.py"), "--out", str(d / "digits"),
                            "--epochs", str(epochs)], stdout=log, stderr=subprocess.STDOUT, check=True)
        doc = manifests.digits_example(metadata={"version": version},
                                       image={"repository": f"{fleet.registry.address}/kit-bench/digits"})
        manifests.write_model(d / "kit.yaml", doc)
        kit("build", str(d / "kit.yaml"), log=log)
        kit("push", str(d / "kit.yaml"), log=log)
        refs[version] = f"{doc['image']['repository']}:{version}-cpu-native"
    whole = layer_bytes(fleet.registry, refs["0.2.0"])
    only = {k: v for k, v in whole.items() if k not in layer_bytes(fleet.registry, refs["0.1.0"])}
    path = fleet.write_fleet(work / "real-fleet.yaml", "digits", refs["0.1.0"], health_timeout="180s",
                             max_parallel=3, canary=1)
    disk0 = [layers_disk(d) for d in fleet.devices]
    first, status = timed_rollout(path, refs["0.1.0"])
    assert status == "done", status
    disk1 = [layers_disk(d) for d in fleet.devices]
    pixels = [[[[0.0]] * 8] * 8]
    with Poller(fleet.devices, "digits", pixels) as poll:
        update, status = timed_rollout(path, refs["0.2.0"])
    assert status == "done", status
    disk2 = [layers_disk(d) for d in fleet.devices]
    gaps = {d.name: poll.longest_gap(d.name) for d in fleet.devices}
    for ref in refs.values():
        engine.remove_image(ref, force=True)
    return {"first": first, "update": update, "gaps": gaps, "whole": sum(whole.values()),
            "only": sum(only.values()), "layers": (len(whole), len(only)),
            "disk_first": [b - a for a, b in zip(disk0, disk1)], "disk_update": [b - a for a, b in zip(disk1, disk2)]}


def report_bytes(title: str, r: dict) -> None:
    print(f"\n{title}")
    print(f"  whole image, compressed layers:     {r['whole'] / MB:9.1f} MB  ({r['layers'][0]} layers)")
    print(f"  model-only update, layers missing:  {r['only'] / MB:9.1f} MB  ({r['layers'][1]} layer)"
          f"   -> {r['whole'] / max(r['only'], 1):.0f}x less")
    print("  daemon layer disk, first rollout:   " + "  ".join(f"{b / MB:8.1f} MB" for b in r["disk_first"]))
    print("  daemon layer disk, model update:    " + "  ".join(f"{b / MB:8.1f} MB" for b in r["disk_update"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-real", action="store_true", help="only the fixture image (no kit build)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    engine = connect()
    base = ensure_debian_base(engine)
    work = Path(tempfile.mkdtemp(prefix="kit-bench-rollout-"))
    try:
        with fh.Fleet(3) as fleet:
            print(f"registry {fleet.registry.address}; devices: "
                  + ", ".join(f"{d.name} ({d.host}, port {d.port})" for d in fleet.devices), flush=True)
            fx = bench_fixture(fleet, engine, base, work, args.repeats)
            report_fixture(fx, args.repeats)
            if not args.skip_real:
                report_real(bench_real(fleet, engine, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report_fixture(fx: dict, repeats: int) -> None:
    print("\nrollout wall time, fixture image v1 -> v2 on 3 devices (images already on the devices), "
          f"{repeats} runs each:")
    for label, ts in fx["times"].items():
        print(f"  {label:<26} median {statistics.median(ts):6.1f} s   runs " + ", ".join(f"{t:.1f}" for t in ts))
    base_t = statistics.median(fx["times"]["max_parallel 1, canary 1"])
    par_t = statistics.median(fx["times"]["max_parallel 3, canary 1"])
    print(f"  max_parallel 3 vs 1 (canary 1): {base_t / par_t:.2f}x faster")
    print(f"  first rollout (pulls the whole image to 3 devices in parallel): {fx['first']:.1f} s")
    print("\nper-device downtime during the fixture update (longest gap between answered predictions, "
          "polled every 50 ms):")
    for name, gs in fx["gaps"].items():
        print(f"  {name}: median {statistics.median(gs):5.2f} s, max {max(gs):5.2f} s")
    report_bytes("bytes per device, fixture image (16 MiB model layer on the Debian base):", fx)
    sys.stdout.flush()


def report_real(real: dict) -> None:
    if real:
        report_bytes("bytes per device, kit build runtime image (digits, TF 2.17 CPU base):", real)
        print(f"\nkit build image: first rollout {real['first']:.1f} s (whole image to 3 devices), "
              f"model update {real['update']:.1f} s (canary 1, max_parallel 3)")
        print("per-device downtime during the kit build image update (TF model load + warm-up):")
        for name, g in real["gaps"].items():
            print(f"  {name}: {g:5.2f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
