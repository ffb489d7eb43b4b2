"""report.json: what the optimizer saw, did and concluded (schema_version 1).

Written atomically (temp file + rename) to the spec's report_path, which is
never inside the output model directory, on success and on every failure the
optimizer can catch (a SIGKILL leaves the previous report, or none).

Top-level keys (all present; null/empty where a phase did not run):

  schema_version   1
  kit_version      kit.__version__ of the runtime
  status           "ok" | "failed"
  exit_code        the runtime's exit code (0, 1, 2, 3, 5)
  error            null | {"kind": "spec"|"inputs"|"preflight"|"gate"|"internal",
                           "message": str, "hint": str|null, "problems": [str]}
  optimization     "tensorrt" | "native" | null (null: nothing was written)
  native_reason    null | why the output is native TensorFlow, e.g.
                   "precision native requested" or "TensorRT not available: ..."
  name, device     from the spec
  precision        the precision requested (spec); "optimization" says what was delivered
  batch_sizes      the batch sizes requested (spec)
  engines          number of TRTEngineOps in the published output (0 for native; null: nothing written)
  spec             the spec as used (dict)
  parameters       {"precision_mode", "max_workspace_size_bytes", "minimum_segment_size",
                    "maximum_cached_engines", "use_calibration", "allow_build_at_runtime",
                    "api": which TF-TRT API shape was used, "converter_arguments": {...}}
                   (null when TF-TRT was not called)
  environment      the versions seen: {"python", "numpy", "tensorflow", "tensorrt" (loaded),
                    "tensorrt_linked", "tensorrt_enabled", "cuda", "cudnn" (TensorFlow's build
                    info), "l4t" (/etc/nv_tegra_release), "jetpack" (the pinned stack's name
                    when its L4T matches), "kit"}
  preflight        {"checks": [{"name", "ok", "detail", "hint"?}], "tensorrt_probe": {...}|null,
                    "meminfo": {"MemTotal", "MemAvailable", ...}, "gpus": [str],
                    "memory_limit_applied": str|null, "environment": {TF_* variables set}}
  inputs           {name: {"shape": per-example shape, "dtype"}} as resolved
  findings         the parsed TF-TRT log (kit.runtime.trtlog.empty_findings keys) + "summary": [str]
  audit            kit.runtime.audit.audit_saved_model() of the output (or the rejected TensorRT
                   model when the gate failed) | null
  parity           kit.runtime.parity.run_parity() result | null
  gate             {"passed": bool, "reasons": [str], "checks": [{"name", "passed", "detail"}]} | null
  attempt          null | the TensorRT attempt's {"findings_summary", "audit_summary", "gate"} when a
                   native fallback replaced it
  output           {"path": output_dir, "written": bool}
  log_path         the captured log file
  timings          {"preflight", "probe", "tensorflow_import", "inputs", "convert", "build", "save",
                    "copy", "audit", "parity", "publish", "total"}: seconds, phases that ran
  memory           {"peak_rss_bytes": ru_maxrss of this process, "children_peak_rss_bytes"}
  tensorflow_imported  whether this process imported TensorFlow at all
  started_at, finished_at   UTC, ISO 8601

Python 3.6, stdlib only.
"""

import json
import os
import platform
import resource
import sys
import time

SCHEMA_VERSION = 1


def utc_now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_report(spec_dict=None):
    from kit import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "kit_version": __version__,
        "status": "failed",
        "exit_code": None,
        "error": None,
        "optimization": None,
        "native_reason": None,
        "name": (spec_dict or {}).get("name"),
        "device": (spec_dict or {}).get("device"),
        "precision": (spec_dict or {}).get("precision"),
        "batch_sizes": (spec_dict or {}).get("batch_sizes"),
        "engines": None,
        "spec": spec_dict,
        "parameters": None,
        "environment": {"python": platform.python_version(), "numpy": None, "tensorflow": None,
                        "tensorrt": None, "tensorrt_linked": None, "tensorrt_enabled": None,
                        "cuda": None, "cudnn": None, "l4t": None, "jetpack": None, "kit": __version__},
        "preflight": {"checks": [], "tensorrt_probe": None, "meminfo": {}, "gpus": [],
                      "memory_limit_applied": None, "environment": {}},
        "inputs": None,
        "input_order": None,
        "input_order_source": None,
        "findings": None,
        "audit": None,
        "parity": None,
        "gate": None,
        "attempt": None,
        "output": {"path": (spec_dict or {}).get("output_dir"), "written": False},
        "log_path": (spec_dict or {}).get("log_path"),
        "timings": {},
        "memory": {},
        "tensorflow_imported": False,
        "started_at": utc_now(),
        "finished_at": None,
    }


def ru_maxrss_bytes(who):
    # Linux reports KiB; macOS bytes (only Linux matters in the images, but be right).
    value = resource.getrusage(who).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def finish(report, exit_code):
    report["exit_code"] = exit_code
    report["status"] = "ok" if exit_code == 0 else "failed"
    report["finished_at"] = utc_now()
    report["memory"] = {"peak_rss_bytes": ru_maxrss_bytes(resource.RUSAGE_SELF),
                        "children_peak_rss_bytes": ru_maxrss_bytes(resource.RUSAGE_CHILDREN)}
    report["tensorflow_imported"] = "tensorflow" in sys.modules
    return report


def write(report, path):
    """Write atomically: a temp file in the same directory, then rename."""
    d = os.path.dirname(path) or "."
    if not os.path.isdir(d):
        os.makedirs(d)
    tmp = os.path.join(d, ".%s.tmp-%d" % (os.path.basename(path), os.getpid()))
    try:
        with open(tmp, "w") as f:
            json.dump(report, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read(path):
    with open(path) as f:
        return json.load(f)
