"""Micro-batching gain: 16 concurrent batch-1 clients vs sequential batch-1 requests.

    .venv/bin/python -m bench.microbatching [--clients 16] [--seconds 2] [--rounds 3] [--models digits,mobilenet]

The server (`python -m kit.runtime.serving.main`, batch sizes 1,2,4,8,16) gets
batch-1 KServe v2 binary requests over keep-alive connections (a minimal
raw-socket HTTP client: the clients share the server's two cores here, while
in a deployment they run elsewhere):
  sequential   one client, one request at a time
  concurrent   --clients clients at once; the server gathers their requests
               into batches (up to 16, within max_batch_delay 2 ms)
The sequential baseline is taken against a second server with
max_batch_delay 0 as well (a lone request then never waits for company), and
the better of the two is used, so the gain is not inflated by the delay.
Rounds are interleaved and medians reported (the machine's 2 cores are
shared). Printed with the batch sizes the concurrent run actually used.

Models: the bundled digits CNN (tiny: the per-request cost dominates) and
MobileNetV2 224x224 with random weights (compute-bound on a CPU, where a
bigger batch buys little; on a Jetson GPU batching buys much more).
"""

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


from bench._models import REPO, export_mobilenet_v2, start_server  # noqa: E402
from testkit.rawhttp import RawClient  # noqa: E402

from kit.runtime.serving.kserve_v2 import v2_binary_request  # noqa: E402

BATCH_SIZES = "1,2,4,8,16"


def digits_model():
    out = Path(tempfile.mkdtemp(prefix="kit-bench-digits-"))
    subprocess.run([sys.executable, str(REPO / "manifests/examples/digits/train.py"), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return out / "saved_model", "pixels", (8, 8, 1)


def throughput(server, body, headers, clients, seconds):
    """Requests/s (= images/s at batch 1) with `clients` keep-alive connections for `seconds`."""
    conns = [RawClient(server.port) for _ in range(clients)]
    for conn in conns:
        conn.post("/v2/models/m/infer", body, headers)
    counts = [0] * clients
    finished = [0.0] * clients
    errors = []
    barrier = threading.Barrier(clients + 1)

    def client(i):
        barrier.wait()
        try:
            while time.perf_counter() < deadline:
                conns[i].post("/v2/models/m/infer", body, headers)
                counts[i] += 1
        except Exception as e:  # reported below
            errors.append(e)
        finished[i] = time.perf_counter()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    deadline = start + seconds
    barrier.wait()
    for t in threads:
        t.join()
    for conn in conns:
        conn.close()
    if errors:
        raise errors[0]
    return sum(counts) / (max(finished) - start)


def batch_histogram(server):
    conn = server.open()
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return dict((int(m.group(1)), int(float(m.group(2))))
                for m in re.finditer(r'^kit_batches_total\{batch_size="(\d+)"\} (\S+)$', text, re.M))


def measure(name, model_dir, input_name, shape, clients, seconds, rounds):
    x = np.random.RandomState(0).uniform(0, 1, size=(1,) + shape).astype(np.float32)
    body, headers = v2_binary_request({input_name: x})
    batched = start_server(model_dir, BATCH_SIZES, max_batch_delay="2ms")
    eager = start_server(model_dir, BATCH_SIZES, max_batch_delay="0ms")
    samples = {"sequential, delay 0": [], "sequential, delay 2ms": [], "concurrent": []}
    try:
        before = batch_histogram(batched)
        for _ in range(rounds):
            samples["sequential, delay 0"].append(throughput(eager, body, headers, 1, seconds))
            samples["sequential, delay 2ms"].append(throughput(batched, body, headers, 1, seconds))
            samples["concurrent"].append(throughput(batched, body, headers, clients, seconds))
        after = batch_histogram(batched)
    finally:
        batched.stop()
        eager.stop()
    # Batches the concurrent runs used (the sequential runs on this server add size-1 batches; subtract
    # none: show everything the server ran, with the sequential share visible as size 1).
    used = dict((size, after.get(size, 0) - before.get(size, 0)) for size in sorted(after))
    medians = dict((k, statistics.median(v)) for k, v in samples.items())
    baseline = max(medians["sequential, delay 0"], medians["sequential, delay 2ms"])
    for k, v in samples.items():
        print("%s %-22s %s req/s per round" % (name, k, ", ".join("%.0f" % s for s in v)), flush=True)
    return medians, baseline, used


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--models", default="digits,mobilenet")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = []
    for name in args.models.split(","):
        if name == "digits":
            model_dir, input_name, shape = digits_model()
        elif name == "mobilenet":
            model_dir, input_name, shape = export_mobilenet_v2(), "images", (224, 224, 3)
        else:
            raise SystemExit("unknown model %r (digits, mobilenet)" % name)
        results.append((name,) + measure(name, model_dir, input_name, shape, args.clients, args.seconds,
                                         args.rounds))
    print()
    print("Micro-batching gain, KServe v2 binary batch-1 requests, %s, %d CPU cores (shared), batch sizes %s, "
          "median of %d rounds of %.0f s" % (platform.machine(), os.cpu_count(), BATCH_SIZES, args.rounds,
                                             args.seconds))
    print("%-10s  %14s  %14s  %14s  %6s  %s" % ("model", "seq delay 0", "seq delay 2ms", "%d concurrent"
                                                % args.clients, "gain", "batches run (size: count)"))
    for name, medians, baseline, used in results:
        print("%-10s  %14.1f  %14.1f  %14.1f  %5.2fx  %s" % (
            name, medians["sequential, delay 0"], medians["sequential, delay 2ms"], medians["concurrent"],
            medians["concurrent"] / baseline, ", ".join("%d: %d" % kv for kv in used.items() if kv[1])))
    print("(requests/s = images/s; gain = concurrent / the better sequential; target >= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
