"""The image's health probe (kit.runtime.serving.healthcheck), run as Docker runs it: a
python3 process with KIT_PORT / KIT_SLOT in its environment, against tiny stdlib HTTP
servers that answer /v2/health/ready with a given status and Kit-Slot header.

The slot logic is what keeps a start-first update honest (docs/fleet-updates.md): the new
task's probe must not count the old task's 200 on the shared port."""

import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn

import pytest

from kit.net import free_port
from kit.runtime.serving import healthcheck

REPO = Path(__file__).resolve().parents[4]
# The probe runs in the image on Python 3.6: KIT_SERVER_PYTHON=.venv-twin/bin/python runs it there.
PROBE_PYTHON = os.environ.get("KIT_SERVER_PYTHON") or sys.executable


class Stub(ThreadingMixIn, HTTPServer):
    """Answers every GET with reply(n) -> (status, Kit-Slot or None), n counting from 0;
    `shared` binds with SO_REUSEPORT, as the kit server does for start-first."""

    daemon_threads = True

    def __init__(self, reply, port=0, shared=False):
        self.reply, self.shared, self.requests = reply, shared, 0
        self.lock = threading.Lock()
        HTTPServer.__init__(self, ("127.0.0.1", port), self.Handler)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def server_bind(self):
        if self.shared:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        HTTPServer.server_bind(self)

    @property
    def port(self):
        return self.server_address[1]

    def stop(self):
        self.shutdown()
        self.server_close()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            with self.server.lock:
                n = self.server.requests
                self.server.requests += 1
            status, slot = self.server.reply(n)
            self.send_response(status)
            if slot is not None:
                self.send_header("Kit-Slot", slot)
            self.send_header("Content-Length", "0")
            self.end_headers()


@pytest.fixture
def stubs():
    started = []

    def start(reply, port=0, shared=False):
        started.append(Stub(reply, port, shared))
        return started[-1]

    yield start
    for s in started:
        s.stop()


def probe(port, slot=None, argv=(), module="kit.runtime.serving.healthcheck"):
    """(exit code, stderr) of the probe as a process, KIT_PORT/KIT_SLOT in its environment."""
    env = dict(os.environ, KIT_PORT=str(port), PYTHONPATH=str(REPO))
    env.pop("KIT_SLOT", None)
    env.pop("KIT_HOST", None)
    if slot is not None:
        env["KIT_SLOT"] = slot
    done = subprocess.run([PROBE_PYTHON, "-m", module, *argv], env=env, capture_output=True, text=True,
                          timeout=60)
    return done.returncode, done.stderr


def test_with_a_slot_only_that_slot_s_answer_counts(stubs):
    assert probe(stubs(lambda n: (200, "blue")).port, "blue") == (0, "")
    code, err = probe(stubs(lambda n: (503, "blue")).port, "blue")
    assert code == 1 and "slot blue answered HTTP 503" in err


def test_replies_from_other_slots_are_skipped_up_to_eight_new_connections(stubs):
    # the own slot's 200 on the 8th connection still counts...
    late = stubs(lambda n: (200, "green") if n == 7 else (200, "blue"))
    assert probe(late.port, "green") == (0, "")
    assert late.requests == 8
    # ...and its 503 after a few of the other slot's 200s still fails
    assert probe(stubs(lambda n: (503, "green") if n == 3 else (200, "blue")).port, "green")[0] == 1
    # 8 replies, none from the probe's slot: not ready, and stderr names who answered
    other = stubs(lambda n: (200, "blue") if n % 2 else (200, None))
    code, err = probe(other.port, "green")
    assert code == 1 and other.requests == 8
    assert "not ready for slot green: 8 replies" in err and "blue" in err and "no Kit-Slot header" in err
    assert err.count("blue") == 1  # each slot named once


def test_a_connection_error_fails_at_once(stubs):
    code, err = probe(free_port(), "green")  # nothing listens there
    assert code == 1 and "not ready" in err and "refused" in err.lower()


def test_without_a_slot_any_200_counts_as_before(stubs):
    assert probe(stubs(lambda n: (200, "blue")).port) == (0, "")
    assert probe(stubs(lambda n: (200, None)).port, slot="") == (0, "")  # KIT_SLOT empty: no slot
    one = stubs(lambda n: (503, None))
    code, err = probe(one.port)
    assert code == 1 and "HTTP 503" in err and one.requests == 1


def test_slot_flag_and_main_probe_take_the_same_path(stubs):
    blue = stubs(lambda n: (200, "blue"))
    assert probe(blue.port, argv=["--slot", "blue"]) == (0, "")
    assert probe(blue.port, argv=["--slot", "green"])[0] == 1
    assert probe(blue.port, slot="green", argv=["--slot", "blue"]) == (0, "")  # the flag wins over KIT_SLOT
    # `main --probe`, the HEALTHCHECK compose falls back to, is the same slot-aware probe
    main = "kit.runtime.serving.main"
    assert probe(blue.port, "blue", argv=["--probe"], module=main) == (0, "")
    code, err = probe(blue.port, "green", argv=["--probe"], module=main)
    assert code == 1 and "blue" in err


def test_the_probe_runs_as_a_standalone_file(stubs, tmp_path):
    """The fleet fixture image copies healthcheck.py alone into its app and runs it as a script."""
    copy = tmp_path / "healthcheck.py"
    copy.write_text(Path(healthcheck.__file__).read_text())
    port = stubs(lambda n: (200, "blue")).port
    env = dict(os.environ, KIT_PORT=str(port), KIT_SLOT="green")
    env.pop("PYTHONPATH", None)
    done = subprocess.run([PROBE_PYTHON, str(copy)], env=env, capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert done.returncode == 1 and "blue" in done.stderr
    env["KIT_SLOT"] = "blue"
    assert subprocess.run([PROBE_PYTHON, str(copy)], env=env, cwd=tmp_path, timeout=60).returncode == 0


def test_beside_an_old_server_on_a_shared_port_the_new_one_s_probe_waits_for_it(stubs):
    """A start-first update: the old task (another slot) answers ready on the port, the new
    one is not listening yet, then it is (SO_REUSEPORT: the kernel spreads new connections)."""
    old = stubs(lambda n: (200, "task-old"), shared=True)
    code, err = probe(old.port, "task-new")
    assert code == 1 and "task-old" in err  # only the old task answers: the new one is not ready
    stubs(lambda n: (200, "task-new"), port=old.port, shared=True)
    # each probe misses a listening server 1 time in 256 (8 connections, 2 listeners); Docker
    # probes again one interval later, and so does this test (a miss 3 times: 1 in 16 million)
    assert any(probe(old.port, "task-new")[0] == 0 for _ in range(3))


def test_the_timeout_bounds_the_whole_probe_not_each_try(stubs):
    """Docker kills a probe that overruns its own timeout (and loses the reason): 8 slow replies
    from another slot must not add up to 8 timeouts."""
    import time

    def slow(n):
        time.sleep(0.4)
        return 200, "blue"

    began = time.monotonic()
    code, err = probe(stubs(slow).port, "green", argv=["--timeout", "1"])
    assert code == 1 and "no reply from it within 1s" in err and "blue" in err, err
    assert time.monotonic() - began < 2.5  # 8 x 0.4 s = 3.2 s without the bound (plus start-up)
