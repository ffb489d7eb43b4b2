"""kit.runtime.audit and the gate on TF-TRT-shaped SavedModels (see tests/trt_fixtures.py)."""

import json
import os
import struct
from pathlib import Path

import pytest

import trt_fixtures
from kit.runtime import audit, gate, trtlog

pytestmark = pytest.mark.tf  # needs TensorFlow (deselected on the Python 3.8 host run)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "trt"
GOOD_PARITY = {"passed": True, "max_abs_error": 0.001, "max_abs_error_limit": 0.05, "top1_agreement": 1.0,
               "min_top1_agreement_limit": 0.99, "reasons": []}


@pytest.fixture(scope="module")
def trt_models(saved_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("trt-models")
    out = {}
    for key, built, naming in (("all", [[1, 8], [1, 8]], "2.3"), ("one_missing", [[1, 8], [1]], "2.3"),
                               ("none", [None, None], "2.3"), ("all_217", [[1, 8], [1, 8]], "2.17")):
        path = str(root / key)
        trt_fixtures.make_trt_saved_model(saved_models["cnn"], path, built, naming=naming)
        out[key] = path
    return out


def test_all_engines_built_for_every_batch_size(trt_models):
    a = audit.audit_saved_model(trt_models["all"])
    assert a["trt_engine_ops"] == {"graph": 0, "functions": 2, "unique": 2}
    assert [e["name"] for e in a["engines"]] == ["TRTEngineOp_0_0", "TRTEngineOp_0_1"]
    e0 = a["engines"][0]
    assert e0["precision_mode"] == "FP16" and e0["max_cached_engines_count"] == 2
    assert e0["workspace_size_bytes"] == 1 << 30 and e0["static_engine"] is False
    assert e0["segment_func"] == "TRTEngineOp_0_0_native_segment" and e0["input_shapes"] == [[None, 16, 16, 3]]
    assert e0["asset"]["exists"] and e0["asset"]["error"] is None
    assert [i["input_shapes"] for i in e0["asset"]["instances"]] == [[[1, 16, 16, 3]], [[8, 16, 16, 3]]]
    assert e0["built_batch_sizes"] == [1, 8] and a["engines"][1]["built_batch_sizes"] == [1, 8]
    assert a["native_segment_functions"] == ["TRTEngineOp_0_0_native_segment", "TRTEngineOp_0_1_native_segment"]
    # Coverage: the segments' compute ops vs what is left (Softmax); noise and native segments excluded.
    assert a["converted_ops"] == trt_fixtures.CONVERTED_OPS and a["native_ops"] == trt_fixtures.NATIVE_OPS
    assert a["native_ops_by_type"] == {"Softmax": 1}
    assert a["coverage_percent"] == pytest.approx(100.0 * 6 / 7, abs=0.01)
    assert a["is_native"] is False
    assert a["summary"].startswith("2 TensorRT engine op(s), 4 built engine(s) saved")
    g = gate.evaluate_tensorrt([1, 8], a, trtlog.parse_file(str(FIXTURES / "tf23_fp16_success.log")), GOOD_PARITY)
    assert g["passed"], g["reasons"]


def test_tf217_engine_names(trt_models):
    a = audit.audit_saved_model(trt_models["all_217"])
    assert [e["name"] for e in a["engines"]] == ["TRTEngineOp_000_000", "TRTEngineOp_000_001"]
    assert all(e["built_batch_sizes"] == [1, 8] for e in a["engines"])


def test_one_batch_size_without_engine_fails_the_gate(trt_models):
    a = audit.audit_saved_model(trt_models["one_missing"])
    assert a["engines"][1]["built_batch_sizes"] == [1]
    g = gate.evaluate_tensorrt([1, 8], a, trtlog.empty_findings(), GOOD_PARITY)
    assert not g["passed"]
    assert g["reasons"] == ["TRTEngineOp_0_1 has no built engine for batch size(s) [8] (built only for [1])"]


def test_no_engine_assets_fails_the_gate(trt_models):
    a = audit.audit_saved_model(trt_models["none"])
    assert all(not e["asset"]["exists"] for e in a["engines"])
    assert "no saved engine for TRTEngineOp_0_0, TRTEngineOp_0_1" in a["summary"]
    g = gate.evaluate_tensorrt([1, 8], a, trtlog.empty_findings(), GOOD_PARITY)
    assert len(g["reasons"]) == 1 and "no engine asset" in g["reasons"][0]


def test_native_model_says_so_plainly(saved_models):
    a = audit.audit_saved_model(saved_models["cnn"])
    assert a["is_native"] and a["summary"] == audit.NATIVE_SUMMARY
    assert a["coverage_percent"] == 0.0 and a["converted_ops"] == 0
    assert a["native_ops_by_type"] == {"AddV2": 2, "Conv2D": 1, "MatMul": 1, "Mean": 1, "Relu": 1, "Softmax": 1}
    g = gate.evaluate_tensorrt([1, 8], a, trtlog.empty_findings(), GOOD_PARITY)
    assert not g["passed"] and g["reasons"][0].startswith("0 TensorRT engines")
    assert gate.evaluate_native(a, GOOD_PARITY)["passed"]


def test_fallback_and_oom_in_the_log_fail_the_gate_even_with_all_engines(trt_models):
    a = audit.audit_saved_model(trt_models["all"])
    g = gate.evaluate_tensorrt([1, 8], a, trtlog.parse_file(str(FIXTURES / "article_nano_fp16_oom.log")), GOOD_PARITY)
    failed = {c["name"] for c in g["checks"] if not c["passed"]}
    assert failed == {"no_fallback", "no_oom"}
    assert "engine creation for TRTEngineOp_0_0 failed (Internal: Failed to build TensorRT engine)" in g["reasons"][0]


def test_corrupt_engine_asset_is_reported_not_trusted(trt_models, tmp_path):
    import shutil

    path = tmp_path / "corrupt"
    shutil.copytree(trt_models["all"], path)
    asset = path / "assets" / "trt-serialized-engine.TRTEngineOp_0_0"
    data = bytearray(asset.read_bytes())
    data[20] ^= 0xFF  # inside the first record's data
    asset.write_bytes(bytes(data))
    a = audit.audit_saved_model(str(path))
    assert "data CRC mismatch" in a["engines"][0]["asset"]["error"]
    g = gate.evaluate_tensorrt([1, 8], a, trtlog.empty_findings(), GOOD_PARITY)
    assert "engine asset unreadable" in g["reasons"][0]


def test_tfrecord_reader_checks_framing(tmp_path):
    assert audit.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    big = tmp_path / "big"
    trt_fixtures.write_engine_asset(str(big), [([[8, 4]], b"x" * (2 << 20))])
    instances = audit.read_engine_asset(str(big))
    assert instances == [{"input_shapes": [[8, 4]], "engine_bytes": 2 << 20}]
    big.write_bytes(big.read_bytes()[:-100])
    with pytest.raises(audit.AuditError, match="truncated"):
        audit.read_engine_asset(str(big))
    not_tfrecord = tmp_path / "text"
    not_tfrecord.write_bytes(b"this is not a tfrecord file at all")
    with pytest.raises(audit.AuditError, match="length CRC mismatch"):
        list(audit.read_tfrecords(str(not_tfrecord)))


def test_engine_instance_decoding_skips_unknown_fields():
    msg = trt_fixtures.encode_engine_instance([[1, 224, 224, 3], [1, 10]], b"abc")
    msg += b"\x18\x05"  # an unknown varint field 3, as newer protos may carry
    assert audit.decode_engine_instance(msg) == {"input_shapes": [[1, 224, 224, 3], [1, 10]], "engine_bytes": 3}
    with pytest.raises(audit.AuditError):
        audit.decode_engine_instance(struct.pack("<B", 0x0A) + b"\x7f")  # length past the end
