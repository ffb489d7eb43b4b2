"""Rollout benchmarks on a real registry and three dockerd devices.

    .venv/bin/python -m bench.rollout [--skip-real] [--skip-swarm] [--repeats N] [--device-cpus C]

Prints, side by side in one run:
  1. rollout wall time to three devices by max_parallel (1, 3) and canary (1, 0),
     each an update v1 -> v2 of the fixture image with both images already on
     the devices (so it times kit, compose and health, not the network), for
     stop-first images and for start-first ones (labels kit.reuse_port and a
     kit.memory_limit two copies of which fit), with the mean seconds per step
     from the rollout record (where the time goes); twice: with the three
     devices sharing this host's cores, and with each device given a CPU of its
     own (--device-cpus cores each, a cgroup quota on its daemons and containers:
     testkit/cpu_budget.py), as each device of a real fleet has;
  2. failed requests per device during each update: one client per device
     sends predictions back to back (a new connection each, every 20 ms; the
     clients run in a process of their own, off kit's GIL); the longest gap
     between two answered ones too;
  3. bytes a device pulls for a model-only update vs for the whole image;
  4. the same failed-request count for the runtime image `kit build` makes from
     the bundled digits example (v0.1.0 -> a retrained v0.2.0), start-first;
  5. swarm vs compose rollout time on the same images and the same three
     nodes (testkit/swarm_harness.py: netns nodes; needs root), stop-first and
     start-first images, with where the time goes (kit's steps and, on the
     swarm, the phases read from the swarm's task timestamps) and failed
     requests per node during each update (a client per node, new connections).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
from testkit import fleet_harness as fh  # noqa: E402
from testkit import manifests  # noqa: E402

from kit.build.base import ensure_debian_base  # noqa: E402
from kit.docker_api import connect  # noqa: E402
from kit.fleet.rollout import rollout  # noqa: E402
from kit.fleet.registry import push  # noqa: E402
from kit.imageref import split_ref  # noqa: E402

MB = 1e6
CONFIGS = [("max_parallel 1, canary 1", 1, 1), ("max_parallel 3, canary 1", 3, 1),
           ("max_parallel 1, canary 0", 1, 0), ("max_parallel 3, canary 0", 3, 0)]
STEPS = ("connect", "pull", "start", "up", "health", "smoke", "wait-canary", "switch")


def layer_bytes(registry: fh.Registry, ref: str) -> dict[str, int]:
    repo, tag, digest = split_ref(ref)
    repo = repo.split("/", 1)[1]  # strip the registry address
    return registry.layer_sizes(repo, digest or tag)


def layers_disk(device: fh.Device) -> int:
    with device.client() as eng:
        return int(eng.api.df().get("LayersSize") or 0)


def timed_rollout(path: Path, image: str):
    t = time.monotonic()
    result = rollout(path, image=image)
    seconds = time.monotonic() - t
    if result.status != "done":
        for rec in result.record.devices.values():
            print(f"  {rec.name}: {rec.result} {rec.reason}", flush=True)
        raise SystemExit(f"rollout of {image} ended {result.status}: {result.reason}")
    return seconds, result


def take_down(fleet: fh.Fleet, work: Path, name: str) -> None:
    """compose down the bench fleet on every device, both slots (frees the ports)."""
    from kit.fleet import compose
    from kit.fleet.state import DeviceFiles, fleet_dir

    root = fleet_dir(work / f"{name}.yaml", name)
    for d in fleet.devices:
        for slot in compose.SLOTS:
            compose.run_compose(compose.down_argv(name, DeviceFiles(root, d.name).current, slot=slot), d.host)


def build_pair(fleet, engine, base, work, repository: str, labels=None) -> dict:
    refs = {v: f"{fleet.registry.address}/kit-bench/{repository}:v{v}" for v in ("1", "2")}
    for v, ref in refs.items():
        fh.build_fixture_image(engine, ref, v, base=base, model_bytes=16 << 20, labels=labels)
        push(ref, state_root=work, engine=engine)
    return refs


def update_runs(fleet, work: Path, name: str, refs: dict, repeats: int, configs=CONFIGS,
                cpus: float | None = None) -> dict:
    """label -> [(seconds, failures per device, longest gap per device, steps)] for v1 -> v2,
    each device limited to `cpus` cores (None: the devices share the host's)."""
    ports = {d.name: d.port for d in fleet.devices}
    out = {label: [] for label, _, _ in configs}
    for d in fleet.devices:
        if d.budget is not None:
            d.budget.set(cpus)
    for _ in range(repeats):
        for label, width, canary in configs:
            path = fleet.write_fleet(work / f"{name}.yaml", name, refs["1"], health_timeout="120s",
                                     max_parallel=width, canary=canary)
            timed_rollout(path, refs["1"])
            throttled = throttled_seconds(fleet)
            with fh.ProcessHammer(ports, "fixture", [[1.0]]) as h:
                began, busy = time.monotonic(), cpu_busy()
                seconds, result = timed_rollout(path, refs["2"])
                busy = (cpu_busy() - busy) / seconds  # cores kept busy, on average (every process here)
            throttled = throttled_seconds(fleet) - throttled
            steps = {s: statistics.mean(r.durations.get(s, 0.0) for r in result.record.devices.values())
                     for s in STEPS}
            steps["resolve+plan"] = result.record.durations.get("resolve", 0) + result.record.durations.get("plan", 0)
            steps["cores busy"] = busy
            steps["throttled"] = throttled / len(fleet.devices)  # waiting for its CPU budget, per device
            out[label].append((seconds, {n: len(f) for n, f in h.failures.items()},
                               {n: h.longest_gap(n) for n in ports}, steps,
                               sorted({r.strategy for r in result.record.devices.values()}),
                               failure_lines(h, began)))
    return out


def throttled_seconds(fleet) -> float:
    """Seconds the devices' groups waited for their CPU quota so far, all devices."""
    return sum(d.budget.throttled_seconds() for d in fleet.devices if d.budget is not None)


def cpu_busy() -> float:
    """Seconds of CPU time spent so far on this host, all cores, all processes (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def failure_lines(h: fh.Hammer, began: float) -> list[str]:
    """Every failed request: device, seconds since the rollout began, the error."""
    return [f"{name} +{t - began:.3f}s {error}" for name, fails in h.failures.items() for t, error in fails]


def report_updates(title: str, runs: dict) -> None:
    print(f"\n{title}")
    med = {label: statistics.median(r[0] for r in rs) for label, rs in runs.items() if rs}
    for label, rs in runs.items():
        failures = {n: sum(r[1][n] for r in rs) for n in rs[0][1]}
        gaps = {n: max(r[2][n] for r in rs) for n in rs[0][2]}
        print(f"  {label:<26} median {med[label]:6.1f} s  ({', '.join(f'{r[0]:.1f}' for r in rs)})  "
              f"strategy {'/'.join(rs[0][4])}  failed requests "
              + " ".join(f"{n}={c}" for n, c in failures.items())
              + "  longest gap " + " ".join(f"{g:.2f}s" for g in gaps.values()))
        failed = [line for r in rs for line in r[5]]
        for line in failed[:12]:
            print(f"    failed: {line}")
        if len(failed) > 12:
            print(f"    ... and {len(failed) - 12} more")
    for canary in (1, 0):
        one, three = med.get(f"max_parallel 1, canary {canary}"), med.get(f"max_parallel 3, canary {canary}")
        if one and three:
            print(f"  canary {canary}: max_parallel 3 takes {three / one:.2f} of max_parallel 1")
    for label, rs in runs.items():
        steps = rs[0][3]
        print(f"  {label:<26} mean s/device: " + "  ".join(f"{s} {v:.2f}" for s, v in steps.items() if v)
              + f" (of {os.cpu_count()}; load average {os.getloadavg()[0]:.1f})")
    sys.stdout.flush()


def bench_bytes(fleet, refs: dict, work: Path) -> dict:
    whole = layer_bytes(fleet.registry, refs["2"])
    only = {k: v for k, v in whole.items() if k not in layer_bytes(fleet.registry, refs["1"])}
    return {"whole": sum(whole.values()), "only": sum(only.values()), "layers": (len(whole), len(only))}


def kit(*args: str, log) -> None:
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "kit"), *args], stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"kit {' '.join(args)} failed (exit {proc.returncode}); see {log.name}")


def bench_real(fleet: fh.Fleet, engine, work: Path) -> dict:
    """The runtime image of the digits example, v0.1.0 and a retrained v0.2.0, start-first."""
    example = ROOT / "manifests" / "examples"
    log = open(work / "real.log", "w")
    refs = {}
    for version, epochs in (("0.1.0", 2), ("0.2.0", 3)):
        d = work / f"digits-{version}"
        shutil.copytree(example / "digits", d / "digits", ignore=shutil.ignore_patterns(".kit"))
        subprocess.run([sys.executable, str(d / "digits" / "train.py"), "--out", str(d / "digits"),
                        "--epochs", str(epochs)], stdout=log, stderr=subprocess.STDOUT, check=True)
        doc = manifests.digits_example(metadata={"version": version},
                                       image={"repository": f"{fleet.registry.address}/kit-bench/digits"})
        manifests.write_model(d / "kit.yaml", doc)
        kit("build", str(d / "kit.yaml"), log=log)
        kit("push", str(d / "kit.yaml"), log=log)
        refs[version] = f"{doc['image']['repository']}:{version}-cpu-native"
    from kit.net import free_port

    ports = {d.name: free_port() for d in fleet.devices}
    entries = [{"name": d.name, "host": d.host, "device": "cpu", "port": ports[d.name], "grpc_port": free_port()}
               for d in fleet.devices]
    path = fleet.write_fleet(work / "digits.yaml", "digits", refs["0.1.0"], devices=entries, health_timeout="300s",
                             max_parallel=3, canary=1)
    first, _ = timed_rollout(path, refs["0.1.0"])
    pixels = [[[[0.0]] * 8] * 8]
    with fh.Hammer(ports, "digits", pixels, interval=0.05, timeout=10) as h:
        began = time.monotonic()
        update, result = timed_rollout(path, refs["0.2.0"])
    for ref in refs.values():
        engine.remove_image(ref, force=True)
    return {"first": first, "update": update, "failures": {n: len(f) for n, f in h.failures.items()},
            "answers": {n: len(a) for n, a in h.answers.items()}, "gaps": {n: h.longest_gap(n) for n in ports},
            "strategy": {r.name: r.strategy for r in result.record.devices.values()},
            "errors": failure_lines(h, began)}


SWARM_PHASES = ("schedule", "prepare", "stop-old", "start", "health", "observe", "smoke", "drain-old")


def swarm_fleets(cluster, work: Path, image: str) -> dict:
    """The same three netns nodes as a swarm fleet (port 8501) and as a compose fleet (port 8601)."""
    swarm_path = cluster.write_fleet(work / "swarm.yaml", "bsw", image, health_timeout="120s")
    doc = yaml.safe_load(swarm_path.read_text())
    doc.pop("swarm")
    doc["metadata"]["name"] = "bco"
    doc["devices"] = [{"name": n.name, "host": n.tcp_host, "device": "cpu", "port": 8601} for n in cluster.nodes]
    compose_path = work / "compose.yaml"
    compose_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"swarm": (swarm_path, None), "compose": (compose_path, 8601)}


def phase_means(record) -> dict:
    """Rollout-level steps, then the mean seconds per device of each step the record has."""
    out = {k: v for k, v in record.durations.items()}
    devices = [r.durations for r in record.devices.values() if r.durations]
    for step in dict.fromkeys([*SWARM_PHASES, *STEPS, *(k for d in devices for k in d)]):
        values = [d[step] for d in devices if step in d]
        if values:
            out[f"device {step}"] = statistics.mean(values)
    return out


def swarm_update(cluster, path: Path, port, refs: dict) -> dict:
    """v1 (untimed) then v1 -> v2 with one client per node hammering it."""
    timed_rollout(path, refs["1"])
    with sh_hammer(cluster, port) as h:
        seconds, result = timed_rollout(path, refs["2"])
    return {"seconds": seconds, "phases": phase_means(result.record),
            "strategy": sorted({r.strategy for r in result.record.devices.values()}),
            "failures": {n: len(f) for n, f in h.failures.items()},
            "answers": {n: len(a) for n, a in h.answers.items()},
            "gaps": {n: h.longest_gap(n) for n in h.ports},
            "errors": sorted({e for f in h.failures.values() for _, e in f})[:2]}


def sh_hammer(cluster, port):
    from testkit import swarm_harness as sh

    return sh.NodeHammer(cluster.nodes, "fixture", [[1.0]], port=port)


def bench_swarm(engine, base: str, work: Path, repeats: int) -> dict:
    """Swarm vs compose: the same fixture images, the same three netns nodes, canary 1, max_parallel 3,
    for stop-first images and start-first ones (kit.reuse_port, two copies fit)."""
    from testkit import swarm_harness as sh

    out: dict = {}
    with sh.Swarm(3) as cluster:
        cluster.load_image(engine, base)
        pairs = {}
        with connect(cluster.manager.host) as node_engine:
            for order, labels in (("stop-first", None), ("start-first", fh.START_FIRST_LABELS)):
                repo = f"{cluster.registry.address}/kit-bench/swarm-{order}"
                pairs[order] = {v: f"{repo}:v{v}" for v in ("1", "2")}
                for v, ref in pairs[order].items():
                    fh.build_fixture_image(node_engine, ref, v, base=base, labels=labels)
                    push(ref, state_root=work, engine=node_engine)
        fleets = swarm_fleets(cluster, work, pairs["stop-first"]["1"])
        # the compose rollout resolves through the local engine: here the manager's,
        # which reaches the bridge registry (the swarm rollout does so on its own)
        saved = os.environ.get("DOCKER_HOST")
        os.environ["DOCKER_HOST"] = cluster.manager.host
        try:
            for _ in range(repeats):
                for order, refs in pairs.items():
                    for kind, (path, port) in fleets.items():
                        out.setdefault((kind, order), []).append(swarm_update(cluster, path, port, refs))
        finally:
            if saved is None:
                os.environ.pop("DOCKER_HOST", None)
            else:
                os.environ["DOCKER_HOST"] = saved
    return out


def report_swarm(runs: dict) -> None:
    print("\nswarm vs compose, fixture v1 -> v2 on the same 3 netns nodes (canary 1, max_parallel 3), "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}:")
    med = {key: statistics.median(r["seconds"] for r in rs) for key, rs in runs.items()}
    for (kind, order), rs in runs.items():
        failures = {n: sum(r["failures"][n] for r in rs) for n in rs[0]["failures"]}
        sent = {n: failures[n] + sum(r["answers"][n] for r in rs) for n in failures}
        times = ", ".join(f"{r['seconds']:.1f}" for r in rs)
        print(f"  {kind:<7} {order:<11} median {med[(kind, order)]:5.1f} s  "
              f"({times})  strategy {'/'.join(rs[0]['strategy'])}  "
              "failed requests " + " ".join(f"{n}={failures[n]}/{sent[n]}" for n in failures)
              + "  longest gap " + " ".join(f"{max(r['gaps'][n] for r in rs):.2f}s" for n in failures))
        errors = sorted({e for r in rs for e in r["errors"]})[:2]
        if errors:
            print("    errors: " + "; ".join(errors))
        phases = {k: statistics.mean(r["phases"].get(k, 0.0) for r in rs) for k in rs[0]["phases"]}
        print("    s: " + "  ".join(f"{k} {v:.2f}" for k, v in phases.items() if v))
    for order in ("stop-first", "start-first"):
        s, c = med.get(("swarm", order)), med.get(("compose", order))
        if s and c:
            print(f"  {order}: swarm takes {s / c:.2f} of compose ({s:.1f} s vs {c:.1f} s)")
    sys.stdout.flush()


def report_bytes(title: str, r: dict) -> None:
    print(f"\n{title}")
    print(f"  whole image, compressed layers:     {r['whole'] / MB:9.1f} MB  ({r['layers'][0]} layers)")
    print(f"  model-only update, layers missing:  {r['only'] / MB:9.1f} MB  ({r['layers'][1]} layer)"
          f"   -> {r['whole'] / max(r['only'], 1):.0f}x less")


def bench_fleets(args, engine, base: str, work: Path) -> None:
    """Parts 1-4: three dockerd devices on this host."""
    with fh.Fleet(3, budget=True) as fleet:
        print(f"registry {fleet.registry.address}; devices: "
              + ", ".join(f"{d.name} ({d.host}, port {d.port})" for d in fleet.devices), flush=True)
        plain = build_pair(fleet, engine, base, work, "fixture")
        sf = build_pair(fleet, engine, base, work, "fixture-sf", labels=fh.START_FIRST_LABELS)
        cpus = args.device_cpus
        for cores, where in ((None, f"sharing this host's {os.cpu_count()} cores"),
                             (cpus, f"each device limited to {cpus:g} core of its own")):
            report_updates(f"stop-first fixture image, v1 -> v2 on 3 devices (images already there), {where}:",
                           update_runs(fleet, work, "stopfirst", plain, args.repeats, cpus=cores))
            take_down(fleet, work, "stopfirst")
            report_updates(f"start-first fixture image (kit.reuse_port, 2 x 1.1 GiB fit), v1 -> v2 on 3 devices, "
                           f"{where}:", update_runs(fleet, work, "startfirst", sf, args.repeats, cpus=cores))
            take_down(fleet, work, "startfirst")
        for d in fleet.devices:
            d.budget.set(None)
        report_bytes("bytes per device, fixture image (16 MiB model layer on the Debian base):",
                     bench_bytes(fleet, plain, work))
        for ref in [*plain.values(), *sf.values()]:
            engine.remove_image(ref, force=True)
        if not args.skip_real:
            real = bench_real(fleet, engine, work)
            print(f"\nkit build image (digits, TF 2.17 CPU): first rollout {real['first']:.1f} s, model update "
                  f"{real['update']:.1f} s (canary 1, max_parallel 3), strategy "
                  + ", ".join(f"{n} {s}" for n, s in real["strategy"].items()))
            print("  failed requests during the update: " + "  ".join(
                f"{n} {real['failures'][n]} of {real['failures'][n] + real['answers'][n]}" for n in real["failures"])
                  + "   longest gap " + " ".join(f"{g:.2f}s" for g in real["gaps"].values()))
            for line in real["errors"][:12]:
                print(f"    failed: {line}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-real", action="store_true", help="no kit build image (fixture images only)")
    ap.add_argument("--skip-swarm", action="store_true", help="no swarm vs compose comparison")
    ap.add_argument("--only-swarm", action="store_true", help="only the swarm vs compose comparison")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device-cpus", type=float, default=0.5,
                    help="cores each device gets in the second round of part 1 (a cgroup quota; default 0.5)")
    args = ap.parse_args()
    engine = connect()
    base = ensure_debian_base(engine)
    work = Path(tempfile.mkdtemp(prefix="kit-bench-rollout-"))
    try:
        if not args.only_swarm:
            bench_fleets(args, engine, base, work)
        if not args.skip_swarm:
            report_swarm(bench_swarm(engine, base, work, args.repeats))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
