"""The model server (`python -m kit.runtime.serving.main`) as a background process on 127.0.0.1.

SERVER_PYTHON is the interpreter it runs on: this one, or the one KIT_SERVER_PYTHON names
(scripts/test sets it to .venv-twin/bin/python: Python 3.6 + TF 2.3.1, the Jetson's Python side).
The bundled digits example, trained fresh, is the model most server tests and benchmarks use.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kit.net import free_port

REPO = Path(__file__).resolve().parents[1]
SERVER_PYTHON = os.environ.get("KIT_SERVER_PYTHON") or sys.executable
DIGITS_REQUEST = {"instances": [[[[0.5]] * 8] * 8]}  # one 8x8x1 image, TF Serving row format
# TensorFlow Serving's own test model (TF1-era signatures; serving_default: y = x/2 + 2).
HALF_PLUS_TWO = (Path(os.environ.get("KIT_SHARED", REPO.parent / "shared"))
                 / "testdata/tf-serving-half-plus-two/00000123")
if not HALF_PLUS_TWO.is_dir():
    HALF_PLUS_TWO = Path("/work/shared/testdata/tf-serving-half-plus-two/00000123")
# The kit CLI on this interpreter (`kit serve --local` starts the server as its child).
KIT_CLI = [sys.executable, "-c", "import sys; from kit.cli import main; sys.exit(main())"]


def held_out_digits():
    """The bundled example's held-out digits and labels (x_test, y_test): the split its train.py holds out."""
    sys.path.insert(0, str(REPO / "manifests/examples/digits"))
    try:
        from train import load_digits_split
    finally:
        sys.path.pop(0)
    _, _, x_test, y_test = load_digits_split(0)
    return x_test, y_test


def train_digits(out, python=None):
    """Train the bundled example into `out` (saved_model/, parity.npy; about 6 s) on the server's TensorFlow."""
    subprocess.run([python or SERVER_PYTHON, str(REPO / "manifests/examples/digits/train.py"), "--out", str(out)],
                   check=True, cwd=str(REPO), env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return Path(out)


class ServerProcess(object):
    """A running server with its log in a temp file. `args` go to main.py after the defaults."""

    def __init__(self, model_dir, name, batch_sizes="1,4,8", env=None, args=(), log_level="1", port=None,
                 grpc_port=None):
        self.port = port or free_port()  # a given port: a second server beside one (KIT_REUSE_PORT)
        self.grpc_port = grpc_port or free_port()
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix="kit-serve-", suffix=".log", delete=False)
        full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=log_level, PYTHONPATH=str(REPO))
        full_env.update(env or {})
        cmd = [SERVER_PYTHON, "-m", "kit.runtime.serving.main", "--model-dir", str(model_dir), "--model-name", name,
               "--host", "127.0.0.1", "--port", str(self.port), "--grpc-port", str(self.grpc_port),
               "--batch-sizes", batch_sizes] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env, cwd=str(REPO))

    @classmethod
    def attach(cls, proc, port, name, logs="(log not kept)"):
        """A ServerProcess for a server started some other way (`kit serve`, special rlimits), to wait on
        and talk to; stop() signals `proc`."""
        server = cls.__new__(cls)
        server.proc, server.port, server.grpc_port, server.name, server.log = proc, port, None, name, None
        server._logs = logs
        return server

    def logs(self):
        if self.log is None:
            return self._logs
        return Path(self.log.name).read_text(errors="replace")

    def connect(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def open(self, timeout=120):
        """A connected keep-alive connection with TCP_NODELAY (what load generators want)."""
        conn = self.connect(timeout)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def request(self, method, path, body=None, headers=None, conn=None):
        own = conn is None
        conn = conn or self.connect()
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            data = response.read()
            return response.status, dict((k.lower(), v) for k, v in response.getheaders()), data
        finally:
            if own:
                conn.close()

    def get(self, path):
        return self.request("GET", path)

    def predict(self, body, **kwargs):
        return self.request("POST", "/v1/models/%s:predict" % self.name, body, **kwargs)

    def wait_live(self, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, "server exited early:\n" + self.logs()
            try:
                if self.get("/v2/health/live")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("server never became live:\n" + self.logs())

    def wait_ready(self, timeout=90):
        self.wait_live(timeout)  # KIT_REUSE_PORT: not even live before ready
        deadline = time.time() + timeout
        while time.time() < deadline:
            assert self.proc.poll() is None, "server exited early:\n" + self.logs()
            if self.get("/v2/health/ready")[0] == 200:
                return self
            time.sleep(0.1)
        raise AssertionError("server never became ready:\n" + self.logs())

    def metrics(self):
        status, _, body = self.get("/metrics")
        assert status == 200
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, value = line.rsplit(" ", 1)
                values[key] = float(value)
        return values

    def stop(self, timeout=30):
        """SIGTERM (graceful drain), then kill if it does not exit in time; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.log is not None:
                os.unlink(self.log.name)


def kit_serve_local(manifest, name, port=None, grpc_port=None, **popen):
    """`kit serve MANIFEST --local` as a child process on a free port, as a ServerProcess (stop() signals kit)."""
    port = port or free_port()
    proc = subprocess.Popen(KIT_CLI + ["serve", str(manifest), "--local", "--port", str(port),
                                       "--grpc-port", str(grpc_port or free_port())],
                            cwd=str(REPO), env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), **popen)
    return ServerProcess.attach(proc, port, name, logs="(see the kit serve output)")
