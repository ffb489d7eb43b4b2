"""The model server (`python -m kit.runtime.serving.main`) as a background process on 127.0.0.1."""

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
        # KIT_SERVER_PYTHON: the interpreter the server runs on (scripts/test's twin stage: .venv-twin's Python 3.6).
        python = os.environ.get("KIT_SERVER_PYTHON") or sys.executable
        cmd = [python, "-m", "kit.runtime.serving.main", "--model-dir", str(model_dir), "--model-name", name,
               "--host", "127.0.0.1", "--port", str(self.port), "--grpc-port", str(self.grpc_port),
               "--batch-sizes", batch_sizes] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=full_env, cwd=str(REPO))

    def logs(self):
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
            os.unlink(self.log.name)
