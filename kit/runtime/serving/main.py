"""The kit model server: TensorFlow Serving's REST API and KServe v2 for one SavedModel.

    python3 -m kit.runtime.serving.main --model-dir /model [options]   # serve (foreground)
    python3 -m kit.runtime.serving.main --probe                       # health probe for HEALTHCHECK

Runs inside the runtime images (Python 3.6, TensorFlow >= 2.3, numpy,
stdlib) and on a development host (`kit serve MANIFEST --local`).

Configuration: every option is a flag and an environment variable; a flag
wins over the variable, the variable over the default.

  flag                 env                   default
  --model-dir          KIT_MODEL_DIR         (required) SavedModel directory
  --model-name         KIT_MODEL_NAME        model      name in the URLs (/v1/models/NAME)
  --model-version      KIT_MODEL_VERSION     the model dir's name if it is a number, else 1
  --signature          KIT_SIGNATURE         serving_default (default for requests without one)
  --host               KIT_HOST              0.0.0.0
  --port               KIT_PORT              8501
  --grpc-port          KIT_GRPC_PORT         8500       gRPC (TF Serving's PredictionService and
                                                        ModelService, KServe v2's
                                                        GRPCInferenceService); 0 turns it off
  --batch-sizes        KIT_BATCH_SIZES       1          built batch sizes, e.g. 1,8: warm-up runs
                                                        each; partial batches are padded to the
                                                        nearest one, larger requests are split
  --max-batch-delay    KIT_MAX_BATCH_DELAY   2ms        how long a batch waits for more requests
  --max-queue          KIT_MAX_QUEUE         64         queue bound in ITEMS: one per request, or
                                                        one per chunk of a split request; beyond
                                                        it requests get 503 + Retry-After
  --max-body           KIT_MAX_BODY          64MiB      binary (KServe v2 binary tensor) body limit
                                                        (413 beyond)
  --max-json-body      KIT_MAX_JSON_BODY     16MiB      JSON body limit, checked before parsing (413
                                                        beyond; never above --max-body)
  --max-buffered       KIT_MAX_BUFFERED      256MiB     bytes all request bodies may hold together
                                                        (503 + Retry-After beyond)
  --max-connections    KIT_MAX_CONNECTIONS   2048       open connections (beyond: 503 and close)
  --max-header-bytes   KIT_MAX_HEADER_BYTES  64KiB      request line + headers, in total (closed
                                                        beyond)
  --max-headers        KIT_MAX_HEADERS       100        header lines per request (431 beyond)
  --idle-timeout       KIT_IDLE_TIMEOUT      20s        deadline for a request's headers, which is
                                                        also the keep-alive idle timeout (closed)
  --body-timeout       KIT_BODY_TIMEOUT      60s        deadline for a request's body (closed)
  --decode-threads     KIT_DECODE_THREADS    2          threads that parse bodies above 64 KiB
  --max-instances      KIT_MAX_INSTANCES     max-queue x largest batch size: examples per
                                                        request (400 beyond)
  --input-shapes       KIT_INPUT_SHAPES      ""         per-example shapes for unknown dims, used
                                                        by the warm-up: "images=224,224,3;mask=10"
  --warmup-samples     KIT_WARMUP_SAMPLES    ""         .npy (one input) or .npz (name -> array) of
                                                        examples run at every built batch size before
                                                        ready (instead of the warm-up file or zeros)
  --no-warmup          KIT_WARMUP=0                     ready at once (no warm-up; not for TF-TRT)
  --drain-timeout      KIT_DRAIN_TIMEOUT     30s        how long SIGTERM waits for requests in flight
  --no-log-scan        KIT_LOG_SCAN=0                   do not tee stderr to count TF-TRT events
  --access-log         KIT_ACCESS_LOG=1                 log every request to stderr (escaped)
                       KIT_PARENT_PID                   stop (SIGTERM) when this parent process dies
                       KIT_REUSE_PORT=1                 bind with SO_REUSEPORT (HTTP and gRPC): a new
                                                        server starts beside the old on one port
                                                        (kit rollout's start-first updates)
                       KIT_SLOT                         sent as the Kit-Slot header on every reply
                                                        and as gRPC's kit-slot metadata (which of
                                                        two servers on a port answered)
  --probe                                               GET /v2/health/ready on KIT_HOST:KIT_PORT;
                                                        exit 0 on 200, else 1 (HEALTHCHECK); with
                                                        KIT_SLOT only that slot's reply counts
                                                        (kit.runtime.serving.healthcheck)

Test-only hooks (environment only, never set them in production):
  KIT_TEST_WARMUP_DELAY  seconds to sleep inside the warm-up (makes "not ready yet" observable)
  KIT_TEST_INFER_DELAY   seconds to sleep before every model call after warm-up (makes overload
                         and draining observable with a fast model)

Endpoints (see the README for formats and errors):
  POST /v1/models/NAME[/versions/V]:predict       TF Serving predict, row or columnar JSON
  POST /v1/models/NAME[/versions/V]:classify      TF Serving classify ("examples", "context")
  POST /v1/models/NAME[/versions/V]:regress       TF Serving regress ("examples", "context")
  GET  /v1/models/NAME[/versions/V]               TF Serving model status (LOADING until warm)
  GET  /v1/models/NAME[/versions/V]/metadata      TF Serving signature_def metadata
  POST /v2/models/NAME[/versions/V]/infer         KServe v2 JSON and binary tensor extension
  GET  /v2/models/NAME[/versions/V]               KServe v2 model metadata
  GET  /v2/models/NAME[/versions/V]/ready         200 when ready
  GET  /v2/health/live   200 while the process runs
  GET  /v2/health/ready  200 once the model is loaded and warmed up at every built batch size
  GET  /v2               server metadata
  GET  /metrics          Prometheus text

Lifecycle: the port is bound first (liveness answers while the model loads),
then the model is loaded and warmed up at every built batch size, then
readiness turns 200. SIGTERM or SIGINT: stop accepting, finish the requests
in flight, exit 0. A model that fails to load exits 1.
"""

import argparse
import logging
import os
import re
import sys

log = logging.getLogger("kit.serve")


class ConfigError(Exception):
    """A bad option value; reported in one line, exit 2."""


def _env(name, default=None):
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def _env_flag(name, default):
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() not in ("0", "false", "no", "off")


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)?\s*$")
_SIZE_UNITS = {None: 1, "B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "KB": 1000, "MB": 1000 ** 2,
               "GB": 1000 ** 3}
_DURATION_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


def parse_duration(text, what):
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError("%s: %r is not a duration (use seconds or e.g. 2ms, 30s)" % (what, text))
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(text, what):
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError("%s: %r is not a size (use bytes or e.g. 64MiB)" % (what, text))
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_batch_sizes(text):
    try:
        sizes = sorted(set(int(s) for s in str(text).replace(" ", "").split(",") if s))
    except ValueError:
        raise ConfigError("batch sizes: %r must be a comma-separated list of integers, e.g. 1,8" % text)
    if not sizes or sizes[0] < 1:
        raise ConfigError("batch sizes: %r must hold positive integers, e.g. 1,8" % text)
    return sizes


def default_version(model_dir):
    """TF Serving keeps versions in numbered directories: use the number when there is one."""
    base = os.path.basename(os.path.normpath(model_dir or ""))
    return str(int(base)) if base.isdigit() else "1"


def build_parser():
    p = argparse.ArgumentParser(prog="python3 -m kit.runtime.serving.main",
                                description="Serve one SavedModel over TF Serving REST and KServe v2.")
    p.add_argument("--model-dir", default=_env("KIT_MODEL_DIR"))
    p.add_argument("--model-name", default=_env("KIT_MODEL_NAME", "model"))
    p.add_argument("--model-version", default=_env("KIT_MODEL_VERSION"))
    p.add_argument("--signature", default=_env("KIT_SIGNATURE", "serving_default"))
    p.add_argument("--host", default=_env("KIT_HOST", "0.0.0.0"))
    p.add_argument("--port", default=_env("KIT_PORT", "8501"))
    p.add_argument("--grpc-port", default=_env("KIT_GRPC_PORT", "8500"))
    p.add_argument("--batch-sizes", default=_env("KIT_BATCH_SIZES", "1"))
    p.add_argument("--max-batch-delay", default=_env("KIT_MAX_BATCH_DELAY", "2ms"))
    p.add_argument("--max-queue", default=_env("KIT_MAX_QUEUE", "64"))
    p.add_argument("--max-body", default=_env("KIT_MAX_BODY", "64MiB"))
    p.add_argument("--max-json-body", default=_env("KIT_MAX_JSON_BODY", "16MiB"))
    p.add_argument("--max-buffered", default=_env("KIT_MAX_BUFFERED", "256MiB"))
    p.add_argument("--max-connections", default=_env("KIT_MAX_CONNECTIONS", "2048"))
    p.add_argument("--max-header-bytes", default=_env("KIT_MAX_HEADER_BYTES", "64KiB"))
    p.add_argument("--max-headers", default=_env("KIT_MAX_HEADERS", "100"))
    p.add_argument("--idle-timeout", default=_env("KIT_IDLE_TIMEOUT", "20s"))
    p.add_argument("--body-timeout", default=_env("KIT_BODY_TIMEOUT", "60s"))
    p.add_argument("--decode-threads", default=_env("KIT_DECODE_THREADS", "2"))
    p.add_argument("--max-instances", default=_env("KIT_MAX_INSTANCES", "0"))
    p.add_argument("--input-shapes", default=_env("KIT_INPUT_SHAPES", ""))
    p.add_argument("--warmup-samples", default=_env("KIT_WARMUP_SAMPLES", ""))
    p.add_argument("--drain-timeout", default=_env("KIT_DRAIN_TIMEOUT", "30s"))
    p.add_argument("--no-warmup", dest="warmup", action="store_false", default=_env_flag("KIT_WARMUP", True))
    p.add_argument("--no-log-scan", dest="log_scan", action="store_false", default=_env_flag("KIT_LOG_SCAN", True))
    p.add_argument("--access-log", action="store_true", default=_env_flag("KIT_ACCESS_LOG", False))
    p.add_argument("--probe", action="store_true", help="check /v2/health/ready and exit 0 (ready) or 1")
    return p


class Config(object):
    """Validated server settings."""

    def __init__(self, args):
        if not args.model_dir:
            raise ConfigError("no model: set --model-dir or KIT_MODEL_DIR to a SavedModel directory")
        self.model_dir = os.path.abspath(args.model_dir)
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", args.model_name or ""):
            raise ConfigError("model name %r: use letters, digits, '.', '_' and '-'" % args.model_name)
        self.model_name = args.model_name
        self.model_version = args.model_version or default_version(self.model_dir)
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", self.model_version):
            raise ConfigError("model version %r: use letters, digits, '.', '_' and '-' (TF Serving clients expect "
                              "an integer)" % self.model_version)
        self.signature = args.signature
        self.host = args.host
        try:
            self.port = int(args.port)
        except ValueError:
            raise ConfigError("port %r is not a number" % args.port)
        if not 0 <= self.port <= 65535:
            raise ConfigError("port %d is outside 0..65535" % self.port)
        try:
            self.grpc_port = int(args.grpc_port)
        except ValueError:
            raise ConfigError("gRPC port %r is not a number" % args.grpc_port)
        if not 0 <= self.grpc_port <= 65535:
            raise ConfigError("gRPC port %d is outside 0..65535 (0 turns gRPC off)" % self.grpc_port)
        if self.grpc_port and self.grpc_port == self.port:
            raise ConfigError("the gRPC port and the HTTP port are both %d: pick two ports" % self.port)
        self.batch_sizes = parse_batch_sizes(args.batch_sizes)
        self.max_batch_delay = parse_duration(args.max_batch_delay, "max batch delay")
        try:
            self.max_queue = int(args.max_queue)
            max_instances = int(args.max_instances)
        except ValueError:
            raise ConfigError("max queue %r and max instances %r must be integers" % (args.max_queue,
                                                                                     args.max_instances))
        if self.max_queue < 1:
            raise ConfigError("max queue must be >= 1, got %d" % self.max_queue)
        capacity = self.max_queue * self.batch_sizes[-1]
        # A request can never be larger than what the whole queue holds.
        self.max_instances = min(max_instances, capacity) if max_instances > 0 else capacity
        self.max_body = parse_size(args.max_body, "max body")
        # The JSON limit defaults to 16 MiB but never exceeds the body limit (a smaller KIT_MAX_BODY wins).
        self.max_json_body = min(parse_size(args.max_json_body, "max JSON body"), self.max_body)
        self.max_buffered = parse_size(args.max_buffered, "max buffered")
        self.max_header_bytes = parse_size(args.max_header_bytes, "max header bytes")
        self.max_connections = _positive_int(args.max_connections, "max connections")
        self.max_headers = _positive_int(args.max_headers, "max headers")
        self.decode_threads = _positive_int(args.decode_threads, "decode threads")
        self.idle_timeout = parse_duration(args.idle_timeout, "idle timeout")
        self.body_timeout = parse_duration(args.body_timeout, "body timeout")
        if min(self.max_body, self.max_buffered, self.max_header_bytes) < 1024:
            raise ConfigError("body, buffered and header limits must be at least 1KiB")
        if self.idle_timeout <= 0 or self.body_timeout <= 0:
            raise ConfigError("idle and body timeouts must be positive")
        self.drain_limit = 1 << 20  # an oversized body up to this much beyond the limit is read and dropped
        self.backlog = 1024
        from kit.runtime.model import parse_shapes

        try:
            self.input_shapes = parse_shapes(args.input_shapes)
        except ValueError as e:
            raise ConfigError(str(e))
        self.drain_timeout = parse_duration(args.drain_timeout, "drain timeout")
        self.warmup = bool(args.warmup)
        self.warmup_samples = os.path.abspath(args.warmup_samples) if args.warmup_samples else None
        if self.warmup_samples and not self.warmup_samples.lower().endswith((".npy", ".npz")):
            raise ConfigError("warm-up samples %r: use a .npy file (one input) or .npz (name -> array)"
                              % args.warmup_samples)
        if self.warmup_samples and not os.path.isfile(self.warmup_samples):
            raise ConfigError("warm-up samples %s: no such file" % self.warmup_samples)
        self.log_scan = bool(args.log_scan)
        self.access_log = bool(args.access_log)
        # Zero-downtime updates (kit rollout, start-first): the new server binds the same port
        # beside the old one (SO_REUSEPORT, both must set it) and names its slot in a Kit-Slot
        # header, so the rollout can tell which of the two answered.
        self.reuse_port = _env_flag("KIT_REUSE_PORT", False)
        # Once ready, take every new connection of the shared port (reuseport.py); off only to
        # show, in a test, what happens without it.
        self.reuse_port_steer = _env_flag("KIT_REUSE_PORT_STEER", True)
        self.slot = _env("KIT_SLOT", "")
        # Test-only hooks, see the module docstring.
        self.test_warmup_delay = parse_duration(_env("KIT_TEST_WARMUP_DELAY", "0"), "KIT_TEST_WARMUP_DELAY")
        self.test_infer_delay = parse_duration(_env("KIT_TEST_INFER_DELAY", "0"), "KIT_TEST_INFER_DELAY")


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent():
    """When KIT_PARENT_PID is set (kit serve --local sets it), get SIGTERM as soon as that parent dies,
    even by SIGKILL, so no orphaned server keeps holding the port (Linux prctl PR_SET_PDEATHSIG)."""
    expected = _env("KIT_PARENT_PID")
    if not expected or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        log.warning("cannot ask to be stopped with the parent: errno %d", ctypes.get_errno())
    if str(os.getppid()) != expected.strip():
        os.kill(os.getpid(), signal.SIGTERM)  # the parent died before prctl took effect


def _positive_int(text, what):
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ConfigError("%s: %r is not an integer" % (what, text))
    if value < 1:
        raise ConfigError("%s must be >= 1, got %d" % (what, value))
    return value


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--probe" in argv:
        from kit.runtime.serving.healthcheck import main as probe_main

        return probe_main([a for a in argv if a != "--probe"])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s kit-serve %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        config = Config(args)
    except ConfigError as e:
        sys.stderr.write("kit-serve: configuration error: %s\n" % e)
        return 2
    from kit.runtime.serving.transport import run

    die_with_parent()
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
