"""The in-image optimizer (native path), audit and benchmark end to end, on the models the twin must cover:
TF Serving's half_plus_two (TF1-era signatures), a TF1 model with several inputs, a model with a dynamic
dimension. Run as `python -m kit.runtime.optimize` in a fresh process of this interpreter (the twin's in CI).
The server on them: tests/integration/test_server.py, whose server process runs on the twin in scripts/test."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kit.runtime import audit, bench

pytestmark = pytest.mark.tf  # needs TensorFlow (deselected on the Python 3.8 host run)

ROOT = Path(__file__).resolve().parents[2]
HALF_PLUS_TWO = Path(os.environ.get("KIT_SHARED", str(ROOT.parent / "shared"))) / "testdata/tf-serving-half-plus-two/00000123"
if not HALF_PLUS_TWO.is_dir():
    HALF_PLUS_TWO = Path("/work/shared/testdata/tf-serving-half-plus-two/00000123")


def optimize_native(tmp_path, model_dir, name, **kw):
    import tensorflow as tf

    spec = {"spec_version": 1, "name": name, "device": "cpu", "model_dir": str(model_dir),
            "output_dir": str(tmp_path / "out" / name), "report_path": str(tmp_path / "out" / (name + ".json")),
            "precision": "native", "batch_sizes": [1, 4], "stack": {"name": "cpu", "tensorflow": tf.__version__}}
    spec.update(kw)
    path = tmp_path / (name + ".spec.json")
    path.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "kit.runtime.optimize", "--spec", str(path)], cwd=str(ROOT),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(Path(spec["report_path"]).read_text()), spec


def test_half_plus_two_optimizes_natively_with_exact_parity(tmp_path):
    r, spec = optimize_native(tmp_path, HALF_PLUS_TWO, "hp2", parity={"max_abs_error": 0.0})
    assert r["optimization"] == "native" and r["parity"]["passed"] and r["parity"]["max_abs_error"] == 0.0
    assert r["inputs"] == {"x": {"shape": [1], "dtype": "float32"}}
    assert audit.audit_saved_model(spec["output_dir"], "serving_default", ["serve"])["engines"] == []


def test_tf1_multi_input_model_optimizes_natively(tmp_path, saved_models):
    r, _ = optimize_native(tmp_path, saved_models["tf1_multi"], "tf1")
    assert r["optimization"] == "native" and r["parity"]["passed"]
    assert sorted(r["inputs"]) == ["alpha", "mid", "zeta"]


def test_dynamic_dimension_with_the_shape_given_optimizes_natively(tmp_path, saved_models):
    r, _ = optimize_native(tmp_path, saved_models["dynamic"], "dyn",
                           inputs={"x": {"shape": [5, 3], "dtype": "float32"}})
    assert r["optimization"] == "native" and r["parity"]["passed"]
    assert r["inputs"] == {"x": {"shape": [5, 3], "dtype": "float32"}}


@pytest.mark.parametrize("which", ["half_plus_two", "tf1_multi", "dynamic"])
def test_the_benchmark_protocol_runs(which, saved_models):
    model = str(HALF_PLUS_TWO) if which == "half_plus_two" else saved_models[which]
    shapes = {"x": [7, 3]} if which == "dynamic" else None
    result = bench.run_benchmark(model, 4, runs=20, warmup=3, window=5, input_shapes=shapes)
    assert result["runs"] == 20 and result["images_per_second"] > 0
    assert result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    if which == "dynamic":
        assert result["input_shapes"] == {"x": [4, 7, 3]}
    else:
        assert all(s[0] == 4 for s in result["input_shapes"].values())
