"""The optimizer's report.json read on the host (kit/build/report.py), from the runtime's own skeleton."""

from __future__ import annotations

import json

from kit.build.report import OptimizeReport
from kit.runtime import report as report_mod
from kit.runtime import trtlog

FALLBACK = ("2020-12-01 10:00:09.000000: W tensorflow/compiler/tf2tensorrt/kernels/trt_engine_op.cc:1013] Engine "
            "creation for StatefulPartitionedCall/TRTEngineOp_0_0 failed. The native segment will be used instead. "
            "Reason: Internal: Failed to build TensorRT engine\n")


def runtime_report(tmp_path, **fields):
    """A report as kit.runtime.report writes it (skeleton, finish, atomic write)."""
    r = report_mod.new_report({"name": "m", "device": "jetson-nano", "output_dir": "/out/model",
                               "log_path": "/out/optimize.log", "precision": "fp16", "batch_sizes": [1, 8]})
    r.update(fields)
    report_mod.finish(r, 0)
    return report_mod.write(r, str(tmp_path / "report.json"))


def test_reads_what_the_runtime_writes(tmp_path):
    path = runtime_report(
        tmp_path, optimization="tensorrt", engines=1, findings=trtlog.parse(FALLBACK),
        audit={"engines": [{"name": "TRTEngineOp_0_0", "built_batch_sizes": [1, 8]}], "coverage_percent": 97.5},
        gate={"passed": True, "reasons": [], "checks": []}, output={"path": "/out/model", "written": True},
        parity={"passed": True, "max_abs_error": 0.01, "top1_agreement": 1.0, "source": "samples"},
        timings={"convert": 1.5, "total": 3.0})
    r = OptimizeReport.read(path)
    assert r.succeeded and r.schema_version == 1 and r.optimization == "tensorrt" and r.engines == 1
    assert r.batch_sizes == (1, 8) and r.precision == "fp16" and r.output_written and r.gate_passed
    assert r.engine_batch_sizes == {"TRTEngineOp_0_0": [1, 8]} and r.coverage_percent == 97.5
    assert len(r.native_fallbacks) == 1 and r.oom == ()
    assert r.parity.as_dict() == {"passed": True, "max_abs_error": 0.01, "top1_agreement": 1.0, "source": "samples"}
    assert r.timings == {"convert": 1.5, "total": 3.0} and r.peak_rss_bytes > 0
    assert r.environment.tensorflow is None and r.finished_at.endswith("Z")


def test_missing_or_not_an_object_reads_as_none(tmp_path):
    assert OptimizeReport.read(tmp_path / "absent.json") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    assert OptimizeReport.read(tmp_path / "list.json") is None
    (tmp_path / "broken.json").write_text("{")
    assert OptimizeReport.read(tmp_path / "broken.json") is None


def test_mistyped_values_read_as_absent(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"gate": "yes", "audit": {"engines": "many"}, "batch_sizes": 8,
                                                 "error": "boom", "findings": None, "output": []}))
    r = OptimizeReport.read(tmp_path / "r.json")
    assert r.gate_passed is None and r.audit_engines == () and r.batch_sizes is None
    assert r.error is None and r.native_fallbacks == () and not r.output_written and not r.succeeded
