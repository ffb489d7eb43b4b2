"""`kit audit` (the host CLI over kit.runtime.audit) on a real and a TF-TRT-shaped SavedModel."""

import json
import os

import pytest

import trt_fixtures
from kit.cli import main

pytestmark = pytest.mark.tf  # TF-TRT-shaped SavedModels need TensorFlow


@pytest.fixture(scope="module")
def trt_models(saved_models, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("trt-models") / "one_missing")
    trt_fixtures.make_trt_saved_model(saved_models["cnn"], path, [[1, 8], [1]], naming="2.3")
    return {"one_missing": path}


def test_kit_audit_command(saved_models, trt_models, capsys, tmp_path):
    assert main(["audit", saved_models["cnn"]]) == 0
    assert "0 TensorRT engines: this SavedModel is native TensorFlow" in capsys.readouterr().out
    assert main(["audit", trt_models["one_missing"], "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["trt_engine_ops"]["unique"] == 2 and data["engines"][1]["built_batch_sizes"] == [1]
    assert main(["audit", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    os.makedirs(tmp_path / "empty")
    assert main(["audit", str(tmp_path / "empty")]) == 2
    assert "no saved_model.pb" in capsys.readouterr().err
