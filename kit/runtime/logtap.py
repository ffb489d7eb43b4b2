"""Watch the process's own stderr for TF-TRT events while passing it through.

TensorFlow's C++ runtime logs to file descriptor 2 directly, so a Python
handler cannot see it. StderrTap points fd 2 at a pipe and a thread copies
every byte back to the original stderr (docker logs keep working) while
handing each complete line to a callback. The server counts engine builds and
native-segment fallbacks at runtime this way: either means the deployed
engines did not cover a request (a build takes ~30 minutes on a Nano).

Line classification comes from kit.runtime.trtlog's parser (it owns the
TF-TRT log patterns) and falls back to the small pattern list below when that
module is absent. TF 2.3.1 logs "Building a new TensorRT engine" (and "Added
new engine to cache") only at VLOG(1) of trt_engine_op, so those lines exist
only with TF_CPP_VMODULE=trt_engine_op=1 or more: the runtime image sets it,
and `kit serve --local` sets it for its server (engine_build_vmodule).
"""

import os
import re
import threading

# The VLOG that makes TF-TRT print an engine build at run time (runtime.Dockerfile sets the same).
ENGINE_BUILD_VMODULE = "trt_engine_op=1"

ENGINE_BUILD = "engine_build"
NATIVE_FALLBACK = "native_fallback"

# Used only when kit.runtime.trtlog is absent. The phrases are TF-TRT's own log lines.
_FALLBACK_PATTERNS = (
    (ENGINE_BUILD, re.compile(r"Building a new TensorRT engine for")),
    (NATIVE_FALLBACK, re.compile(r"native segment will be used instead"
                                 r"|Running native segment for"
                                 r"|Retrying with native segment for")),
)


def engine_build_vmodule(vmodule):
    """TF_CPP_VMODULE with trt_engine_op at level 1 or more, the user's other modules (and a higher level) kept."""
    parts = [p.strip() for p in (vmodule or "").split(",") if p.strip()]
    for part in parts:
        name, _, level = part.partition("=")
        if name.strip() == "trt_engine_op" and level.strip().isdigit() and int(level) >= 1:
            return ",".join(parts)
    parts = [p for p in parts if p.partition("=")[0].strip() != "trt_engine_op"]
    return ",".join(parts + [ENGINE_BUILD_VMODULE])


def _simple_classify(line):
    for kind, pattern in _FALLBACK_PATTERNS:
        if pattern.search(line):
            return kind
    return None


def line_classifier():
    """A function line -> ENGINE_BUILD | NATIVE_FALLBACK | None, from trtlog when it exists."""
    try:
        from kit.runtime import trtlog
    except ImportError:
        return _simple_classify
    parse = getattr(trtlog, "parse", None)
    if parse is None:
        return _simple_classify

    def classify(line):
        if "TensorRT" not in line and "native segment" not in line.lower():
            return None  # cheap pre-filter: almost every line is neither
        findings = parse(line)
        if findings.get("engines_built"):
            return ENGINE_BUILD
        if findings.get("native_fallbacks"):
            return NATIVE_FALLBACK
        return None

    return classify


class StderrTap(object):
    """Tee file descriptor 2 through a pipe; call on_line(text) for every line."""

    def __init__(self, on_line):
        self._on_line = on_line
        self._saved = None
        self._read_fd = None
        self._thread = None

    def start(self):
        self._saved = os.dup(2)
        self._read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(target=self._pump, name="kit-stderr-tap", daemon=True)
        self._thread.start()
        return self

    def _pump(self):
        pending = b""
        while True:
            try:
                chunk = os.read(self._read_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            try:
                os.write(self._saved, chunk)
            except OSError:
                pass
            pending += chunk
            lines = pending.split(b"\n")
            pending = lines.pop()
            for line in lines:
                try:
                    self._on_line(line.decode("utf-8", "replace"))
                except Exception:
                    pass  # a counting bug must never block stderr
            if len(pending) > 1 << 20:
                pending = b""
        if pending:
            try:
                self._on_line(pending.decode("utf-8", "replace"))
            except Exception:
                pass

    def stop(self, timeout=2.0):
        """Put the original stderr back and flush what is still in the pipe."""
        if self._saved is None:
            return
        os.dup2(self._saved, 2)  # closes our pipe's write end held by fd 2
        self._thread.join(timeout)
        os.close(self._saved)
        self._saved = None
