"""Serving efficiency: throughput through the HTTP server / throughput of direct in-process calls.

    .venv/bin/python -m bench.serving_efficiency [--batch-sizes 1,8] [--seconds 6] [--rounds 2] [--clients 2]

Model: MobileNetV2 at 224x224 with random weights (keras.applications,
weights=None: nothing is downloaded; checked). The same SavedModel is timed
(1) in this process, calling its serving signature on a numpy batch and
reading the output back, and (2) through `python -m kit.runtime.serving.main` on
127.0.0.1, with keep-alive clients posting the same batch as
  - KServe v2 binary tensors (binary input, binary output),
  - TF Serving JSON (row format) in two forms, side by side:
      json    the float32 batch as a numpy client sends it, json.dumps of
              x.tolist(): every value widened to float64 and written with
              its shortest repr, 17 digits for most (0.12300000339746475),
              25.1 MB at batch 8;
      json3   the same values written with 3 decimals (np.round of the
              float64 widening, then tolist(): 0.123), about 9 MB at batch 8,
              the lower bound for a client that rounds before it sends, and
  - TF Serving gRPC Predict (tensor_content, as tf.make_tensor_proto writes it).
Request bodies are encoded once, so the figures are the server's cost, not
the client's. `--clients` connections keep the server busy, so request
handling overlaps inference as it does under real load. Measurements are
interleaved (direct, binary, JSON, JSON 3 decimals, gRPC, repeat) and
medians are reported.

Two ratios are printed:
  wall  images/s through HTTP / images/s direct (the definition; on a shared
        2-core machine it also carries the CPU the local client takes and
        whatever other processes run meanwhile)
  cpu   images per CPU-second of the server process / images per CPU-second
        of the direct calls: the serving path's own overhead, stable under
        contention (the client's CPU is excluded, it runs elsewhere in a
        deployment)
and, to isolate the serving cost from the model, the time per request of a
trivial model taking the same input (a mean over each image): through HTTP
with one sequential client minus the direct call, in milliseconds.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time

import numpy as np


from bench._models import export_mean_model, export_mobilenet_v2, post, start_server  # noqa: E402

from kit.runtime.serving.kserve_v2 import v2_binary_request, v2_decode_response  # noqa: E402


def process_cpu_seconds(pid):
    """utime + stime of a process (all its threads), from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def direct_rate(fn, tf, x, seconds):
    """(images/s, images per CPU-second) of in-process calls: numpy in, numpy out, as the server's worker does."""
    for _ in range(2):
        fn(images=tf.constant(x))["probabilities"].numpy()
    n, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        fn(images=tf.constant(x))["probabilities"].numpy()
        n += 1
    return n * len(x) / (time.perf_counter() - start), n * len(x) / (time.process_time() - cpu)


def http_rate(server, path, body, headers, batch, seconds, clients):
    """(images/s, images per server CPU-second) through the server with `clients` keep-alive
    connections posting `body` until `seconds` pass."""
    conns = [server.open() for _ in range(clients)]
    for conn in conns:
        post(conn, path, body, headers)  # warm the connection and the server's code paths
    counts = [0] * clients
    finished = [0.0] * clients
    errors = []
    start = time.perf_counter()
    cpu = process_cpu_seconds(server.proc.pid)
    deadline = start + seconds

    def client(i):
        try:
            while time.perf_counter() < deadline:
                post(conns[i], path, body, headers)
                counts[i] += 1
            finished[i] = time.perf_counter()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = process_cpu_seconds(server.proc.pid) - cpu
    for conn in conns:
        conn.close()
    if errors:
        raise errors[0]
    images = sum(counts) * batch
    return images / (max(finished) - start), images / cpu


def grpc_predict_body(x):
    """A serialized TF Serving PredictRequest for model m (kit's own message classes; same bytes as the stubs')."""
    from kit.runtime.serving.grpc_messages import messages
    from kit.runtime.serving.tensor_proto import from_numpy

    request = messages()["tensorflow.serving.PredictRequest"]()
    request.model_spec.name = "m"
    from_numpy(x, "DT_FLOAT", request.inputs["images"])
    return request.SerializeToString()


def grpc_outputs(server, body):
    """One gRPC Predict with a serialized request -> its outputs as numpy arrays (the correctness check)."""
    import grpc

    from kit.runtime.serving.grpc_messages import messages
    from kit.runtime.serving.tensor_proto import to_numpy

    with grpc.insecure_channel("127.0.0.1:%d" % server.grpc_port,
                               options=[("grpc.max_receive_message_length", -1)]) as channel:
        data = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(body, timeout=120)
    response = messages()["tensorflow.serving.PredictResponse"]()
    response.ParseFromString(data)
    return dict((k, to_numpy(v, k, 1 << 30)) for k, v in response.outputs.items())


def grpc_rate(server, body, batch, seconds, clients):
    """(images/s, images per server CPU-second) of gRPC Predict calls, `clients` threads on one channel each."""
    import grpc

    channels = [grpc.insecure_channel("127.0.0.1:%d" % server.grpc_port,
                                      options=[("grpc.max_receive_message_length", -1)]) for _ in range(clients)]
    calls = [c.unary_unary("/tensorflow.serving.PredictionService/Predict") for c in channels]  # bytes in and out
    for call in calls:
        call(body, timeout=120)
    counts = [0] * clients
    finished = [0.0] * clients
    errors = []
    start = time.perf_counter()
    cpu = process_cpu_seconds(server.proc.pid)
    deadline = start + seconds

    def client(i):
        try:
            while time.perf_counter() < deadline:
                calls[i](body, timeout=120)
                counts[i] += 1
            finished[i] = time.perf_counter()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = process_cpu_seconds(server.proc.pid) - cpu
    for c in channels:
        c.close()
    if errors:
        raise errors[0]
    return sum(counts) * batch / (max(finished) - start), sum(counts) * batch / cpu


def per_request_ms(call, seconds):
    for _ in range(2):
        call()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        call()
        n += 1
    return (time.perf_counter() - start) / n * 1000.0


def json_bodies(x):
    """{"json": the tolist() form a numpy client sends (17-digit values), "json3": the same rounded to 3 decimals}."""
    return {"json": json.dumps({"instances": x.tolist()}).encode(),
            "json3": json.dumps({"instances": np.round(x.astype(np.float64), 3).tolist()}).encode()}


JSON_FORMS = (("json", "JSON (float32 values as tolist() writes them)"),
              ("json3", "JSON (3 decimals, np.round(x.astype(float64), 3).tolist())"))


def overhead_ms(tf, batch, seconds):
    """(direct ms/call, binary ms/request, {form: JSON ms/request}) of a trivial model with MobileNet's input."""
    path = export_mean_model()
    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    x = np.round(np.random.RandomState(1).uniform(0, 1, size=(batch, 224, 224, 3)), 3).astype(np.float32)
    direct = per_request_ms(lambda: fn(images=tf.constant(x))["mean"].numpy(), seconds)
    binary_body, binary_headers = v2_binary_request({"images": x})
    server = start_server(path, str(batch))
    try:
        conn = server.open()
        binary = per_request_ms(lambda: post(conn, "/v2/models/m/infer", binary_body, binary_headers), seconds)
        js = dict((form, per_request_ms(lambda: post(conn, "/v1/models/m:predict", body,
                                                     {"Content-Type": "application/json"}), seconds))
                  for form, body in json_bodies(x).items())
    finally:
        server.stop()
    return direct, binary, js


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--seconds", type=float, default=1.5, help="length of each measurement (short: the load of "
                   "a shared machine drifts over seconds, and each ratio compares neighbouring slices)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--model-dir", default=None, help="reuse an exported MobileNetV2 SavedModel")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    model_dir = export_mobilenet_v2(args.model_dir)
    import tensorflow as tf

    fn = tf.saved_model.load(str(model_dir)).signatures["serving_default"]
    rng = np.random.RandomState(0)
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        x = np.round(rng.uniform(0, 1, size=(batch, 224, 224, 3)), 3).astype(np.float32)
        reference = fn(images=tf.constant(x))["probabilities"].numpy()
        binary_body, binary_headers = v2_binary_request({"images": x})
        bodies = json_bodies(x)
        json_headers = {"Content-Type": "application/json"}
        grpc_body = grpc_predict_body(x)
        server = start_server(model_dir, str(batch))
        try:
            # Correctness first: both paths answer what the model computes.
            response, data = post(server.open(), "/v2/models/m/infer", binary_body, binary_headers)
            _, arrays = v2_decode_response(data, response.getheader("Inference-Header-Content-Length"))
            np.testing.assert_allclose(arrays["probabilities"], reference, atol=1e-5)
            for form, body in bodies.items():
                _, data = post(server.open(), "/v1/models/m:predict", body, json_headers)
                # both forms carry the same float32 values (x was rounded to 3 decimals before the cast)
                np.testing.assert_allclose(np.array(json.loads(data)["predictions"]), reference, atol=1e-5)
            np.testing.assert_allclose(grpc_outputs(server, grpc_body)["probabilities"], reference, atol=1e-5)
            samples = {"direct": [], "binary": [], "json": [], "json3": [], "grpc": []}
            for _ in range(args.rounds):
                samples["direct"].append(direct_rate(fn, tf, x, args.seconds))
                samples["binary"].append(http_rate(server, "/v2/models/m/infer", binary_body, binary_headers,
                                                   batch, args.seconds, args.clients))
                for form, body in bodies.items():
                    samples[form].append(http_rate(server, "/v1/models/m:predict", body, json_headers,
                                                   batch, args.seconds, args.clients))
                samples["grpc"].append(grpc_rate(server, grpc_body, batch, args.seconds, args.clients))
        finally:
            server.stop()
        med = lambda values: statistics.median(values)  # noqa: E731
        row = {"batch": batch, "direct": med([w for w, _ in samples["direct"]]),
               "sizes": (len(binary_body), len(bodies["json"]), len(bodies["json3"]))}
        for k in ("binary", "json", "json3", "grpc"):
            row[k] = med([w for w, _ in samples[k]])
            row[k + "_wall"] = med([s[0] / d[0] for s, d in zip(samples[k], samples["direct"])])
            row[k + "_cpu"] = med([s[1] / d[1] for s, d in zip(samples[k], samples["direct"])])
        rows.append(row)
        print("batch %d, images/s per round (wall): " % batch + " | ".join(
            k + " " + ", ".join("%.1f" % w for w, _ in samples[k]) for k in samples), flush=True)

    print()
    print("Serving efficiency, MobileNetV2 224x224 (random weights), TensorFlow %s, %s, %d CPU cores (shared), "
          "%d client connections, median of %d rounds of %.1f s" % (
              tf.__version__, platform.machine(), os.cpu_count(), args.clients, args.rounds, args.seconds))
    print("%5s  %8s  %8s  %7s  %7s  %8s  %7s  %7s  %8s  %7s  %7s  %8s  %7s  %7s  %9s  %8s  %8s" % (
        "batch", "direct", "binary", "wall", "cpu", "json", "wall", "cpu", "json3", "wall", "cpu", "grpc", "wall",
        "cpu", "binary MB", "json MB", "json3 MB"))
    for r in rows:
        print("%5d  %8.1f" % (r["batch"], r["direct"]) + "".join(
            "  %8.1f  %7.3f  %7.3f" % (r[k], r[k + "_wall"], r[k + "_cpu"]) for k in ("binary", "json", "json3", "grpc"))
            + "  %9.1f  %8.1f  %8.1f" % tuple(size / 1e6 for size in r["sizes"]))
    print("(images/s; wall = served images/s / direct images/s; cpu = images per server CPU-second / per direct "
          "CPU-second; targets at batch 8: binary >= 0.95, gRPC >= 0.9, JSON >= 0.5)")
    for form, label in JSON_FORMS:
        print("  %-5s = %s" % (form, label))
    print()
    print("Serving cost per request, trivial model with the same input (one sequential keep-alive client)")
    print("%5s  %10s  %10s  %10s  %10s  %10s  %10s  %10s" % (
        "batch", "direct ms", "binary ms", "+binary", "json ms", "+json", "json3 ms", "+json3"))
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        direct, binary, js = overhead_ms(tf, batch, args.seconds)
        print("%5d  %10.2f  %10.2f  %10.2f" % (batch, direct, binary, binary - direct) + "".join(
            "  %10.1f  %10.1f" % (js[form], js[form] - direct) for form, _ in JSON_FORMS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
