"""The host-side gate of `kit build` on optimizer reports.

Reports for TensorRT runs cannot be produced here (no Jetson, no TensorRT):
those fixtures are the runtime's own report skeleton (kit.runtime.report)
filled with findings that kit.runtime.trtlog parses from log lines in the
exact format TF-TRT prints (the fact sheet's lines). Native reports are
checked for real in tests/integration/test_build.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.build import gate as build
from kit.build.report import OptimizeReport
from kit.build.workspace import OptimizeOutput
from kit.errors import OptimizeError
from kit.manifest.load import ImageSpec, ModelManifest, ModelSource, Optimize, Serve, Target
from kit.runtime import report as report_mod
from kit.runtime import trtlog

FALLBACK_LOG = """\
2020-12-01 10:00:01.000000: I tensorflow/compiler/tf2tensorrt/segment/segment.cc:460] There are 3 ops of 2 different types in the graph that are not converted to TensorRT: Identity, NoOp
2020-12-01 10:00:01.000001: I tensorflow/compiler/tf2tensorrt/convert/convert_graph.cc:636] Number of TensorRT candidate segments: 1
2020-12-01 10:00:02.000000: I tensorflow/compiler/tf2tensorrt/kernels/trt_engine_op.cc:1135] Building a new TensorRT engine for StatefulPartitionedCall/TRTEngineOp_0_0 with input shapes: [[8,8,8,1]]
2020-12-01 10:00:09.000000: W tensorflow/compiler/tf2tensorrt/kernels/trt_engine_op.cc:1013] Engine creation for StatefulPartitionedCall/TRTEngineOp_0_0 failed. The native segment will be used instead. Reason: Internal: Failed to build TensorRT engine
"""


def manifest(tmp_path: Path, device="jetson-nano", precision="fp16", allow_native_fallback=False) -> ModelManifest:
    return ModelManifest(
        file=tmp_path / "kit.yaml", name="m", version="1.0.0", model=ModelSource(path=tmp_path / "model"),
        target=Target(device=device, jetpack=None if device == "cpu" else "4.4.1"),
        optimize=Optimize(precision=precision, batch_sizes=(1, 8), allow_native_fallback=allow_native_fallback),
        image=ImageSpec(repository="example.com/m"), serve=Serve(),
    )


def report(optimization="tensorrt", engines=2, log="", passed=True, status="ok", error=None) -> dict:
    r = report_mod.new_report({"name": "m", "device": "jetson-nano", "output_dir": "/out/model",
                               "log_path": "/out/optimize.log", "precision": "fp16", "batch_sizes": [1, 8]})
    audit = {"engines": [{"name": f"TRTEngineOp_0_{i}", "built_batch_sizes": [1, 8]} for i in range(engines or 0)]}
    r.update(optimization=optimization, engines=engines, status=status, exit_code=0 if status == "ok" else 5,
             error=error, findings=trtlog.parse(log), audit=audit,
             native_reason="precision native requested" if optimization == "native" else None,
             gate={"passed": passed, "reasons": [] if passed else ["a fallback to native TensorFlow"], "checks": []},
             output={"path": "/out/model", "written": status == "ok"})
    return r


def test_a_proven_tensorrt_report_passes(tmp_path):
    assert build.gate_problems(OptimizeReport.from_dict(report()), manifest(tmp_path)) == []


def test_fallbacks_in_the_log_refuse_even_if_the_report_says_passed(tmp_path):
    r = report(log=FALLBACK_LOG, passed=True)
    assert r["findings"]["native_fallbacks"], "trtlog must see the fallback line"
    problems = build.gate_problems(OptimizeReport.from_dict(r), manifest(tmp_path))
    assert problems == ["1 fallback(s) to native TensorFlow in the optimizer's log"]


def test_zero_engines_refuse(tmp_path):
    problems = build.gate_problems(OptimizeReport.from_dict(report(engines=0)), manifest(tmp_path))
    assert any("0 TensorRT engines" in p for p in problems)


def test_a_failed_run_refuses_with_its_reasons(tmp_path):
    r = report(status="failed", passed=False, log=FALLBACK_LOG, optimization=None, engines=None,
               error={"kind": "gate", "message": "not proven", "hint": "lower max_workspace_size", "problems": ["x"]})
    problems = build.gate_problems(OptimizeReport.from_dict(r), manifest(tmp_path))
    assert problems[0].startswith("the optimizer failed (exit 5): not proven")
    assert build.gate_hint(OptimizeReport.from_dict(r), manifest(tmp_path)) == "lower max_workspace_size"


def test_native_output_refused_unless_asked_or_allowed(tmp_path):
    native = report(optimization="native", engines=0)
    assert any(p.startswith("the output is native TensorFlow") for p in build.gate_problems(OptimizeReport.from_dict(native), manifest(tmp_path)))
    assert build.gate_problems(OptimizeReport.from_dict(native), manifest(tmp_path, allow_native_fallback=True)) == []
    assert build.gate_problems(OptimizeReport.from_dict(native), manifest(tmp_path, device="cpu", precision="native")) == []


def test_gate_raises_exit_5_naming_the_kept_report_and_log(tmp_path):
    out = tmp_path / "optimize.failed"
    with pytest.raises(OptimizeError) as e:
        build.gate(manifest(tmp_path), OptimizeReport.from_dict(report(log=FALLBACK_LOG)), OptimizeOutput.in_dir(out))
    assert e.value.exit_code == 5
    assert f"report: {out / 'report.json'}" in e.value.details
    assert f"log:    {out / 'optimize.log'}" in e.value.details
    with pytest.raises(OptimizeError) as e:
        build.gate(manifest(tmp_path), None, OptimizeOutput.in_dir(out))
    assert "no readable report" in e.value.message


def test_a_batch_size_without_engine_refuses(tmp_path):
    r = report()
    r["audit"]["engines"][0]["built_batch_sizes"] = [1]
    problems = build.gate_problems(OptimizeReport.from_dict(r), manifest(tmp_path))
    assert any("no built engine for batch size(s) [8]" in p for p in problems)
