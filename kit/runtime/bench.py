"""The benchmark protocol, runnable in the runtime image and on a host.

    python3 -m kit.runtime.bench --model-dir DIR --batch-size N [--runs 1000] [--warmup 50] [--json]

The protocol of the article kit grew from: 50 warm-up runs, then 1000 timed
runs at a built batch size on one fixed random batch; throughput is
runs x batch / total time of the timed runs, and the mean latency is reported
every 50 steps. Added here: p50/p90/p99 latency and the peak resident memory
of the process (ru_maxrss, so run one model per process to compare memory).

Each run calls the signature with tensors made once, and reads every output
back to numpy, so the time includes the complete inference and nothing else.
Progress goes to stderr, the result to stdout (JSON with --json).

Python 3.6, TensorFlow >= 2.3, numpy, stdlib.
"""

import argparse
import json
import platform
import resource
import sys
import time

import numpy as np

from kit.runtime.model import ModelError, example_inputs, parse_shapes


def percentile(values, q):
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


def peak_memory_bytes():
    """Peak resident set size of this process (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def run_benchmark(model_dir, batch_size, runs=1000, warmup=50, window=50, signature="serving_default",
                  input_shapes=None, seed=0, progress=None):
    """Run the protocol on one model at one batch size; returns a JSON-ready dict."""
    from kit.runtime.model import Model

    if runs < 1 or warmup < 0 or batch_size < 1 or window < 1:
        raise ValueError("runs and batch size must be >= 1, warm-up >= 0")
    started = time.monotonic()
    model = Model.load(model_dir, "bench", "1", signature)
    load_seconds = time.monotonic() - started
    sig = model.signature(signature)
    tf = model.tf
    feeds = example_inputs(sig, batch_size, input_shapes, random=True, seed=seed)
    tensors = dict((k, tf.constant(v, dtype=tf.string) if sig.inputs[k].is_string else tf.constant(v))
                   for k, v in feeds.items())
    fn = sig.function

    def once():
        result = fn(**tensors)
        for value in result.values():
            value.numpy()  # wait for the result: eager ops may still be running otherwise

    for _ in range(warmup):
        once()
    latencies = []
    window_means = []
    timed_start = time.perf_counter()
    for step in range(1, runs + 1):
        t0 = time.perf_counter()
        once()
        latencies.append(time.perf_counter() - t0)
        if step % window == 0:
            mean = sum(latencies[-window:]) / window
            window_means.append(round(mean * 1000.0, 4))
            if progress:
                progress("step %d: mean latency %.2f ms (last %d runs)" % (step, mean * 1000.0, window))
    total = time.perf_counter() - timed_start
    lat_ms = [x * 1000.0 for x in latencies]
    return {
        "model_dir": model_dir,
        "signature": sig.key,
        "batch_size": batch_size,
        "input_shapes": dict((k, list(v.shape)) for k, v in feeds.items()),
        "runs": runs,
        "warmup": warmup,
        "window": window,
        "total_seconds": round(total, 6),
        "images_per_second": round(runs * batch_size / total, 3),
        "latency_ms": {
            "mean": round(sum(lat_ms) / len(lat_ms), 4),
            "p50": round(percentile(lat_ms, 50), 4),
            "p90": round(percentile(lat_ms, 90), 4),
            "p99": round(percentile(lat_ms, 99), 4),
            "min": round(min(lat_ms), 4),
            "max": round(max(lat_ms), 4),
        },
        "window_mean_ms": window_means,
        "latencies_ms": [round(x, 4) for x in lat_ms],
        "peak_memory_bytes": peak_memory_bytes(),
        "load_seconds": round(load_seconds, 3),
        "optimization": model.optimization(),
        "tensorflow": model.tf_version,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def render_text(result):
    lat = result["latency_ms"]
    return "\n".join([
        "model       %s (%s, signature %s)" % (result["model_dir"], result["optimization"], result["signature"]),
        "protocol    %d warm-up + %d timed runs at batch size %d" % (result["warmup"], result["runs"],
                                                                   result["batch_size"]),
        "throughput  %.1f images/s" % result["images_per_second"],
        "latency     mean %.2f ms, p50 %.2f, p90 %.2f, p99 %.2f (min %.2f, max %.2f)"
        % (lat["mean"], lat["p50"], lat["p90"], lat["p99"], lat["min"], lat["max"]),
        "peak memory %.1f MiB" % (result["peak_memory_bytes"] / 1048576.0),
    ])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m kit.runtime.bench", description=__doc__.splitlines()[0])
    p.add_argument("--model-dir", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--window", type=int, default=50, help="report the mean latency every N runs")
    p.add_argument("--signature", default="serving_default")
    p.add_argument("--input-shapes", default="", help="per-example shapes for unknown dims: images=224,224,3")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)

    def progress(line):
        if not args.quiet:
            sys.stderr.write("kit-bench: " + line + "\n")
            sys.stderr.flush()

    try:
        shapes = parse_shapes(args.input_shapes)
        result = run_benchmark(args.model_dir, args.batch_size, args.runs, args.warmup, args.window,
                               args.signature, shapes, progress=progress)
    except (ModelError, ValueError) as e:
        sys.stderr.write("kit-bench: error: %s\n" % e)
        return 2
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        sys.stdout.write(render_text(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
