"""In-container preflight: can this process build TensorRT engines, and safely?

Checks, in the order the optimizer runs them:

1. memory rule (stdlib only, before any TensorFlow work):
   max_workspace_size < memory_limit < MemAvailable (/proc/meminfo). On a
   Jetson the GPU shares RAM with the CPU; a workspace at or above TF's memory
   limit makes every engine build fail and fall back to native TensorFlow,
   silently (the article's 4 GiB workspace under a 2 GiB limit).
   The rule holds only with TensorFlow's BFC allocator (GPU_0_bfc), the one
   the virtual device memory_limit sizes. TF_GPU_ALLOCATOR=cuda_malloc (which
   the article sets) makes TF 2.3 wrap it in GPUcudaMallocAllocator, whose
   AllocateRaw calls cuMemAlloc directly (gpu_process_state.cc,
   gpu_cudamalloc_allocator.cc): the limit then bounds nothing. So kit never
   sets it and fails the preflight when it is set (allocator_check).
2. TensorRT probe, in a SUBPROCESS: with TensorRT libraries missing,
   asking TensorFlow for the loaded TensorRT version can abort the whole
   process (`getInferLibVersion symbol not found`) instead of raising. The
   probe imports tensorflow.compiler.tf2tensorrt._pywrap_py_utils (TF >= 2.2;
   `wrap_py_utils` before) and calls is_tensorrt_enabled,
   get_linked_tensorrt_version and get_loaded_tensorrt_version, one JSON line
   per step, so even an abort says how far it got.
3. TensorFlow in-process: version, visible GPUs, the memory limit applied as a
   virtual device (before the GPU initialises).
4. Versions seen vs the stack pinned in the spec (TensorFlow, TensorRT, L4T):
   a mismatch is an error unless the spec sets allow_version_mismatch.

Python 3.6, stdlib only (TensorFlow is passed in).
"""

import json
import os
import re
import signal
import subprocess
import sys

from kit.runtime import trt_shim

PROBE_MODULES = ("tensorflow.compiler.tf2tensorrt._pywrap_py_utils",
                 "tensorflow.compiler.tf2tensorrt.wrap_py_utils")
PROBE_FUNCTIONS = ("is_tensorrt_enabled", "get_linked_tensorrt_version", "get_loaded_tensorrt_version")

PROBE_CODE = r"""
import importlib, json, sys
def emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()
mod = None
for name in %(modules)r:
    emit(step="import", module=name)
    try:
        mod = importlib.import_module(name)
    except Exception as e:
        emit(step="import_failed", module=name, error="%%s: %%s" %% (type(e).__name__, e))
        continue
    emit(step="imported", module=name)
    break
try:
    import tensorflow
    emit(step="tensorflow", version=getattr(tensorflow, "__version__", None))
except Exception as e:
    emit(step="tensorflow_failed", error="%%s: %%s" %% (type(e).__name__, e))
if mod is not None:
    for fn in %(functions)r:
        f = getattr(mod, fn, None)
        if f is None:
            emit(step="missing", function=fn)
            continue
        emit(step="call", function=fn)
        try:
            value = f()
        except Exception as e:
            emit(step="error", function=fn, error="%%s: %%s" %% (type(e).__name__, e))
            continue
        emit(step="result", function=fn, value=list(value) if isinstance(value, tuple) else value)
emit(step="done")
""" % {"modules": PROBE_MODULES, "functions": PROBE_FUNCTIONS}


def check(name, ok, detail, **extra):
    item = {"name": name, "ok": bool(ok), "detail": detail}
    item.update(extra)
    return item


def format_bytes(n):
    if n is None:
        return "unknown"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            value = n / float(size)
            return ("%d %s" % (value, unit)) if value == int(value) else ("%.2f %s" % (value, unit))
    return "%d B" % n


# ---- 1. memory ------------------------------------------------------------------

def read_meminfo(path="/proc/meminfo"):
    """/proc/meminfo as {key: bytes}; {} where it does not exist."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                m = re.match(r"^(\w+):\s+(\d+)(?:\s+kB)?", line)
                if m:
                    value = int(m.group(2))
                    out[m.group(1)] = value * 1024 if "kB" in line else value
    except (IOError, OSError):
        pass
    return out


def memory_available(meminfo):
    if "MemAvailable" in meminfo:
        return meminfo["MemAvailable"], "MemAvailable"
    if "MemFree" in meminfo:  # kernels before 3.14
        return meminfo["MemFree"] + meminfo.get("Cached", 0), "MemFree+Cached"
    return None, None


def memory_rule(workspace, memory_limit, meminfo):
    """Checks for max_workspace_size < memory_limit < memory available now."""
    checks = []
    checks.append(check(
        "workspace_below_memory_limit", workspace < memory_limit,
        "max_workspace_size %s %s memory_limit %s" % (format_bytes(workspace), "<" if workspace < memory_limit else ">=",
                                                      format_bytes(memory_limit)),
        hint=None if workspace < memory_limit else
        "TensorRT asks for the whole workspace inside TensorFlow's memory limit; with workspace >= limit every "
        "engine build fails and falls back to native TensorFlow. Lower optimize.max_workspace_size (e.g. 1GiB) "
        "or raise optimize.memory_limit."))
    available, source = memory_available(meminfo)
    if available is None:
        checks.append(check("memory_limit_below_available", True, "memory available unknown (no /proc/meminfo); not checked"))
    else:
        ok = memory_limit < available
        checks.append(check(
            "memory_limit_below_available", ok,
            "memory_limit %s %s memory available now %s (%s in /proc/meminfo)"
            % (format_bytes(memory_limit), "<" if ok else ">=", format_bytes(available), source),
            hint=None if ok else
            "the GPU of a Jetson shares this RAM: stop other containers/processes to free memory, "
            "or lower optimize.memory_limit (and max_workspace_size below it)"))
    return checks


def allocator_check(environ):
    """TF_GPU_ALLOCATOR must leave TensorFlow's BFC allocator in charge (see the module docstring)."""
    value = environ.get("TF_GPU_ALLOCATOR")
    if value == "cuda_malloc":  # TF compares exactly (strcmp): other spellings leave BFC in charge
        return check("allocator_honours_memory_limit", False,
                     "TF_GPU_ALLOCATOR=cuda_malloc: TensorFlow allocates GPU memory with cuMemAlloc directly, past "
                     "the BFC allocator that memory_limit sizes, so the memory rule would protect nothing",
                     hint="unset TF_GPU_ALLOCATOR (docker run -e / the image's ENV); kit relies on TensorFlow's "
                          "default BFC allocator, sized by optimize.memory_limit")
    return check("allocator_honours_memory_limit", True,
                 "GPU allocator: TensorFlow's BFC allocator (GPU_0_bfc), sized by memory_limit"
                 + ("" if value is None else " (TF_GPU_ALLOCATOR=%r is not one TensorFlow switches on)" % value))


# ---- 2. TensorRT probe ----------------------------------------------------------------

def _signal_name(returncode):
    try:
        return signal.Signals(-returncode).name
    except (ValueError, AttributeError):
        return "signal %d" % -returncode


def _fmt_value(value):
    if isinstance(value, list):
        return "(%s)" % ", ".join(str(v) for v in value)
    return repr(value)


def probe_tensorrt(python=None, timeout=600, code=PROBE_CODE, env=None):
    """Ask TensorFlow about TensorRT in a child process that may abort.

    Returns a dict: available (bool), enabled, linked, loaded ("7.1.3" or
    None), module, tensorflow, returncode, signal, steps, stderr_tail and
    summary (what was probed and what it said, in words).
    """
    python = python or sys.executable
    argv = [python, "-c", code]
    result = {"available": False, "enabled": None, "linked": None, "loaded": None, "module": None,
              "tensorflow": None, "returncode": None, "signal": None, "steps": [], "stderr_tail": "",
              "command": "%s -c <probe: import %s; call %s>" % (os.path.basename(python), PROBE_MODULES[0],
                                                                ", ".join(PROBE_FUNCTIONS))}
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                universal_newlines=True)
    except OSError as e:
        result["summary"] = "could not start %s: %s" % (python, e)
        return result
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        result["summary"] = "the probe did not finish within %d s" % timeout
    # Let the captured log see what the probe printed (TensorFlow warnings about libnvinfer).
    if stderr:
        sys.stderr.write(stderr if stderr.endswith("\n") else stderr + "\n")
        sys.stderr.flush()
    result["returncode"] = proc.returncode
    result["stderr_tail"] = "\n".join(stderr.strip().splitlines()[-8:]) if stderr else ""
    values = {}
    said = []
    for line in stdout.splitlines():
        try:
            step = json.loads(line)
        except ValueError:
            continue
        result["steps"].append(step)
        kind = step.get("step")
        if kind == "imported":
            result["module"] = step["module"]
        elif kind == "tensorflow":
            result["tensorflow"] = step.get("version")
        elif kind == "import_failed":
            said.append("import %s failed (%s)" % (step["module"], step["error"]))
        elif kind == "result":
            values[step["function"]] = step["value"]
            said.append("%s() -> %s" % (step["function"], _fmt_value(step["value"])))
        elif kind == "error":
            said.append("%s() raised %s" % (step["function"], step["error"]))
        elif kind == "missing":
            said.append("%s() does not exist" % step["function"])
    if proc.returncode is not None and proc.returncode < 0:
        result["signal"] = _signal_name(proc.returncode)
        last = result["steps"][-1] if result["steps"] else {}
        where = ("while calling %s()" % last["function"]) if last.get("step") == "call" else \
                ("while importing %s" % last["module"]) if last.get("step") == "import" else "after the last step"
        said.append("the probe process was killed by %s %s" % (result["signal"], where))
    elif proc.returncode:
        said.append("the probe exited with code %d" % proc.returncode)

    enabled = values.get("is_tensorrt_enabled")
    linked = values.get("get_linked_tensorrt_version")
    loaded = values.get("get_loaded_tensorrt_version")
    if enabled is None and isinstance(linked, list):  # modules before is_tensorrt_enabled existed
        enabled = any(linked)
    result["enabled"] = enabled
    result["linked"] = ".".join(str(v) for v in linked) if isinstance(linked, list) and any(linked) else None
    result["loaded"] = ".".join(str(v) for v in loaded) if isinstance(loaded, list) and any(loaded) else None
    result["available"] = bool(enabled) and bool(result["linked"]) and bool(result["loaded"]) and proc.returncode == 0
    probed = result["module"] or PROBE_MODULES[0]
    if "summary" not in result:
        result["summary"] = "probed %s in a subprocess: %s" % (probed, "; ".join(said) if said else "no answer")
    answered = len(values) == len(PROBE_FUNCTIONS) and proc.returncode == 0
    if result["stderr_tail"] and not answered:
        result["summary"] += "; its stderr ended with: %s" % result["stderr_tail"].splitlines()[-1]
    return result


def where_am_i():
    """'in this container' inside Docker/Podman, else 'on this machine'."""
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        return "in this container"
    return "on this machine"


def tensorrt_unavailable_message(probe):
    return "TensorRT is not available %s: %s" % (where_am_i(), probe["summary"])


# ---- 3. TensorFlow in-process ----------------------------------------------------------

def tensorflow_devices(tf, memory_limit_bytes, apply_limit=True):
    """Visible GPUs, with the memory limit applied to the first one."""
    gpus = trt_shim.list_gpus(tf)
    out = {"gpus": [getattr(g, "name", str(g)) for g in gpus], "memory_limit_applied": None}
    if gpus and apply_limit:
        out["memory_limit_applied"] = trt_shim.set_memory_limit(tf, gpus[0], memory_limit_bytes)
    return out


def tensorflow_build_info(tf):
    """CUDA/cuDNN versions TensorFlow was built with (tf.sysconfig.get_build_info, TF >= 2.3)."""
    get = getattr(getattr(tf, "sysconfig", None), "get_build_info", None)
    try:
        info = dict(get()) if get else {}
    except Exception:  # an odd build; the versions are informative only
        info = {}
    return {"cuda": info.get("cuda_version"), "cudnn": info.get("cudnn_version")}


# ---- 4. versions -------------------------------------------------------------------------

def release(version):
    """'2.3.1+nv20.12' -> '2.3.1'; None stays None."""
    if not version:
        return None
    m = re.match(r"^(\d+(?:\.\d+)*)", str(version))
    return m.group(1) if m else str(version)


def read_l4t_release(path="/etc/nv_tegra_release"):
    """'# R32 (release), REVISION: 4.4, ...' -> '32.4.4'; None when absent."""
    try:
        with open(path) as f:
            first = f.readline()
    except (IOError, OSError):
        return None
    m = re.search(r"R(\d+) \(release\), REVISION: (\d+)\.(\d+)", first)
    return "%s.%s.%s" % m.groups() if m else None


def version_checks(stack, seen, check_tensorrt):
    """Compare the versions seen with the pinned stack. seen: tensorflow, tensorrt, l4t."""
    checks = []
    pinned_tf = stack.get("tensorflow")
    if pinned_tf:
        got = release(seen.get("tensorflow"))
        checks.append(check("tensorflow_version", got == release(pinned_tf),
                            "TensorFlow %s, pinned %s" % (seen.get("tensorflow"), pinned_tf)))
    pinned_trt = stack.get("tensorrt")
    if check_tensorrt and pinned_trt:
        got = seen.get("tensorrt")
        ok = got is not None and (got == pinned_trt or got.startswith(pinned_trt + "."))
        checks.append(check("tensorrt_version", ok, "TensorRT loaded %s, pinned %s" % (got, pinned_trt)))
    pinned_l4t = stack.get("l4t")
    if pinned_l4t and seen.get("l4t"):
        checks.append(check("l4t_version", seen["l4t"] == pinned_l4t,
                            "L4T R%s, pinned R%s (engines are specific to the JetPack release)" % (seen["l4t"], pinned_l4t)))
    return checks
