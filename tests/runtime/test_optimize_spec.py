"""The spec contract (kit.runtime.spec) and input resolution (kit.runtime.signature)."""

import json

import numpy as np
import pytest

from kit.runtime import signature as sig
from kit.runtime import spec as spec_mod

pytestmark = pytest.mark.tf  # needs TensorFlow (deselected on the Python 3.8 host run)


def base_spec(tmp_path, model_dir, **kw):
    d = {"spec_version": 1, "name": "m", "model_dir": str(model_dir), "output_dir": str(tmp_path / "out" / "model"),
         "report_path": str(tmp_path / "out" / "report.json"), "precision": "fp16", "batch_sizes": [8, 1]}
    d.update(kw)
    return d


def test_valid_spec_defaults(tmp_path, saved_models):
    s = spec_mod.from_dict(base_spec(tmp_path, saved_models["cnn"]))
    assert s.batch_sizes == [1, 8] and s.maximum_cached_engines == 2
    assert s.log_path == str(tmp_path / "out" / "report.log")
    assert s.signature == "serving_default" and s.tags == ["serve"] and s.uses_tensorrt
    assert s.parity.max_abs_error == 0.05 and s.parity.min_top1_agreement == 0.99
    assert spec_mod.from_dict(json.loads(json.dumps(s.to_dict()))).to_dict() == s.to_dict()  # round trip


def test_every_problem_is_listed(tmp_path, saved_models):
    d = base_spec(tmp_path, "relative/dir", precision="fp64", batch_sizes=[0],
                  max_workspace_size_bytes=-1, parity={"max_abs_error": -1, "min_top1_agreement": 2, "bogus": 1},
                  inputs={"x": {"shape": [0, None], "dtype": "complex64"}}, spec_version=2)
    with pytest.raises(spec_mod.SpecError) as e:
        spec_mod.from_dict(d)
    text = "\n".join(e.value.problems)
    for expected in ("spec_version: must be 1", "model_dir: must be an absolute path", "precision: must be one of",
                     "batch_sizes: must be a non-empty list", "max_workspace_size_bytes: must be a positive",
                     "parity: unknown keys bogus", "parity.max_abs_error", "parity.min_top1_agreement",
                     "inputs.x.shape", "inputs.x.dtype"):
        assert expected in text
    assert e.value.report_path == str(tmp_path / "out" / "report.json")


def test_paths_must_not_overlap_and_files_must_exist(tmp_path, saved_models):
    model = saved_models["cnn"]
    problems = spec_mod.validate(base_spec(tmp_path, model, output_dir=model + "/optimized"))
    assert any(p.startswith("output_dir:") for p in problems)
    problems = spec_mod.validate(base_spec(tmp_path, model, report_path=str(tmp_path / "out" / "model" / "r.json")))
    assert any("must not be inside output_dir" in p for p in problems)
    problems = spec_mod.validate(base_spec(tmp_path, str(tmp_path / "nomodel"), precision="int8"))
    assert any("int8 needs calibration samples" in p for p in problems)
    problems = spec_mod.validate(base_spec(tmp_path, str(tmp_path / "nomodel"), parity={"samples": str(tmp_path / "p.npy")}))
    assert any("is not a SavedModel directory" in p for p in problems)
    assert any("parity.samples: file not found" in p for p in problems)
    assert spec_mod.validate(base_spec(tmp_path, str(tmp_path / "nomodel")), check_files=False) == []
    problems = spec_mod.validate(base_spec(tmp_path, model, batch_sizes=[1, 8, 16], maximum_cached_engines=2))
    assert any("fewer than the 3 batch sizes" in p for p in problems)


def test_spec_file_errors(tmp_path):
    with pytest.raises(spec_mod.SpecError, match="cannot read"):
        spec_mod.load(str(tmp_path / "absent.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(spec_mod.SpecError, match="not valid JSON"):
        spec_mod.load(str(bad))


# ---- inputs ----------------------------------------------------------------------------------


def test_signature_read_from_protobuf(saved_models):
    s = sig.read_signature(saved_models["cnn"], "serving_default", ["serve"])
    assert s["inputs"] == {"images": {"shape": [None, 16, 16, 3], "dtype": "float32"}}
    assert s["outputs"]["probabilities"] == {"shape": [None, 5], "dtype": "float32"}
    with pytest.raises(sig.InputError, match="no signature 'nope'.*serving_default"):
        sig.read_signature(saved_models["cnn"], "nope", ["serve"])


def test_two_inputs_are_fed_in_the_signature_functions_positional_order(saved_models):
    import tensorflow as tf

    s = sig.read_signature(saved_models["two_inputs"], "serving_default", ["serve"])
    inputs = sig.resolve_inputs(s["inputs"], {}, [1, 8])
    assert inputs == {"alpha": {"shape": [3], "dtype": "float32"}, "zeta": {"shape": [4], "dtype": "float32"}}
    feed = sig.feeds(inputs, [8], seed=3)[8]
    positional = sig.ordered(feed)
    # TF 2.3's converter feeds build()/calibration tuples positionally, in the signature function's input order.
    fn = tf.saved_model.load(saved_models["two_inputs"]).signatures["serving_default"]
    order = [t.name.split(":")[0] for t in fn.inputs[:2]]
    assert order == ["alpha", "zeta"]  # declared zeta first; flattened sorted
    assert [a.shape for a in positional] == [feed[n].shape for n in order]
    assert np.array_equal(sig.feeds(inputs, [8], seed=3)[8]["zeta"], feed["zeta"])  # seeded


def test_dynamic_dimension_needs_a_shape_in_the_manifest(saved_models):
    s = sig.read_signature(saved_models["dynamic"], "serving_default", ["serve"])
    assert s["inputs"]["x"]["shape"] == [None, None, 3]
    with pytest.raises(sig.InputError) as e:
        sig.resolve_inputs(s["inputs"], {}, [1, 8])
    assert "input 'x' has unknown dimension(s) 1" in str(e.value) and "model.inputs.x.shape" in str(e.value)
    assert sig.resolve_inputs(s["inputs"], {"x": {"shape": [5, 3], "dtype": "float32"}}, [1]) == {
        "x": {"shape": [5, 3], "dtype": "float32"}}
    with pytest.raises(sig.InputError, match="disagrees with the signature"):
        sig.resolve_inputs(s["inputs"], {"x": {"shape": [5, 4], "dtype": "float32"}}, [1])
    with pytest.raises(sig.InputError, match="has 1 dims"):
        sig.resolve_inputs(s["inputs"], {"x": {"shape": [5], "dtype": "float32"}}, [1])
    with pytest.raises(sig.InputError, match="lacks x.*names y"):
        sig.resolve_inputs(s["inputs"], {"y": {"shape": [5, 3], "dtype": "float32"}}, [1])


def test_fixed_batch_dimension_against_batch_sizes():
    with pytest.raises(sig.InputError, match="fixes the batch dimension at 1"):
        sig.resolve_inputs({"x": {"shape": [1, 4], "dtype": "float32"}}, {}, [1, 8])


def test_samples_files(tmp_path):
    inputs = {"alpha": {"shape": [3], "dtype": "float32"}, "zeta": {"shape": [4], "dtype": "float32"}}
    np.save(tmp_path / "one.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(sig.InputError, match="the model has 2 inputs"):
        sig.load_samples(str(tmp_path / "one.npy"), inputs)
    np.savez(tmp_path / "partial.npz", alpha=np.zeros((5, 3), np.float32))
    with pytest.raises(sig.InputError, match="lacks arrays for input.*zeta"):
        sig.load_samples(str(tmp_path / "partial.npz"), inputs)
    np.savez(tmp_path / "shape.npz", alpha=np.zeros((5, 3)), zeta=np.zeros((5, 5)))
    with pytest.raises(sig.InputError, match="takes \\[n, 4\\]"):
        sig.load_samples(str(tmp_path / "shape.npz"), inputs)
    np.savez(tmp_path / "ok.npz", alpha=np.arange(9, dtype=np.float64).reshape(3, 3), zeta=np.ones((3, 4)))
    data = sig.load_samples(str(tmp_path / "ok.npz"), inputs)
    assert data["alpha"].dtype == np.float32
    batch = sig.take_rows(data, 8)  # fewer rows than the batch: wraps around
    assert batch["alpha"].shape == (8, 3) and np.array_equal(batch["alpha"][3], data["alpha"][0])
