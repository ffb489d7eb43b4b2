"""The on-device TF-TRT optimizer that cannot fail silently.

    python3 -m kit.runtime.optimize --spec SPEC.json

Reads the spec (kit/runtime/spec.py), then:

  preflight  memory rule (before any TensorFlow work), TensorRT probe in a
             subprocess, TensorFlow + GPU + memory limit, versions vs the
             pinned stack
  inputs     the signature's inputs, resolved against the spec; feeds per batch size
  convert    TrtGraphConverterV2 through kit.runtime.trt_shim (TF 2.3 .. 2.17)
  build      ONE input function yielding one batch per batch size
  save       into a temp dir beside output_dir (`.<name>.kit-tmp-<pid>`)
  audit      TRTEngineOps, engine assets and their input shapes
  parity     native vs optimized on the same inputs at every batch size
  gate       engines for every batch size, no fallback/OOM in the log, parity
  publish    rename the temp dir to output_dir -- only when the gate passed
  report     report.json at report_path (never inside output_dir)

While it runs, file descriptor 2 is captured into log_path and tee'd to the
real stderr (kit.runtime.trtlog); the TF-TRT verbose log environment is set
before TensorFlow is imported, so run it in a fresh process. TF_GPU_ALLOCATOR
is never set: TensorFlow's BFC allocator, which the memory limit sizes, must
be the one in use (see kit.runtime.preflight.allocator_check). Progress lines on stderr start with "kit: ". Nothing is
printed on stdout.

Without TensorRT (or without a GPU) the run fails with exit code 3 and a
report saying what was probed -- unless precision is native or
allow_native_fallback is true: then the native SavedModel is copied to
output_dir and the report says `"optimization": "native"` and why
(`native_reason`). A native model is never passed off as optimized. With
allow_native_fallback a TensorRT attempt that fails the gate is also
replaced by the native model (the attempt is kept in the report).

Exit codes (the contract with the host, kit/build/optimizer.py):

  0    the output is published: TensorRT engines proven, or native as
       requested/allowed (report "optimization" says which)
  1    unexpected error in kit itself (report error.kind "internal")
  2    invalid spec or inputs: a field, a file, an unknown input dimension
       (error.kind "spec" or "inputs"; report written when report_path was readable)
  3    preflight failed: TensorRT absent, no GPU, memory rule, version mismatch
  5    not proven: conversion raised, zero engines, a batch size without a
       built engine, a fallback or OOM in the log, parity out of bounds
  130  interrupted (SIGINT/SIGTERM); the temp dir is removed
A SIGKILL leaves output_dir untouched (a stale `.<name>.kit-tmp-<pid>` dir
beside it is removed by the next run). On any non-zero exit nothing new is
written at output_dir.

Test-only hook: KIT_RUNTIME_TEST_PAUSE="save:SECONDS" sleeps after the model
has been written into the temp dir and before it is audited and published,
printing "kit: test pause at save"; the tests SIGKILL the process there.

Python 3.6; TensorFlow >= 2.3, numpy, stdlib only.
"""

import argparse
import gc
import json
import logging
import os
import re
import shutil
import signal
import sys
import time
import traceback

from kit.runtime import audit as audit_mod
from kit.runtime import compat
from kit.runtime import gate as gate_mod
from kit.runtime import parity as parity_mod
from kit.runtime import preflight
from kit.runtime import report as report_mod
from kit.runtime import signature as sig_mod
from kit.runtime import spec as spec_mod
from kit.runtime import trt_shim
from kit.runtime import trtlog

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_SPEC = 2
EXIT_PREFLIGHT = 3
EXIT_GATE = 5
EXIT_INTERRUPTED = 130

TEST_PAUSE_ENV = "KIT_RUNTIME_TEST_PAUSE"
TMP_MARK = ".kit-tmp-"
OLD_MARK = ".kit-old-"


class Failure(Exception):
    """A failure with a kind, an exit code and words for the user."""

    def __init__(self, kind, exit_code, message, hint=None, problems=None):
        Exception.__init__(self, message)
        self.kind = kind
        self.exit_code = exit_code
        self.message = message
        self.hint = hint
        self.problems = list(problems or [])


class Interrupted(Exception):
    pass


def say(message):
    sys.stderr.write(trtlog.OWN_PREFIX + message + "\n")
    sys.stderr.flush()


def prepare_environment(environ=None):
    """Environment TensorFlow must see at import: log verbosity (the allocator is left to TensorFlow)."""
    environ = os.environ if environ is None else environ
    return trtlog.set_log_env(environ)


def _test_pause(phase):
    value = os.environ.get(TEST_PAUSE_ENV, "")
    m = re.match(r"^(\w+):(\d+(?:\.\d+)?)$", value)
    if m and m.group(1) == phase:
        say("test pause at %s for %s s (%s)" % (phase, m.group(2), TEST_PAUSE_ENV))
        time.sleep(float(m.group(2)))


# ---- atomic output -----------------------------------------------------------------------

def _pid_alive(pid):
    if pid == os.getpid():
        return False  # ours from an earlier container run (pids restart there); we have not made one yet
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == 1  # EPERM: exists, someone else's
    return True


def clean_stale(output_dir):
    """Remove temp/old dirs beside output_dir left by killed runs. Returns what was removed."""
    parent, base = os.path.split(output_dir.rstrip(os.sep))
    removed = []
    if not os.path.isdir(parent):
        return removed
    pattern = re.compile(r"^\.%s(%s|%s)(\d+)$" % (re.escape(base), re.escape(TMP_MARK), re.escape(OLD_MARK)))
    for name in os.listdir(parent):
        m = pattern.match(name)
        if m and not _pid_alive(int(m.group(2))):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(name)
    return removed


def temp_path(output_dir, mark=TMP_MARK):
    parent, base = os.path.split(output_dir.rstrip(os.sep))
    return os.path.join(parent, ".%s%s%d" % (base, mark, os.getpid()))


def publish(tmp, output_dir):
    """Replace output_dir with tmp by renames (same filesystem)."""
    old = None
    if os.path.lexists(output_dir):
        old = temp_path(output_dir, OLD_MARK)
        os.rename(output_dir, old)
    os.rename(tmp, output_dir)
    if old:
        if os.path.isdir(old) and not os.path.islink(old):
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.remove(old)


def _remove(path):
    if path and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


# ---- the run -----------------------------------------------------------------------------

class Optimizer(object):
    def __init__(self, spec, report, capture):
        self.spec = spec
        self.report = report
        self.capture = capture
        self.tmp = None
        self.tf = None
        self.probe = None

    # phases are timed into report["timings"]
    def timed(self, name, fn, *args, **kwargs):
        start = time.time()
        say("%s ..." % name)
        try:
            return fn(*args, **kwargs)
        finally:
            self.report["timings"][name] = round(time.time() - start, 3)

    def run(self):
        s = self.spec
        removed = clean_stale(s.output_dir)
        if removed:
            say("removed stale temp dirs from killed runs: %s" % ", ".join(removed))
        parent = os.path.dirname(s.output_dir.rstrip(os.sep))
        if not os.path.isdir(parent):
            os.makedirs(parent)

        native_reason = None
        if s.precision == "native":
            native_reason = "precision native requested" + (" (device %s)" % s.device if s.device else "")
        self.timed("preflight", self.static_preflight)
        if s.uses_tensorrt:
            native_reason = self.timed("probe", self.probe_tensorrt)
        native_reason = self.timed("tensorflow_import", self.import_tensorflow, native_reason)
        inputs, feeds, source = self.timed("inputs", self.resolve_inputs)

        if native_reason is None:
            return self.tensorrt_path(inputs, feeds, source)
        return self.native_path(feeds, source, native_reason)

    # -- preflight
    def static_preflight(self):
        s, pf = self.spec, self.report["preflight"]
        meminfo = preflight.read_meminfo()
        pf["meminfo"] = dict((k, meminfo[k]) for k in ("MemTotal", "MemAvailable", "MemFree", "SwapTotal", "SwapFree")
                             if k in meminfo)
        pf["environment"] = dict((k, os.environ.get(k)) for k in
                                 ("TF_GPU_ALLOCATOR", "TF_CPP_MIN_LOG_LEVEL", "TF_CPP_VMODULE",
                                  "TF_TRT_ALLOW_ENGINE_NATIVE_SEGMENT_EXECUTION") if k in os.environ)
        if not s.uses_tensorrt:
            return
        checks = preflight.memory_rule(s.max_workspace_size_bytes, s.memory_limit_bytes, meminfo)
        checks.append(preflight.allocator_check(os.environ))
        pf["checks"].extend(checks)
        bad = [c for c in checks if not c["ok"]]
        if bad:
            raise Failure("preflight", EXIT_PREFLIGHT,
                          "memory rule max_workspace_size < memory_limit < memory available is broken: "
                          + "; ".join(c["detail"] for c in bad), hint=bad[0].get("hint"))

    def probe_tensorrt(self):
        s, r = self.spec, self.report
        probe = preflight.probe_tensorrt()
        self.probe = probe
        r["preflight"]["tensorrt_probe"] = probe
        r["environment"].update(tensorrt_enabled=probe["enabled"], tensorrt_linked=probe["linked"],
                                tensorrt=probe["loaded"])
        r["preflight"]["checks"].append(preflight.check("tensorrt", probe["available"], probe["summary"]))
        if probe["available"]:
            say("TensorRT linked %s, loaded %s" % (probe["linked"], probe["loaded"]))
            return None
        message = preflight.tensorrt_unavailable_message(probe)
        if s.allow_native_fallback:
            say(message)
            say("allow_native_fallback is set: the output will be native TensorFlow, labelled as such")
            return "TensorRT not available: " + probe["summary"]
        raise Failure("preflight", EXIT_PREFLIGHT, message,
                      hint="run the optimizer on the Jetson in the builder image (docker run --runtime nvidia), "
                           "or set optimize.allow_native_fallback: true to ship native TensorFlow labelled as such, "
                           "or optimize.precision: native")

    def import_tensorflow(self, native_reason):
        s, r = self.spec, self.report
        import numpy as np
        import tensorflow as tf

        self.tf = tf
        if native_reason is None:
            tf.get_logger().setLevel(logging.INFO)  # TF-TRT's python INFO lines (cache misses, versions)
        env = r["environment"]
        env.update(tensorflow=tf.__version__, numpy=np.__version__, l4t=preflight.read_l4t_release())
        env.update(preflight.tensorflow_build_info(tf))
        if env["l4t"] and env["l4t"] == s.stack.get("l4t"):
            env["jetpack"] = s.stack.get("name")
        devices = preflight.tensorflow_devices(tf, s.memory_limit_bytes)
        r["preflight"]["gpus"] = devices["gpus"]
        r["preflight"]["memory_limit_applied"] = devices["memory_limit_applied"]
        if native_reason is None:
            ok = bool(devices["gpus"])
            detail = "GPUs visible to TensorFlow: %s" % (", ".join(devices["gpus"]) or "none")
            r["preflight"]["checks"].append(preflight.check("gpu", ok, detail))
            if not ok:
                message = ("no GPU is visible to TensorFlow %s; TensorRT engines need one"
                           % preflight.where_am_i())
                if not s.allow_native_fallback:
                    raise Failure("preflight", EXIT_PREFLIGHT, message,
                                  hint="run the container with --runtime nvidia on the Jetson")
                native_reason = message
        seen = {"tensorflow": tf.__version__, "tensorrt": (self.probe or {}).get("loaded"),
                "l4t": r["environment"]["l4t"]}
        checks = preflight.version_checks(s.stack, seen, check_tensorrt=native_reason is None)
        bad = [c for c in checks if not c["ok"]]
        for c in checks:
            c["fatal"] = not c["ok"] and not s.allow_version_mismatch
        r["preflight"]["checks"].extend(checks)
        if bad and not s.allow_version_mismatch:
            raise Failure("preflight", EXIT_PREFLIGHT,
                          "versions differ from the pinned stack %s: %s"
                          % (s.stack.get("name") or "", "; ".join(c["detail"] for c in bad)),
                          hint="run in the image built for this stack, or set allow_version_mismatch "
                               "(kit optimize --allow-version-mismatch) to proceed anyway")
        for c in bad:
            say("warning: %s (allowed by allow_version_mismatch)" % c["detail"])
        return native_reason

    # -- inputs
    def resolve_inputs(self):
        s, r = self.spec, self.report
        try:
            saved_model = sig_mod.read_saved_model(s.model_dir)
            compat.check(self.tf.__version__, s.model_dir, sig_mod.meta_graph(saved_model, s.tags))
            sig = sig_mod.read_signature(s.model_dir, s.signature, s.tags, saved_model)
            inputs = sig_mod.resolve_inputs(sig["inputs"], s.inputs, s.batch_sizes, has_samples=bool(s.parity.samples))
            samples = sig_mod.load_samples(s.parity.samples, inputs) if s.parity.samples else None
        except sig_mod.InputError as e:
            raise Failure("inputs", EXIT_SPEC, str(e), problems=getattr(e, "problems", None))
        except compat.ModelTooNew as e:
            raise Failure("model", EXIT_SPEC, e.message, hint=e.hint, problems=e.missing)
        r["inputs"] = inputs
        r["signature_outputs"] = sig["outputs"]
        feeds = sig_mod.feeds(inputs, s.batch_sizes, samples, s.parity.seed)
        source = ("samples %s" % s.parity.samples) if samples else ("random (seed %d)" % s.parity.seed)
        return inputs, feeds, source

    def input_order(self, inputs, converter=None):
        """The positional order build()/calibration must yield: from the converter's own load of the model
        (signature.converter_input_order), else from a load of ours (signature.positional_order)."""
        s = self.spec
        order = sig_mod.converter_input_order(converter, s.signature, list(inputs)) if converter else None
        source = "converter"
        if order is None:
            source = "own load"
            try:
                order = sig_mod.positional_order(self.tf, s.model_dir, s.signature, s.tags, list(inputs))
            except sig_mod.InputError as e:
                raise Failure("inputs", EXIT_SPEC, str(e))
        self.report["input_order"] = order
        self.report["input_order_source"] = source
        if order != sorted(order):
            say("inputs are fed in the signature function's order %s (not sorted)" % ", ".join(order))
        return order

    def calibration_input_fn(self, inputs, converter):
        s = self.spec
        try:
            data = sig_mod.load_samples(s.calibration_samples, inputs)
        except sig_mod.InputError as e:
            raise Failure("inputs", EXIT_SPEC, "calibration samples: %s" % e)
        rows = len(next(iter(data.values())))
        batch = max(s.batch_sizes)

        def calibration_input_fn():
            order = self.input_order(inputs, converter)  # inside convert(), once the converter has loaded the model
            for start in range(0, max(rows - batch + 1, 1), batch):
                yield sig_mod.ordered(sig_mod.take_rows(data, batch, start), order)

        return calibration_input_fn

    # -- TensorRT
    def tensorrt_path(self, inputs, feeds, source):
        s, r = self.spec, self.report
        params = trt_shim.conversion_parameters(s.precision, s.max_workspace_size_bytes,
                                                s.minimum_segment_size, s.maximum_cached_engines)
        self.tmp = temp_path(s.output_dir)
        try:
            trt = trt_shim.import_trt()
            converter, kwargs, api = trt_shim.make_converter(trt, s.model_dir, s.signature, s.tags, params)
            r["parameters"] = dict(params, api=api, converter_arguments=trt_shim.describe_arguments(kwargs))
            say("TF-TRT %s via %s" % (params["precision_mode"], api))
            if s.precision == "int8":
                # Passed inline: no local and no closure keeps `converter` alive past the `del` below.
                self.timed("convert", converter.convert, calibration_input_fn=self.calibration_input_fn(inputs, converter))
            else:
                self.timed("convert", converter.convert)
            order = self.timed("input_order", self.input_order, inputs, converter)

            def build_input_fn():
                # One batch per batch size, ascending: an implicit-batch engine built for 8 would also
                # serve 1, so building 8 first would leave no batch-1 engine to prove.
                for b in s.batch_sizes:
                    yield sig_mod.ordered(feeds[b], order)

            self.timed("build", converter.build, input_fn=build_input_fn)
            self.timed("save", converter.save, self.tmp)
            del converter
            gc.collect()
        except (Failure, Interrupted):
            raise
        except Exception as e:
            return self.tensorrt_failed("TF-TRT conversion failed: %s: %s" % (type(e).__name__, e), feeds, source,
                                        tb=traceback.format_exc())
        _test_pause("save")
        audit = self.timed("audit", audit_mod.audit_saved_model, self.tmp, s.signature, s.tags)
        r["audit"] = audit
        say(audit["summary"])
        parity = self.timed("parity", self.parity, feeds, source)
        r["parity"] = parity
        findings = self.findings()
        gate = gate_mod.evaluate_tensorrt(s.batch_sizes, audit, findings, parity)
        r["gate"] = gate
        if gate["passed"]:
            self.timed("publish", publish, self.tmp, s.output_dir)
            self.tmp = None
            r["optimization"] = "tensorrt"
            r["engines"] = len(audit["engines"])
            r["output"]["written"] = True
            say("gate passed: %d engine op(s) built for batch sizes %s; published %s"
                % (len(audit["engines"]), s.batch_sizes, s.output_dir))
            return EXIT_OK
        return self.tensorrt_failed("the TF-TRT optimization failed the gate: " + "; ".join(gate["reasons"]),
                                    feeds, source)

    def tensorrt_failed(self, message, feeds, source, tb=None):
        s, r = self.spec, self.report
        _remove(self.tmp)
        self.tmp = None
        if tb:
            sys.stderr.write(tb)
        findings = r["findings"] or self.findings()
        if not s.allow_native_fallback:
            raise Failure("gate", EXIT_GATE, message,
                          hint="see %s and the findings in the report; common causes: max_workspace_size too close "
                               "to memory_limit, unsupported ops, batch sizes the build did not cover" % s.log_path)
        say(message)
        say("allow_native_fallback is set: shipping native TensorFlow instead, labelled as such")
        r["attempt"] = {"message": message, "findings_summary": findings.get("summary"),
                        "audit_summary": (r["audit"] or {}).get("summary"), "gate": r["gate"],
                        "parameters": r["parameters"]}
        r["gate"] = None
        r["audit"] = None
        r["parity"] = None
        return self.native_path(feeds, source, message)

    # -- native
    def native_path(self, feeds, source, native_reason):
        s, r = self.spec, self.report
        self.tmp = temp_path(s.output_dir)
        self.timed("copy", shutil.copytree, s.model_dir, self.tmp, symlinks=False)
        _test_pause("save")
        audit = self.timed("audit", audit_mod.audit_saved_model, self.tmp, s.signature, s.tags)
        r["audit"] = audit
        parity = self.timed("parity", self.parity, feeds, source)
        r["parity"] = parity
        self.findings()
        gate = gate_mod.evaluate_native(audit, parity)
        r["gate"] = gate
        if not gate["passed"]:
            raise Failure("gate", EXIT_GATE, "the native output failed its checks: " + "; ".join(gate["reasons"]))
        self.timed("publish", publish, self.tmp, s.output_dir)
        self.tmp = None
        r["optimization"] = "native"
        r["native_reason"] = native_reason
        r["engines"] = 0
        r["output"]["written"] = True
        say("output is NATIVE TensorFlow (%s): %s" % (native_reason, s.output_dir))
        return EXIT_OK

    def parity(self, feeds, source):
        """Parity of the temp output against the input model; a model that cannot run fails parity."""
        s = self.spec
        try:
            return parity_mod.run_parity(self.tf, s.model_dir, self.tmp, s.signature, s.tags, feeds,
                                         s.parity.max_abs_error, s.parity.min_top1_agreement, source)
        except Exception as e:
            sys.stderr.write(traceback.format_exc())
            return {"passed": False, "source": source, "max_abs_error_limit": s.parity.max_abs_error,
                    "min_top1_agreement_limit": s.parity.min_top1_agreement, "max_abs_error": None,
                    "top1_agreement": None, "batches": [],
                    "reasons": ["the models could not be run side by side: %s: %s" % (type(e).__name__, e)]}

    def findings(self):
        self.capture.sync()
        f = trtlog.parse_file(self.spec.log_path)
        f["summary"] = trtlog.summarize(f)
        self.report["findings"] = f
        return f

    def cleanup(self):
        _remove(self.tmp)
        self.tmp = None


def _raise_interrupted(signum, frame):
    raise Interrupted("interrupted by %s" % signal.Signals(signum).name)


def _read_json_quietly(path):
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (IOError, OSError, ValueError):
        return None


def execute(spec_path):
    """Run one optimization; returns the exit code. report.json is written where the spec says."""
    started = time.time()
    env = prepare_environment()
    try:
        spec = spec_mod.load(spec_path)
    except spec_mod.SpecError as e:
        say("invalid spec %s: %s" % (spec_path, e.message))
        for p in e.problems:
            say("  " + p)
        if e.report_path:
            rep = report_mod.new_report(_read_json_quietly(spec_path))
            rep["error"] = {"kind": "spec", "message": e.message, "hint": None, "problems": e.problems}
            rep["timings"]["total"] = round(time.time() - started, 3)
            report_mod.write(report_mod.finish(rep, EXIT_SPEC), e.report_path)
        return EXIT_SPEC

    rep = report_mod.new_report(spec.to_dict())
    rep["preflight"]["environment"] = env
    capture = trtlog.StderrCapture(spec.log_path).start()
    opt = Optimizer(spec, rep, capture)
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    say("optimizing %s (%s, batch sizes %s) -> %s" % (spec.model_dir, spec.precision, spec.batch_sizes,
                                                     spec.output_dir))
    try:
        code = opt.run()
    except Failure as f:
        code = f.exit_code
        rep["error"] = {"kind": f.kind, "message": f.message, "hint": f.hint, "problems": f.problems}
        say("FAILED (%s): %s" % (f.kind, f.message))
        if f.hint:
            say("fix: %s" % f.hint)
    except (KeyboardInterrupt, Interrupted) as e:
        code = EXIT_INTERRUPTED
        rep["error"] = {"kind": "interrupted", "message": str(e) or "interrupted", "hint": None, "problems": []}
    except Exception as e:
        code = EXIT_INTERNAL
        sys.stderr.write(traceback.format_exc())
        rep["error"] = {"kind": "internal", "message": "%s: %s" % (type(e).__name__, e),
                        "hint": "this is a bug in kit; the traceback is in %s" % spec.log_path, "problems": []}
    finally:
        opt.cleanup()
        signal.signal(signal.SIGTERM, previous)
    if rep["findings"] is None:
        try:
            opt.findings()
        except (IOError, OSError):
            pass
    capture.stop()
    rep["timings"]["total"] = round(time.time() - started, 3)
    report_mod.write(report_mod.finish(rep, code), spec.report_path)
    say("report: %s (exit %d)" % (spec.report_path, code))
    return code


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m kit.runtime.optimize",
                                     description="Build TF-TRT engines on this device, prove them, write report.json.")
    parser.add_argument("--spec", required=True, help="the optimize spec (JSON) the host wrote")
    args = parser.parse_args(argv)
    return execute(args.spec)


if __name__ == "__main__":
    sys.exit(main())
