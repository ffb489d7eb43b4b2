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
# TF 2.3.1 convert_graph.cc:854 / :857 (older TF: "TensorRT node ... added for segment ... succeeded|failed")
_REPLACED = re.compile(r"Replaced segment (\d+) consisting of (\d+) nodes by " + _OP + r"\.?$")
_CANNOT_REPLACE = re.compile(r"Cannot replace segment (\d+) consisting of (\d+) nodes by " + _OP +
                             r" reason: (.*?)\s*\(keeping original segment\)\.?$")
_ENGINE_INFO = re.compile(r"Failed to get engine info for segment (\d+)")
_REGISTER = re.compile(r"Failed to register segment graphdef to the library " + _OP + r": (.*)$")
_SEGMENT_GRAPH = re.compile(r"Getting segment graph for " + _OP + r" failed\. Reason: (.*)$")
_CALIBRATION = re.compile(r"Calibration failed: (.*)$")
_SHAPE_LIST = re.compile(r"Input shape list size mismatch, cached size: (\d+) vs\. input size: (\d+)")
_CACHED = re.compile(r"Added new engine to cache of " + _OP + r"\. Cache size: (\d+)")
# The BFC allocator's retry warning: TF says itself it is not a failure (the failure, if any, is the
# engine line that follows it). Counted as a memory warning, never as an OOM.
_NOT_A_FAILURE = re.compile(r"ran out of memory trying to allocate (\S+).*The caller indicates that this is not "
                            r"a failure")
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
    # TF_GPU_ALLOCATOR=cuda_malloc: GPUcudaMallocAllocator calls cuMemAlloc directly (gpu_cudamalloc_allocator.cc)
    re.compile(r"cuMemAlloc failed to allocate (\d+)"),
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
        "engines_cached": [],
        "conversion_errors": [],
        "calibration_failures": [],
        "memory_warnings": [],
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


# ---- one line -> findings --------------------------------------------------------
# Each rule is (pattern, record): the first pattern that matches a line's message decides what the
# line is; record(f, m, line, msg) adds it to the findings. The order matters where wordings overlap.


def _add_unique_op_types(f, m, line, msg):
    for t in m.group(3).split(","):
        t = t.strip()
        if t and t not in f["unconverted_op_types"]:
            f["unconverted_op_types"].append(t)


def _segment(op, segment, nodes, ok, error):
    return {"op": canonical_op(op), "segment": int(segment), "nodes": int(nodes), "ok": ok, "error": error}


def _add_built_shapes(f, m, line, msg):
    shapes = parse_shapes(m.group(2))
    batch = shapes[0][0] if shapes and shapes[0] else None
    f["engines_built"].append({"op": canonical_op(m.group(1)), "input_shapes": shapes, "batch_size": batch, "ok": True})


def _add_creation_failure(f, m, line, msg):
    reason = (m.group(2) or "").strip() or None
    op = canonical_op(m.group(1))
    for attempt in reversed(f["engines_built"]):  # the build this failure ends
        if attempt["op"] == op:
            attempt["ok"] = False
            break
    f["engine_failures"].append({"op": op, "reason": reason})
    _fallback(f, "engine_creation_failed", m.group(1), line, reason=reason)


def _add_version_mismatch(f, m, line, msg):
    f["version_warnings"].append(msg.strip())
    versions = f["tensorrt_versions"]
    versions["loaded"] = versions["loaded"] or m.group(1)
    versions["linked"] = versions["linked"] or m.group(3)


def _set_version(which):
    def record(f, m, line, msg):
        f["tensorrt_versions"][which] = _version(m.group(1))
    return record


_LINE_RULES = (
    (_CANDIDATES, lambda f, m, line, msg: f["candidate_segment_counts"].append(int(m.group(1)))),
    (_NOT_CONVERTED, _add_unique_op_types),
    (_REPLACED, lambda f, m, line, msg: f["segments"].append(
        _segment(m.group(3), m.group(1), m.group(2), True, None))),
    (_CANNOT_REPLACE, lambda f, m, line, msg: f["segments"].append(
        _segment(m.group(3), m.group(1), m.group(2), False, m.group(4).strip() or None))),
    (_ENGINE_INFO, lambda f, m, line, msg: f["conversion_errors"].append(
        {"segment": int(m.group(1)), "op": None, "error": msg.strip()})),
    (_REGISTER, lambda f, m, line, msg: f["conversion_errors"].append(
        {"segment": None, "op": canonical_op(m.group(1)), "error": msg.strip()})),
    (_CALIBRATION, lambda f, m, line, msg: f["calibration_failures"].append(
        {"reason": m.group(1).strip(), "line": line})),
    (_CACHED, lambda f, m, line, msg: f["engines_cached"].append(
        {"op": canonical_op(m.group(1)), "cache_size": int(m.group(2))})),
    (_NOT_A_FAILURE, lambda f, m, line, msg: f["memory_warnings"].append({"size": m.group(1), "line": line})),
    (_SEGMENT_GRAPH, lambda f, m, line, msg: _fallback(
        f, "segment_graph_failed", m.group(1), line, reason=m.group(2).strip())),
    (_SHAPE_LIST, lambda f, m, line, msg: _fallback(
        f, "input_shape_list_mismatch", None, line, reason="cached %s input(s) vs %s given" % (m.group(1), m.group(2)))),
    (_SEGMENT, lambda f, m, line, msg: f["segments"].append(
        _segment(m.group(1), m.group(2), m.group(3), m.group(4) == "succeeded", m.group(5).strip() or None))),
    (_BUILD_BATCH, lambda f, m, line, msg: f["engines_built"].append(
        {"op": canonical_op(m.group(1)), "input_shapes": None, "batch_size": int(m.group(2)), "ok": True})),
    (_BUILD_SHAPES, _add_built_shapes),
    (_CREATION_FAILED, _add_creation_failure),
    (_RETRIEVAL_SHAPES, lambda f, m, line, msg: _fallback(
        f, "engine_retrieval_failed", m.group(2), line, input_shapes=parse_shapes(m.group(1)))),
    (_RETRIEVAL_BATCH, lambda f, m, line, msg: _fallback(
        f, "engine_retrieval_failed", m.group(2), line, batch_size=int(m.group(1)))),
    (_EXECUTE_FAILED, lambda f, m, line, msg: _fallback(
        f, "engine_execution_failed", m.group(2), line, reason=m.group(1).strip() or None)),
    (_NO_BUILD, lambda f, m, line, msg: _fallback(f, "build_at_runtime_disallowed", None, line)),
    (_ENGINE_BATCH, lambda f, m, line, msg: _fallback(f, "engine_batch_unavailable", m.group(1), line)),
    (_VERIFY_SHAPES, lambda f, m, line, msg: _fallback(
        f, "input_shape_check_failed", m.group(1), line, reason=m.group(2).strip())),
    (_CACHE_MISS, lambda f, m, line, msg: f["cache_misses"].append(canonical_op(m.group(1)))),
    (_MISMATCH, _add_version_mismatch),
    (_LINKED, _set_version("linked")),
    (_LOADED, _set_version("loaded")),
)


def _parse_line(f, line, severity, msg):
    for pattern, record in _LINE_RULES:
        m = pattern.search(msg)
        if m:
            record(f, m, line, msg)
            return
    if any(pattern.search(msg) for pattern in _OOM):
        f["oom"].append({"line": line})  # and it may also be TensorRT's own error line (below)
    elif _LIBRARY.search(msg):
        f["library_errors"].append(msg.strip())
        return
    elif _NATIVE_ANY.search(msg) and severity != "I" and "_native_segment" not in msg:
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


# ---- diagnosis -------------------------------------------------------------------
# Findings -> problems (each with the fix) and a verdict in plain words. `kit scan-log`, the optimizer's
# report and the server share it, so the three say the same thing about the same log.

_REQUESTED = re.compile(r"Requested amount of GPU memory \((\d+) bytes\)")
_ALLOC_SIZE = re.compile(r"(?:trying to allocate|cuMemAlloc failed to allocate) (\S+)")

FIX_MEMORY = ("keep max_workspace_size < memory_limit < memory available: lower optimize.max_workspace_size "
              "(e.g. 1GiB) or raise optimize.memory_limit, and stop other processes (a Jetson's GPU shares its RAM)")
FIX_CUDA_MALLOC = ("unset TF_GPU_ALLOCATOR: with cuda_malloc TensorFlow 2.3 allocates with cuMemAlloc directly, "
                   "past the BFC allocator that memory_limit sizes, so the limit no longer bounds GPU memory")
FIX_SHAPES = ("build an engine for every input shape you serve ahead of time (optimize.batch_sizes); "
              "an engine missing at run time is built at the first request (~30 min on a Nano) or falls back")


def _problem(kind, what, fix, **extra):
    item = {"kind": kind, "what": what, "fix": fix}
    item.update(extra)
    return item


def _requested_memory(findings):
    for item in findings["oom"]:
        m = _REQUESTED.search(item["line"]) or _ALLOC_SIZE.search(item["line"])
        if m:
            return m.group(1) + (" bytes" if m.group(1).isdigit() else "")
    for item in findings.get("memory_warnings") or []:
        return item["size"]
    return None


def diagnose(findings):
    """{"failed", "verdict", "problems": [{kind, what, fix}], "notes": [...]} for parsed findings."""
    f = findings
    problems = _engine_failure_problems(f)
    fallbacks, ran_native = _fallback_problems(f)
    problems += fallbacks + _other_problems(f)
    if not problems:
        problems = [_problem("tensorrt_error", "TensorRT reported an error: %s" % t,
                             "read the lines around it; rebuild on this device and JetPack")
                    for t in f["tensorrt_errors"]]
    notes = _notes(f)
    if not problems:
        active = f["candidate_segments"] is not None or f["segments"] or f["engines_built"] or f.get("engines_cached")
        verdict = ("no failure: TF-TRT converted and built without a fallback" if active else
                   "no TF-TRT activity in this log (no segments, engines or fallbacks); nothing failed, nothing proven")
        return {"failed": False, "verdict": verdict, "problems": [], "notes": notes}
    return {"failed": True, "verdict": _failed_verdict(f, problems, ran_native), "problems": problems, "notes": notes}


def _memory_trouble(f):
    return bool(f["oom"] or f.get("memory_warnings"))


def _memory_fix(f):
    cuda_malloc = any("cuMemAlloc failed" in o["line"] for o in f["oom"])
    return FIX_CUDA_MALLOC if cuda_malloc else FIX_MEMORY


def _engine_failure_problems(f):
    problems = []
    requested = _requested_memory(f)
    for e in f["engine_failures"]:
        if _memory_trouble(f):
            why = "the engine needed more GPU memory than the limit allowed" + (
                " (%s requested)" % requested if requested else "")
            fix = _memory_fix(f)
        else:
            why = "TensorRT could not build it"
            fix = ("read the TensorRT (DefaultLogger) lines before it; run with "
                   "TF_CPP_VMODULE=trt_engine_op=2,trt_logger=2 for TensorRT's own reasons")
        problems.append(_problem("engine_creation_failed", "engine creation for %s failed: %s (%s); the native "
                                 "segment was used instead" % (e["op"], why, e["reason"] or "no reason given"),
                                 fix, op=e["op"]))
    return problems


def _fallback_problems(f):
    """(problems, the "op at input shapes" of each engine lookup that ran natively) for the fallbacks
    other than a failed engine creation (that one is _engine_failure_problems')."""
    failed_ops = set(e["op"] for e in f["engine_failures"])
    problems, ran_native = [], []
    for fb in f["native_fallbacks"]:
        if fb["kind"] == "engine_creation_failed":
            continue
        op = fb.get("op") or "a TRTEngineOp"
        if fb["kind"] == "engine_retrieval_failed":
            shapes = fb.get("input_shapes") or fb.get("batch_size")
            ran_native.append("%s at input shapes %s" % (op, shapes))
            fix = "fix the engine build failure above" if op in failed_ops else FIX_SHAPES
            what = "the native segment ran for %s at input shapes %s (no engine for them)" % (op, shapes)
        elif fb["kind"] == "build_at_runtime_disallowed":
            what, fix = "no engine matched the input shapes and building at run time is off: native segment ran", FIX_SHAPES
        elif fb["kind"] == "engine_execution_failed":
            what = "executing the engine for %s failed (%s); retried with the native segment" % (op, fb.get("reason"))
            fix = "see the TensorRT error lines before it; rebuild the engines on this device and JetPack"
        elif fb["kind"] == "input_shape_list_mismatch":
            what = "the engine cache was asked with a different number of inputs (%s): native segment" % fb.get("reason")
            fix = "feed the model the inputs its signature declares, in the order the converter fed them"
        else:
            what = "fallback to native TensorFlow (%s) for %s: %s" % (fb["kind"], op, fb.get("reason") or fb["line"])
            fix = "read the log lines around it; the segment ran without TensorRT"
        problems.append(_problem("native_fallback", what, fix, op=fb.get("op"), fallback=fb["kind"]))
    return problems, ran_native


def _other_problems(f):
    """Out of memory without a failed engine, segments kept native, conversion and calibration errors,
    engines never saved, TensorRT missing."""
    problems = []
    if f["oom"] and not f["engine_failures"]:
        problems.append(_problem("out_of_memory", "out of GPU memory: %s" % f["oom"][0]["line"], _memory_fix(f)))
    for s in f["segments"]:
        if not s["ok"]:
            problems.append(_problem("segment_not_converted", "segment %s (%s nodes, %s) was kept as native TensorFlow: "
                                     "%s" % (s["segment"], s["nodes"], s["op"], s["error"] or "conversion failed"),
                                     "the reason names what TensorRT cannot take (an op, a data type, a shape); "
                                     "change that part of the model, or accept it running natively", op=s["op"]))
    for c in f.get("conversion_errors") or []:
        problems.append(_problem("conversion_error", "TF-TRT could not convert a segment: %s" % c["error"],
                                 "run the conversion with TF_CPP_VMODULE=convert_graph=2,convert_nodes=2 to see why"))
    for c in f.get("calibration_failures") or []:
        problems.append(_problem("calibration_failed", "INT8 calibration failed: %s" % c["reason"],
                                 "check optimize.calibration.samples against the model's inputs; int8 needs a device "
                                 "that supports it (not the Nano)"))
    for op in f["cache_misses"]:
        problems.append(_problem("engine_not_built", "no built engine was saved for %s: TF-TRT builds it at the first "
                                 "inference" % op, FIX_SHAPES, op=op))
    for lib in f["library_errors"]:
        problems.append(_problem("tensorrt_missing", "TensorRT could not be loaded: %s" % lib,
                                 "run in the L4T image with --runtime nvidia on the Jetson (TensorRT comes from the host)"))
    return problems


def _engine_text(e):
    return "%s for %s" % (e["op"], e["input_shapes"] or "batch %s" % e["batch_size"])


def _notes(f):
    """What the log shows besides problems: versions, memory warnings, what TF-TRT converted and built."""
    notes = ["TensorRT versions: %s" % w for w in f["version_warnings"]]
    for w in f.get("memory_warnings") or []:
        notes.append("the BFC allocator could not get %s at once; TensorFlow says this is not a failure "
                     "by itself (a failure shows as a later error line)" % w["size"])
    if f["candidate_segments"] is not None:
        notes.append("%d TensorRT candidate segment(s)" % f["candidate_segments"])
    replaced = [s for s in f["segments"] if s["ok"]]
    if replaced:
        notes.append("replaced by TensorRT: %s" % ", ".join("segment %s (%s nodes) -> %s" % (s["segment"], s["nodes"], s["op"])
                                                          for s in replaced))
    if f["unconverted_op_types"]:
        notes.append("op types TF-TRT left to TensorFlow: %s" % ", ".join(f["unconverted_op_types"]))
    built = [e for e in f["engines_built"] if e["ok"]]
    if built:
        notes.append("engines built: %s" % ", ".join(_engine_text(e) for e in built))
    for e in f["engines_built"]:
        if not e["ok"]:
            notes.append("engine build attempted: %s (failed)" % _engine_text(e))
    return notes


def _failed_verdict(f, problems, ran_native):
    parts = []
    if f["engine_failures"]:
        parts.append(("the engine needed more memory than the limit allowed, " if _memory_trouble(f) else "")
                     + "engine creation failed for %s" % ", ".join(sorted(set(e["op"] for e in f["engine_failures"]))))
    if ran_native or any(p["kind"] == "native_fallback" for p in problems) or f["engine_failures"]:
        parts.append("the native segment ran instead of TensorRT" + (" (%s)" % "; ".join(ran_native) if ran_native else ""))
    others = sorted(set(p["kind"] for p in problems) - {"engine_creation_failed", "native_fallback"})
    if others:
        parts.append("also: %s" % ", ".join(k.replace("_", " ") for k in others))
    return "TF-TRT failed: " + "; ".join(parts) + "."


def scan(path):
    """Parse and diagnose one log file: {"path", "findings", "diagnosis"}. IOError/OSError when unreadable."""
    findings = parse_file(path)
    findings["summary"] = summarize(findings)
    return {"path": path, "findings": findings, "diagnosis": diagnose(findings)}
