"""`kit doctor --trt-smoke`, inside the builder image on the device:

    python3 -m kit.runtime.trt_smoke [--precision fp16] [--workdir DIR]

Makes a tiny SavedModel (conv -> relu -> conv -> relu -> mean -> dense:
enough ops for one TensorRT segment), then runs kit's own optimizer on it
(python3 -m kit.runtime.optimize, batch size 1, a 256 MiB workspace under a
512 MiB memory limit) and prints ONE JSON line on stdout: whether an engine
was built and saved, what the TF-TRT log parser (kit.runtime.trtlog) found,
and the optimizer's error if any. Exit 0 only when an engine was built and
saved for the batch size and the log shows no fallback or OOM.

Python 3.6 + TensorFlow >= 2.3; nothing stays behind (temporary directory).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

RESULT_PREFIX = "kit-trt-smoke: "


def make_model(path):
    import tensorflow as tf

    init = tf.random.stateless_normal

    class Tiny(tf.Module):
        def __init__(self):
            super(Tiny, self).__init__(name="tiny")
            self.w1 = tf.Variable(init([3, 3, 3, 8], seed=[1, 1]) * 0.3)
            self.w2 = tf.Variable(init([3, 3, 8, 8], seed=[1, 2]) * 0.3)
            self.w3 = tf.Variable(init([8, 4], seed=[1, 3]))

        @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="x")])
        def serve(self, x):
            h = tf.nn.relu(tf.nn.conv2d(x, self.w1, strides=1, padding="SAME"))
            h = tf.nn.relu(tf.nn.conv2d(h, self.w2, strides=1, padding="SAME"))
            return {"y": tf.matmul(tf.reduce_mean(h, axis=[1, 2]), self.w3)}

    module = Tiny()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def run_optimizer_process(spec_path, timeout):
    """kit's optimizer in a fresh process (TF-TRT's log capture needs one): (exit code, stderr text)."""
    proc = subprocess.run([sys.executable, "-m", "kit.runtime.optimize", "--spec", spec_path],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    return proc.returncode, proc.stderr.decode("utf-8", "replace")


def smoke(workdir, precision="fp16", timeout=1800, run_optimizer=run_optimizer_process):
    """Run the optimizer on a tiny model in workdir; returns the result dict.

    run_optimizer(spec_path, timeout) -> (exit code, stderr text); the tests run the optimizer
    in-process with TensorRT mocked."""
    model = make_model(os.path.join(workdir, "tiny"))
    report_path = os.path.join(workdir, "report.json")
    spec = {"spec_version": 1, "name": "trt-smoke", "device": "jetson", "model_dir": model,
            "output_dir": os.path.join(workdir, "out"), "report_path": report_path,
            "log_path": os.path.join(workdir, "optimize.log"),
            "precision": precision, "batch_sizes": [1], "max_workspace_size_bytes": 256 << 20,
            "memory_limit_bytes": 512 << 20, "minimum_segment_size": 3, "allow_native_fallback": False,
            # The smoke proves engines get built and saved here; the versions are reported, not gated.
            "allow_version_mismatch": True}
    spec_path = os.path.join(workdir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    returncode, stderr = run_optimizer(spec_path, timeout)
    report = {}
    if os.path.exists(report_path):
        with open(report_path) as f:
            report = json.load(f)
    findings = report.get("findings") or {}
    audit = report.get("audit") or {}
    error = report.get("error") or (None if returncode == 0 else {"kind": "internal", "message": stderr[-2000:]})
    return {
        "ok": returncode == 0 and report.get("optimization") == "tensorrt" and bool(report.get("engines")),
        "exit_code": returncode,
        "optimization": report.get("optimization"),
        "engines": report.get("engines"),
        "engine_assets": audit.get("engine_assets") if isinstance(audit, dict) else None,
        "findings_summary": findings.get("summary") or [],
        "error": error,
        "environment": report.get("environment") or {},
        "build_seconds": (report.get("timings") or {}).get("build"),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m kit.runtime.trt_smoke")
    parser.add_argument("--precision", default="fp16", choices=("fp32", "fp16"))
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="kit-trt-smoke-")
    try:
        try:
            result = smoke(workdir, args.precision)
        except Exception as e:  # report, never a traceback on the host's screen
            result = {"ok": False, "exit_code": 1, "error": {"kind": "internal", "message": "%s: %s" % (
                type(e).__name__, e)}, "findings_summary": [], "engines": None, "optimization": None}
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
