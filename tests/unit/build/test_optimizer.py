"""Host side: manifest -> spec, exit codes -> errors, report re-check, `kit optimize --local`."""

import json
from pathlib import Path

import pytest
from rich.console import Console

from _digits import trained_digits_example
from kit.build import gate, optimizer
from kit.build.report import OptimizeReport
from kit.build.workspace import OptimizeOutput, Workspace
from kit.cli.views.build import render_optimize
from kit.cli import main
from kit.errors import KitError, ManifestError, OptimizeError, PreflightError
from kit.manifest.load import load_model
from kit.runtime import spec as runtime_spec
from testkit import manifests

pytestmark = pytest.mark.tf  # needs TensorFlow (deselected on the Python 3.8 host run)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return trained_digits_example(tmp_path_factory)


def nano_manifest(directory: Path, model: Path) -> Path:
    """A Jetson Nano fp16 manifest for the digits model (TensorRT is absent on this machine)."""
    return manifests.write_model(
        directory / "nano.yaml", manifests.model_doc(**manifests.NANO),
        metadata={"name": "digits-nano", "version": "0.1.0"},
        model={"path": str(model), "inputs": {"pixels": {"shape": [8, 8, 1], "dtype": "float32"}}},
        optimize={"batch_sizes": [1, 8]}, image={"repository": "127.0.0.1:5000/kit/digits"})


def test_local_spec_is_valid_for_the_runtime(digits, tmp_path):
    m = load_model(digits / "digits.yaml")
    spec = optimizer.write_spec(m, m.model.path, tmp_path / "out" / "optimized", path=tmp_path / "spec.json")
    assert json.loads((tmp_path / "spec.json").read_text()) == spec
    assert runtime_spec.validate(spec) == []
    assert spec["precision"] == "native" and spec["batch_sizes"] == [1, 8]
    assert spec["inputs"] == {"pixels": {"shape": [8, 8, 1], "dtype": "float32"}}
    assert spec["parity"]["samples"] == str(digits / "digits" / "parity.npy")
    assert spec["report_path"] == str(tmp_path / "out" / "optimized.report.json")
    assert spec["stack"]["name"] == "cpu" and spec["stack"]["tensorflow"] == m.stack.tensorflow


def test_container_spec_uses_the_given_paths(digits, tmp_path):
    m = load_model(nano_manifest(tmp_path, digits / "digits" / "saved_model"))
    spec = optimizer.spec_for(m, model_dir="/in/saved_model", output_dir="/out/model", report_path="/out/report.json",
                              log_path="/out/optimize.log", calibration_samples=None, parity_samples=None)
    assert runtime_spec.validate(spec, check_files=False) == []
    assert (spec["model_dir"], spec["output_dir"], spec["report_path"], spec["log_path"]) == (
        "/in/saved_model", "/out/model", "/out/report.json", "/out/optimize.log")
    assert spec["parity"]["samples"] is None and spec["calibration_samples"] is None
    assert spec["precision"] == "fp16" and spec["max_workspace_size_bytes"] == 1 << 30
    assert spec["memory_limit_bytes"] == 2 << 30 and spec["maximum_cached_engines"] == 2
    assert spec["stack"] == {"name": "4.4.1", "l4t": "32.4.4", "tensorflow": "2.3.1", "tensorrt": "7.1.3",
                             "cuda": "10.2", "cudnn": "8.0", "python": "3.6"}


def test_exit_codes_map_to_errors(tmp_path):
    report = {"error": {"message": "TensorRT is not available in this container: ...", "hint": "use the device",
                        "problems": []}}
    for code, cls in ((2, ManifestError), (3, PreflightError), (5, OptimizeError)):
        with pytest.raises(cls) as e:
            optimizer.raise_for_exit(code, OptimizeReport.from_dict(report), "r.json", "o.log")
        assert e.value.message == report["error"]["message"] and e.value.hint == "use the device"
        assert e.value.exit_code == code and "report: r.json" in e.value.details
    with pytest.raises(KitError, match="the optimizer failed: boom") as e:
        optimizer.raise_for_exit(1, OptimizeReport.from_dict({"error": {"message": "boom"}}), "r", "l")
    assert type(e.value) is KitError
    with pytest.raises(KitError, match="killed by SIGKILL.*OOM killer"):
        optimizer.raise_for_exit(-9, None, "r", "l")
    with pytest.raises(KitError, match="wrote no readable report"):
        optimizer.raise_for_exit(5, None, "r", "l")
    with pytest.raises(KeyboardInterrupt):
        optimizer.raise_for_exit(130, None, "r", "l")
    assert optimizer.raise_for_exit(0, None, "r", "l") is None


def _ok_report(**kw):
    r = {"schema_version": 1, "status": "ok", "exit_code": 0, "output": {"written": True}, "batch_sizes": [1, 8],
         "gate": {"passed": True, "reasons": []}, "optimization": "tensorrt", "engines": 1,
         "audit": {"engines": [{"name": "TRTEngineOp_0_0", "built_batch_sizes": [1, 8]}]}}
    r.update(kw)
    return r


def test_host_recheck_of_reports(digits, tmp_path):
    nano = load_model(nano_manifest(tmp_path, digits / "digits" / "saved_model"))
    assert gate.gate_problems(OptimizeReport.from_dict(_ok_report()), nano) == []
    missing = _ok_report(audit={"engines": [{"name": "TRTEngineOp_0_0", "built_batch_sizes": [1]}]})
    assert gate.gate_problems(OptimizeReport.from_dict(missing), nano) == ["TRTEngineOp_0_0 has no built engine for batch size(s) [8]"]
    native = _ok_report(optimization="native", native_reason="TensorRT not available: ...", engines=0, audit=None)
    assert any("without allow_native_fallback" in p for p in gate.gate_problems(OptimizeReport.from_dict(native), nano))
    assert gate.gate_problems(OptimizeReport.from_dict(_ok_report(batch_sizes=[1])), nano)[0].startswith("the report is for batch sizes")
    failed = _ok_report(status="failed", exit_code=5, error={"message": "zero engines"})
    assert gate.gate_problems(OptimizeReport.from_dict(failed), nano) == ["the optimizer failed (exit 5): zero engines"]
    cpu = load_model(digits / "digits.yaml")
    assert any("precision native" in p for p in gate.gate_problems(OptimizeReport.from_dict(_ok_report()), cpu))
    assert gate.gate_hint(OptimizeReport.from_dict({"findings": {"oom": [{"line": "x"}]}}), nano).startswith("TensorRT ran out of memory")


def test_default_paths_are_the_workspace_kit_build_uses(digits):
    """kit optimize --local and kit build write one layout (kit/build/workspace.py)."""
    m = load_model(digits / "digits.yaml")
    out = Workspace.for_manifest(m).optimize
    assert out.model == digits / ".kit" / "digits" / "optimize" / "model"
    assert (out.report.name, out.log.name) == ("report.json", "optimize.log")
    assert out.report.parent == out.model.parent == out.dir
    # An explicit --output DIR keeps its neighbours beside it, named after it.
    beside = OptimizeOutput.beside(digits / "elsewhere" / "optimized")
    assert (beside.report.name, beside.log.name) == ("optimized.report.json", "optimized.log")
    assert beside.report.parent == beside.model.parent


def test_kit_optimize_local_on_the_digits_example(digits, tmp_path, capsys):
    """`kit optimize manifests/examples/digits.yaml --local`: a native SavedModel and a report that says why."""
    out = tmp_path / "optimized"
    assert main(["optimize", str(digits / "digits.yaml"), "--local", "--output", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["optimization"] == "native" and result["engines"] == 0
    assert result["native_reason"] == "precision native requested (device cpu)"
    assert result["gate"] == {"passed": True, "reasons": []} and result["parity"]["passed"]
    assert "samples" in result["parity"]["source"] and result["exit_code"] == 0
    assert (out / "saved_model.pb").is_file()
    report = json.loads(Path(result["report_path"]).read_text())
    assert Path(result["report_path"]) == tmp_path / "optimized.report.json"
    assert report["native_reason"] == "precision native requested (device cpu)"
    assert gate.gate_problems(OptimizeReport.from_dict(report), load_model(digits / "digits.yaml")) == []
    # The human rendering of the same result.
    res = optimizer.OptimizeResult("digits", out, Path(result["report_path"]), Path(result["log_path"]),
                                   Path(result["spec_path"]), 0, OptimizeReport.from_dict(report))
    console = Console(record=True, width=200)
    render_optimize(res, console)
    text = console.export_text()
    assert "the output is NATIVE TensorFlow, 0 TensorRT engines" in text
    assert "why: precision native requested (device cpu)" in text and "report: " in text and "parity: passed" in text


def test_kit_optimize_local_writes_the_workspace_kit_build_and_kit_bench_use(digits, capsys):
    """No --output: the same `.kit/<name>/optimize/` layout kit build writes, found by kit bench."""
    from kit.serve.bench import optimized_model_dir

    m = load_model(digits / "digits.yaml")
    ws = Workspace.for_manifest(m)
    ws.optimize.dir.mkdir(parents=True, exist_ok=True)
    ws.optimize.stamp.write_text('{"key": "an earlier kit build"}')  # kit build's stamp: not this run's
    assert main(["optimize", str(digits / "digits.yaml"), "--local", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert Path(result["output_dir"]) == ws.optimize.model and (ws.optimize.model / "saved_model.pb").is_file()
    assert Path(result["report_path"]) == ws.optimize.report and ws.optimize.log.is_file()
    assert Path(result["spec_path"]) == ws.spec and json.loads(ws.spec.read_text())["output_dir"] == str(ws.optimize.model)
    assert not ws.optimize.stamp.exists()  # a later kit build optimizes again rather than trusting this output
    assert OptimizeReport.read(ws.optimize.report).optimization == "native"
    assert optimized_model_dir(m) == ws.optimize.model


def test_kit_optimize_fp16_here_fails_with_the_probe_result(digits, tmp_path, capsys):
    manifest = nano_manifest(tmp_path, digits / "digits" / "saved_model")
    out = tmp_path / "nano-out"
    assert main(["optimize", str(manifest), "--local", "--output", str(out)]) == 3
    err = capsys.readouterr().err
    assert "preflight failed" in err and "TensorRT is not available" in err
    assert "is_tensorrt_enabled() -> False" in err and "allow_native_fallback" in err
    assert not out.exists()
    report = json.loads((tmp_path / "nano-out.report.json").read_text())
    assert report["exit_code"] == 3 and report["optimization"] is None


def test_kit_optimize_needs_local(digits, capsys):
    assert main(["optimize", str(digits / "digits.yaml")]) == 2
    assert "add --local" in capsys.readouterr().err
