"""What copying the model into and out of the build containers costs (kit/archive.py), side by side.

`kit build` no longer bind-mounts the SavedModel and .kit/ into the optimizer and reference
containers: it copies them in through the Docker API before the container starts and copies /out
back after it exits, so an engine on another machine works. This measures one container run that
reads every byte of a model tree of --mib MiB (sha256) and writes a copy of it to its output, in
one run, four ways:

  bind mount     the model and the output directory bind-mounted (the old way; local engine only)
  copy, unix://  Upload in + Download out, this machine's engine
  copy, tcp://   the same to a second dockerd (testkit RemoteDevice) over tcp://127.0.0.1
  copy, ssh://   the same over ssh://root@127.0.0.1 (Debian's sshd, testkit SshEndpoint)

and prints each run's wall time (median of --runs) and its ratio to the bind mount.

    .venv/bin/python -m bench.remote_copy [--mib 64] [--runs 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from kit.build.base import ensure_debian_base
from kit.docker_api import Download, Mount, Upload, connect
from kit.net import free_port
from testkit.fleet_harness import RemoteDevice, SshEndpoint

# Reads every file under /in/model, copies it to /out/model, prints one digest over all of it.
READ_AND_WRITE = r"""
import hashlib, os, shutil
h = hashlib.sha256()
for d, _, files in sorted(os.walk('/in/model')):
    for f in sorted(files):
        with open(os.path.join(d, f), 'rb') as fh:
            h.update(fh.read())
shutil.copytree('/in/model', '/out/model')
print(h.hexdigest())
"""


def make_model(root: Path, mib: int) -> str:
    """A SavedModel-shaped tree of `mib` MiB (incompressible); its digest as the container computes it."""
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(os.urandom(256 << 10))
    shard = max(1, mib // 4)
    for i in range(4):
        (root / "variables" / f"variables.data-{i:05d}-of-00004").write_bytes(os.urandom(shard << 20))
    (root / "variables" / "variables.index").write_bytes(os.urandom(4096))
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update((Path(d) / f).read_bytes())
    return h.hexdigest()


def run_once(engine, image: str, model: Path, out: Path, copy: bool) -> tuple[float, str]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.monotonic()
    if copy:
        result = engine.run_to_completion(image, ["python3", "-c", READ_AND_WRITE], timeout=600,
                                          uploads=[Upload(str(model), "/in/model"), Upload(None, "/out")],
                                          downloads=[Download("/out", str(out))])
    else:
        result = engine.run_to_completion(image, ["python3", "-c", READ_AND_WRITE], timeout=600,
                                          mounts=[Mount(str(model), "/in/model", True), Mount(str(out), "/out")])
    seconds = time.monotonic() - start
    if result.exit_code != 0 or not (out / "model" / "saved_model.pb").is_file():
        raise SystemExit(f"the container run failed (exit {result.exit_code}): {result.logs[-500:]}")
    return seconds, result.logs.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.remote_copy", description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="model size in MiB (default 64)")
    parser.add_argument("--runs", type=int, default=3, help="runs per way; the median is printed (default 3)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kit-bench-copy-"))
    device = RemoteDevice("kit-bench-copy", Path(f"/tmp/kbc{os.getpid()}"), free_port(), tcp_port=free_port())
    ssh = None
    try:
        with connect() as local:
            image = ensure_debian_base(local)
        digest = make_model(work / "model", args.mib)
        device.start()
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", device.host, "load", "-q"], stdin=save.stdout, check=True,
                       capture_output=True, timeout=600)
        save.stdout.close()
        save.wait(600)
        ssh = SshEndpoint(work / "ssh", device.host).start()
        os.environ.update(ssh.env())  # the ssh wrapper with this endpoint's key and known_hosts
        ways = [("bind mount", None, False), ("copy, unix://", None, True),
                ("copy, tcp://", device.tcp_host, True), ("copy, ssh://", ssh.host, True)]
        rows = []
        for label, host, copy in ways:
            with connect(host) as engine:
                times = []
                for _ in range(args.runs):
                    seconds, seen = run_once(engine, image, work / "model", work / "out", copy)
                    if seen != digest:
                        raise SystemExit(f"{label}: the container read other bytes than the model's")
                    times.append(seconds)
            rows.append((label, statistics.median(times)))
        base = rows[0][1]
        print(f"model tree {args.mib} MiB (5 files), read fully and written back once per run; "
              f"median of {args.runs} runs")
        print(f"{'way':<16}{'seconds':>10}{'x bind mount':>15}")
        for label, seconds in rows:
            print(f"{label:<16}{seconds:>10.2f}{seconds / base:>15.2f}")
    finally:
        if ssh is not None:
            ssh.close()
        device.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
