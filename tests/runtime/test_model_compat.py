"""A SavedModel that uses ops this TensorFlow lacks is refused before loading, with the ops, the versions
and the fix: by the optimizer (exit 2, error kind "model") and by the server's model load.

The "newer" model is a real SavedModel whose saved_model.pb also lists an op no TensorFlow has, written by
a TensorFlow 9.9.9, as a TF 2.17 model lists DisableCopyOnRead to TF 2.3.1 (that real case runs in
tests/integration/test_twin_build.py). Runs on both TensorFlows."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kit.runtime import compat
from kit.runtime import signature as sig

pytestmark = pytest.mark.tf
ROOT = Path(__file__).resolve().parents[2]
FUTURE_OP = "KitTestOpFromTheFuture"


def from_the_future(src, dest):
    """A copy of the SavedModel at src whose meta graph says TensorFlow 9.9.9 saved it with FUTURE_OP."""
    from tensorflow.core.framework import op_def_pb2

    shutil.copytree(str(src), str(dest))
    sm = sig.read_saved_model(str(dest))
    for mg in sm.meta_graphs:
        mg.meta_info_def.tensorflow_version = "9.9.9"
        mg.meta_info_def.stripped_op_list.op.extend([op_def_pb2.OpDef(name=FUTURE_OP)])
    with open(os.path.join(str(dest), "saved_model.pb"), "wb") as f:
        f.write(sm.SerializeToString())
    return dest


def test_ops_of_this_tensorflow_pass_and_unknown_ones_are_named(saved_models, tmp_path):
    import tensorflow as tf

    for name in ("cnn", "tf1_multi", "dynamic"):
        mg = sig.meta_graph(sig.read_saved_model(saved_models[name]), ["serve"])
        assert "Placeholder" in compat.used_ops(mg) or "Const" in compat.used_ops(mg)
        compat.check(tf.__version__, saved_models[name], mg)  # nothing missing
    future = from_the_future(saved_models["cnn"], tmp_path / "future")
    mg = sig.meta_graph(sig.read_saved_model(str(future)), ["serve"])
    assert compat.missing_ops(mg) == [FUTURE_OP]
    with pytest.raises(compat.ModelTooNew) as e:
        compat.check(tf.__version__, str(future), mg)
    assert ("uses an op that TensorFlow %s does not have: %s; it was saved by TensorFlow 9.9.9"
            % (tf.__version__, FUTURE_OP)) in e.value.message
    assert "save the model again with TensorFlow %s" % tf.__version__ in e.value.hint


def test_the_optimizer_refuses_it_with_exit_2_and_writes_nothing(saved_models, tmp_path):
    import tensorflow as tf

    future = from_the_future(saved_models["cnn"], tmp_path / "future")
    out = tmp_path / "out"
    spec = {"spec_version": 1, "name": "future", "device": "cpu", "model_dir": str(future),
            "output_dir": str(out / "model"), "report_path": str(out / "report.json"), "precision": "native",
            "batch_sizes": [1], "stack": {"name": "cpu", "tensorflow": tf.__version__}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, "-m", "kit.runtime.optimize", "--spec", str(tmp_path / "spec.json")],
                          cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    assert report["error"]["kind"] == "model" and FUTURE_OP in report["error"]["message"]
    assert report["error"]["problems"] == [FUTURE_OP] and "save the model again" in report["error"]["hint"]
    assert not (out / "model").exists()


def test_the_server_refuses_to_load_it(saved_models, tmp_path):
    from kit.runtime.model import Model, ModelError

    future = from_the_future(saved_models["cnn"], tmp_path / "future")
    with pytest.raises(ModelError) as e:
        Model.load(str(future), "future")
    assert FUTURE_OP in str(e.value) and "saved by TensorFlow 9.9.9" in str(e.value)
    assert Model.load(str(saved_models["cnn"]), "cnn").signatures  # the original still loads
