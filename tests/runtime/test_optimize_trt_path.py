"""The optimizer's TensorRT path, run in-process with TensorRT and the GPU mocked.

There is no TensorRT and no GPU here, so three things are stood in for, and
only those: the TensorRT probe says TensorRT 7.1.3 is loaded, TensorFlow
"sees" a GPU, and `FakeTrtConvert` plays TF-TRT's converter. Like the real
one, it writes TF-TRT's log lines to file descriptor 2 while it converts and
builds, and its save() writes a TF-TRT-shaped SavedModel (tests/trt_fixtures.py)
with engine assets for the batch sizes it "built". Everything after that is
the real optimizer: log capture and parsing, audit, parity (the TRTEngineOp
model cannot run on this TensorFlow: parity must fail, not crash), the gate,
no publish, report.json, and the native fallback.
"""

import json
import os
from pathlib import Path

import pytest
from lazy_tf import tf

import trt_fixtures
from kit.runtime import optimize, preflight, trt_shim, trtlog

pytestmark = pytest.mark.tf  # needs TensorFlow (deselected on the Python 3.8 host run)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trt"


class FakeTrtConvert:
    """Mock of TF-TRT's trt_convert module (TensorRT cannot run here)."""

    def __init__(self, native_dir, built=((1, 8), (1, 8)), build_log=None, fail_convert=None):
        self.calls = {}
        test = self
        input_saved_model_dir_ = [None]

        class TrtGraphConverterV2:
            def __init__(self, input_saved_model_dir=None, input_saved_model_tags=None,
                         input_saved_model_signature_key=None, max_workspace_size_bytes=1 << 30,
                         precision_mode="FP32", minimum_segment_size=3, maximum_cached_engines=1,
                         use_calibration=True, allow_build_at_runtime=True, conversion_params=None):
                input_saved_model_dir_[0] = input_saved_model_dir
                test.converter = self
                test.calls["init"] = dict(precision_mode=precision_mode, max_workspace_size_bytes=max_workspace_size_bytes,
                                          maximum_cached_engines=maximum_cached_engines,
                                          input_saved_model_dir=input_saved_model_dir)

            def convert(self, calibration_input_fn=None):
                if fail_convert:
                    raise RuntimeError(fail_convert)
                # As the real converter: it loads the model itself and keeps it (kit reads the input order there).
                self._saved_model = tf.saved_model.load(input_saved_model_dir_[0])
                if calibration_input_fn is not None:  # int8: TF 2.3 runs the calibration data inside convert()
                    test.calls["calibrate"] = [tuple(a.shape for a in batch) for batch in calibration_input_fn()]
                os.write(2, b"2021-01-01 00:00:00.000000: I tensorflow/compiler/tf2tensorrt/convert/convert_graph.cc:760]"
                            b" Number of TensorRT candidate segments: 2\n")
                test.calls["convert"] = True

            def build(self, input_fn):
                test.calls["build_feeds"] = list(input_fn())
                test.calls["build"] = [tuple(a.shape for a in batch) for batch in test.calls["build_feeds"]]
                for shapes in test.calls["build"]:
                    os.write(2, ("2021-01-01 00:00:01.000000: I tensorflow/compiler/tf2tensorrt/kernels/"
                                 "trt_engine_op.cc:1107] Building a new TensorRT engine for TRTEngineOp_0_0 with input "
                                 "shapes: [[%s]]\n" % ",".join(str(d) for d in shapes[0])).encode())
                if build_log:
                    os.write(2, Path(build_log).read_bytes())

            def save(self, output_saved_model_dir):
                test.calls["save"] = output_saved_model_dir
                trt_fixtures.make_trt_saved_model(native_dir, output_saved_model_dir, [list(b) for b in built])

        self.TrtGraphConverterV2 = TrtGraphConverterV2


@pytest.fixture
def mocked_device(monkeypatch):
    """TensorRT 7.1.3 loaded and one GPU visible: a Jetson, mocked."""
    probe = {"available": True, "enabled": True, "linked": "7.1.3", "loaded": "7.1.3", "module": preflight.PROBE_MODULES[0],
             "tensorflow": tf.__version__, "returncode": 0, "signal": None, "steps": [], "stderr_tail": "",
             "summary": "mock: TensorRT 7.1.3 (a Jetson stands in)"}
    monkeypatch.setattr(preflight, "probe_tensorrt", lambda **kw: dict(probe))
    monkeypatch.setattr(trt_shim, "list_gpus", lambda tf_: ["/physical_device:GPU:0"])
    limits = []
    monkeypatch.setattr(trt_shim, "set_memory_limit", lambda tf_, gpu, n: limits.append((gpu, n)) or "mock")
    for key in list(trtlog.LOG_ENV) + ["TF_GPU_ALLOCATOR"]:
        monkeypatch.delenv(key, raising=False)  # restored after the test: execute() sets them
    level = tf.get_logger().level
    yield limits
    tf.get_logger().setLevel(level)


def run_inprocess(tmp_path, monkeypatch, fake, **spec_kw):
    monkeypatch.setattr(trt_shim, "import_trt", lambda: fake)
    spec = {"spec_version": 1, "name": "cnn", "device": "jetson-nano", "model_dir": spec_kw.pop("model_dir"),
            "output_dir": str(tmp_path / "out" / "model"), "report_path": str(tmp_path / "out" / "report.json"),
            "precision": "fp16", "batch_sizes": [8, 1],
            "stack": {"name": "4.4.1", "tensorflow": tf.__version__, "tensorrt": "7.1.3"}}
    spec.update(spec_kw)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    code = optimize.execute(str(path))
    return code, json.loads(Path(spec["report_path"]).read_text()), spec


def leftovers(spec):
    parent = Path(spec["output_dir"]).parent
    return [p.name for p in parent.iterdir() if ".kit-" in p.name]


def test_a_batch_size_without_engine_fails_the_gate_and_publishes_nothing(tmp_path, monkeypatch, saved_models,
                                                                         mocked_device):
    fake = FakeTrtConvert(saved_models["cnn"], built=((1, 8), (1,)))
    code, r, spec = run_inprocess(tmp_path, monkeypatch, fake, model_dir=saved_models["cnn"])
    assert code == 5
    assert fake.calls["init"]["precision_mode"] == "FP16" and fake.calls["init"]["maximum_cached_engines"] == 2
    # One build input function, one batch per batch size, ascending.
    assert fake.calls["build"] == [((1, 16, 16, 3),), ((8, 16, 16, 3),)]
    assert ".kit-tmp-" in fake.calls["save"]
    assert mocked_device == [("/physical_device:GPU:0", 2 << 30)]
    assert not os.path.exists(spec["output_dir"]) and leftovers(spec) == []
    assert r["error"]["kind"] == "gate" and r["optimization"] is None and r["output"]["written"] is False
    assert "TRTEngineOp_0_1 has no built engine for batch size(s) [8] (built only for [1])" in r["gate"]["reasons"]
    assert r["parameters"]["api"] == trt_shim.API_KWARGS
    assert r["findings"]["candidate_segments"] == 2 and len(r["findings"]["engines_built"]) == 2
    # The TRTEngineOp model cannot run on this TensorFlow: parity fails with the reason, it does not crash.
    assert not r["parity"]["passed"] and "could not be run side by side" in r["parity"]["reasons"][0]
    assert r["audit"]["engines"][1]["built_batch_sizes"] == [1]
    assert r["environment"]["tensorrt"] == "7.1.3"


def test_build_is_fed_in_the_converters_positional_order_for_a_tf1_model(tmp_path, monkeypatch, saved_models,
                                                                        mocked_device):
    """A TF1 SavedModel with inputs zeta [n,4], mid [n,2], alpha [n,3]: the build input function yields the arrays
    in the order the converter calls the frozen function (on TF 2.3.1 the signature's protobuf map order), not
    sorted by name."""
    import models
    from tensorflow.python.framework import convert_to_constants

    model = models.make_tf1_multi_input(tmp_path / "tf1", widths=(4, 2, 3))
    fake = FakeTrtConvert(saved_models["cnn"])
    code, r, spec = run_inprocess(tmp_path, monkeypatch, fake, model_dir=model, batch_sizes=[1])
    # The order of the converter's own load (a second load of a TF1 model may list the map differently).
    fn = fake.converter._saved_model.signatures["serving_default"]
    frozen_order = [t.name.split(":")[0] for t in convert_to_constants.convert_variables_to_constants_v2(fn).inputs]
    assert r["input_order_source"] == "converter"
    width = {"zeta": 4, "mid": 2, "alpha": 3}
    assert r["input_order"] == frozen_order
    assert fake.calls["build"] == [tuple((1, width[n]) for n in frozen_order)]
    if tf.__version__.startswith("2.3."):
        assert frozen_order != sorted(frozen_order)  # what the sorted feed got wrong


def test_a_jpeg_models_build_is_fed_the_bytes_samples_tiled_to_each_batch_size(tmp_path, monkeypatch, saved_models,
                                                                             mocked_device):
    """A string input (encoded JPEG bytes): build() gets the parity samples, tiled or cut to each batch size,
    and the frozen signature function (what TF-TRT builds from) runs on them called as TF-TRT 2.3 calls it,
    func(*map(convert_to_tensor, batch))."""
    import models
    import numpy as np
    from tensorflow.python.framework import convert_to_constants

    model = models.make_jpeg_mean(tmp_path / "jpeg")
    images = models.encode_jpegs([10, 200, 90])
    np.save(str(tmp_path / "images.npy"), images)
    fake = FakeTrtConvert(saved_models["cnn"])
    code, r, spec = run_inprocess(tmp_path, monkeypatch, fake, model_dir=model,
                                  parity={"samples": str(tmp_path / "images.npy")})
    assert r["inputs"] == {"image_bytes": {"shape": [], "dtype": "string"}}
    assert fake.calls["build"] == [((1,),), ((8,),)]
    assert [list(batch[0]) for batch in fake.calls["build_feeds"]] == [[images[0]], [images[i % 3] for i in range(8)]]
    frozen = convert_to_constants.convert_variables_to_constants_v2(
        fake.converter._saved_model.signatures["serving_default"])
    for batch in fake.calls["build_feeds"]:
        out = frozen(*map(tf.convert_to_tensor, batch))
        means = out[0] if isinstance(out, (list, tuple)) else out["mean"]
        assert means.shape == [len(batch[0])]
        np.testing.assert_allclose(means.numpy(), [np.mean(tf.io.decode_jpeg(b).numpy()) for b in batch[0]], rtol=1e-6)
    assert code == 5  # the fake's TRT model cannot run here: parity fails, as for every model on this path


def test_int8_calibration_is_fed_in_the_converters_order_inside_convert(tmp_path, monkeypatch, saved_models,
                                                                        mocked_device):
    """int8: the calibration function the converter calls inside convert() feeds max(batch_sizes) rows per
    batch, in the order of the converter's own load (it takes the converter as an argument, not through a
    closure over a local the optimizer deletes once the engines are saved)."""
    import models
    import numpy as np

    model = models.make_tf1_multi_input(tmp_path / "tf1", widths=(4, 2, 3))
    samples = tmp_path / "calibration.npz"
    width = {"zeta": 4, "mid": 2, "alpha": 3}
    np.savez(str(samples), **dict((n, np.ones((8, w), np.float32)) for n, w in width.items()))
    fake = FakeTrtConvert(saved_models["cnn"])
    code, r, spec = run_inprocess(tmp_path, monkeypatch, fake, model_dir=model, batch_sizes=[1, 4],
                                  precision="int8", device="jetson-xavier-nx", calibration_samples=str(samples))
    assert fake.calls["init"]["precision_mode"] == "INT8"
    order = r["input_order"]
    assert sorted(order) == sorted(width) and r["input_order_source"] == "converter"
    assert fake.calls["calibrate"] == [tuple((4, width[n]) for n in order)] * 2  # 8 rows, batches of 4
    assert fake.calls["build"] == [tuple((b, width[n]) for n in order) for b in (1, 4)]


def test_oom_and_fallback_in_the_log_fail_the_gate(tmp_path, monkeypatch, saved_models, mocked_device):
    fake = FakeTrtConvert(saved_models["cnn"], build_log=FIXTURES / "article_nano_fp16_oom.log")
    code, r, spec = run_inprocess(tmp_path, monkeypatch, fake, model_dir=saved_models["cnn"])
    assert code == 5
    failed = {c["name"] for c in r["gate"]["checks"] if not c["passed"]}
    assert {"no_fallback", "no_oom"} <= failed and "batch_sizes" not in failed
    # TensorRT's two lines; the BFC "not a failure" line is a memory warning (tests/runtime/test_tf231_fixes.py)
    assert len(r["findings"]["oom"]) == 2 and r["findings"]["engine_failures"][0]["op"] == "TRTEngineOp_0_0"
    assert len(r["findings"]["memory_warnings"]) == 1
    assert r["error"]["message"].startswith("the TF-TRT optimization failed the gate: ")
    assert "fallback(s) to native TensorFlow in the log" in r["error"]["message"]
    assert "out-of-memory line(s) in the log" in r["error"]["message"]
    assert not os.path.exists(spec["output_dir"])


def test_gate_failure_with_allow_native_fallback_ships_native_and_keeps_the_attempt(tmp_path, monkeypatch,
                                                                                   saved_models, mocked_device):
    fake = FakeTrtConvert(saved_models["cnn"], built=((1, 8), (1,)))
    code, r, spec = run_inprocess(tmp_path, monkeypatch, fake, model_dir=saved_models["cnn"],
                                  allow_native_fallback=True)
    assert code == 0
    assert r["optimization"] == "native" and r["engines"] == 0
    assert r["native_reason"].startswith("the TF-TRT optimization failed the gate: ")
    assert "TRTEngineOp_0_1 has no built engine for batch size(s) [8]" in r["native_reason"]
    assert r["attempt"]["gate"]["passed"] is False and r["attempt"]["parameters"]["precision_mode"] == "FP16"
    assert r["audit"]["is_native"] and r["gate"]["passed"] and r["parity"]["passed"]
    assert (Path(spec["output_dir"]) / "saved_model.pb").is_file() and leftovers(spec) == []


def test_a_converter_that_raises_is_exit_5_with_its_message(tmp_path, monkeypatch, saved_models, mocked_device):
    fake = FakeTrtConvert(saved_models["cnn"], fail_convert="Tensorflow has not been built with TensorRT support.")
    code, r, spec = run_inprocess(tmp_path, monkeypatch, fake, model_dir=saved_models["cnn"])
    assert code == 5
    assert r["error"]["message"] == ("TF-TRT conversion failed: RuntimeError: Tensorflow has not been built with "
                                     "TensorRT support.")
    assert not os.path.exists(spec["output_dir"]) and leftovers(spec) == []


def test_pinned_tensorrt_mismatch_is_a_preflight_error(tmp_path, monkeypatch, saved_models, mocked_device):
    fake = FakeTrtConvert(saved_models["cnn"])
    code, r, spec = run_inprocess(tmp_path, monkeypatch, fake, model_dir=saved_models["cnn"],
                                  stack={"name": "4.6", "tensorflow": tf.__version__, "tensorrt": "8.2.1"})
    assert code == 3 and "init" not in fake.calls
    assert "TensorRT loaded 7.1.3, pinned 8.2.1" in r["error"]["message"]
    assert "allow_version_mismatch" in r["error"]["hint"]


def test_doctor_trt_smoke_reports_what_the_log_parser_found(tmp_path, monkeypatch, saved_models, mocked_device):
    """`kit doctor --trt-smoke`'s in-container half (kit.runtime.trt_smoke) with TensorRT MOCKED (the fake
    converter above; no Jetson here): the tiny model goes through the real optimizer, whose TF-TRT log
    (the article's Nano OOM, written to fd 2 by the fake build) is parsed by kit.runtime.trtlog, and the
    parser's findings are what the smoke result, and so the doctor's check, reports."""
    from kit.runtime import trt_smoke

    fake = FakeTrtConvert(saved_models["cnn"], built=((1,), (1,)), build_log=FIXTURES / "article_nano_fp16_oom.log")
    monkeypatch.setattr(trt_shim, "import_trt", lambda: fake)
    result = trt_smoke.smoke(str(tmp_path), run_optimizer=lambda spec, timeout: (optimize.execute(spec), ""))
    assert fake.calls["init"]["precision_mode"] == "FP16" and fake.calls["build"] == [((1, 32, 32, 3),)]
    expected = trtlog.summarize(trtlog.parse_file(str(tmp_path / "optimize.log")))
    assert result["findings_summary"] == expected
    assert any("engine creation FAILED: TRTEngineOp_0_0" in s for s in result["findings_summary"])
    assert result["ok"] is False and result["exit_code"] == 5 and result["error"]["kind"] == "gate"
    assert "out-of-memory line(s) in the log" in result["error"]["message"]
    assert result["environment"]["tensorrt"] == "7.1.3"

