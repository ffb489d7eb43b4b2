"""TF-TRT log capture and parsing.

TF-TRT reports engine build failures, fallbacks to native TensorFlow and GPU
out-of-memory only as C++ log lines on stderr; the Python calls return
normally ("it likes to fail silently"). So the optimizer captures file
descriptor 2 itself -- where TensorFlow's C++ logging, the TensorRT logger and
Python's logging all write -- into a log file, tees it back to the real stderr
so the user still sees progress, and parses the file into findings.

`LOG_ENV` must be in the environment before TensorFlow is imported: it turns
on the TF-TRT modules' verbose logging (segment/convert/engine op/TensorRT
logger) and INFO level, where the candidate segment count and the engine
builds are logged.

Python 3.6, stdlib only.
"""

import os
import re
import sys
import threading

LOG_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "0",
    "TF_CPP_VMODULE": "segment=2,convert_graph=2,convert_nodes=2,trt_engine_op=2,trt_logger=2",
}


# The optimizer's own progress lines start with this; the parser skips them so
# kit's messages about fallbacks are never counted as fallbacks.
OWN_PREFIX = "kit: "


def set_log_env(environ=None):
    """Set LOG_ENV (call before TensorFlow is imported). Returns what was set."""
    environ = os.environ if environ is None else environ
    for key, value in LOG_ENV.items():
        environ[key] = value
    return dict(LOG_ENV)


class StderrCapture(object):
    """Send everything written to fd 2 into `log_path` and to the real stderr.

    Works at the file-descriptor level (dup2), so it sees TensorFlow's C++
    logging and child processes that inherit fd 2, not only sys.stderr.
    """

    def __init__(self, log_path, echo=True):
        self.log_path = log_path
        self.echo = echo
        self._saved_fd = None
        self._thread = None
        self._log = None
        self._marker = None
        self._synced = threading.Event()
        self._syncs = 0

    def start(self):
        d = os.path.dirname(self.log_path)
        if d and not os.path.isdir(d):
            os.makedirs(d)
        self._log = open(self.log_path, "wb")
        sys.stderr.flush()
        self._saved_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(target=self._pump, args=(read_fd,), name="kit-stderr-tee", daemon=True)
        self._thread.start()
        return self

    def _pump(self, read_fd):
        # Keep draining even if a write fails: a full pipe would block TensorFlow.
        tail = b""
        while True:
            try:
                chunk = os.read(read_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            marker, seen = self._marker, False
            if marker is not None:
                seen = marker in tail + chunk
                chunk = chunk.replace(marker, b"")
                tail = (tail + chunk)[-len(marker):]
            try:
                self._log.write(chunk)
                self._log.flush()
            except (IOError, OSError, ValueError):
                pass
            if seen:  # only after what preceded the marker is in the file
                self._marker = None
                self._synced.set()
            if self.echo:
                try:
                    os.write(self._saved_fd, chunk)
                except OSError:
                    pass
        os.close(read_fd)

    def sync(self, timeout=5.0):
        """Wait until everything written to fd 2 so far is in the log file."""
        if self._saved_fd is None:
            return True
        self._syncs += 1
        marker = ("%ssync %d.%d\n" % (OWN_PREFIX, os.getpid(), self._syncs)).encode("ascii")
        self._synced.clear()
        self._marker = marker
        try:
            sys.stderr.flush()
        except (IOError, OSError, ValueError):
            pass
        os.write(2, marker)
        return self._synced.wait(timeout)

    def stop(self):
        if self._saved_fd is None:
            return
        try:
            sys.stderr.flush()
        except (IOError, OSError, ValueError):
            pass
        os.dup2(self._saved_fd, 2)  # closes our write end of the pipe; the pump sees EOF
        self._thread.join(timeout=5)
        os.close(self._saved_fd)
        self._saved_fd = None
        self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


# ---- parsing -----------------------------------------------------------------

# "2020-11-24 10:00:00.123456: W tensorflow/.../trt_engine_op.cc:757] message"
_PREFIX = re.compile(r"^\S+ \S+: ([IWEF]) (\S+?):(\d+)\] ?(.*)$")
_OP = r"(\S+?)"

_CANDIDATES = re.compile(r"Number of TensorRT candidate segments: (\d+)")
_NOT_CONVERTED = re.compile(r"There are (\d+) ops of (\d+) different types in the graph that are not converted "
                            r"to TensorRT: (.*?)(?:, \(For more information.*)?$")
_SEGMENT = re.compile(r"TensorRT node " + _OP + r" added for segment (\d+) consisting of (\d+) nodes "
                      r"(succeeded|failed)\W*(.*)$")
_BUILD_SHAPES = re.compile(r"Building a new TensorRT engine for " + _OP + r",? (?:with )?input shapes: (.*)$")
_BUILD_BATCH = re.compile(r"Building a new TensorRT engine for " + _OP + r",? with batch size (\d+)")
_CREATION_FAILED = re.compile(r"Engine creation for " + _OP + r" failed\. The native segment will be used instead\."
                              r"(?: Reason: (.*))?$")
_RETRIEVAL_SHAPES = re.compile(r"Engine retrieval for input shapes: (.*?) failed\. Running native segment for " + _OP + r"\.?$")
_RETRIEVAL_BATCH = re.compile(r"Engine retrieval for batch size (\d+) failed\. Running native segment for " + _OP + r"\.?$")
_EXECUTE_FAILED = re.compile(r"Failed to execute engine[:,]? ?(.*?)[,.]? ?[Rr]etrying with native segment for " + _OP + r"\.?$")
_NO_BUILD = re.compile(r"Not building a new engine because allow_build_at_runtime=False")
_ENGINE_BATCH = re.compile(r"Failed to get engine batch, running native segment for " + _OP + r"\.?$")
_VERIFY_SHAPES = re.compile(r"Running native segment for ?" + _OP + r" due to failure in verifying input shapes: (.*)$")
_NATIVE_ANY = re.compile(r"native segment", re.IGNORECASE)

_OOM = (
    re.compile(r"ran out of memory trying to allocate (\S+)"),
    re.compile(r"Requested amount of GPU memory \((\d+) bytes\) could not be allocated"),
    re.compile(r"OutOfMemory Error in GpuMemory"),
    re.compile(r"OOM when allocating tensor"),
    re.compile(r"[Oo]ut of memory", ),
)
_CACHE_MISS = re.compile(r"Could not find " + _OP + r" in TF-TRT cache")
_LINKED = re.compile(r"Linked TensorRT version: \(?([\d, .]+?)\)?\s*$")
_LOADED = re.compile(r"Loaded TensorRT version: \(?([\d, .]+?)\)?\s*$")
_MISMATCH = re.compile(r"Loaded TensorRT (\S+) (but|and) linked TensorFlow against TensorRT (\S+?)\.")
_LIBRARY = re.compile(r"(Could not load dynamic library '?libnv\S*|getInferLibVersion symbol not found|"
                      r"TF-TRT Warning: Could not find TensorRT|Cannot dlopen some TensorRT libraries)")
_TRT_LOGGER = re.compile(r"DefaultLogger (.*)$")
_SHAPE = re.compile(r"\[([-?\d,\s]*)\]")


def canonical_op(name):
    """TF2 prefixes engine names with call scopes; the engine cache uses the last part."""
    return name.rstrip(".,:").split("/")[-1]


def parse_shapes(text):
    """'[[8,224,224,3], [8,4]]' -> [[8, 224, 224, 3], [8, 4]] (None for ? or -1)."""
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    shapes = []
    for m in _SHAPE.finditer(inner):
        dims = []
        for d in m.group(1).split(","):
            d = d.strip()
            if not d:
                continue
            dims.append(None if d in ("?", "-1") else int(d))
        shapes.append(dims)
    return shapes


def _version(text):
    parts = [p.strip() for p in re.split(r"[,.]", text) if p.strip()]
    return ".".join(parts)


def _split(line):
    """(severity, source, message) of one log line; severity None when unprefixed."""
    m = _PREFIX.match(line)
    if m:
        return m.group(1), "%s:%s" % (m.group(2), m.group(3)), m.group(4)
    return None, None, line


def empty_findings():
    """The findings keys. engines_built lists every engine build the log shows, each with ok=False
    when an "Engine creation ... failed" line for the same op followed it."""
    return {
        "candidate_segments": None,
        "candidate_segment_counts": [],
        "unconverted_op_types": [],
        "segments": [],
        "engines_built": [],
        "engine_failures": [],
        "native_fallbacks": [],
        "oom": [],
        "cache_misses": [],
        "tensorrt_versions": {"linked": None, "loaded": None},
        "version_warnings": [],
        "library_errors": [],
        "tensorrt_errors": [],
        "lines": 0,
    }


def parse(text):
    """Parse a captured log into findings (see empty_findings for the keys)."""
    f = empty_findings()
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith(OWN_PREFIX):
            continue
        f["lines"] += 1
        severity, source, msg = _split(line)
        _parse_line(f, line, severity, msg)
    if f["candidate_segment_counts"]:
        f["candidate_segments"] = sum(f["candidate_segment_counts"])
    return f


def _fallback(f, kind, op, line, **extra):
    item = {"kind": kind, "op": canonical_op(op) if op else None, "line": line}
    item.update(extra)
    f["native_fallbacks"].append(item)


def _parse_line(f, line, severity, msg):
    m = _CANDIDATES.search(msg)
    if m:
        f["candidate_segment_counts"].append(int(m.group(1)))
        return
    m = _NOT_CONVERTED.search(msg)
    if m:
        for t in m.group(3).split(","):
            t = t.strip()
            if t and t not in f["unconverted_op_types"]:
                f["unconverted_op_types"].append(t)
        return
    m = _SEGMENT.search(msg)
    if m:
        f["segments"].append({"op": canonical_op(m.group(1)), "segment": int(m.group(2)),
                              "nodes": int(m.group(3)), "ok": m.group(4) == "succeeded",
                              "error": m.group(5).strip() or None})
        return
    m = _BUILD_BATCH.search(msg)
    if m:
        f["engines_built"].append({"op": canonical_op(m.group(1)), "input_shapes": None,
                                   "batch_size": int(m.group(2)), "ok": True})
        return
    m = _BUILD_SHAPES.search(msg)
    if m:
        shapes = parse_shapes(m.group(2))
        batch = shapes[0][0] if shapes and shapes[0] else None
        f["engines_built"].append({"op": canonical_op(m.group(1)), "input_shapes": shapes, "batch_size": batch,
                                   "ok": True})
        return
    m = _CREATION_FAILED.search(msg)
    if m:
        reason = (m.group(2) or "").strip() or None
        op = canonical_op(m.group(1))
        for attempt in reversed(f["engines_built"]):  # the build this failure ends
            if attempt["op"] == op:
                attempt["ok"] = False
                break
        f["engine_failures"].append({"op": op, "reason": reason})
        _fallback(f, "engine_creation_failed", m.group(1), line, reason=reason)
        return
    m = _RETRIEVAL_SHAPES.search(msg)
    if m:
        _fallback(f, "engine_retrieval_failed", m.group(2), line, input_shapes=parse_shapes(m.group(1)))
        return
    m = _RETRIEVAL_BATCH.search(msg)
    if m:
        _fallback(f, "engine_retrieval_failed", m.group(2), line, batch_size=int(m.group(1)))
        return
    m = _EXECUTE_FAILED.search(msg)
    if m:
        _fallback(f, "engine_execution_failed", m.group(2), line, reason=m.group(1).strip() or None)
        return
    m = _NO_BUILD.search(msg)
    if m:
        _fallback(f, "build_at_runtime_disallowed", None, line)
        return
    m = _ENGINE_BATCH.search(msg)
    if m:
        _fallback(f, "engine_batch_unavailable", m.group(1), line)
        return
    m = _VERIFY_SHAPES.search(msg)
    if m:
        _fallback(f, "input_shape_check_failed", m.group(1), line, reason=m.group(2).strip())
        return
    m = _CACHE_MISS.search(msg)
    if m:
        f["cache_misses"].append(canonical_op(m.group(1)))
        return
    m = _MISMATCH.search(msg)
    if m:
        f["version_warnings"].append(msg.strip())
        f["tensorrt_versions"]["loaded"] = f["tensorrt_versions"]["loaded"] or m.group(1)
        f["tensorrt_versions"]["linked"] = f["tensorrt_versions"]["linked"] or m.group(3)
        return
    m = _LINKED.search(msg)
    if m:
        f["tensorrt_versions"]["linked"] = _version(m.group(1))
        return
    m = _LOADED.search(msg)
    if m:
        f["tensorrt_versions"]["loaded"] = _version(m.group(1))
        return
    for pattern in _OOM:
        m = pattern.search(msg)
        if m:
            f["oom"].append({"line": line})
            break
    else:
        if _LIBRARY.search(msg):
            f["library_errors"].append(msg.strip())
            return
        if _NATIVE_ANY.search(msg) and severity != "I" and "_native_segment" not in msg:
            # A fallback wording this parser does not know yet: still a fallback.
            _fallback(f, "other", None, line)
            return
    m = _TRT_LOGGER.search(msg)
    if m and severity in ("E", "F"):
        f["tensorrt_errors"].append(m.group(1).strip())


def parse_file(path):
    with open(path, "rb") as fh:
        return parse(fh.read().decode("utf-8", "replace"))


def summarize(findings):
    """One line per notable finding, for the console and the report."""
    out = []
    if findings["candidate_segments"] is not None:
        out.append("TensorRT candidate segments: %d" % findings["candidate_segments"])
    for e in findings["engines_built"]:
        if e["ok"]:
            out.append("engine built: %s for %s" % (e["op"], e["input_shapes"] or "batch %s" % e["batch_size"]))
    for e in findings["engine_failures"]:
        out.append("engine creation FAILED: %s: %s" % (e["op"], e["reason"]))
    for e in findings["native_fallbacks"]:
        if e["kind"] != "engine_creation_failed":
            out.append("fallback to native TensorFlow (%s): %s" % (e["kind"], e["op"] or e["line"]))
    for e in findings["oom"]:
        out.append("out of memory: %s" % e["line"])
    for op in findings["cache_misses"]:
        out.append("no built engine saved for %s (Could not find it in the TF-TRT cache)" % op)
    for w in findings["version_warnings"]:
        out.append("TensorRT version: %s" % w)
    return out
