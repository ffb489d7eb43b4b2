"""The optimize spec: the JSON document the host writes and the runtime reads.

The host (kit/build/optimizer.py `write_spec`) turns a validated manifest into this
spec with the paths as the runtime will see them (container paths when the
optimizer runs in the builder image). Everything the runtime needs is in it;
the runtime never reads the manifest.

    {
      "spec_version": 1,
      "name": "digits",                      # for messages only
      "device": "jetson-nano",               # for messages only
      "model_dir": "/in/saved_model",        # the native SavedModel (read only)
      "signature": "serving_default",
      "tags": ["serve"],
      "inputs": {"pixels": {"shape": [8, 8, 1], "dtype": "float32"}},
                                             # per-example shapes (no batch dim);
                                             # {} = read them from the signature
      "output_dir": "/out/optimized",        # written atomically, only when the gate passes
      "report_path": "/out/optimized.report.json",   # never inside output_dir
      "log_path": "/out/optimized.log",      # captured C++/Python log (default: beside the report)
      "precision": "fp16",                   # fp32 | fp16 | int8 | native
      "batch_sizes": [1, 8],
      "max_workspace_size_bytes": 1073741824,
      "memory_limit_bytes": 2147483648,
      "minimum_segment_size": 3,
      "maximum_cached_engines": 2,
      "allow_native_fallback": false,
      "allow_version_mismatch": false,
      "calibration_samples": null,           # .npy (one input) or .npz (name -> array); int8 only
      "parity": {"samples": null, "max_abs_error": 0.05,
                 "min_top1_agreement": 0.99, "seed": 0},
      "stack": {"name": "4.4.1", "l4t": "32.4.4", "tensorflow": "2.3.1",
                "tensorrt": "7.1.3", "cuda": "10.2"}
    }

Python 3.6, stdlib only (this module must not import TensorFlow).
"""

import json
import os

SPEC_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8", "native")
TENSORRT_PRECISIONS = ("fp32", "fp16", "int8")
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64",
          "uint8", "uint16", "uint32", "uint64", "bool")


class SpecError(Exception):
    """The spec (or a file it names) is invalid. `problems` lists every one found."""

    def __init__(self, message, problems=None, report_path=None):
        Exception.__init__(self, message)
        self.message = message
        self.problems = list(problems or [])
        self.report_path = report_path


class ParitySpec(object):
    def __init__(self, samples=None, max_abs_error=0.05, min_top1_agreement=0.99, seed=0):
        self.samples = samples
        self.max_abs_error = float(max_abs_error)
        self.min_top1_agreement = float(min_top1_agreement)
        self.seed = int(seed)

    def to_dict(self):
        return {"samples": self.samples, "max_abs_error": self.max_abs_error,
                "min_top1_agreement": self.min_top1_agreement, "seed": self.seed}


class Spec(object):
    """A validated spec. Attributes mirror the JSON keys."""

    def __init__(self, data):
        self.spec_version = data["spec_version"]
        self.name = data.get("name") or "model"
        self.device = data.get("device") or ""
        self.model_dir = data["model_dir"]
        self.signature = data.get("signature") or "serving_default"
        self.tags = list(data.get("tags") or ["serve"])
        self.inputs = dict(data.get("inputs") or {})
        self.output_dir = data["output_dir"]
        self.report_path = data["report_path"]
        self.log_path = data.get("log_path") or default_log_path(self.report_path)
        self.precision = data["precision"]
        self.batch_sizes = sorted(set(int(b) for b in data["batch_sizes"]))
        self.max_workspace_size_bytes = int(data.get("max_workspace_size_bytes", 1 << 30))
        self.memory_limit_bytes = int(data.get("memory_limit_bytes", 2 << 30))
        self.minimum_segment_size = int(data.get("minimum_segment_size", 3))
        self.maximum_cached_engines = int(data.get("maximum_cached_engines") or len(self.batch_sizes))
        self.allow_native_fallback = bool(data.get("allow_native_fallback", False))
        self.allow_version_mismatch = bool(data.get("allow_version_mismatch", False))
        self.calibration_samples = data.get("calibration_samples")
        self.parity = ParitySpec(**(data.get("parity") or {}))
        self.stack = dict(data.get("stack") or {})

    @property
    def uses_tensorrt(self):
        return self.precision in TENSORRT_PRECISIONS

    def to_dict(self):
        return {
            "spec_version": self.spec_version, "name": self.name, "device": self.device,
            "model_dir": self.model_dir, "signature": self.signature, "tags": self.tags,
            "inputs": self.inputs, "output_dir": self.output_dir, "report_path": self.report_path,
            "log_path": self.log_path, "precision": self.precision, "batch_sizes": self.batch_sizes,
            "max_workspace_size_bytes": self.max_workspace_size_bytes,
            "memory_limit_bytes": self.memory_limit_bytes,
            "minimum_segment_size": self.minimum_segment_size,
            "maximum_cached_engines": self.maximum_cached_engines,
            "allow_native_fallback": self.allow_native_fallback,
            "allow_version_mismatch": self.allow_version_mismatch,
            "calibration_samples": self.calibration_samples,
            "parity": self.parity.to_dict(), "stack": self.stack,
        }


def default_log_path(report_path):
    base = report_path[:-len(".report.json")] if report_path.endswith(".report.json") else os.path.splitext(report_path)[0]
    return base + ".log"


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _inside(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def validate(data, check_files=True):
    """Return the list of problems in a spec dict (empty when valid)."""
    problems = []
    if not isinstance(data, dict):
        return ["the spec must be a JSON object"]
    if data.get("spec_version") != SPEC_VERSION:
        problems.append("spec_version: must be %d (got %r); the host and the runtime are different kit versions"
                        % (SPEC_VERSION, data.get("spec_version")))
    for key in ("model_dir", "output_dir", "report_path"):
        v = data.get(key)
        if not isinstance(v, str) or not v:
            problems.append("%s: required, a path" % key)
        elif not os.path.isabs(v):
            problems.append("%s: must be an absolute path (got %r)" % (key, v))
    for key in ("log_path", "calibration_samples"):
        v = data.get(key)
        if v is not None and (not isinstance(v, str) or not os.path.isabs(v)):
            problems.append("%s: must be an absolute path or null (got %r)" % (key, v))
    if data.get("precision") not in PRECISIONS:
        problems.append("precision: must be one of %s (got %r)" % (", ".join(PRECISIONS), data.get("precision")))
    sizes = data.get("batch_sizes")
    if not isinstance(sizes, list) or not sizes or not all(_is_int(b) and b > 0 for b in sizes):
        problems.append("batch_sizes: must be a non-empty list of positive integers (got %r)" % (sizes,))
    for key in ("max_workspace_size_bytes", "memory_limit_bytes", "minimum_segment_size"):
        v = data.get(key)
        if v is not None and not (_is_int(v) and v > 0):
            problems.append("%s: must be a positive integer of bytes/nodes (got %r)" % (key, v))
    v = data.get("maximum_cached_engines")
    if v is not None and not (_is_int(v) and v >= 0):
        problems.append("maximum_cached_engines: must be an integer >= 0, 0 meaning len(batch_sizes) (got %r)" % (v,))
    if isinstance(sizes, list) and _is_int(v) and v > 0 and v < len(set(sizes)):
        problems.append("maximum_cached_engines: %d is fewer than the %d batch sizes; each batch size needs its "
                        "own cached engine" % (v, len(set(sizes))))
    for key in ("allow_native_fallback", "allow_version_mismatch"):
        if key in data and not isinstance(data[key], bool):
            problems.append("%s: must be true or false" % key)
    tags = data.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        problems.append("tags: must be a list of strings")
    if data.get("signature") is not None and not isinstance(data.get("signature"), str):
        problems.append("signature: must be a string")
    problems.extend(_validate_inputs(data.get("inputs")))
    problems.extend(_validate_parity(data.get("parity")))
    stack = data.get("stack")
    if stack is not None and not isinstance(stack, dict):
        problems.append("stack: must be an object of pinned versions")
    if data.get("precision") == "int8" and not data.get("calibration_samples"):
        problems.append("calibration_samples: int8 needs calibration samples (.npy or .npz)")
    if problems:
        return problems

    model_dir, output_dir, report_path = data["model_dir"], data["output_dir"], data["report_path"]
    if _inside(output_dir, model_dir) or _inside(model_dir, output_dir):
        problems.append("output_dir: %s must not be the model directory, inside it, or contain it (%s)"
                        % (output_dir, model_dir))
    if _inside(report_path, output_dir):
        problems.append("report_path: %s must not be inside output_dir %s (the output holds only the model)"
                        % (report_path, output_dir))
    if data.get("log_path") and _inside(data["log_path"], output_dir):
        problems.append("log_path: %s must not be inside output_dir %s" % (data["log_path"], output_dir))
    if check_files:
        if not os.path.isfile(os.path.join(model_dir, "saved_model.pb")):
            problems.append("model_dir: %s is not a SavedModel directory (no saved_model.pb)" % model_dir)
        for key, path in (("calibration_samples", data.get("calibration_samples")),
                          ("parity.samples", (data.get("parity") or {}).get("samples"))):
            if path and not os.path.isfile(path):
                problems.append("%s: file not found: %s" % (key, path))
            elif path and not path.endswith((".npy", ".npz")):
                problems.append("%s: must be a .npy (one input) or .npz (name -> array) file: %s" % (key, path))
    return problems


def _validate_inputs(inputs):
    if inputs is None:
        return []
    if not isinstance(inputs, dict):
        return ["inputs: must be an object name -> {shape, dtype}"]
    problems = []
    for name, spec in sorted(inputs.items()):
        where = "inputs.%s" % name
        if not isinstance(spec, dict):
            problems.append("%s: must be {shape: [...], dtype: ...}" % where)
            continue
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(d is None or (_is_int(d) and d > 0) for d in shape):
            problems.append("%s.shape: must be a list of positive integers (null for unknown), "
                            "per example, without the batch dimension (got %r)" % (where, shape))
        dtype = spec.get("dtype", "float32")
        if dtype not in DTYPES:
            problems.append("%s.dtype: must be one of %s (got %r)" % (where, ", ".join(DTYPES), dtype))
    return problems


def _validate_parity(parity):
    if parity is None:
        return []
    if not isinstance(parity, dict):
        return ["parity: must be an object"]
    problems = []
    unknown = set(parity) - {"samples", "max_abs_error", "min_top1_agreement", "seed"}
    if unknown:
        problems.append("parity: unknown keys %s" % ", ".join(sorted(unknown)))
    if parity.get("samples") is not None and not (isinstance(parity["samples"], str) and os.path.isabs(parity["samples"])):
        problems.append("parity.samples: must be an absolute path or null")
    v = parity.get("max_abs_error", 0.05)
    if not (_is_number(v) and v >= 0):
        problems.append("parity.max_abs_error: must be a number >= 0 (got %r)" % (v,))
    v = parity.get("min_top1_agreement", 0.99)
    if not (_is_number(v) and 0 <= v <= 1):
        problems.append("parity.min_top1_agreement: must be a number between 0 and 1 (got %r)" % (v,))
    if "seed" in parity and not _is_int(parity["seed"]):
        problems.append("parity.seed: must be an integer")
    return problems


def from_dict(data, check_files=True):
    """Validate a spec dict and return a Spec; raise SpecError listing every problem."""
    problems = validate(data, check_files=check_files)
    if problems:
        report_path = data.get("report_path") if isinstance(data, dict) else None
        if not (isinstance(report_path, str) and os.path.isabs(report_path)):
            report_path = None
        raise SpecError("invalid optimize spec: %d problem(s)" % len(problems), problems, report_path)
    return Spec(data)


def load(path, check_files=True):
    """Read and validate a spec file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (IOError, OSError) as e:
        raise SpecError("cannot read the spec %s: %s" % (path, e))
    except ValueError as e:
        raise SpecError("the spec %s is not valid JSON: %s" % (path, e))
    return from_dict(data, check_files=check_files)
