"""HTTP front of the model server: tornado's HTTP/1.1 server, kit's limits, lifecycle.

One event loop holds every connection (an idle or slow connection costs
memory, not a thread). tornado does the HTTP/1.1 parsing and keep-alive;
kit adds what a 4 GB device needs on top:

- a connection cap (beyond it: 503 and close), header bytes and header count,
  a header deadline that is also the keep-alive idle timeout, a body deadline;
- body limits checked from Content-Length before a byte is read and again as
  bytes arrive (JSON and binary separately), a budget for the bytes all
  bodies hold together (memory grows as bytes arrive, never from a header);
- strict framing: Content-Length digits only, no Transfer-Encoding (411 for
  `chunked`: tornado 6.1, the Jetson's, reads chunk sizes with int(x, 16),
  which takes "0x10", "1_0" and "+a"); a GET's body is read and dropped;
- every error kit or tornado sends is kit's JSON body with the reason
  (KitIOStream: tornado's own bare 400 for a malformed head, and a 431 where
  tornado would close silently at the header limit);
- an accept loop that backs off on EMFILE instead of spinning.

The loop never runs the model: large bodies are parsed in a small thread
pool, inference runs on the micro-batcher's worker (batching.py), whose
completion is bridged back to the loop. Routes are in routes.py, formats in
protocol.py. Configuration: main.py.
"""

import errno
import logging
import re
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from tornado import httputil, web
from tornado.concurrent import Future
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError
from tornado.netutil import bind_sockets

from kit import __version__
from kit.runtime.logtap import ENGINE_BUILD, NATIVE_FALLBACK, StderrTap, line_classifier
from kit.runtime.serving import protocol, reuseport, routes
from kit.runtime.serving.batching import BatchPlan, MicroBatcher, QueueFull, Stopped
from kit.runtime.serving.metrics import ServerMetrics

log = logging.getLogger("kit.serve")

SERVER_HEADER = "kit-serve/" + __version__  # no Python or library version: nothing to fingerprint
INLINE_PARSE_BYTES = 64 * 1024  # bodies up to this size are parsed on the loop; larger ones in the pool
_DIGITS = re.compile(r"^[0-9]+$")
_ACCEPT_PAUSE = 0.1  # seconds the accept loop rests when the process is out of file descriptors
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_DETACHED_WRITE_SECONDS = 5.0  # a detached connection's answer must be out by then, or it is closed anyway
# What tornado's HTTP1Connection writes, and then closes, when it cannot frame a request (an HTTPInputError):
# KitIOStream puts kit's JSON answer in its place. tests/integration/test_server_hardening.py fails if it changes.
TORNADO_BARE_400 = b"HTTP/1.1 400 Bad Request\r\n\r\n"


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
        # Requests fully received and being parsed, not yet queued: a partial batch waits only for these
        # (never for a body still arriving, which may take as long as its client likes).
        self.arriving = 0
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


class BodyBudget(object):
    """Bytes held by request bodies of all connections together (taken as they arrive, on the loop)."""

    def __init__(self, limit):
        self.limit = limit
        self.used = 0

    def take(self, n):
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n):
        self.used -= n


def printable(text, limit=300):
    """`text` safe for a log line: control and non-ASCII characters as escapes, cut to `limit`."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return "".join(c if " " <= c <= "~" else ("\\x%02x" % ord(c) if ord(c) < 256 else "\\u%04x" % ord(c))
                   for c in text)


def response_bytes(status, headers, body):
    """A whole HTTP/1.1 response that closes the connection, for answers written past tornado's handler."""
    lines = ["HTTP/1.1 %d %s" % (status, httputil.responses.get(status, "Error")), "Server: " + SERVER_HEADER,
             "Date: " + httputil.format_timestamp(time.time())]
    lines += ["%s: %s" % kv for kv in headers.items()]
    lines += ["Content-Length: %d" % len(body), "Connection: close"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def error_bytes(status, message, headers=None):
    all_headers = {"Content-Type": "application/json"}
    all_headers.update(headers or {})
    return response_bytes(status, all_headers, routes.encode_json({"error": message}))


class KitIOStream(IOStream):
    """tornado's IOStream for a server connection, where tornado answers without kit's handler.

    - tornado's HTTP1Connection answers a request head it cannot parse (request line, header syntax, a
      missing Host in tornado >= 6.5) with a bare TORNADO_BARE_400 and closes: it writes those bytes while
      handling the HTTPInputError, so the reason is the exception being handled; kit's JSON 400 goes instead.
    - At max_header_size tornado's header read is unsatisfiable and it closes without a word: kit first
      sends a 431 (best effort, on the raw socket: the stream is closing). Kit refuses chunked bodies before
      tornado reads them, so the header read is the only bounded read a server connection makes.
    """

    header_limit = 0  # set by KitHTTPServer, for the 431's text

    def write(self, data):
        if data == TORNADO_BARE_400:
            error = sys.exc_info()[1]
            reason = str(error) if isinstance(error, httputil.HTTPInputError) else "the request cannot be framed"
            data = error_bytes(400, "malformed HTTP/1.1 request: %s" % printable(reason, 200))
        return IOStream.write(self, data)

    def close(self, exc_info=False):
        if isinstance(exc_info, UnsatisfiableReadError) and not self.closed():
            try:
                self.socket.send(error_bytes(431, "the request line and headers exceed %d bytes (KIT_MAX_HEADER_BYTES)"
                                             % self.header_limit))
            except OSError:
                pass
        IOStream.close(self, exc_info)


def framing_problem(request, max_headers):
    """(status, message) when the request's framing is refused (RFC 9112), else None."""
    headers = request.headers
    count = sum(1 for _ in headers.get_all())
    if count > max_headers:
        return 431, "more than %d headers" % max_headers
    if request.version == "HTTP/1.1" and len(headers.get_list("Host")) != 1:
        return 400, "an HTTP/1.1 request needs exactly one Host header (RFC 9112 section 3.2)"
    codings = headers.get_list("Transfer-Encoding")
    lengths = [v.strip() for joined in headers.get_list("Content-Length") for v in joined.split(",")]
    if codings:
        if lengths:
            return 400, "both Transfer-Encoding and Content-Length: send one of them (RFC 9112 section 6.3)"
        if len(codings) == 1 and codings[0].strip().lower() == "chunked":
            return 411, "chunked request bodies are not accepted: send the body with a Content-Length"
        return 501, ("Transfer-Encoding %r is not supported: send the body with a Content-Length"
                     % printable(", ".join(codings), 100))
    if lengths:
        bad = [v for v in lengths if not _DIGITS.match(v)]
        if bad:
            return 400, "invalid Content-Length %r: digits only" % printable(bad[0], 40)
        if len(set(int(v) for v in lengths)) > 1:
            return 400, "conflicting Content-Length headers"
    return None


@web.stream_request_body
class KitHandler(web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "POST")

    def initialize(self, kit):
        self.kit = kit
        self.route = None
        self._body = None       # bytearray for an inference body; None when the body is dropped
        self._held = 0          # bytes taken from the body budget
        self._limit = 0
        self._limit_name = ""
        self._refusal = None    # a Response decided before the body was read (sent once it was drained)
        self._entered = False
        self._arriving = False
        self._done = False

    # ---- plumbing ------------------------------------------------------------

    def set_default_headers(self):
        self.set_header("Server", SERVER_HEADER)
        if self.application.settings.get("kit_slot"):  # runs before initialize(): no self.kit yet
            self.set_header("Kit-Slot", self.application.settings["kit_slot"])
        if self.request.version == "HTTP/1.0" and self.request.headers.get("Connection", "").lower() != "keep-alive":
            self.set_header("Connection", "close")

    def compute_etag(self):
        return None  # responses are computed per request: hashing them buys nothing

    def _finish_and_close(self):
        """finish(), then close the connection once the response is out (draining, a bug in a handler).

        Only needed when the whole request was read: a response finished while the body is still arriving
        makes tornado close the connection itself (it cannot frame the next request)."""
        self.set_header("Connection", "close")
        connection = self.request.connection
        self.finish().add_done_callback(lambda _: connection.close())

    def _send(self, response, close=False):
        if self._finished:
            return
        state = self.kit.state
        if close:
            self.set_header("Connection", "close")
        self.set_status(response.status)
        for name, value in response.headers.items():
            self.set_header(name, value)
        if response.rejected:
            state.metrics.rejected.inc(1, response.rejected)
        parts = response.parts
        self.write(parts[0] if len(parts) == 1 and isinstance(parts[0], bytes) else b"".join(parts))
        state.metrics.record_request(response.endpoint, response.status)
        if response.status >= 400 and self.route is not None and self.route.is_inference(self.request.method):
            state.metrics.model_stats.fail()
        if state.draining:
            self._finish_and_close()
        else:
            self.finish()

    def _refuse_head(self, status, message, endpoint="other", headers=None):
        """Answer a request refused from its head, and close: the handler detaches the connection, so tornado
        reads nothing more of it (no body framed from headers kit refused, no second answer)."""
        response = routes.error(status, message, endpoint, headers)
        self.set_status(status)
        if response.rejected:
            self.kit.state.metrics.rejected.inc(1, response.rejected)
        self.kit.state.metrics.record_request(endpoint, status)
        self.application.log_request(self)
        self._release()
        stream = self.detach()
        try:
            sent = stream.write(response_bytes(status, response.headers, b"".join(response.parts)))
        except StreamClosedError:
            return  # the client is gone already
        closing = IOLoop.current().call_later(_DETACHED_WRITE_SECONDS, stream.close)

        def written(future):
            future.exception()  # a client gone meanwhile: nothing to report
            IOLoop.current().remove_timeout(closing)
            stream.close()

        sent.add_done_callback(written)

    def _refuse_body(self, status, message, endpoint, headers=None):
        """Answer while the body is still arriving (tornado closes the connection after it) and drop the body."""
        self._drop_body()
        self._send(routes.error(status, message, endpoint, headers), close=True)

    def _drop_body(self):
        self._body = None
        if self._held:
            self.kit.budget.give(self._held)
            self._held = 0

    def _end_arrival(self):
        if self._arriving:
            self._arriving = False
            self.kit.state.arrival(-1)
            batcher = self.kit.state.batcher
            if batcher is not None:
                batcher.wake()

    def _release(self):
        if self._done:
            return
        self._done = True
        self._drop_body()
        self._end_arrival()
        if self._entered:
            self.kit.state.leave()

    def on_finish(self):
        self._release()

    def on_connection_close(self):
        self._release()

    def write_error(self, status_code, **kwargs):
        """tornado's own errors (unsupported method, a bug in a handler) as JSON too."""
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, web.HTTPError) or error is None:
            message = self._reason
            if status_code == 405:
                self.set_header("Allow", "GET, POST")
                message = "method %s is not allowed: use GET or POST" % printable(self.request.method, 20)
        else:
            message = "internal server error: %s: %s" % (type(error).__name__, error)
        self.set_header("Content-Type", "application/json")
        self.kit.state.metrics.record_request("other", status_code)
        self.write(routes.encode_json({"error": message}))
        self._finish_and_close()

    def log_exception(self, typ, value, tb):
        if isinstance(value, web.HTTPError):
            return
        log.error("internal error on %s %s", printable(self.request.method, 20), printable(self.request.uri),
                  exc_info=(typ, value, tb))

    # ---- headers: framing, limits ----------------------------------------------

    def prepare(self):
        kit, request = self.kit, self.request
        config = kit.state.config
        kit.state.enter()
        self._entered = True
        problem = framing_problem(request, config.max_headers)
        if problem:
            return self._refuse_head(*problem)
        self.route = routes.resolve(request.path)
        method = request.method
        inference = self.route.is_inference(method)
        raw_length = request.headers.get("Content-Length")
        length = int(raw_length.split(",")[0]) if raw_length is not None else None
        if method == "POST" and length is None:
            return self._refuse_head(411, "a Content-Length header is required", self.route.endpoint)
        binary = inference and self.route.kind == "v2" and "Inference-Header-Content-Length" in request.headers
        self._limit, self._limit_name = ((config.max_body, "KIT_MAX_BODY") if binary
                                         else (config.max_json_body, "KIT_MAX_JSON_BODY"))
        if length is not None and length > self._limit:
            message = "request body of %d bytes exceeds the limit of %d bytes (%s)" % (length, self._limit,
                                                                                       self._limit_name)
            if length > self._limit + config.drain_limit:
                return self._refuse_head(413, message, self.route.endpoint)
            # Slightly oversized: read and drop it so the client reads the answer on a usable connection.
            self._refusal = routes.error(413, message, self.route.endpoint)
            request.connection.set_max_body_size(length)
            return None
        request.connection.set_max_body_size(max(length or 0, 1))
        if inference and self._refusal is None:
            self._body = bytearray()
        return None

    def data_received(self, chunk):
        if self._finished:
            return
        n = len(chunk)
        if self._body is None:
            return None  # dropped: a GET's body, a refused or non-inference request
        if not self.kit.budget.take(n):
            self.kit.state.metrics.rejected.inc(1, "body_budget")
            return self._refuse_body(503, "overloaded: request bodies in flight hold %d bytes (KIT_MAX_BUFFERED); "
                                     "retry later" % self.kit.budget.limit, self.route.endpoint,
                                     {"Retry-After": str(routes.RETRY_AFTER_SECONDS)})
        self._held += n
        self._body += chunk
        return None

    # ---- the answer -------------------------------------------------------------

    async def get(self):
        await self._respond()

    async def post(self):
        await self._respond()

    async def _respond(self):
        if self._finished:
            return
        if self._refusal is not None:
            return self._send(self._refusal)
        state, route, method = self.kit.state, self.route, self.request.method
        if not route.is_inference(method):
            return self._send(routes.answer(state, method, route))
        started = time.monotonic()
        body = self._body
        headers = self.request.headers
        plan = routes.inference(state, route, body, headers.get("Inference-Header-Content-Length"),
                                headers.get("Content-Encoding"))
        if isinstance(plan, routes.Response):
            return self._send(plan)
        self._arriving = True
        state.arrival(1)
        try:
            try:
                # Compressed bodies always go to the pool: a few KiB may inflate to the body limit.
                if len(body) > INLINE_PARSE_BYTES or "Content-Encoding" in headers:
                    parsed = await IOLoop.current().run_in_executor(self.kit.pool, plan.parse)
                else:
                    parsed = plan.parse()
            except protocol.RequestError as e:
                return self._send(routes.error(e.status, e.message, plan.endpoint, e.headers))
            try:
                pending = state.batcher.submit(parsed.signature.key, parsed.inputs, parsed.rows,
                                               getattr(parsed, "batchable", parsed.signature.batchable))
            except QueueFull:
                return self._send(routes.queue_full(state, plan.endpoint))
            except Stopped:
                return self._send(routes.unavailable("the server is shutting down", plan.endpoint, "draining"))
        finally:
            self._end_arrival()
        await _completion(pending)
        try:
            outputs = pending.wait(0)
        except Exception as e:
            if type(e).__name__ != "InvalidArgumentError":
                log.error("inference failed: %s: %s", type(e).__name__, e)
            return self._send(routes.inference_failure(e, plan.endpoint))
        self._send(routes.inference_response(parsed, outputs, state.model))
        state.metrics.request_latency.observe(time.monotonic() - started)


def _completion(pending):
    """A loop Future resolved when the batcher's worker completes `pending`."""
    loop = IOLoop.current()
    future = Future()

    def resolve():
        if not future.done():
            future.set_result(None)

    pending.add_done_callback(lambda: loop.add_callback(resolve))
    return future


class KitHTTPServer(HTTPServer):
    """tornado's HTTPServer with a connection cap and an accept loop that survives EMFILE."""

    def configure_kit(self, max_connections, rejected):
        self.max_connections = max_connections
        self.open_connections = 0
        self._rejected = rejected
        self._listening = {}
        self._last_fd_warning = 0.0

    def handle_stream(self, stream, address):
        if self.open_connections >= self.max_connections:
            self._rejected.inc(1, "connections")
            answer = error_bytes(503, "overloaded: %d connections are open (KIT_MAX_CONNECTIONS); retry later"
                                 % self.max_connections, {"Retry-After": str(routes.RETRY_AFTER_SECONDS)})
            stream.write(answer).add_done_callback(lambda _: stream.close())
            return
        self.open_connections += 1
        HTTPServer.handle_stream(self, stream, address)

    def on_close(self, server_conn):
        self.open_connections -= 1
        HTTPServer.on_close(self, server_conn)

    # ---- accepting --------------------------------------------------------------

    def listen_on(self, sockets):
        for sock in sockets:
            self._listening[sock.fileno()] = sock
            self._resume(sock)

    def _resume(self, sock):
        if sock.fileno() in self._listening:
            IOLoop.current().add_handler(sock, self._on_acceptable, IOLoop.READ)

    def _on_acceptable(self, sock, events):
        for _ in range(128):  # a burst of connections must not starve requests on open ones
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                if e.errno not in _OUT_OF_FDS:
                    raise
                # Out of file descriptors: the pending connection stays in the backlog; rest instead of spinning.
                now = time.monotonic()
                if now - self._last_fd_warning > 10:
                    self._last_fd_warning = now
                    log.warning("cannot accept connections: %s; pausing accept for %.1f s", e, _ACCEPT_PAUSE)
                IOLoop.current().remove_handler(sock)
                IOLoop.current().call_later(_ACCEPT_PAUSE, self._resume, sock)
                return
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = KitIOStream(connection, max_buffer_size=self.max_buffer_size,
                                 read_chunk_size=self.read_chunk_size)
            stream.header_limit = self.conn_params.max_header_size
            self.handle_stream(stream, address)

    def stop_listening(self):
        for fd, sock in list(self._listening.items()):
            try:
                IOLoop.current().remove_handler(sock)
            except (KeyError, ValueError):
                pass
            # Closing a listener resets the connections still in its backlog: take them first
            # (a server beside this one on a SO_REUSEPORT port gets every later connection).
            self._on_acceptable(sock, None)
            sock.close()
        self._listening.clear()


class Kit(object):
    """What every handler needs: the shared state, the body budget, the parse pool."""

    def __init__(self, state):
        self.state = state
        self.budget = BodyBudget(state.config.max_buffered)
        self.pool = ThreadPoolExecutor(max_workers=state.config.decode_threads)


def _access_log(config):
    def log_request(handler):
        if config.access_log:
            request = handler.request
            log.info('%s "%s %s %s" %d %.1fms', request.remote_ip, printable(request.method, 20),
                     printable(request.uri), printable(request.version, 20), handler.get_status(),
                     1000.0 * request.request_time())
    return log_request


def make_server(kit):
    config = kit.state.config
    app = web.Application([(r".*", KitHandler, {"kit": kit})], log_function=_access_log(config),
                          compress_response=False, kit_slot=config.slot)
    server = KitHTTPServer(app, max_header_size=config.max_header_bytes, max_body_size=config.max_body,
                           idle_connection_timeout=config.idle_timeout, body_timeout=config.body_timeout,
                           chunk_size=64 * 1024, max_buffer_size=config.max_header_bytes + 256 * 1024)
    server.configure_kit(config.max_connections, kit.state.metrics.rejected)
    return server


# ---- lifecycle ---------------------------------------------------------------------


def _load_and_warm(state, on_failure):
    """Load the model, warm it up at every built batch size, start the worker, turn ready."""
    config = state.config
    try:
        from kit.runtime.model import Model

        started = time.monotonic()
        model = Model.load(config.model_dir, config.model_name, config.model_version, config.signature)
        log.info("loaded %s (version %s, signature %s, TensorFlow %s) in %.1f s", config.model_dir,
                 config.model_version, config.signature, model.tf_version, time.monotonic() - started)
        state.model = model

        def run(signature_key, inputs):
            if config.test_infer_delay and state.ready:
                time.sleep(config.test_infer_delay)  # test-only hook, see main.py
            return model.run(signature_key, inputs)

        batcher = MicroBatcher(run, state.plan, config.max_batch_delay, config.max_queue,
                               on_batch=state.metrics.record_batch, arriving=lambda: state.arriving)
        signature = model.signature(config.signature)
        from kit.runtime.serving import warmup

        runs, source, how = warmup.plan(state, signature)
        log.info("%s", how)
        started = time.monotonic()
        for key, inputs in runs:
            t0 = time.monotonic()
            model.run(key, inputs)
            first = next(iter(inputs.values()))
            size = first.shape[0] if first.ndim else 1
            state.metrics.warmup_runs.inc(1, source, size)
            log.info("warm-up: batch size %d (signature %s) ran in %.3f s", size, key, time.monotonic() - t0)
            if config.test_warmup_delay:
                time.sleep(config.test_warmup_delay)  # test-only hook, see main.py
        if runs:
            state.metrics.warmup_seconds.set(round(time.monotonic() - started, 3))
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


def _start_log_scan(state):
    classify = line_classifier()

    def on_line(line):
        kind = classify(line)
        if kind == ENGINE_BUILD:
            state.metrics.engine_builds.inc()
        elif kind == NATIVE_FALLBACK:
            state.metrics.native_fallbacks.inc()

    try:
        return StderrTap(on_line).start()
    except OSError as e:
        log.warning("cannot watch stderr for TF-TRT events: %s", e)
        return None


def _raise_fd_limit(connections):
    """Let the soft open-file limit hold the connection cap (the hard limit stays as it is)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = connections + 256  # listening sockets, model files, gRPC, logs
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard),
                                                        hard))
    except (ImportError, ValueError, OSError) as e:
        log.warning("cannot raise the open-file limit: %s", e)


def _bound_only(config):
    """A SO_REUSEPORT socket bound to the port (so a clash shows at start) but not listening:
    the kernel gives a port's connections only to listening sockets."""
    family = socket.AF_INET6 if ":" in (config.host or "") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setblocking(False)
    try:
        sock.bind((config.host or "0.0.0.0", config.port))
    except OSError:
        sock.close()
        raise
    return sock


def run(config):
    """Serve until SIGTERM/SIGINT; return the process exit code."""
    _raise_fd_limit(config.max_connections)
    state = ServerState(config)
    tap = _start_log_scan(state) if config.log_scan else None
    try:
        sockets = [_bound_only(config)] if config.reuse_port else \
            bind_sockets(config.port, address=config.host, backlog=config.backlog)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", config.host, config.port, e)
        if tap:
            tap.stop()
        return 1
    grpc_server = None
    if config.grpc_port and not config.reuse_port:
        from kit.runtime.serving import grpc_server as grpc_front

        try:
            grpc_server, bound = grpc_front.start(state, config.host, config.grpc_port)
        except OSError as e:
            log.error("%s", e)
            for sock in sockets:
                sock.close()
            if tap:
                tap.stop()
            return 1
        log.info("gRPC listening on %s:%d", config.host, bound)
    loop = IOLoop.current()
    kit = Kit(state)
    server = make_server(kit)
    if not config.reuse_port:
        server.listen_on(sockets)
    log.info("%s on %s:%d (model '%s' loading; at most %d connections)",
             "bound (listening once ready: KIT_REUSE_PORT)" if config.reuse_port else "listening", config.host,
             sockets[0].getsockname()[1], config.model_name, config.max_connections)
    outcome = {"drained": True}

    def listen_when_ready():
        """KIT_REUSE_PORT: an old server may share the port; take connections only once ready."""
        nonlocal grpc_server
        if state.draining:
            return
        if config.grpc_port:
            from kit.runtime.serving import grpc_server as grpc_front

            try:
                grpc_server, bound = grpc_front.start(state, config.host, config.grpc_port)
            except OSError as e:
                log.error("%s", e)
                state.failed = str(e)
                return begin_shutdown()
            # grpcio listens on its own socket: steered through /proc (reuseport.steer_port), so a
            # client's new channel (a reconnect after the old server's GOAWAY too) comes here.
            grpc_steered = config.reuse_port_steer and reuseport.steer_port(bound)
            log.info("gRPC listening on %s:%d%s", config.host, bound,
                     " (new connections on the shared port come here)" if grpc_steered else "")
        for sock in sockets:
            sock.listen(config.backlog)
        server.listen_on(sockets)
        # From now on every new connection comes here, none to an old server beside this one
        # (its backlog empties before it closes: see reuseport.py).
        steered = config.reuse_port_steer and all([reuseport.steer_to(sock) for sock in sockets])
        log.info("listening on %s:%d%s", config.host, sockets[0].getsockname()[1],
                 " (new connections on the shared port come here)" if steered else "")

    def load():
        _load_and_warm(state, lambda: loop.add_callback(begin_shutdown))
        if config.reuse_port and state.ready:
            loop.add_callback(listen_when_ready)

    def drain():
        if grpc_server is not None:
            # New RPCs are refused at once; those in flight get up to the drain timeout.
            grpc_server.stop(config.drain_timeout).wait(config.drain_timeout + 1)
        outcome["drained"] = state.wait_idle(config.drain_timeout)
        if state.batcher is not None:
            outcome["drained"] = state.batcher.stop(timeout=max(1.0, config.drain_timeout)) and outcome["drained"]
        loop.add_callback(loop.stop)

    def begin_shutdown():
        if state.draining:
            return
        state.draining = True
        server.stop_listening()
        log.info("shutting down: finishing requests in flight")
        threading.Thread(target=drain, name="kit-drain", daemon=True).start()

    # asyncio's own signal handling wakes the loop (a plain signal.signal handler would not).
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.asyncio_loop.add_signal_handler(signum, begin_shutdown)
    loader = threading.Thread(target=load, name="kit-loader", daemon=True)
    loader.start()
    loop.start()
    kit.pool.shutdown(wait=False)
    if not outcome["drained"]:
        log.warning("requests were still in flight after %.0f s; exiting anyway", config.drain_timeout)
    log.info("stopped")
    if tap:
        tap.stop()
    return 1 if state.failed else 0
