"""kit.runtime.trtlog: the parser on real TF-TRT log lines, and fd-level capture."""

import pytest

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from kit.runtime import trtlog

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trt"
ROOT = Path(__file__).resolve().parents[2]


def parse(name):
    return trtlog.parse_file(str(FIXTURES / name))


def test_article_nano_oom_is_a_failed_build_with_fallback_and_oom():
    f = parse("article_nano_fp16_oom.log")
    assert f["candidate_segments"] == 1
    assert f["segments"] == [{"op": "TRTEngineOp_0_0", "segment": 0, "nodes": 468, "ok": True, "error": None}]
    # The build was attempted and failed: never reported as a built engine.
    assert f["engines_built"] == [{"op": "TRTEngineOp_0_0", "input_shapes": [[8, 224, 224, 3]], "batch_size": 8,
                                   "ok": False}]
    assert f["engine_failures"] == [{"op": "TRTEngineOp_0_0", "reason": "Internal: Failed to build TensorRT engine"}]
    assert [x["kind"] for x in f["native_fallbacks"]] == ["engine_creation_failed", "engine_retrieval_failed"]
    assert f["native_fallbacks"][1]["input_shapes"] == [[8, 224, 224, 3]]
    # The BFC line says itself it is not a failure (a memory warning); TensorRT's two lines are the OOM.
    assert [w["size"] for w in f["memory_warnings"]] == ["4.00GiB"]
    assert len(f["oom"]) == 2
    assert "4294967296 bytes" in f["oom"][0]["line"] and "OutOfMemory Error in GpuMemory" in f["oom"][1]["line"]
    assert any("OutOfMemory Error in GpuMemory" in e for e in f["tensorrt_errors"])
    summary = trtlog.summarize(f)
    assert not any(s.startswith("engine built") for s in summary)
    assert any("engine creation FAILED: TRTEngineOp_0_0" in s for s in summary)


def test_tf23_success_reports_engines_per_batch_size_and_versions():
    f = parse("tf23_fp16_success.log")
    assert f["candidate_segments"] == 1
    assert [(e["op"], e["batch_size"], e["ok"]) for e in f["engines_built"]] == [
        ("TRTEngineOp_0_0", 1, True), ("TRTEngineOp_0_0", 8, True)]
    assert f["native_fallbacks"] == [] and f["oom"] == [] and f["engine_failures"] == []
    assert f["tensorrt_versions"] == {"linked": "7.1.3", "loaded": "7.1.3"}
    assert f["unconverted_op_types"] == ["Identity", "NoOp", "Placeholder"]


def test_real_public_log_lines_from_2019():
    f = parse("mobilenet_tf115_2019.log")
    assert f["candidate_segments"] == 1
    assert f["segments"][0]["op"] == "TRTEngineOp_0" and f["segments"][0]["nodes"] == 507
    assert f["unconverted_op_types"] == ["Add", "ArgMax", "Identity", "Const", "NoOp", "Placeholder"]
    assert f["native_fallbacks"] == []


def test_every_fallback_wording_is_a_fallback():
    f = parse("fallback_variants.log")
    kinds = [(x["kind"], x["op"]) for x in f["native_fallbacks"]]
    assert kinds == [
        ("engine_creation_failed", "TRTEngineOp_0"),  # scope prefix PartitionedCall/ dropped
        ("engine_retrieval_failed", "TRTEngineOp_0_1"),
        ("engine_retrieval_failed", "TRTEngineOp_2"),
        ("engine_execution_failed", "TRTEngineOp_000_003"),
        ("engine_execution_failed", "TRTEngineOp_4"),
        ("build_at_runtime_disallowed", None),
        ("engine_batch_unavailable", "TRTEngineOp_6"),
        ("input_shape_check_failed", "TRTEngineOp_000_007"),
        ("other", None),  # an unknown wording at W level is still counted
    ]
    assert f["native_fallbacks"][2]["batch_size"] == 8
    assert f["native_fallbacks"][3]["reason"] == "Internal: Failed to enqueue batch for TRT engine"
    # "Native segment is used during collecting shapes for profiles" is INFO, part of build(): not a fallback.
    assert not any("collecting shapes" in x["line"] for x in f["native_fallbacks"])


def test_versions_library_errors_and_cache_misses():
    f = parse("versions_and_cache.log")
    assert f["tensorrt_versions"] == {"linked": "7.1.3", "loaded": "7.1.0"}
    assert len(f["version_warnings"]) == 1 and "Loaded TensorRT 7.1.0 but linked" in f["version_warnings"][0]
    assert f["cache_misses"] == ["TRTEngineOp_0_0", "TRTEngineOp_0_1"]
    assert len(f["library_errors"]) == 3
    assert f["native_fallbacks"] == []


def test_parse_shapes():
    assert trtlog.parse_shapes("[[8,224,224,3], [8,4]]") == [[8, 224, 224, 3], [8, 4]]
    assert trtlog.parse_shapes("[[?,224,224,3]]") == [[None, 224, 224, 3]]
    assert trtlog.parse_shapes("[[-1,3]]") == [[None, 3]]


def test_own_lines_and_native_segment_function_names_are_not_fallbacks():
    text = "\n".join([
        "kit: fallback to native TensorFlow (engine_retrieval_failed): the native segment will be used instead",
        "2021-03-02 12:00:00.000001: W tensorflow/core/x.cc:1] function TRTEngineOp_0_0_native_segment not inlined",
        "kit: out of memory: something",
    ])
    f = trtlog.parse(text)
    assert f["native_fallbacks"] == [] and f["oom"] == []


def test_capture_sees_c_level_and_child_writes_and_tees(tmp_path, capfd):
    log = tmp_path / "run.log"
    cap = trtlog.StderrCapture(str(log)).start()
    try:
        os.write(2, b"c-level write to fd 2\n")  # (pytest swaps sys.stderr; the fresh-process test covers it)
        subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write('child process line\\n')"], check=True)
        assert cap.sync() is True
        text = log.read_text()
        assert "c-level write to fd 2" in text and "child process line" in text
    finally:
        cap.stop()
    os.write(2, b"after stop\n")
    assert "after stop" not in log.read_text()
    teed = capfd.readouterr().err
    assert "c-level write to fd 2" in teed and "child process line" in teed and "after stop" in teed
    assert "kit: sync" not in teed and "kit: sync" not in log.read_text()  # the sync marker is filtered out


@pytest.mark.tf
def test_capture_of_tensorflow_cpp_output_and_a_real_tf_trt_error(tmp_path):
    """In a fresh process: tf.print's C++ kernel and TF-TRT's own error on a TensorRT-less build land in the log.
    TF 2.3.1's tensorflow-cpu says nothing at all: its converter constructs without TensorRT (the twin shows it)."""
    log = tmp_path / "tf.log"
    code = textwrap.dedent("""
        import sys
        from kit.runtime import trtlog
        trtlog.set_log_env()
        cap = trtlog.StderrCapture(sys.argv[1]).start()
        import tensorflow as tf
        tf.print("from-the-cpp-kernel", output_stream=sys.stderr)
        from tensorflow.python.compiler.tensorrt import trt_convert
        try:
            trt_convert.TrtGraphConverterV2(input_saved_model_dir="/nonexistent")
        except RuntimeError as e:
            sys.stderr.write("raised: %s\\n" % e)
        else:
            sys.stderr.write("constructed without TensorRT\\n")
        cap.sync()
        cap.stop()
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300,
                          cwd=str(ROOT))
    assert proc.returncode == 0, proc.stderr
    text = log.read_text()
    assert "from-the-cpp-kernel" in text
    import tensorflow as tf

    if tuple(int(p) for p in tf.__version__.split(".")[:2]) >= (2, 8):
        assert "Tensorflow needs to be built with TensorRT support enabled" in text  # TF's own logging.error
        assert "raised: Tensorflow has not been built with TensorRT support." in text
    else:
        assert "constructed without TensorRT" in text and "TensorRT support" not in text
    assert "from-the-cpp-kernel" in proc.stderr  # tee'd to the real stderr
