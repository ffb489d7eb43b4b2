"""Request parsing, validation and response shaping (protocol.py, tfserving.py, kserve_v2.py), no HTTP, no TF.

Signatures are described with the same TensorInfo/Signature objects the
server builds from a SavedModel's SignatureDefs; they never run here.
"""

import base64
import json
import struct
from collections import OrderedDict

import numpy as np
import pytest

from kit.runtime.serving import kserve_v2, tfserving
from kit.runtime.model import Signature, TensorInfo
from kit.runtime.serving.protocol import RequestError


def _sig(key, inputs, outputs):
    return Signature(key, "tensorflow/serving/predict",
                     OrderedDict((k, TensorInfo(k, k + ":0", d, s)) for k, d, s in inputs),
                     OrderedDict((k, TensorInfo(k, k + ":0", d, s)) for k, d, s in outputs), function=None)


class Model(object):
    name, version, default_signature = "m", "3", "serving_default"

    def __init__(self):
        self.signatures = OrderedDict([
            ("serving_default", _sig("serving_default", [("x", "DT_FLOAT", [-1, 2])], [("y", "DT_FLOAT", [-1, 2])])),
            ("two", _sig("two", [("a", "DT_INT32", [-1, 3]), ("b", "DT_FLOAT", [-1])],
                         [("p", "DT_FLOAT", [-1]), ("q_bytes", "DT_STRING", [-1])])),
            ("text", _sig("text", [("s", "DT_STRING", None)], [("n", "DT_INT64", [-1])])),
            ("fixed", _sig("fixed", [("z", "DT_FLOAT", [4])], [("w", "DT_FLOAT", [4])])),
            ("flags", _sig("flags", [("f", "DT_BOOL", [-1]), ("u", "DT_UINT8", [-1])], [("o", "DT_FLOAT", [-1])])),
        ])


MODEL = Model()
LIMIT = 100


def tfs(body, limit=LIMIT):
    return tfserving.parse_tfserving(json.dumps(body).encode() if not isinstance(body, bytes) else body, MODEL, limit)


def error_of(fn, *args, **kwargs):
    with pytest.raises(RequestError) as info:
        fn(*args, **kwargs)
    return info.value


# ---- TF Serving: parsing --------------------------------------------------------


def test_row_format_unnamed_single_input():
    parsed = tfs({"instances": [[1, 2], [3.5, 4]]})
    assert parsed.fmt == "row" and parsed.rows == 2 and parsed.signature.key == "serving_default"
    assert parsed.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(parsed.inputs["x"], [[1, 2], [3.5, 4]])


def test_row_format_named_instances_and_signature_name():
    parsed = tfs({"signature_name": "two", "instances": [{"a": [1, 2, 3], "b": 0.5}, {"a": [4, 5, 6], "b": 1}]})
    assert parsed.signature.key == "two" and parsed.rows == 2
    assert parsed.inputs["a"].dtype == np.int32 and parsed.inputs["a"].shape == (2, 3)
    np.testing.assert_array_equal(parsed.inputs["b"], np.array([0.5, 1], np.float32))


def test_row_format_named_single_input_is_accepted():
    parsed = tfs({"instances": [{"x": [1, 2]}]})
    np.testing.assert_array_equal(parsed.inputs["x"], [[1, 2]])


def test_columnar_format_plain_and_named():
    a = tfs({"inputs": [[1, 2]]})
    b = tfs({"inputs": {"x": [[1, 2]]}})
    assert a.fmt == b.fmt == "columnar"
    np.testing.assert_array_equal(a.inputs["x"], b.inputs["x"])


def test_strings_plain_and_b64():
    raw = b"\x00\xffbinary"
    parsed = tfs({"signature_name": "text", "instances": ["hello", {"b64": base64.b64encode(raw).decode()}]})
    assert list(parsed.inputs["s"]) == [b"hello", raw]
    assert parsed.rows == 2


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "malformed JSON"),
    (b"", 400, "empty request body"),
    (b"[1, 2]", 400, "must be a JSON object"),
    ({"instances": [[1, 2]], "inputs": [[1, 2]]}, 400, "exactly one of"),
    ({"signature_name": "serving_default"}, 400, "exactly one of"),
    ({"instances": [[1, 2]], "extra": 1}, 400, "unknown field 'extra'"),
    ({"instances": []}, 400, "empty batch"),
    ({"inputs": []}, 400, "expects [-1, 2]"),
    ({"instances": [[1, 2, 3]]}, 400, "shape [1, 3] but the model expects [-1, 2]"),
    ({"instances": [1, 2]}, 400, "shape [2] but the model expects [-1, 2]"),
    ({"instances": [[1, 2], [3]]}, 400, "ragged"),
    ({"instances": [["a", "b"]]}, 400, "got strings, expected numbers"),
    ({"instances": [[True, False]]}, 400, "got booleans, expected numbers"),
    ({"signature_name": "nope", "instances": [[1, 2]]}, 400, "\"nope\" not found"),
    ({"signature_name": 7, "instances": [[1, 2]]}, 400, "must be a string"),
    ({"signature_name": "two", "instances": [{"a": [1, 2, 3]}]}, 400, "missing input 'b'"),
    ({"signature_name": "two", "instances": [{"a": [1, 2, 3], "b": 1, "c": 2}]}, 400, "unknown input 'c'"),
    ({"signature_name": "two", "instances": [[1, 2, 3]]}, 400, "several inputs"),
    ({"signature_name": "two", "instances": [{"a": [1.5, 2, 3], "b": 1}]}, 400, "got numbers, expected integers"),
    ({"signature_name": "two", "instances": [{"a": [1, 2, 3], "b": 1}, [1]]}, 400, "mix named"),
    ({"signature_name": "two", "inputs": {"a": [[1, 2, 3]] * (LIMIT + 1), "b": [1.0]}}, 400, "too many instances"),
    ({"signature_name": "flags", "instances": [{"f": 1, "u": 3}]}, 400, "expected true/false"),
    ({"signature_name": "flags", "instances": [{"f": True, "u": 300}]}, 400, "values must lie in [0, 255]"),
    ({"signature_name": "text", "instances": [{"b64": "%%%"}]}, 400, "invalid base64"),
    ({"signature_name": "text", "instances": [3]}, 400, "string tensor"),
    ({"instances": [[1, 2]] * (LIMIT + 1)}, 400, "too many instances"),
])
def test_tfserving_errors_are_400_with_a_clear_message(body, status, words):
    err = error_of(tfs, body)
    assert err.status == status
    assert words in err.message, err.message


def test_shape_error_names_the_expected_shape():
    err = error_of(tfs, {"instances": [[[1, 2]]]})
    assert "input 'x' has shape [1, 1, 2] but the model expects [-1, 2]" in err.message


def test_columnar_inputs_may_differ_in_dimension_0():
    """TF Serving feeds columnar inputs as sent; kit runs such a request alone, unpadded."""
    parsed = tfs({"signature_name": "two", "inputs": {"a": [[1, 2, 3]], "b": [1.0, 2.0]}})
    assert not parsed.batchable and parsed.inputs["a"].shape == (1, 3) and parsed.inputs["b"].shape == (2,)
    # the row format cannot express it, and a same-size columnar request still batches
    assert tfs({"signature_name": "two", "inputs": {"a": [[1, 2, 3]], "b": [1.0]}}).batchable


def test_fixed_shape_signature_is_not_batched():
    parsed = tfs({"signature_name": "fixed", "inputs": [1, 2, 3, 4]})
    assert not parsed.signature.batchable and parsed.rows == 1
    assert "expects [4]" in error_of(tfs, {"signature_name": "fixed", "inputs": [1, 2, 3]}).message


# ---- TF Serving: responses ------------------------------------------------------


def test_row_response_single_output_is_a_plain_list():
    parsed = tfs({"instances": [[1, 2], [3, 4]]})
    body = json.loads(tfserving.tfserving_response(parsed, {"y": np.array([[1, 2], [3, 4]], np.float32)}))
    assert body == {"predictions": [[1.0, 2.0], [3.0, 4.0]]}


def test_row_response_several_outputs_is_a_dict_per_instance_and_bytes_are_b64():
    parsed = tfs({"signature_name": "two", "instances": [{"a": [1, 2, 3], "b": 1}, {"a": [1, 2, 3], "b": 2}]})
    outputs = {"p": np.array([0.5, 1.5], np.float32), "q_bytes": np.array([b"\x00a", b"b"], dtype=object)}
    body = json.loads(tfserving.tfserving_response(parsed, outputs))
    assert body == {"predictions": [{"p": 0.5, "q_bytes": {"b64": base64.b64encode(b"\x00a").decode()}},
                                    {"p": 1.5, "q_bytes": {"b64": base64.b64encode(b"b").decode()}}]}


def test_columnar_response_shapes():
    parsed = tfs({"inputs": [[1, 2]]})
    assert json.loads(tfserving.tfserving_response(parsed, {"y": np.array([[5, 6]], np.float32)})) == {
        "outputs": [[5.0, 6.0]]}
    parsed = tfs({"signature_name": "two", "inputs": {"a": [[1, 2, 3]], "b": [1]}})
    body = json.loads(tfserving.tfserving_response(
        parsed, {"p": np.array([2.0], np.float32), "q_bytes": np.array([b"z"], dtype=object)}))
    assert body == {"outputs": {"p": [2.0], "q_bytes": [{"b64": "eg=="}]}}


# ---- KServe v2 ------------------------------------------------------------------


def v2(header, binary=b"", header_length="auto", limit=LIMIT):
    head = json.dumps(header).encode()
    if header_length == "auto":
        header_length = str(len(head)) if binary else None
    return kserve_v2.parse_v2(bytearray(head + binary), MODEL, limit, header_length)


def test_v2_json_flat_and_nested_data():
    flat = v2({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
    nested = v2({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}]})
    np.testing.assert_array_equal(flat.inputs["x"], nested.inputs["x"])
    assert flat.rows == 2 and flat.outputs == ["y"] and flat.binary == {"y": False}


def test_v2_binary_input_is_a_zero_copy_view_of_the_body():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    body, headers = kserve_v2.v2_binary_request({"x": x})
    parsed = kserve_v2.parse_v2(bytearray(body), MODEL, LIMIT, headers["Inference-Header-Content-Length"])
    np.testing.assert_array_equal(parsed.inputs["x"], x)
    assert not parsed.inputs["x"].flags.owndata  # a view on the request buffer, no copy
    assert parsed.binary == {"y": True}


def test_v2_binary_bytes_elements_and_output_selection():
    body, headers = kserve_v2.v2_binary_request({"s": np.array([b"ab", b"", b"\x00z"], dtype=object)},
                                               outputs=["n"], parameters={"signature_name": "text"})
    parsed = kserve_v2.parse_v2(bytearray(body), MODEL, LIMIT, headers["Inference-Header-Content-Length"])
    assert list(parsed.inputs["s"]) == [b"ab", b"", b"\x00z"] and parsed.signature.key == "text"
    assert parsed.outputs == ["n"] and parsed.binary == {"n": True}


def test_v2_per_output_binary_flag_overrides_the_request_default():
    parsed = v2({"parameters": {"signature_name": "two", "binary_data_output": True},
                 "inputs": [{"name": "a", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]},
                            {"name": "b", "shape": [1], "datatype": "FP32", "data": [1]}],
                 "outputs": [{"name": "q_bytes", "parameters": {"binary_data": False}}, {"name": "p"}]})
    assert parsed.outputs == ["q_bytes", "p"] and parsed.binary == {"q_bytes": False, "p": True}


@pytest.mark.parametrize("header, binary, header_length, words", [
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}, b"", "auto",
     "datatype \"FP64\" but the model expects FP32"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, b"", "auto",
     "shape [1, 3] but the model expects [-1, 2]"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2, 3]}]}, b"", "auto",
     "has 3 elements but shape [1, 2] needs 2"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32"}]}, b"", "auto", "neither \"data\""),
    ({"inputs": [{"name": "y", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}, b"", "auto",
     "unknown input 'y'"),
    ({"inputs": []}, b"", "auto", "non-empty list"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}] * 2}, b"", "auto",
     "given twice"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
      "outputs": [{"name": "nope"}]}, b"", "auto", "unknown output 'nope'"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]},
     b"\x00" * 4, "auto", "runs past the end"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]},
     b"\x00" * 4, "auto", "binary_data_size is 4 bytes but shape [1, 2] of FP32 needs 8"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]},
     b"\x00" * 12, "auto", "4 bytes of binary data after"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]},
     b"\x00" * 8, "abc", "must be an integer"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]},
     b"\x00" * 8, "99999", "outside the body"),
    ({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]},
     b"", None, "no Inference-Header-Content-Length"),
    ({"inputs": [{"name": "x", "shape": [1, -2], "datatype": "FP32", "data": []}]}, b"", "auto",
     "non-negative integers"),
    ({"inputs": [{"name": "x", "shape": [0, 2], "datatype": "FP32", "data": []}]}, b"", "auto", "empty batch"),
    ({"parameters": {"binary_data_output": "yes"},
      "inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}, b"", "auto",
     "must be true or false"),
])
def test_v2_errors_are_400_with_a_clear_message(header, binary, header_length, words):
    err = error_of(v2, header, binary, header_length)
    assert err.status == 400
    assert words in err.message, err.message


def test_v2_bad_bytes_element_lengths():
    header = {"parameters": {"signature_name": "text"},
              "inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]}
    data = struct.pack("<I", 1) + b"a" + struct.pack("<I", 9)  # the second element claims 9 bytes
    assert "longer than the data" in error_of(v2, header, data).message


def test_v2_response_binary_layout():
    parsed = v2({"parameters": {"signature_name": "two", "binary_data_output": True},
                 "inputs": [{"name": "a", "shape": [2, 3], "datatype": "INT32", "data": [1, 2, 3, 4, 5, 6]},
                            {"name": "b", "shape": [2], "datatype": "FP32", "data": [1, 2]}],
                 "id": "req-7"})
    outputs = {"p": np.array([0.25, 4.0], np.float32), "q_bytes": np.array([b"hi", b""], dtype=object)}
    parts, headers = kserve_v2.v2_response(parsed, outputs, MODEL)
    body = b"".join(bytes(p) for p in parts)
    hlen = int(headers["Inference-Header-Content-Length"])
    header, arrays = kserve_v2.v2_decode_response(body, hlen)
    assert header["id"] == "req-7" and header["model_name"] == "m" and header["model_version"] == "3"
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [8, 4 + 2 + 4]
    np.testing.assert_array_equal(arrays["p"], outputs["p"])
    assert list(arrays["q_bytes"]) == [b"hi", b""]
    assert headers["Content-Type"] == "application/octet-stream"


def test_v2_response_json_only():
    parsed = v2({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})
    parts, headers = kserve_v2.v2_response(parsed, {"y": np.array([[3, 4]], np.float32)}, MODEL)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(b"".join(parts))["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [1, 2],
                                                       "data": [3.0, 4.0]}]


def test_v2_classification_extension():
    parsed = v2({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}],
                 "outputs": [{"name": "y", "parameters": {"classification": 1}}]})
    assert parsed.classes == {"y": 1}
    parts, _ = kserve_v2.v2_response(parsed, {"y": np.array([[0.1, 0.7], [0.9, 0.2]], np.float32)}, MODEL)
    out = json.loads(b"".join(parts))["outputs"][0]
    assert out["datatype"] == "BYTES" and out["shape"] == [2, 1]
    assert out["data"] == ["0.700000:1", "0.900000:0"]
    parsed = v2({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
                 "outputs": [{"name": "y", "parameters": {"classification": 5, "binary_data": True}}]})
    parts, headers = kserve_v2.v2_response(parsed, {"y": np.array([[0.25, 0.5]], np.float32)}, MODEL)
    header, arrays = kserve_v2.v2_decode_response(b"".join(bytes(p) for p in parts),
                                                  headers["Inference-Header-Content-Length"])
    assert arrays["y"].tolist() == [[b"0.500000:1", b"0.250000:0"]]  # at most as many classes as there are
    for count in (0, -1, "2", True, 1.5):
        body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
                "outputs": [{"name": "y", "parameters": {"classification": count}}]}
        assert "classification must be a positive integer" in error_of(v2, body).message
    body = {"parameters": {"signature_name": "two"},
            "inputs": [{"name": "a", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]},
                       {"name": "b", "shape": [1], "datatype": "FP32", "data": [1]}],
            "outputs": [{"name": "q_bytes", "parameters": {"classification": 1}}]}
    assert "needs a numeric output" in error_of(v2, body).message


def test_v2_bytes_that_are_not_utf8_are_refused_in_json_and_sent_binary():
    body = {"parameters": {"signature_name": "two"},
            "inputs": [{"name": "a", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3]},
                       {"name": "b", "shape": [1], "datatype": "FP32", "data": [1]}]}
    outputs = {"p": np.array([1.0], np.float32), "q_bytes": np.array([b"\xff\xfe"], dtype=object)}
    error = error_of(kserve_v2.v2_response, v2(body), outputs, MODEL)
    assert error.status == 400 and "not UTF-8" in error.message and "binary_data" in error.message
    body["outputs"] = [{"name": "q_bytes", "parameters": {"binary_data": True}}]
    parts, headers = kserve_v2.v2_response(v2(body), outputs, MODEL)
    _, arrays = kserve_v2.v2_decode_response(b"".join(bytes(p) for p in parts),
                                             headers["Inference-Header-Content-Length"])
    assert arrays["q_bytes"].tolist() == [b"\xff\xfe"]
    outputs["q_bytes"] = np.array(["caf\u00e9".encode("utf-8")], dtype=object)
    parts, _ = kserve_v2.v2_response(v2(dict(body, outputs=None)), outputs, MODEL)
    assert json.loads(b"".join(parts))["outputs"][1]["data"] == ["caf\u00e9"]
