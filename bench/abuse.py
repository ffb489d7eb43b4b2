"""Hostile traffic beside normal traffic: does the server stay small and fast?

    .venv/bin/python -m bench.abuse [--seconds 15] [--idle 1000] [--slowloris 100] [--big-length 30] [--oversized 4]

On the bundled example (the digits CNN, trained fresh into a temp dir, about
6 s), `python -m kit.runtime.serving.main` runs with its default limits.
One keep-alive client sends single-image TF Serving JSON predictions one
after another, first alone (unloaded), then while, in parallel:
  - `--idle` connections are open and send nothing,
  - `--slowloris` connections send their headers one byte per second,
  - `--big-length` connections announce a 60 MiB binary body and send nothing,
  - `--oversized` clients post 60 MiB JSON bodies in a loop (as fast as the
    server lets them).
Attack connections that the server closes are reopened. Printed side by side,
from one run: the normal client's p50/p99 latency and errors, the server's
peak RSS and thread count (from /proc), and the attack's own counts.
Goal (issue 13): RSS < 1 GB and p99 < 5x the unloaded p99 during the attack.
"""

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench._models import REPO, start_server  # noqa: E402
from testkit.rawhttp import RawClient, proc_status  # noqa: E402

BIG = 60 << 20


class Sampler(threading.Thread):
    """Peak RSS and thread count of the server while running."""

    def __init__(self, pid):
        threading.Thread.__init__(self, daemon=True)
        self.pid, self.rss, self.threads, self.stopped = pid, 0, 0, threading.Event()

    def run(self):
        while not self.stopped.is_set():
            status = proc_status(self.pid)
            self.rss, self.threads = max(self.rss, status["rss"]), max(self.threads, status["threads"])
            time.sleep(0.1)


def normal_traffic(server, seconds):
    body = json.dumps({"instances": [[[[0.5]] * 8] * 8]}).encode()
    path = "/v1/models/digits:predict"
    client = RawClient(server.port)
    latencies, errors = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            client.post(path, body, {"Content-Type": "application/json"})
            latencies.append(time.perf_counter() - started)
        except Exception:
            errors += 1
            client.close()
            client = RawClient(server.port)
    client.close()
    latencies.sort()
    return {"requests": len(latencies), "errors": errors,
            "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


class Attack(object):
    def __init__(self, port, idle, slowloris, big_length, oversized):
        self.port = port
        self.counts = {"idle": idle, "slowloris": slowloris, "big_length": big_length}
        self.oversized = oversized
        self.stop = threading.Event()
        self.reopened = 0
        self.refused_503 = 0
        self.oversized_posts = 0
        self.oversized_413 = 0
        self.threads = []

    def _open(self, kind):
        s = socket.socket()
        s.setblocking(True)
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", self.port))
            if kind == "big_length":
                s.sendall(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 100"
                          b"\r\nContent-Length: %d\r\n\r\n" % BIG)
            elif kind == "slowloris":
                s.sendall(b"G")
            s.setblocking(False)
            return s
        except OSError:
            s.close()
            return None

    def _holder(self):
        """Keeps idle, slowloris and big-length connections open (reopened when closed)."""
        conns = dict((kind, [self._open(kind) for _ in range(n)]) for kind, n in self.counts.items())
        slow_text = b"ET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100000
        position = {}
        while not self.stop.is_set():
            for kind, socks in conns.items():
                for i, s in enumerate(socks):
                    alive = s is not None
                    if alive:
                        try:
                            data = s.recv(4096)
                            if data.startswith(b"HTTP/1.1 503"):
                                self.refused_503 += 1
                            alive = False
                        except BlockingIOError:
                            pass
                        except OSError:
                            alive = False
                    if alive and kind == "slowloris":
                        k = position.get(id(s), 0)
                        try:
                            s.send(slow_text[k:k + 1])
                            position[id(s)] = k + 1
                        except OSError:
                            alive = False
                    if not alive:
                        if s is not None:
                            s.close()
                            self.reopened += 1
                        socks[i] = self._open(kind)
            self.stop.wait(1.0)
        for socks in conns.values():
            for s in socks:
                if s is not None:
                    s.close()

    def _oversized(self):
        chunk = b"[" + b"0.5," * (1 << 18)  # 1 MiB of a JSON array that never ends
        head = (b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % BIG)
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                    s.sendall(head)
                    self.oversized_posts += 1
                    sent = 0
                    while sent < BIG and not self.stop.is_set():
                        s.sendall(chunk)
                        sent += len(chunk)
                    if s.recv(100).startswith(b"HTTP/1.1 413"):
                        self.oversized_413 += 1
            except OSError as e:
                if "reset" in str(e).lower() or "pipe" in str(e).lower():
                    self.oversized_413 += 1  # refused before the body: the server closed on us
            self.stop.wait(0.05)

    def start(self):
        self.threads = [threading.Thread(target=self._holder, daemon=True)]
        self.threads += [threading.Thread(target=self._oversized, daemon=True) for _ in range(self.oversized)]
        for t in self.threads:
            t.start()
        time.sleep(3)  # let every connection open

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--idle", type=int, default=1000)
    p.add_argument("--slowloris", type=int, default=100)
    p.add_argument("--big-length", type=int, default=30)
    p.add_argument("--oversized", type=int, default=4)
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="kit-bench-abuse-")
    subprocess.run([sys.executable, str(REPO / "manifests/examples/digits/train.py"), "--out", work], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    server = start_server(os.path.join(work, "saved_model"), "1,4,8", name="digits")
    try:
        sampler = Sampler(server.proc.pid)
        sampler.start()
        normal_traffic(server, 2)  # warm the path
        unloaded = normal_traffic(server, args.seconds)
        base_rss, base_threads = sampler.rss, sampler.threads
        sampler.rss = sampler.threads = 0
        attack = Attack(server.port, args.idle, args.slowloris, args.big_length, args.oversized)
        attack.start()
        loaded = normal_traffic(server, args.seconds)
        attack.finish()
        sampler.stopped.set()
        print("kit abuse benchmark: digits CNN, default limits, %d s per phase, %s" % (args.seconds,
                                                                                   os.uname().machine))
        print("attack: %d idle, %d slowloris, %d announcing 60 MiB, %d posting 60 MiB JSON"
              % (args.idle, args.slowloris, args.big_length, args.oversized))
        print("%-28s %12s %12s" % ("", "unloaded", "under attack"))
        for key, label in (("requests", "normal requests"), ("errors", "normal errors"),
                           ("p50_ms", "normal p50 (ms)"), ("p99_ms", "normal p99 (ms)")):
            fmt = "%-28s %12d %12d" if key in ("requests", "errors") else "%-28s %12.2f %12.2f"
            print(fmt % (label, unloaded[key], loaded[key]))
        print("%-28s %12.0f %12.0f" % ("server RSS peak (MiB)", base_rss / 2.0 ** 20, sampler.rss / 2.0 ** 20))
        print("%-28s %12d %12d" % ("server threads peak", base_threads, sampler.threads))
        print("p99 under attack / unloaded: %.2fx (goal < 5x); RSS peak %.0f MiB (goal < 1024)"
              % (loaded["p99_ms"] / unloaded["p99_ms"], sampler.rss / 2.0 ** 20))
        print("attack connections closed by the server and reopened: %d (503 at the cap: %d); oversized posts: "
              "%d, refused: %d" % (attack.reopened, attack.refused_503, attack.oversized_posts, attack.oversized_413))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
