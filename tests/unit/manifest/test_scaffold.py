"""`kit init`: a kit.yaml from a real SavedModel (TF Serving's half_plus_two, and the
tests' own models), validated by the real loader; saved_model.pb read without TensorFlow."""

import json
import os
import shutil
from pathlib import Path

import pytest

from kit.cli import main
from kit.manifest.load import load_model
from kit.manifest.savedmodel import read_signatures
from kit.manifest.scaffold import init_manifest, model_name

REPO = Path(__file__).resolve().parents[3]
HALF_PLUS_TWO = Path(os.environ.get("KIT_SHARED", REPO.parent / "shared")) / "testdata/tf-serving-half-plus-two/00000123"
if not HALF_PLUS_TWO.is_dir():
    HALF_PLUS_TWO = Path("/work/shared/testdata/tf-serving-half-plus-two/00000123")


@pytest.fixture
def half(tmp_path):
    dest = tmp_path / "half_plus_two"
    shutil.copytree(HALF_PLUS_TWO, dest)
    return dest


def test_tf1_signatures_read_without_tensorflow(half):
    sigs = read_signatures(half)
    assert sorted(sigs) == ["classify_x_to_y", "regress_x2_to_y3", "regress_x_to_y", "regress_x_to_y2",
                            "serving_default"]
    s = sigs["serving_default"]
    assert [(t.key, t.dtype, t.shape) for t in s.inputs] == [("x", "float32", (None, 1))]
    assert [(t.key, t.dtype, t.shape) for t in s.outputs] == [("y", "float32", (None, 1))]
    assert s.method_name == "tensorflow/serving/predict"
    assert [(t.key, t.dtype) for t in sigs["classify_x_to_y"].inputs] == [("inputs", "string")]


def test_init_writes_a_manifest_the_loader_accepts(half, capsys):
    code = main(["init", str(half)])
    out = capsys.readouterr().out
    path = half.parent / "kit.yaml"
    assert code == 0 and "wrote" in out and path.is_file()
    m = load_model(path)  # with file checks
    assert m.name == "half-plus-two" and m.target.device == "jetson-nano" and m.target.jetpack == "4.4.1"
    assert m.optimize.precision == "fp16" and m.optimize.batch_sizes == (1, 4)
    assert m.model.path == half and m.model.signature == "serving_default"
    assert m.model.inputs["x"].shape == (1,) and m.model.inputs["x"].dtype == "float32"
    text = path.read_text()
    assert "CHANGE ME" in text and "registry.example.com/half-plus-two" in text
    assert "classify_x_to_y" in text  # the other signatures are named in a comment
    assert main(["validate", str(path)]) == 0
    assert sorted(p.name for p in half.parent.iterdir()) == ["half_plus_two", "kit.yaml"]  # no temp file left


@pytest.mark.parametrize("device, precision, batches", [("cpu", "native", (1, 8)), ("jetson-xavier-nx", "fp16", (1, 8))])
def test_profile_defaults(half, device, precision, batches):
    r = init_manifest(half, device=device, name="hpt")
    m = load_model(r.path)
    assert (m.name, m.target.device, m.optimize.precision, m.optimize.batch_sizes) == ("hpt", device, precision, batches)
    assert (m.target.jetpack is None) == (device == "cpu")


def test_refuses_to_overwrite(half, capsys):
    (half.parent / "kit.yaml").write_text("mine\n")
    code = main(["init", str(half)])
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert (half.parent / "kit.yaml").read_text() == "mine\n"
    assert sorted(p.name for p in half.parent.iterdir()) == ["half_plus_two", "kit.yaml"]


def test_bad_inputs_are_usage_errors(half, tmp_path, capsys):
    assert main(["init", str(half), "--signature", "nope"]) == 2
    assert "no signature 'nope'" in capsys.readouterr().err
    assert main(["init", str(half), "--signature", "classify_x_to_y"]) == 2  # a string input: not servable here
    assert "cannot serve" in capsys.readouterr().err
    assert main(["init", str(half), "--device", "jetson-orin"]) == 2
    assert main(["init", str(tmp_path / "missing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["init", str(tmp_path / "empty")]) == 2
    assert "no saved_model.pb" in capsys.readouterr().err
    assert main(["init", str(half), "--name", "Bad_Name"]) == 2
    assert not (half.parent / "kit.yaml").exists()


def test_json_output(half, capsys):
    assert main(["init", str(half), "--json", "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["inputs"] == {"x": {"shape": [1], "dtype": "float32"}} and data["unknown_dims"] == []


def test_model_names_from_directories(tmp_path):
    assert model_name(Path("/m/resnet50_saved_model")) == "resnet50"
    assert model_name(Path("/m/ResNet 50/1")) == "resnet-50"
    assert model_name(Path("/m/digits/saved_model")) == "digits"


@pytest.mark.tf
def test_reader_agrees_with_tensorflow_on_tf2_models(saved_models):
    from kit.runtime.model import read_saved_model_proto, tensor_info

    for key in ("cnn", "two_inputs", "dynamic"):
        meta = read_saved_model_proto(saved_models[key])
        ours = read_signatures(Path(saved_models[key]))
        assert sorted(ours) == sorted(k for k in meta.signature_def if k != "__saved_model_init_op")
        for name, sig in ours.items():
            want = {k: tensor_info(k, v) for k, v in meta.signature_def[name].inputs.items()}
            for t in sig.inputs:
                shape = [-1 if d is None else d for d in t.shape]
                assert shape == want[t.key].shape, (key, t.key)


@pytest.mark.tf
def test_unknown_dimension_is_marked_to_edit(saved_models, tmp_path):
    dest = tmp_path / "dynamic"
    shutil.copytree(saved_models["dynamic"], dest)
    r = init_manifest(dest, device="cpu")
    assert r.unknown_dims == ("x",) and r.inputs["x"]["shape"] == [None, 3]
    assert "CHANGE ME: null" in r.path.read_text()
