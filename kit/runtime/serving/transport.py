"""HTTP front of the model server: routes, request bodies, responses, lifecycle.

stdlib http.server with socketserver.ThreadingMixIn (one thread per
connection, daemon threads), HTTP/1.1 keep-alive, TCP_NODELAY. Handler
threads parse and validate; the single inference worker in batching.py runs
the model. Configuration and the list of endpoints: see serve.py.
"""

import json
import logging
import re
import signal
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from kit import __version__
from kit.runtime.serving import protocol
from kit.runtime.serving.batching import BatchPlan, MicroBatcher, QueueFull, Stopped
from kit.runtime.logtap import ENGINE_BUILD, NATIVE_FALLBACK, StderrTap, line_classifier
from kit.runtime.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from kit.runtime.serving.metrics import ServerMetrics

log = logging.getLogger("kit.serve")

_V1 = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?(?P<rest>/metadata|:[A-Za-z]+)?$")
_V2_MODEL = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/ready|/infer)?$")

# Responses up to this size go out in one write (fewer syscalls, no Nagle interplay).
_SINGLE_WRITE = 256 * 1024
RETRY_AFTER_SECONDS = 1


class ServerState(object):
    """What the handlers share: config, model, batcher, metrics, lifecycle flags."""

    def __init__(self, config):
        self.config = config
        self.model = None
        self.batcher = None
        self.ready = False
        self.draining = False
        self.failed = None
        self.plan = BatchPlan(config.batch_sizes)
        self.metrics = ServerMetrics(queue_depth=lambda: self.batcher.depth() if self.batcher else 0,
                                     queue_capacity=config.max_queue,
                                     ready=lambda: self.ready and not self.draining)
        self._inflight = 0
        self._inflight_cond = threading.Condition()
        self.arriving = 0  # POST requests being received or parsed, not yet queued or answered
        self._arriving_lock = threading.Lock()

    def arrival(self, delta):
        with self._arriving_lock:
            self.arriving += delta

    # In-flight requests: counted so SIGTERM can wait for them.
    def enter(self):
        with self._inflight_cond:
            self._inflight += 1

    def leave(self):
        with self._inflight_cond:
            self._inflight -= 1
            self._inflight_cond.notify_all()

    def wait_idle(self, timeout):
        deadline = time.monotonic() + timeout
        with self._inflight_cond:
            while self._inflight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._inflight_cond.wait(remaining)
        return True

    def is_ready(self):
        return self.ready and not self.draining


class ThreadingServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, handler, state):
        self.state = state
        HTTPServer.__init__(self, address, handler)

    def server_bind(self):
        # HTTPServer.server_bind resolves the host's FQDN, which can hang for seconds on a
        # device without DNS; the name is only cosmetic.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address):
        log.exception("unhandled error while serving %s", client_address)


def _json(data):
    return json.dumps(data, separators=(",", ":")).encode("utf-8")


_MAX_HEADERS = 100
_MAX_LINE = 65536


class Headers(object):
    """Request headers, looked up case-insensitively (a plain dict: cheaper than email.message)."""

    def __init__(self):
        self._values = {}

    def add(self, name, value):
        key = name.lower()
        if key in self._values and key == "content-length" and self._values[key] != value:
            raise ValueError("conflicting Content-Length headers")
        self._values[key] = value

    def get(self, name, default=None):
        return self._values.get(name.lower(), default)

    def __contains__(self, name):
        return name.lower() in self._values


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kit-serve/" + __version__
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections are closed after this many seconds

    # ---- plumbing ----------------------------------------------------------

    @property
    def state(self):
        return self.server.state

    def log_message(self, fmt, *args):
        if self.server.state.config.access_log:
            log.info("%s %s", self.address_string(), fmt % args)

    def parse_request(self):
        """Request line and headers, parsed directly: http.server's email-based header parser
        costs a large share of a small request's CPU. Sets what BaseHTTPRequestHandler expects."""
        self.command = None
        self.request_version = "HTTP/1.0"
        self.close_connection = True
        line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = line
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            self.send_error(400, "bad request line %r" % line[:100])
            return False
        command, path, version = parts
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            self.send_error(505, "HTTP version %s is not supported (use HTTP/1.1)" % version[:20])
            return False
        self.command, self.path, self.request_version = command, path, version
        headers = Headers()
        last = None
        for _ in range(_MAX_HEADERS + 1):
            raw = self.rfile.readline(_MAX_LINE + 1)
            if len(raw) > _MAX_LINE:
                self.send_error(431, "a header line is longer than %d bytes" % _MAX_LINE)
                return False
            if raw in (b"\r\n", b"\n", b""):
                break
            text = raw.decode("iso-8859-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and last is not None:  # obsolete line folding
                headers.add(last, (headers.get(last) or "") + " " + text.strip())
                continue
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip():
                self.send_error(400, "bad header line %r" % text[:100])
                return False
            try:
                headers.add(name, value.strip())
            except ValueError as e:
                self.send_error(400, str(e))
                return False
            last = name
        else:
            self.send_error(431, "more than %d headers" % _MAX_HEADERS)
            return False
        self.headers = headers
        connection = (headers.get("Connection") or "").lower()
        if version == "HTTP/1.1":
            self.close_connection = "close" in connection
        else:
            self.close_connection = "keep-alive" not in connection
        if version == "HTTP/1.1" and (headers.get("Expect") or "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, unsupported method) as JSON too."""
        self.close_connection = True
        self._send(code, [_json({"error": message or self.responses.get(code, ("error",))[0]})],
                   {"Content-Type": "application/json"}, endpoint="other")

    def _send(self, code, parts, headers, endpoint):
        if self.state.draining:
            self.close_connection = True
        length = sum(len(p) for p in parts)
        reason = self.responses.get(code, ("",))[0]
        lines = ["HTTP/1.1 %d %s" % (code, reason), "Server: " + self.version_string(),
                 "Content-Length: %d" % length]
        for name, value in headers.items():
            lines.append("%s: %s" % (name, value))
        if self.close_connection:
            lines.append("Connection: close")
        elif getattr(self, "request_version", "") == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if length <= _SINGLE_WRITE:
            self.wfile.write(head + b"".join(parts))
        else:
            # Large tensors go out straight from their buffers: no joined copy.
            self.wfile.write(head + parts[0] if len(parts[0]) <= _SINGLE_WRITE else head)
            for part in (parts[1:] if len(parts[0]) <= _SINGLE_WRITE else parts):
                self.wfile.write(part)
        if hasattr(self, "requestline"):
            self.log_request(code, length)
        self.state.metrics.record_request(endpoint, code)

    def _send_json(self, code, data, endpoint, headers=None):
        all_headers = {"Content-Type": "application/json"}
        all_headers.update(headers or {})
        self._send(code, [_json(data)], all_headers, endpoint)

    def _error(self, code, message, endpoint, headers=None):
        self._send_json(code, {"error": message}, endpoint, headers)

    def _unavailable(self, message, endpoint, reason):
        self.state.metrics.rejected.inc(1, reason)
        self._error(503, message, endpoint, {"Retry-After": str(RETRY_AFTER_SECONDS)})

    def _read_body(self, endpoint):
        """The request body as a bytearray, or None after answering an error."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            self._error(411, "chunked transfer encoding is not supported: send a Content-Length", endpoint)
            return None
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            self._error(411, "a Content-Length header is required", endpoint)
            return None
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self.close_connection = True
            self._error(400, "invalid Content-Length %r" % raw, endpoint)
            return None
        limit = self.state.config.max_body
        if length > limit:
            # Drain a moderately oversized body so the client reads our answer; close on huge ones.
            if length <= 4 * limit:
                self._discard(length)
            else:
                self.close_connection = True
            self._error(413, "request body of %d bytes exceeds the limit of %d bytes (KIT_MAX_BODY)"
                        % (length, limit), endpoint)
            return None
        body = bytearray(length)
        view = memoryview(body)
        got = 0
        while got < length:
            n = self.rfile.readinto(view[got:])
            if not n:
                self.close_connection = True
                return None  # the client went away mid-body
            got += n
        return body

    def _discard(self, length):
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)

    # ---- routing -------------------------------------------------------------

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _end_arrival(self):
        """This request is queued or answered: the worker need not wait for it any longer."""
        if self._arriving:
            self._arriving = False
            self.state.arrival(-1)
            if self.state.batcher is not None:
                self.state.batcher.wake()

    def _dispatch(self, method):
        state = self.state
        state.enter()
        # A POST may be an inference request on its way to the queue: a partial batch waits for it.
        self._arriving = method == "POST"
        if self._arriving:
            state.arrival(1)
        try:
            self._route(method, self.path.split("?", 1)[0])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug must cost one request, not the server
            log.exception("internal error on %s %s", method, self.path)
            self.close_connection = True
            try:
                self._error(500, "internal server error: %s: %s" % (type(e).__name__, e), "other")
            except Exception:
                pass
        finally:
            self._end_arrival()
            state.leave()

    def _route(self, method, path):
        if method == "POST" and path != "" and not (path.startswith("/v1/") or path.startswith("/v2/")):
            body = self._read_body("other")
            if body is not None:
                self._error(404, "no such endpoint: POST %s" % path, "other")
            return
        m = _V1.match(path)
        if m:
            return self._v1(method, m.group("name"), m.group("version"), m.group("rest") or "")
        m = _V2_MODEL.match(path)
        if m:
            return self._v2(method, m.group("name"), m.group("version"), m.group("rest") or "")
        if method == "GET":
            if path == "/v2/health/live":
                return self._send_json(200, {"live": True}, "health")
            if path == "/v2/health/ready":
                if self.state.is_ready():
                    return self._send_json(200, {"ready": True}, "health")
                return self._send_json(503, {"ready": False, "error": self._not_ready_reason()}, "health")
            if path == "/metrics":
                return self._send(200, [self.state.metrics.render()], {"Content-Type": METRICS_CONTENT_TYPE},
                                  "metrics")
            if path in ("/v2", "/v2/"):
                return self._send_json(200, {"name": "kit", "version": __version__,
                                             "extensions": ["binary_tensor_data"]}, "v2")
            return self._error(404, "no such endpoint: GET %s" % path, "other")
        body = self._read_body("other")
        if body is not None:
            self._error(404, "no such endpoint: POST %s" % path, "other")

    def _not_ready_reason(self):
        state = self.state
        if state.draining:
            return "the server is shutting down"
        if state.model is None:
            return "the model is loading"
        return "the model is warming up at batch sizes %s" % ",".join(str(b) for b in state.config.batch_sizes)

    def _check_model(self, name, version, endpoint, versions_word="version"):
        """Answer 404 for a model/version this server does not hold; True when it is ours."""
        config = self.state.config
        if name != config.model_name:
            self._error(404, "Servable not found for request: Latest(%s) (this server serves '%s')"
                        % (name, config.model_name), endpoint)
            return False
        if version is not None and version != config.model_version:
            self._error(404, "Servable not found for request: Specific(%s, %s) (serving %s %s)"
                        % (name, version, versions_word, config.model_version), endpoint)
            return False
        return True

    # ---- TensorFlow Serving REST ---------------------------------------------

    def _v1(self, method, name, version, rest):
        endpoint = "v1"
        state = self.state
        if method == "POST":
            body = self._read_body(endpoint)
            if body is None:
                return
            if rest != ":predict":
                verb = rest[1:] if rest.startswith(":") else rest
                if rest in (":classify", ":regress"):
                    return self._error(501, "the %s API is not implemented: use :predict" % verb, endpoint)
                return self._error(404, "no such endpoint: POST %s" % self.path, endpoint)
            if not self._check_model(name, version, endpoint):
                return
            return self._infer(body, "v1", lambda: protocol.parse_tfserving(body, state.model,
                                                                            state.config.max_instances))
        if rest not in ("", "/metadata"):
            return self._error(405, "use POST for %s" % rest, endpoint, {"Allow": "POST"})
        if not self._check_model(name, version, endpoint):
            return
        if rest == "":
            if state.model is None:
                status = {"model_version_status": [{"version": state.config.model_version, "state": "LOADING",
                                                    "status": {"error_code": "OK", "error_message": ""}}]}
                return self._send_json(200, status, endpoint)
            return self._send_json(200, state.model.tfserving_status(), endpoint)
        if state.model is None:
            return self._unavailable("model '%s' is loading" % name, endpoint, "not_ready")
        return self._send_json(200, state.model.tfserving_metadata(), endpoint)

    # ---- KServe v2 ------------------------------------------------------------

    def _v2(self, method, name, version, rest):
        endpoint = "v2"
        state = self.state
        if method == "POST":
            body = self._read_body(endpoint)
            if body is None:
                return
            if rest != "/infer":
                return self._error(405, "use GET for %s" % (rest or "model metadata"), endpoint, {"Allow": "GET"})
            if not self._check_model(name, version, endpoint):
                return
            header_length = self.headers.get("Inference-Header-Content-Length")
            return self._infer(body, "v2", lambda: protocol.parse_v2(body, state.model, state.config.max_instances,
                                                                     header_length))
        if rest == "/infer":
            return self._error(405, "use POST for /infer", endpoint, {"Allow": "POST"})
        if not self._check_model(name, version, endpoint):
            return
        if rest == "/ready":
            if state.is_ready():
                return self._send_json(200, {"name": name, "ready": True}, endpoint)
            return self._send_json(503, {"name": name, "ready": False, "error": self._not_ready_reason()}, endpoint)
        if state.model is None:
            return self._unavailable("model '%s' is loading" % name, endpoint, "not_ready")
        return self._send_json(200, state.model.v2_metadata(), endpoint)

    # ---- inference -------------------------------------------------------------

    def _infer(self, body, endpoint, parse):
        state = self.state
        start = time.monotonic()
        # While draining, a request already received is still served (its connection then closes);
        # new connections are no longer accepted and readiness says 503.
        if not state.ready:
            return self._unavailable("model '%s' is not ready: %s" % (state.config.model_name,
                                                                       self._not_ready_reason()),
                                     endpoint, "not_ready")
        batcher = state.batcher
        if not batcher.has_room():
            return self._unavailable("overloaded: the request queue is full (%d items); retry later"
                                     % batcher.max_queue, endpoint, "queue_full")
        try:
            parsed = parse()
        except protocol.RequestError as e:
            return self._error(e.status, e.message, endpoint, e.headers)
        try:
            pending = batcher.submit(parsed.signature.key, parsed.inputs, parsed.rows, parsed.signature.batchable)
        except QueueFull:
            return self._unavailable("overloaded: the request queue is full (%d items); retry later"
                                     % batcher.max_queue, endpoint, "queue_full")
        except Stopped:
            return self._unavailable("the server is shutting down", endpoint, "draining")
        self._end_arrival()
        try:
            outputs = pending.wait()
        except Exception as e:
            # TensorFlow's InvalidArgumentError means the input was wrong (e.g. a bad tf.Example).
            if type(e).__name__ == "InvalidArgumentError":
                return self._error(400, "the model rejected the input: %s" % _first_line(e), endpoint)
            log.error("inference failed: %s: %s", type(e).__name__, e)
            return self._error(500, "inference failed: %s: %s" % (type(e).__name__, _first_line(e)), endpoint)
        if parsed.fmt == "v2":
            parts, headers = protocol.v2_response(parsed, outputs, state.model)
        else:
            parts, headers = [protocol.tfserving_response(parsed, outputs)], {"Content-Type": "application/json"}
        self._send(200, parts, headers, endpoint)
        state.metrics.request_latency.observe(time.monotonic() - start)


def _first_line(error):
    """The useful line of an error: TF >= 2.4 puts the op's message in the last paragraph, after a call stack;
    TF 2.3 puts it first, then a "Function call stack:" paragraph (dropped)."""
    text = str(getattr(error, "message", None) or error).strip()
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip() and not p.strip().startswith("Function call stack:")]
    return paragraphs[-1].splitlines()[0].strip() if paragraphs else type(error).__name__


# ---- lifecycle ---------------------------------------------------------------------


def _load_and_warm(state, on_failure):
    """Load the model, warm it up at every built batch size, start the worker, turn ready."""
    config = state.config
    try:
        from kit.runtime.model import Model, example_inputs

        started = time.monotonic()
        model = Model.load(config.model_dir, config.model_name, config.model_version, config.signature)
        log.info("loaded %s (version %s, signature %s, TensorFlow %s) in %.1f s", config.model_dir,
                 config.model_version, config.signature, model.tf_version, time.monotonic() - started)
        state.model = model

        def run(signature_key, inputs):
            if config.test_infer_delay and state.ready:
                time.sleep(config.test_infer_delay)  # test-only hook, see serve.py
            return model.run(signature_key, inputs)

        batcher = MicroBatcher(run, state.plan, config.max_batch_delay, config.max_queue,
                               on_batch=state.metrics.record_batch, arriving=lambda: state.arriving)
        signature = model.signature(config.signature)
        if config.warmup:
            started = time.monotonic()
            sizes = config.batch_sizes if signature.batchable else [1]
            for size in sizes:
                t0 = time.monotonic()
                model.run(signature.key, example_inputs(signature, size, config.input_shapes))
                log.info("warm-up: batch size %d ran in %.3f s", size, time.monotonic() - t0)
                if config.test_warmup_delay:
                    time.sleep(config.test_warmup_delay)  # test-only hook, see serve.py
            state.metrics.warmup_seconds.set(round(time.monotonic() - started, 3))
        else:
            log.warning("warm-up disabled: the first requests may be slow (TF-TRT could build engines)")
        if not signature.batchable:
            log.warning("signature %s has no free batch dimension: requests run one at a time, unpadded",
                        signature.key)
        batcher.start()
        state.batcher = batcher
        state.ready = True
        log.info("ready: model '%s' at batch sizes %s (max batch delay %.4f s, queue %d items)",
                 config.model_name, ",".join(str(b) for b in config.batch_sizes), config.max_batch_delay,
                 config.max_queue)
    except Exception as e:
        state.failed = "%s: %s" % (type(e).__name__, e)
        log.error("the model could not be served: %s", state.failed)
        on_failure()


def run(config):
    """Serve until SIGTERM/SIGINT; return the process exit code."""
    state = ServerState(config)
    tap = None
    if config.log_scan:
        classify = line_classifier()

        def on_line(line):
            kind = classify(line)
            if kind == ENGINE_BUILD:
                state.metrics.engine_builds.inc()
            elif kind == NATIVE_FALLBACK:
                state.metrics.native_fallbacks.inc()

        try:
            tap = StderrTap(on_line).start()
        except OSError as e:
            log.warning("cannot watch stderr for TF-TRT events: %s", e)
    try:
        server = ThreadingServer((config.host, config.port), Handler, state)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, e)
        if tap:
            tap.stop()
        return 1
    log.info("listening on %s:%d (model '%s' loading)", config.host, server.server_address[1], config.model_name)
    grpc_server = None
    if config.grpc_port:
        from kit.runtime.serving import grpc_server as grpc_front

        try:
            grpc_server, bound = grpc_front.start(state, config.host, config.grpc_port)
        except OSError as e:
            log.error("%s", e)
            server.server_close()
            if tap:
                tap.stop()
            return 1
        log.info("gRPC listening on %s:%d", config.host, bound)

    def begin_shutdown(*_):
        if not state.draining:
            state.draining = True
            threading.Thread(target=server.shutdown, name="kit-shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, begin_shutdown)
    signal.signal(signal.SIGINT, begin_shutdown)
    loader = threading.Thread(target=_load_and_warm, args=(state, begin_shutdown), name="kit-loader", daemon=True)
    loader.start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log.info("shutting down: finishing requests in flight")
    if grpc_server is not None:
        # New RPCs are refused at once; those in flight get up to the drain timeout.
        grpc_server.stop(config.drain_timeout).wait(config.drain_timeout + 1)
    drained = state.wait_idle(config.drain_timeout)
    if state.batcher is not None:
        drained = state.batcher.stop(timeout=max(1.0, config.drain_timeout)) and drained
    if not drained:
        log.warning("requests were still in flight after %.0f s; exiting anyway", config.drain_timeout)
    log.info("stopped")
    if tap:
        tap.stop()
    return 1 if state.failed else 0

