"""What the twin (Python 3.6 + TensorFlow 2.3.1) exposed, fixed, tested on whichever TF runs this file.

1. input order: TF-TRT's build()/calibration feed the frozen signature function positionally, in
   frozen_func.inputs order -- the signature's protobuf map order for a TF1 SavedModel on 2.3.1;
2. log patterns: the messages exactly as TF 2.3.1 prints them (tests/fixtures/trt/tf231_every_pattern.log);
3. engine builds at run time are VLOG(1) on 2.3.1: the server counts the 2.3.1 line;
4. TF_GPU_ALLOCATOR=cuda_malloc bypasses the BFC allocator memory_limit sizes: kit fails the preflight;
5. the BFC allocator's "not a failure" warning alone does not fail the gate.
TensorRT and the GPU are the only things not here; no test below pretends to have them.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kit.runtime import gate, logtap, preflight, trtlog
from kit.runtime import signature as sig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trt"
pytestmark = pytest.mark.tf  # needs TensorFlow (deselected on the Python 3.8 host run)
TF_RELEASE = tuple(int(p) for p in tf.__version__.split(".")[:2])
GOOD_PARITY = {"passed": True, "max_abs_error": 0.0, "max_abs_error_limit": 0.05, "top1_agreement": None,
               "min_top1_agreement_limit": 0.99, "reasons": []}
ONE_ENGINE = {"engines": [{"name": "TRTEngineOp_0_0", "built_batch_sizes": [1], "asset": {"error": None, "exists": True}}]}


# ---- 1. input order --------------------------------------------------------------------

class LoadedLikeTheConverter(object):
    """Holds a loaded SavedModel as TrtGraphConverterV2 does after convert() starts (its _saved_model)."""

    def __init__(self, path):
        self._saved_model = tf.saved_model.load(path)


def test_tf1_inputs_are_fed_in_the_frozen_functions_order(saved_models):
    """TF 2.3.1 lists a TF1 signature's inputs in protobuf map order, which can even differ between two loads
    of the same model: the order must come from the load the converter feeds."""
    from tensorflow.python.framework import convert_to_constants

    path = saved_models["tf1_multi"]
    converter = LoadedLikeTheConverter(path)
    order = sig.converter_input_order(converter, "serving_default", ["alpha", "mid", "zeta"])
    fn = converter._saved_model.signatures["serving_default"]
    frozen = convert_to_constants.convert_variables_to_constants_v2(fn)  # what build() calls, positionally
    assert order == [t.name.split(":")[0] for t in frozen.inputs]
    feed = {"zeta": np.full([2, 4], 1.0, np.float32), "mid": np.full([2, 4], 2.0, np.float32),
            "alpha": np.full([2, 4], 3.0, np.float32)}
    expected = fn(**dict((k, tf.constant(v)) for k, v in feed.items()))["out"].numpy()
    assert np.allclose(expected, 123.0)
    got = frozen(*[tf.constant(a) for a in sig.ordered(feed, order)])
    assert any(np.allclose(g.numpy(), expected) for g in got if g.shape == expected.shape)
    if order != sorted(order):  # the old sorted feed: same shapes, no error, wrong numbers
        wrong = frozen(*[tf.constant(a) for a in sig.ordered(feed)])
        assert not any(np.allclose(g.numpy(), expected) for g in wrong if g.shape == expected.shape)
    # kit's own load, the fallback when a converter does not expose its model, names the same inputs
    assert sorted(sig.positional_order(tf, path, "serving_default", ["serve"], sorted(order))) == sorted(order)
    assert sig.converter_input_order(object(), "serving_default", order) is None


def test_input_order_mismatch_is_an_input_error(saved_models):
    with pytest.raises(sig.InputError, match="takes inputs"):
        sig.positional_order(tf, saved_models["tf1_multi"], "serving_default", ["serve"], ["zeta", "mid"])


def test_tf2_models_keep_sorted_order(saved_models):
    assert sig.positional_order(tf, saved_models["two_inputs"], "serving_default", ["serve"],
                                ["zeta", "alpha"]) == ["alpha", "zeta"]


# ---- 2. the log lines as 2.3.1 prints them ------------------------------------------------

def test_every_tf231_message_is_recognised():
    f = trtlog.parse_file(str(FIXTURES / "tf231_every_pattern.log"))
    assert f["candidate_segments"] == 3 and f["unconverted_op_types"] == ["ArgMax", "Placeholder"]
    assert f["segments"] == [
        {"op": "TRTEngineOp_0_0", "segment": 0, "nodes": 12, "ok": True, "error": None},
        {"op": "TRTEngineOp_0_1", "segment": 1, "nodes": 5, "ok": False,
         "error": "Unimplemented: Unsupported data type int64"}]
    assert [c["segment"] for c in f["conversion_errors"]] == [2]
    assert f["engines_built"] == [{"op": "TRTEngineOp_0_0", "input_shapes": [[4, 32, 32, 3]], "batch_size": 4,
                                   "ok": True}]
    assert f["engines_cached"] == [{"op": "TRTEngineOp_0_0", "cache_size": 1}]
    assert [x["kind"] for x in f["native_fallbacks"]] == ["segment_graph_failed", "input_shape_list_mismatch"]
    assert [c["reason"] for c in f["calibration_failures"]] == ["Internal: Failed to build TensorRT engine"]
    assert len(f["oom"]) == 1 and "cuMemAlloc failed to allocate 2147483648" in f["oom"][0]["line"]
    assert [w["size"] for w in f["memory_warnings"]] == ["1.02GiB"]
    d = trtlog.diagnose(f)
    kinds = set(p["kind"] for p in d["problems"])
    assert d["failed"] and {"segment_not_converted", "conversion_error", "calibration_failed", "out_of_memory",
                            "native_fallback"} <= kinds
    assert any("unset TF_GPU_ALLOCATOR" in p["fix"] for p in d["problems"] if p["kind"] == "out_of_memory")


def test_gate_fails_on_a_segment_kept_native_and_on_calibration():
    f = trtlog.parse_file(str(FIXTURES / "tf231_every_pattern.log"))
    g = gate.evaluate_tensorrt([1], ONE_ENGINE, f, GOOD_PARITY)
    failed = set(c["name"] for c in g["checks"] if not c["passed"])
    assert {"segments", "calibration", "no_fallback", "no_oom"} <= failed
    clean = trtlog.parse("2021-01-05 08:00:00.000003: I tensorflow/compiler/tf2tensorrt/convert/convert_graph.cc:854] "
                         "Replaced segment 0 consisting of 12 nodes by TRTEngineOp_0_0.\n")
    assert gate.evaluate_tensorrt([1], ONE_ENGINE, clean, GOOD_PARITY)["passed"]


def test_the_articles_log_gets_the_articles_diagnosis():
    d = trtlog.scan(str(FIXTURES / "article_nano_fp16_oom.log"))["diagnosis"]
    assert d["failed"]
    verdict = d["verdict"]
    assert "the engine needed more memory than the limit allowed" in verdict
    assert "engine creation failed for TRTEngineOp_0_0" in verdict and "the native segment ran" in verdict
    creation = [p for p in d["problems"] if p["kind"] == "engine_creation_failed"][0]
    assert "4294967296 bytes requested" in creation["what"] and "max_workspace_size < memory_limit" in creation["fix"]


# ---- 3. engine builds at run time --------------------------------------------------------------

def test_the_server_counts_the_vlog1_build_line_of_tf231_once():
    classify = logtap.line_classifier()
    build = ("2021-01-05 08:00:01.000001: I tensorflow/compiler/tf2tensorrt/kernels/trt_engine_op.cc:739] "
             "Building a new TensorRT engine for StatefulPartitionedCall/TRTEngineOp_0_0 with input shapes: [[4,32,32,3]]")
    cached = ("2021-01-05 08:00:09.000002: I tensorflow/compiler/tf2tensorrt/kernels/trt_engine_op.cc:908] "
              "Added new engine to cache of StatefulPartitionedCall/TRTEngineOp_0_0. Cache size: 1")
    retrieval = ("2021-01-05 08:00:10.000001: W tensorflow/compiler/tf2tensorrt/kernels/trt_engine_op.cc:629] "
                 "TF-TRT Warning: Engine retrieval for input shapes: [[3,2]] failed. Running native segment for "
                 "TRTEngineOp_0_0")
    assert [classify(x) for x in (build, cached, retrieval)] == [logtap.ENGINE_BUILD, None, logtap.NATIVE_FALLBACK]


def test_tf_cpp_vmodule_turns_on_vlog1_of_a_named_module_on_this_tensorflow():
    """The mechanism the runtime image relies on (TF_CPP_VMODULE=trt_engine_op=1; trt_engine_op itself needs
    TensorRT): the same setting for a module that runs here makes its VLOG(1) lines appear, and only then."""
    code = "import tensorflow as tf\n@tf.function\ndef f(x):\n    return x * 2\nf(tf.constant(1.0))\n"

    def lines(vmodule):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", TF_CPP_VMODULE=vmodule)
        proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return [x for x in proc.stderr.splitlines() if "process_function_library_runtime.cc" in x]

    assert lines("trt_engine_op=1") == []
    assert lines("trt_engine_op=1,process_function_library_runtime=1")


# ---- 4. the allocator ----------------------------------------------------------------------------

def test_cuda_malloc_fails_the_preflight_and_the_default_passes():
    bad = preflight.allocator_check({"TF_GPU_ALLOCATOR": "cuda_malloc"})
    assert not bad["ok"] and "cuMemAlloc" in bad["detail"] and "unset TF_GPU_ALLOCATOR" in bad["hint"]
    assert preflight.allocator_check({})["ok"]
    other = preflight.allocator_check({"TF_GPU_ALLOCATOR": "CUDA_MALLOC"})  # TF compares exactly
    assert other["ok"] and "is not one TensorFlow switches on" in other["detail"]


# ---- 5. the BFC warning ------------------------------------------------------------------------------

BFC_WARNING = ("2020-12-01 10:16:11.567890: W tensorflow/core/common_runtime/bfc_allocator.cc:246] Allocator "
               "(GPU_0_bfc) ran out of memory trying to allocate 2.26GiB with freed_by_count=0. The caller indicates "
               "that this is not a failure, but may mean that there could be performance gains if more memory were "
               "available.\n")


def test_the_bfc_not_a_failure_warning_alone_passes_the_gate():
    f = trtlog.parse(BFC_WARNING)
    assert f["oom"] == [] and [w["size"] for w in f["memory_warnings"]] == ["2.26GiB"]
    assert gate.evaluate_tensorrt([1], ONE_ENGINE, f, GOOD_PARITY)["passed"]
    assert not trtlog.diagnose(f)["failed"]


def test_a_real_bfc_out_of_memory_still_fails():
    oom = ("2020-12-01 10:16:12.000000: W tensorflow/core/common_runtime/bfc_allocator.cc:431] Allocator "
           "(GPU_0_bfc) ran out of memory trying to allocate 1.00GiB (rounded to 1073741824)requested by op Conv2D\n")
    f = trtlog.parse(BFC_WARNING + oom)
    assert len(f["oom"]) == 1 and len(f["memory_warnings"]) == 1
    assert not gate.evaluate_tensorrt([1], ONE_ENGINE, f, GOOD_PARITY)["passed"]
