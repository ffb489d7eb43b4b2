"""Peers: one SavedModel served side by side by kit, by KServe's Python model server and by a Flask app.

    .venv/bin/python -m bench.peers [--models digits,mobilenet] [--seconds 5] [--clients 1,16] [--batch-sizes 1,8]

The three servers answer the same request, TF Serving's row format
({"instances": [...]} to POST /v1/models/m:predict, which KServe's v1
protocol shares), on 127.0.0.1:

  kit     python -m kit.runtime.serving.main (micro-batching, 2 ms delay)
  kserve  the `kserve` package's ModelServer with a kserve.Model that loads
          the SavedModel (what KServe's docs show for a custom model)
  flask   a hand-written Flask app calling the signature per request (what a
          user writes otherwise), on Flask's threaded server; its clients open a
          connection per request (its server stalls kept-alive ones here)

KServe and Flask run in their own venv, .bench-venvs/peers (kserve, flask and
the same tensorflow-cpu as .venv); the benchmark creates it on first use (a
few minutes, it says so) because kserve's dependencies are not kit's.

Models: the bundled example's digits CNN (8x8x1; trained into the benchmark
cache by its own train.py if absent) and MobileNetV2 224x224 with random
weights (bench/_models.py; nothing downloaded). For every model, batch size
and number of client connections (keep-alive, one thread each, bodies encoded
once), the three servers are measured one after another in the same run:
requests/s, images/s and the latency percentiles p50/p99. Every server's answer
is first checked against the model called in this process.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from bench._models import CACHE, REPO, export_mobilenet_v2, start_server
from testkit.rawhttp import RawClient
from kit.net import free_port

PEERS_VENV = REPO / ".bench-venvs" / "peers"
KSERVE = "kserve==0.15.2"  # the newest whose protobuf range (< 5) meets TensorFlow 2.17's
FLASK = "flask==3.1.3"


# ---- the peers' venv and apps ---------------------------------------------------------------


def ensure_peers_venv(tf_version):
    """.bench-venvs/peers with kserve, flask and tensorflow-cpu==tf_version; created once, then reused."""
    python = PEERS_VENV / "bin" / "python"
    want = " ".join([KSERVE, FLASK, "tensorflow-cpu==" + tf_version])
    stamp = PEERS_VENV / ".kit-bench-installed"
    if python.is_file() and stamp.is_file() and stamp.read_text() == want:
        return python
    print("bench.peers: creating %s with %s (one time, a few minutes: kserve's dependencies are not kit's, so "
          "it gets its own venv)" % (PEERS_VENV.relative_to(REPO), want), flush=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"] + want.split(),
                   check=True)
    stamp.write_text(want)
    return python


KSERVE_APP = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    import kserve

    class SavedModel(kserve.Model):
        def __init__(self, name, path):
            super().__init__(name)
            self.path = path
            self.load()

        def load(self):
            self.fn = tf.saved_model.load(self.path).signatures["serving_default"]
            self.input = list(self.fn.structured_input_signature[1])[0]
            self.ready = True

        def predict(self, payload, headers=None):
            x = np.asarray(payload["instances"], dtype=np.float32)
            (y,) = self.fn(**{self.input: tf.constant(x)}).values()
            return {"predictions": y.numpy().tolist()}

    if __name__ == "__main__":
        path, port, grpc_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        kserve.ModelServer(http_port=port, grpc_port=grpc_port, enable_grpc=False, workers=1).start(
            [SavedModel("m", path)])
''')

FLASK_APP = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    from flask import Flask, jsonify, request

    path, port = sys.argv[1], int(sys.argv[2])
    fn = tf.saved_model.load(path).signatures["serving_default"]
    input_name = list(fn.structured_input_signature[1])[0]
    app = Flask(__name__)

    @app.get("/ready")
    def ready():
        return "ok"

    @app.post("/v1/models/m:predict")
    def predict():
        x = np.asarray(request.get_json()["instances"], dtype=np.float32)
        (y,) = fn(**{input_name: tf.constant(x)}).values()
        return jsonify({"predictions": y.numpy().tolist()})

    app.run(host="127.0.0.1", port=port, threaded=True)
''')


class PeerProcess(object):
    """A peer server (KServe or Flask) started from its app source in the peers' venv."""

    def __init__(self, python, source, args, ready_path):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kit-bench-peer-"))
        (self.dir / "app.py").write_text(source)
        self.log = open(str(self.dir / "log"), "w+")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        self.proc = subprocess.Popen([str(python), str(self.dir / "app.py")] + [str(a) for a in args(self.port)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=str(self.dir))
        self.ready_path = ready_path

    def wait_ready(self, timeout=300):
        import http.client

        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("peer exited:\n" + self.logs())
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", self.ready_path)
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("peer never became ready:\n" + self.logs())

    def logs(self):
        self.log.flush()
        return (self.dir / "log").read_text(errors="replace")[-3000:]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ---- load -------------------------------------------------------------------------------------


class Client(RawClient):
    """RawClient that reconnects when a server closes the connection after a response (HTTP/1.0 style).
    keep_alive=False: a new connection per request (Flask's development server stalls a second request on
    a kept-alive connection here, so its clients connect per request, as requests.post without a session)."""

    def __init__(self, port, keep_alive=True):
        self.port = port
        self.keep_alive = keep_alive
        RawClient.__init__(self, port)

    def post(self, path, body, headers):
        if not self.keep_alive:
            self.sock.close()
            RawClient.__init__(self, self.port)
            return RawClient.post(self, path, body, dict(headers, Connection="close"))
        try:
            return RawClient.post(self, path, body, headers)
        except (ConnectionError, OSError):
            self.sock.close()
            RawClient.__init__(self, self.port)
            return RawClient.post(self, path, body, headers)


def measure(port, body, seconds, clients, keep_alive=True):
    """(requests/s answered, latencies in ms, requests refused with 503) of `clients` connections posting `body`
    for `seconds`. A 503 is a server's own bound at work (kit's KIT_MAX_BUFFERED with 16 MobileNet batch-8
    bodies in flight): counted, not fatal, and left out of the rate and the latencies."""
    headers = {"Content-Type": "application/json"}
    conns = [Client(port, keep_alive) for _ in range(clients)]
    refused = [0] * clients

    def post(i):
        try:
            conns[i].post("/v1/models/m:predict", body, headers)
            return True
        except (RuntimeError, ConnectionError) as e:
            if isinstance(e, RuntimeError) and not str(e).startswith("HTTP 503"):
                raise
            # A 503, or the connection reset by a server that answered 503 before the whole body was sent.
            refused[i] += 1
            if isinstance(e, ConnectionError):
                conns[i].close()
                conns[i] = Client(port, keep_alive)
            time.sleep(0.05)  # a client backs off before it retries
            return False

    for i in range(clients):
        post(i)
    latencies = [[] for _ in range(clients)]
    errors = []
    start = time.perf_counter()
    deadline = start + seconds
    finished = [start] * clients

    def run(i):
        try:
            lat = latencies[i]
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                if post(i):
                    lat.append((time.perf_counter() - t0) * 1000.0)
            finished[i] = time.perf_counter()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    if errors:
        raise errors[0]
    all_latencies = [v for lat in latencies for v in lat]
    return len(all_latencies) / (max(finished) - start), all_latencies, sum(refused)


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# ---- models -----------------------------------------------------------------------------------


def digits_model():
    """The bundled example's SavedModel: the repository's own if trained, else trained into the cache."""
    own = REPO / "manifests" / "examples" / "digits" / "saved_model"
    if (own / "saved_model.pb").is_file():
        return own
    out = CACHE / "digits"
    if not (out / "saved_model" / "saved_model.pb").is_file():
        print("bench.peers: training the digits example into %s (its own train.py)" % out, flush=True)
        subprocess.run([sys.executable, str(REPO / "manifests" / "examples" / "digits" / "train.py"), "--out",
                        str(out), "--epochs", "5"], check=True, capture_output=True)
    return out / "saved_model"


def model_input(fn):
    name = list(fn.structured_input_signature[1])[0]
    spec = fn.structured_input_signature[1][name]
    return name, [int(d) for d in spec.shape[1:]]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="digits,mobilenet")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each measurement")
    p.add_argument("--clients", default="1,16")
    p.add_argument("--batch-sizes", default="1,8")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    python = ensure_peers_venv(tf.__version__)
    load_before = os.getloadavg()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    client_counts = [int(c) for c in args.clients.split(",")]
    models = {"digits": digits_model, "mobilenet": export_mobilenet_v2}
    rows = []
    for model in args.models.split(","):
        path = str(models[model]())
        fn = tf.saved_model.load(path).signatures["serving_default"]
        input_name, shape = model_input(fn)
        servers = {}
        try:
            servers["kit"] = start_server(path, ",".join(str(b) for b in sorted(set(batch_sizes + [8]))))
            servers["kserve"] = PeerProcess(python, KSERVE_APP, lambda port: [path, port, free_port()],
                                            "/v1/models/m").wait_ready()
            servers["flask"] = PeerProcess(python, FLASK_APP, lambda port: [path, port], "/ready").wait_ready()
            for batch in batch_sizes:
                x = np.round(np.random.RandomState(batch).uniform(0, 1, size=[batch] + shape), 3).astype(np.float32)
                (reference,) = fn(**{input_name: tf.constant(x)}).values()
                body = json.dumps({"instances": x.tolist()}).encode()
                for name, server in servers.items():  # every peer answers what the model computes
                    answer = json.loads(Client(server.port, name != "flask").post("/v1/models/m:predict", body,
                                                                 {"Content-Type": "application/json"}))
                    np.testing.assert_allclose(np.asarray(answer["predictions"]), reference.numpy(), atol=1e-4,
                                               err_msg=name)
                for clients in client_counts:
                    for name, server in servers.items():
                        rate, latencies, refused = measure(server.port, body, args.seconds, clients,
                                                           name != "flask")
                        row = dict(model=model, batch=batch, clients=clients, server=name, rps=rate,
                                   p50=percentile(latencies, 50), p99=percentile(latencies, 99), refused=refused)
                        rows.append(row)
                        print("%-9s batch %d, %2d clients, %-6s %8.1f req/s  p50 %8.2f ms  p99 %8.2f ms  %d refused"
                              % (model, batch, clients, name, rate, row["p50"], row["p99"], refused), flush=True)
        finally:
            for server in servers.values():
                server.stop()

    print()
    print("Peers on one SavedModel, TensorFlow %s, %s, %d CPU cores (shared), %g s per cell, JSON row format "
          "(TF Serving / KServe v1)" % (tf.__version__, platform.machine(), os.cpu_count(), args.seconds))
    # The machine is shared: say how loaded it was (1-minute load average), so a reader can weigh the cells.
    print("load average (1 min): %.1f before, %.1f after" % (load_before[0], os.getloadavg()[0]))
    print("%-9s  %5s  %7s  %-6s  %9s  %9s  %9s  %9s  %7s" % ("model", "batch", "clients", "server", "req/s",
                                                              "images/s", "p50 ms", "p99 ms", "refused"))
    for r in rows:
        print("%-9s  %5d  %7d  %-6s  %9.1f  %9.1f  %9.2f  %9.2f  %7d" % (
            r["model"], r["batch"], r["clients"], r["server"], r["rps"], r["rps"] * r["batch"], r["p50"], r["p99"],
            r["refused"]))
    print()
    print("kit's requests/s over each peer's, same model, batch and clients:")
    for key in sorted(set((r["model"], r["batch"], r["clients"]) for r in rows), key=lambda k: (k[0], k[1], k[2])):
        cell = dict((r["server"], r["rps"]) for r in rows if (r["model"], r["batch"], r["clients"]) == key)
        print("  %-9s batch %d, %2d clients: %s" % (key + (", ".join(
            "kit/%s %.2f" % (peer, cell["kit"] / cell[peer]) for peer in ("kserve", "flask") if cell.get(peer)),)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
