"""Hostile traffic against the real server process (issue 13's ten findings), with raw sockets.

Every server here is `python -m kit.runtime.serving.main` on the bundled digits
example with small limits, so each bound is reached quickly; resource use is
read from the server's /proc entry (RSS, threads, CPU time).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from test_server import KIT, REPO, GOOD, Server, digits_dir, digits_images, digits_manifest, free_port  # noqa: F401

LIMITS = {"KIT_MAX_CONNECTIONS": "40", "KIT_IDLE_TIMEOUT": "2s", "KIT_BODY_TIMEOUT": "2s",
          "KIT_MAX_JSON_BODY": "1MiB", "KIT_MAX_BODY": "4MiB", "KIT_MAX_HEADER_BYTES": "16KiB",
          "KIT_MAX_BUFFERED": "16MiB", "KIT_ACCESS_LOG": "1"}
GOOD_BODY = json.dumps(GOOD).encode()


@pytest.fixture(scope="module")
def hard(digits_dir):  # noqa: F811
    server = Server(digits_dir / "saved_model", "digits", "1,4,8", env=LIMITS).wait_ready()
    yield server
    assert server.stop() == 0


def proc_status(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return {"rss": int(fields["VmRSS"].split()[0]) * 1024, "threads": int(fields["Threads"])}


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def post_head(path, length, extra=b""):
    return (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n"
            % (path.encode(), extra, length))


def connect(port, timeout=10):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_all(sock):
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(port, data):
    with connect(port) as s:
        s.sendall(data)
        return read_all(s)


def predict_ok(server):
    status, _, _ = server.predict(GOOD)
    return status == 200


# ---- 1. memory is allocated as bytes arrive, never from Content-Length ---------------------------


def test_large_content_length_allocates_nothing_and_times_out(hard):
    before = proc_status(hard.proc.pid)["rss"]
    socks = []
    for _ in range(30):  # binary bodies of 3.5 MiB announced (under the 4 MiB limit), none sent
        s = connect(hard.port)
        s.sendall(post_head("/v2/models/digits/infer", 3584 * 1024, b"Inference-Header-Content-Length: 10\r\n"))
        socks.append(s)
    time.sleep(0.5)
    grown = proc_status(hard.proc.pid)["rss"] - before
    assert grown < 30 << 20, "30 announced 3.5 MiB bodies grew RSS by %d bytes" % grown  # 105 MiB if allocated
    assert predict_ok(hard)
    time.sleep(2.5)  # the body deadline (2 s) closes them
    for s in socks:
        s.settimeout(2)
        assert b" 500 " not in read_all(s)  # closed (reset or EOF), never answered 500
        s.close()
    assert predict_ok(hard)


# ---- 2. header bytes are bounded in total; headers have a deadline ------------------------------


def test_oversized_headers_are_refused_and_slow_headers_cut(hard):
    many = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 900)
                                                                       for i in range(30)) + b"\r\n"
    reply = exchange(hard.port, many)  # 27 KB of headers, limit 16 KiB: never served
    assert not reply.startswith(b"HTTP/1.1 200")
    with connect(hard.port) as s:  # a slowloris on the headers: cut at the 2 s header deadline
        s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 6:
            try:
                s.sendall(b"X: 1\r\n")
            except OSError:
                closed = True
                break
            s.settimeout(0.5)
            try:
                if s.recv(100) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
        assert closed and time.monotonic() - started < 5
    assert predict_ok(hard)


# ---- 3. the JSON limit applies before parsing --------------------------------------------------


def test_json_limit_is_checked_from_content_length_before_the_body(hard):
    with connect(hard.port) as s:
        s.sendall(post_head("/v1/models/digits:predict", 60 << 20))  # 60 MiB announced, nothing sent
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413") and b"KIT_MAX_JSON_BODY" in reply
    # A binary body may be larger than the JSON limit (it has its own, KIT_MAX_BODY).
    status, _, data = hard.request("POST", "/v2/models/digits/infer", b"x" * (2 << 20),
                                   {"Inference-Header-Content-Length": "10"})
    assert status == 400, data
    assert predict_ok(hard)


# ---- 4. connections: capped, no thread per connection, EMFILE survived ---------------------------


def test_connection_cap_answers_503_and_threads_stay_flat(hard):
    threads_before = proc_status(hard.proc.pid)["threads"]
    socks = [connect(hard.port) for _ in range(40)]
    time.sleep(0.3)
    try:
        with connect(hard.port) as extra:
            reply = read_all(extra)
        assert reply.startswith(b"HTTP/1.1 503") and b"KIT_MAX_CONNECTIONS" in reply and b"Retry-After" in reply
        assert proc_status(hard.proc.pid)["threads"] <= threads_before + 1  # no thread per connection
    finally:
        for s in socks:
            s.close()
    time.sleep(0.3)
    assert predict_ok(hard)
    assert hard.metrics()['kit_rejected_total{reason="connections"}'] >= 1


def test_accept_loop_survives_running_out_of_file_descriptors(digits_dir):  # noqa: F811
    import resource

    def few_fds():
        resource.setrlimit(resource.RLIMIT_NOFILE, (150, 150))

    port = free_port()
    log = open(os.devnull, "w")
    proc = subprocess.Popen([sys.executable, "-m", "kit.runtime.serving.main", "--model-dir",
                             str(digits_dir / "saved_model"), "--model-name", "digits", "--host", "127.0.0.1",
                             "--port", str(port)], env=dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2"),
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=few_fds)
    server = Server.__new__(Server)
    server.port, server.name, server.proc = port, "digits", proc
    server.logs = lambda: "(log discarded)"
    try:
        server.wait_ready()
        socks = []
        for _ in range(200):  # more than the server's 150 descriptors
            socks.append(connect(port))
        time.sleep(0.5)
        cpu = cpu_seconds(proc.pid)
        time.sleep(2)
        assert cpu_seconds(proc.pid) - cpu < 0.5  # not spinning on EMFILE
        for s in socks:
            s.close()
        time.sleep(0.5)
        assert predict_ok(server)  # and it accepts again
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


# ---- 5. a body still arriving never delays other requests --------------------------------------


def test_a_stalled_body_does_not_make_the_batcher_wait(digits_dir):  # noqa: F811
    server = Server(digits_dir / "saved_model", "digits", "1,4,8",
                    env={"KIT_MAX_BATCH_DELAY": "300ms", "KIT_BODY_TIMEOUT": "30s"}).wait_ready()
    try:
        with connect(server.port) as stalled:
            stalled.sendall(post_head("/v1/models/digits:predict", len(GOOD_BODY)) + GOOD_BODY[:10])
            time.sleep(0.2)
            conn = server.connect()
            times = []
            for _ in range(5):
                started = time.monotonic()
                assert server.predict(GOOD, conn=conn)[0] == 200
                times.append(time.monotonic() - started)
            conn.close()
            # Waiting for the stalled body would cost the whole 300 ms batch delay on every request.
            assert sorted(times)[2] < 0.15, times
            stalled.sendall(GOOD_BODY[10:])
            assert stalled.recv(65536).startswith(b"HTTP/1.1 200")
    finally:
        assert server.stop() == 0


# ---- 6. client errors are 4xx with the reason --------------------------------------------------

BAD_V2_SHAPES = [[2 ** 62, 2 ** 62, 1, 1], [10 ** 30], [1] * 40]


@pytest.mark.parametrize("shape", BAD_V2_SHAPES, ids=["2^62x2^62", "10^30", "40 dims"])
def test_absurd_v2_shapes_get_400(hard, shape):
    body = {"inputs": [{"name": "pixels", "shape": shape, "datatype": "FP32", "data": [0.0]}]}
    status, _, data = hard.request("POST", "/v2/models/digits/infer", body)
    assert status == 400 and "shape" in json.loads(data)["error"]


@pytest.mark.parametrize("text,words", [
    (b"[" * 10000 + b"]" * 10000, "too deeply"),
    (b'{"instances": [' + b"[" * 10000 + b"]" * 10000 + b"]}", "too deeply"),
    (b'{"instances": [[NaN]]}', "NaN is not valid JSON"),
    (b'{"instances": [[Infinity]]}', "Infinity is not valid JSON"),
    (b'{"instances": [[1e999]]}', "out of range"),
], ids=["deep array", "deep instances", "NaN", "Infinity", "1e999"])
def test_hostile_json_gets_400(hard, text, words):
    status, _, data = hard.request("POST", "/v1/models/digits:predict", text)
    assert status == 400 and words in json.loads(data)["error"], data


def test_a_stalled_body_is_closed_not_answered_500(hard):
    with connect(hard.port) as s:
        s.sendall(post_head("/v1/models/digits:predict", 1000) + b'{"inst')
        s.settimeout(6)
        reply = read_all(s)  # the 2 s body deadline closes it
    assert b" 500 " not in reply
    assert predict_ok(hard)


# ---- 7. strict framing: no smuggling -------------------------------------------------------------


def test_a_gets_body_is_read_not_run_as_a_second_request(hard):
    smuggled = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
    data = (b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)) + smuggled
    with connect(hard.port) as s:
        s.sendall(data)
        time.sleep(0.5)
        s.settimeout(0.5)
        reply = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except socket.timeout:
            pass
    assert reply.count(b"HTTP/1.1 ") == 1 and b'"live":true' in reply


@pytest.mark.parametrize("headers,status", [
    (b"Content-Length: 1_4\r\n", b"400"),
    (b"Content-Length: +14\r\n", b"400"),
    (b"Content-Length: 14\r\nContent-Length: 15\r\n", b"400"),
    (b"Transfer-Encoding: chunked\r\nContent-Length: 14\r\n", b"400"),
    (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", b"501"),
    (b"Transfer-Encoding: gzip, chunked\r\n", b"501"),
], ids=["underscores", "plus sign", "two lengths", "TE and CL", "two TE", "gzip TE"])
def test_ambiguous_framing_is_refused_and_closed(hard, headers, status):
    data = b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n" + b'{"instances":[]}'
    reply = exchange(hard.port, data)
    assert reply.startswith(b"HTTP/1.1 " + status), reply[:200]
    assert reply.count(b"HTTP/1.1 ") == 1  # and nothing after it ran as another request


# ---- 8. a parent that dies takes the server with it ------------------------------------------------


def test_kit_serve_sigkilled_takes_its_server_child_along(digits_manifest):  # noqa: F811
    port = free_port()
    proc = subprocess.Popen(KIT + ["serve", str(digits_manifest), "--local", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(REPO),
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    server = Server.__new__(Server)
    server.port, server.name, server.proc = port, "digits", proc
    server.logs = lambda: "(see the kit serve output)"
    try:
        server.wait_ready()
        with open("/proc/%d/task/%d/children" % (proc.pid, proc.pid)) as f:
            children = [int(p) for p in f.read().split()]
        assert len(children) == 1
        child = children[0]
        proc.kill()
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and os.path.exists("/proc/%d" % child):
            with open("/proc/%d/stat" % child) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break  # exited, waiting for its (new) parent to reap it
            time.sleep(0.1)
        else:
            if os.path.exists("/proc/%d" % child):
                os.kill(child, signal.SIGKILL)
                raise AssertionError("the server outlived kit serve")
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- 9. logs and headers ------------------------------------------------------------------------------


def test_log_escapes_control_characters_and_server_header_hides_python(hard):
    # Raw control characters in the request line: tornado >= 6.5 refuses them (400), 6.1 passes them on
    # (404), and the access log escapes them.
    raw = exchange(hard.port, b"GET /v2/\x1b[31mraw\x07 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400") or raw.startswith(b"HTTP/1.1 404")
    reply = exchange(hard.port, b"GET /v2/%1b[31mred%07 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 404")
    server_header = [line for line in reply.split(b"\r\n") if line.lower().startswith(b"server:")]
    assert server_header == [b"Server: kit-serve/0.1.0"]
    time.sleep(0.2)
    logs = hard.logs()
    assert "/v2/%1b[31mred%07" in logs
    assert "\x1b" not in logs and "\x07" not in logs
    if raw.startswith(b"HTTP/1.1 404"):
        assert "\\x1b[31mraw\\x07" in logs
