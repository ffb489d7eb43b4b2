"""`python -m kit.runtime.optimize --spec` end to end, in fresh processes, on real SavedModels.

This machine has TensorFlow 2.17 (CPU) and no TensorRT: the native paths run
for real; the TensorRT paths must stop with exit 3 and say what was probed.
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from lazy_tf import tf

import models

from kit.runtime import signature as sig_mod

pytestmark = pytest.mark.tf

ROOT = Path(__file__).resolve().parents[2]


def spec_file(tmp_path, model_dir, precision="native", name="model", **kw):
    spec = {"spec_version": 1, "name": name, "device": "cpu", "model_dir": str(model_dir),
            "output_dir": str(tmp_path / "out" / name), "report_path": str(tmp_path / "out" / (name + ".report.json")),
            "precision": precision, "batch_sizes": [1, 8], "stack": {"name": "cpu", "tensorflow": tf.__version__}}
    spec.update(kw)
    path = tmp_path / (name + ".spec.json")
    path.write_text(json.dumps(spec))
    return path, spec


def run(spec_path, env=None, timeout=300):
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "kit.runtime.optimize", "--spec", str(spec_path)], cwd=str(ROOT),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=full_env, timeout=timeout)
    return proc


def report_of(spec):
    return json.loads(Path(spec["report_path"]).read_text())


def leftovers(spec):
    out = Path(spec["output_dir"])
    return sorted(p.name for p in out.parent.iterdir() if ".kit-tmp-" in p.name or ".kit-old-" in p.name)


@contextlib.contextmanager
def paused_at_save(spec_path):
    """The optimizer on spec_path, held by KIT_RUNTIME_TEST_PAUSE in its save phase (its stderr read up to the
    pause line, 240 s at most); killed if still running afterwards, whatever the test did to it."""
    env = dict(os.environ, KIT_RUNTIME_TEST_PAUSE="save:120")
    proc = subprocess.Popen([sys.executable, "-m", "kit.runtime.optimize", "--spec", str(spec_path)], cwd=str(ROOT),
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, universal_newlines=True, env=env)
    try:
        deadline = time.monotonic() + 240
        for line in proc.stderr:
            if "kit: test pause at save" in line or time.monotonic() > deadline:
                break
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_native_precision_writes_a_native_model_and_says_so(tmp_path, saved_models):
    path, spec = spec_file(tmp_path, saved_models["cnn"], "native", name="cnn")
    proc = run(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # nothing on stdout: hosts may parse it
    out = Path(spec["output_dir"])
    assert (out / "saved_model.pb").is_file() and not (out / "cnn.report.json").exists()
    r = report_of(spec)
    assert r["schema_version"] == 1 and r["status"] == "ok" and r["exit_code"] == 0
    assert r["optimization"] == "native" and r["native_reason"] == "precision native requested (device cpu)"
    assert r["engines"] == 0 and r["output"] == {"path": spec["output_dir"], "written": True}
    assert r["audit"]["is_native"] and r["gate"]["passed"] and r["parity"]["passed"]
    assert r["parity"]["max_abs_error"] == 0.0 and r["parity"]["source"] == "random (seed 0)"
    assert r["inputs"] == {"images": {"shape": [16, 16, 3], "dtype": "float32"}}
    assert r["environment"]["tensorflow"] == tf.__version__ and r["environment"]["python"]
    assert {"preflight", "tensorflow_import", "inputs", "copy", "audit", "parity", "publish", "total"} <= set(r["timings"])
    assert "probe" not in r["timings"]  # native: no TensorRT question asked
    assert r["memory"]["peak_rss_bytes"] > 50 << 20
    assert "TF_GPU_ALLOCATOR" not in r["preflight"]["environment"]  # kit leaves the BFC allocator in charge
    assert "trt_engine_op=2" in r["preflight"]["environment"]["TF_CPP_VMODULE"]
    log = Path(r["log_path"]).read_text()
    assert "kit: optimizing" in log and "kit: output is NATIVE TensorFlow" in log
    assert "kit: output is NATIVE TensorFlow" in proc.stderr  # tee'd
    loaded = tf.saved_model.load(str(out))
    assert loaded.signatures["serving_default"](images=tf.zeros([2, 16, 16, 3]))["logits"].shape == (2, 5)
    assert leftovers(spec) == []


def test_fp16_without_tensorrt_fails_clearly_and_writes_nothing(tmp_path, saved_models):
    path, spec = spec_file(tmp_path, saved_models["cnn"], "fp16", name="fp16")
    proc = run(path)
    assert proc.returncode == 3, proc.stderr
    assert not os.path.exists(spec["output_dir"]) and leftovers(spec) == []
    r = report_of(spec)
    assert r["status"] == "failed" and r["exit_code"] == 3 and r["optimization"] is None
    assert r["output"]["written"] is False and r["engines"] is None
    assert r["error"]["kind"] == "preflight"
    message = r["error"]["message"]
    assert message.startswith("TensorRT is not available ")
    assert "tensorflow.compiler.tf2tensorrt._pywrap_py_utils" in message
    assert "is_tensorrt_enabled() -> False" in message and "get_loaded_tensorrt_version() -> (0, 0, 0)" in message
    assert "allow_native_fallback" in r["error"]["hint"]
    probe = r["preflight"]["tensorrt_probe"]
    assert probe["available"] is False and probe["returncode"] == 0
    # The probe ran in a child: this process never imported TensorFlow, so it could not have aborted.
    assert r["tensorflow_imported"] is False
    assert r["memory"]["children_peak_rss_bytes"] > 0
    assert "FAILED (preflight): TensorRT is not available" in proc.stderr


def test_allow_native_fallback_ships_native_and_says_why(tmp_path, saved_models):
    path, spec = spec_file(tmp_path, saved_models["cnn"], "fp16", name="fallback", allow_native_fallback=True)
    proc = run(path)
    assert proc.returncode == 0, proc.stderr
    r = report_of(spec)
    assert r["optimization"] == "native" and r["engines"] == 0
    assert r["native_reason"].startswith("TensorRT not available: probed tensorflow.compiler.tf2tensorrt")
    assert "is_tensorrt_enabled() -> False" in r["native_reason"]
    assert r["precision"] == "fp16"  # requested; "optimization" says what was delivered
    assert (Path(spec["output_dir"]) / "saved_model.pb").is_file()
    assert r["gate"]["passed"] and [c["name"] for c in r["gate"]["checks"]] == ["labelled_native", "parity"]


def test_workspace_not_below_memory_limit_is_refused_before_any_tensorflow_work(tmp_path, saved_models):
    path, spec = spec_file(tmp_path, saved_models["cnn"], "fp16", name="mem",
                           max_workspace_size_bytes=4 << 30, memory_limit_bytes=2 << 30)
    started = time.monotonic()
    proc = run(path)
    elapsed = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    r = report_of(spec)
    assert "max_workspace_size 4 GiB >= memory_limit 2 GiB" in r["error"]["message"]
    assert "Lower optimize.max_workspace_size" in r["error"]["hint"]
    assert r["tensorflow_imported"] is False and r["preflight"]["tensorrt_probe"] is None
    assert set(r["timings"]) == {"preflight", "total"} and r["timings"]["total"] < 1.0
    assert elapsed < 10  # no TensorFlow import anywhere (one takes ~4 s here)
    assert not os.path.exists(spec["output_dir"])


def test_sigkill_mid_save_leaves_nothing_at_the_output_path(tmp_path, saved_models):
    path, spec = spec_file(tmp_path, saved_models["cnn"], "native", name="killed")
    with paused_at_save(path) as proc:
        tmp = [n for n in leftovers(spec) if ".kit-tmp-" in n]
        assert tmp, "the model should be in the temp dir by now"
        assert (Path(spec["output_dir"]).parent / tmp[0] / "saved_model.pb").is_file()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not os.path.exists(spec["output_dir"])
    assert leftovers(spec) == tmp  # the stale temp dir is beside, never at, the output path
    # The next run cleans it up and publishes.
    proc = run(path)
    assert proc.returncode == 0, proc.stderr
    assert "removed stale temp dirs from killed runs" in proc.stderr
    assert leftovers(spec) == [] and (Path(spec["output_dir"]) / "saved_model.pb").is_file()


def test_sigterm_mid_save_cleans_up(tmp_path, saved_models):
    path, spec = spec_file(tmp_path, saved_models["cnn"], "native", name="termed")
    with paused_at_save(path) as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    assert not os.path.exists(spec["output_dir"]) and leftovers(spec) == []
    r = report_of(spec)
    assert r["error"]["kind"] == "interrupted" and "SIGTERM" in r["error"]["message"]


def test_dynamic_dimension_without_shape_is_an_input_error(tmp_path, saved_models):
    path, spec = spec_file(tmp_path, saved_models["dynamic"], "native", name="dyn")
    proc = run(path)
    assert proc.returncode == 2, proc.stderr
    r = report_of(spec)
    assert r["error"]["kind"] == "inputs" and "model.inputs.x.shape" in r["error"]["message"]
    assert not os.path.exists(spec["output_dir"])


def test_two_inputs_with_npz_parity_samples(tmp_path, saved_models):
    samples = tmp_path / "parity.npz"
    rng = np.random.RandomState(1)
    np.savez(samples, zeta=rng.rand(3, 4).astype(np.float32), alpha=rng.rand(3, 3).astype(np.float32))
    path, spec = spec_file(tmp_path, saved_models["two_inputs"], "native", name="two",
                           parity={"samples": str(samples), "max_abs_error": 0.0, "min_top1_agreement": 1.0})
    proc = run(path)
    assert proc.returncode == 0, proc.stderr
    r = report_of(spec)
    assert r["parity"]["source"] == "samples %s" % samples and r["parity"]["passed"]
    assert sorted(r["inputs"]) == ["alpha", "zeta"]


def test_invalid_spec_exit_2_with_a_report(tmp_path):
    path, spec = spec_file(tmp_path, "relative/model", "native", name="bad")
    proc = run(path)
    assert proc.returncode == 2
    r = report_of(spec)
    assert r["error"]["kind"] == "spec" and any("model_dir: must be an absolute path" in p for p in r["error"]["problems"])
    assert "model_dir: must be an absolute path" in proc.stderr


# ---- a model whose input is encoded JPEG bytes (a tf.string decoded in the graph) -------------------
# String inputs come only from samples; the build() feed is checked the way TF-TRT's converter calls it.

def test_string_input_is_fed_from_bytes_samples_and_passes_parity(tmp_path):
    model = models.make_jpeg_mean(tmp_path / "jpeg")
    samples = tmp_path / "images.npy"
    np.save(str(samples), models.encode_jpegs([10, 200, 90]))
    path, spec = spec_file(tmp_path, model, "native", name="jpeg", parity={"samples": str(samples)})
    proc = run(path)
    assert proc.returncode == 0, proc.stderr
    r = report_of(spec)
    assert r["inputs"] == {"image_bytes": {"shape": [], "dtype": "string"}}
    assert r["parity"]["passed"] and r["parity"]["source"] == "samples %s" % samples
    assert [b["batch_size"] for b in r["parity"]["batches"]] == [1, 8]
    assert r["parity"]["batches"][1]["outputs"]["mean"]["shape"] == [8]


def test_string_input_without_samples_exits_2_with_the_fix(tmp_path):
    model = models.make_jpeg_mean(tmp_path / "jpeg")
    path, spec = spec_file(tmp_path, model, "native", name="jpeg")
    proc = run(path)
    assert proc.returncode == 2, proc.stderr
    r = report_of(spec)
    assert r["error"]["kind"] == "inputs"
    message = r["error"]["message"]
    assert "input 'image_bytes' has dtype string, which the optimizer cannot feed" in message
    assert "give optimize.parity.samples" in message and "np.save(path, np.array([open(f, 'rb').read()" in message
    assert not (tmp_path / "out" / "jpeg").exists()


def test_object_array_samples_are_refused_without_unpickling(tmp_path):
    model = models.make_jpeg_mean(tmp_path / "jpeg")
    samples = tmp_path / "images.npy"
    np.save(str(samples), np.array(list(models.encode_jpegs([10, 20])), dtype=object), allow_pickle=True)
    path, spec = spec_file(tmp_path, model, "native", name="jpeg", parity={"samples": str(samples)})
    proc = run(path)
    assert proc.returncode == 2, proc.stderr
    message = report_of(spec)["error"]["message"]
    assert "object array" in message and "dtype 'S'" in message and "np.save(path, np.array([open(f, 'rb')" in message


def test_unicode_samples_for_a_string_input_are_refused(tmp_path):
    samples = tmp_path / "names.npy"
    np.save(str(samples), np.array(["a", "b"]))
    inputs = {"image_bytes": {"shape": [], "dtype": "string"}}
    with pytest.raises(sig_mod.InputError, match="dtype <U1.*numpy bytes array"):
        sig_mod.load_samples(str(samples), inputs)


def test_build_input_fn_feed_tiles_and_cuts_samples_to_each_batch_size(tmp_path):
    """What build() gets for a string input: the samples tiled (3 rows -> 8) or cut (-> 1), as bytes
    tensors the signature function takes positionally, the way TF-TRT's converter calls it."""
    model = models.make_jpeg_mean(tmp_path / "jpeg")
    samples = tmp_path / "images.npy"
    images = models.encode_jpegs([10, 200, 90])
    np.save(str(samples), images)
    sig = sig_mod.read_signature(str(model), "serving_default", ["serve"])
    inputs = sig_mod.resolve_inputs(sig["inputs"], {}, [1, 8], has_samples=True)
    data = sig_mod.load_samples(str(samples), inputs)
    feeds = sig_mod.feeds(inputs, [1, 8], data)
    order = sig_mod.positional_order(tf, str(model), "serving_default", ["serve"], list(inputs))
    assert order == ["image_bytes"]
    assert list(feeds[1]["image_bytes"]) == [images[0]]
    assert list(feeds[8]["image_bytes"]) == [images[i % 3] for i in range(8)]
    loaded = tf.saved_model.load(str(model))
    fn = loaded.signatures["serving_default"]
    for b in (1, 8):
        tensors = [tf.convert_to_tensor(a) for a in sig_mod.ordered(feeds[b], order)]
        assert tensors[0].dtype == tf.string and tensors[0].shape == [b]
        got = fn(*tensors)["mean"].numpy()
        np.testing.assert_allclose(got, [np.mean(tf.io.decode_jpeg(images[i % 3]).numpy()) for i in range(b)],
                                   rtol=1e-5)


def test_resolve_inputs_names_the_fix_for_a_string_input():
    with pytest.raises(sig_mod.InputError) as err:
        sig_mod.resolve_inputs({"image_bytes": {"shape": [None], "dtype": "string"}}, {}, [1])
    assert str(err.value) == sig_mod.string_input_message("image_bytes")
    assert json.dumps(str(err.value))  # plain text for report.json
