"""KServe v2 over HTTP, called with Triton's own client (tritonclient.http) and curl.

The server is `python -m kit.runtime.serving.main` (testkit.server) with TF
Serving's half_plus_two, and a model whose BYTES output is arbitrary bytes
(base64 decoded in the graph): compressed request bodies, the /config and
/stats documents Triton's tools read, the classification extension, BYTES
that are not UTF-8.
"""

import gzip
import json
import subprocess
import zlib

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
triton = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

from test_server import HALF_PLUS_TWO, Server  # noqa: E402


@pytest.fixture(scope="module")
def hp2():
    server = Server(HALF_PLUS_TWO, "half_plus_two", "1,4", env={"KIT_MAX_JSON_BODY": "1MiB"}).wait_ready()
    server.client = triton.InferenceServerClient("127.0.0.1:%d" % server.port)
    yield server
    server.client.close()
    assert server.stop() == 0


def _x(values):
    x = triton.InferInput("x", [len(values), 1], "FP32")
    x.set_data_from_numpy(np.array(values, np.float32).reshape(-1, 1), binary_data=False)
    return x


def test_health_metadata_infer_and_errors_as_tritonclient_calls_them(hp2):
    c = hp2.client
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("half_plus_two")
    assert c.is_model_ready("half_plus_two", model_version="123") and not c.is_model_ready("nope")
    assert c.get_server_metadata()["name"] == "kit"
    meta = c.get_model_metadata("half_plus_two")
    assert meta["versions"] == ["123"] and meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 1]}]
    # JSON in, JSON out; binary in, binary out; the request id comes back.
    result = c.infer("half_plus_two", [_x([1.0, 2.0, 5.0])], request_id="r-7",
                     outputs=[triton.InferRequestedOutput("y", binary_data=False)])
    assert result.as_numpy("y").ravel().tolist() == [2.5, 3.0, 4.5] and result.get_response()["id"] == "r-7"
    x = triton.InferInput("x", [2, 1], "FP32")
    x.set_data_from_numpy(np.array([[4.0], [6.0]], np.float32), binary_data=True)
    result = c.infer("half_plus_two", [x], outputs=[triton.InferRequestedOutput("y", binary_data=True)])
    assert result.as_numpy("y").ravel().tolist() == [4.0, 5.0]
    # Every error class a client meets: 404 unknown model / version, 400 datatype, size, unknown output.
    # (half_plus_two is a TF1 graph, fed without a static shape check as TF Serving does: no shape error.)
    wrong = triton.InferInput("x", [1, 1], "FP64")
    wrong.set_data_from_numpy(np.ones((1, 1), np.float64), binary_data=False)
    for call, status, words in (
            (lambda: c.infer("nope", [_x([1.0])]), "404", "nope"),
            (lambda: c.infer("half_plus_two", [_x([1.0])], model_version="9"), "404", "9"),
            (lambda: c.get_model_metadata("nope"), "404", "nope"),
            (lambda: c.infer("half_plus_two", [wrong]), "400", "FP64"),
            (lambda: c.infer("half_plus_two", [_x([1.0] * 300)]), "400", "too many"),  # max: 64 x 4 rows
            (lambda: c.infer("half_plus_two", [_x([1.0])], outputs=[triton.InferRequestedOutput("z")]), "400",
             "'z'")):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == status and words in info.value.message(), (status, str(info.value))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_request_bodies(hp2, algorithm):
    result = hp2.client.infer("half_plus_two", [_x([1.0, 3.0])], request_compression_algorithm=algorithm)
    assert result.as_numpy("y").ravel().tolist() == [2.5, 3.5]
    # Binary tensor data compressed too.
    x = triton.InferInput("x", [2, 1], "FP32")
    x.set_data_from_numpy(np.array([[0.0], [8.0]], np.float32), binary_data=True)
    result = hp2.client.infer("half_plus_two", [x], request_compression_algorithm=algorithm,
                              outputs=[triton.InferRequestedOutput("y", binary_data=True)])
    assert result.as_numpy("y").ravel().tolist() == [2.0, 6.0]


def _post(server, body, headers):
    return server.request("POST", "/v2/models/half_plus_two/infer", body, headers)


def test_compressed_bodies_are_bounded_and_checked(hp2):
    # A zip bomb: 64 KiB on the wire, 64 MiB inflated; the JSON limit here is 1 MiB.
    bomb = gzip.compress(b" " * (64 << 20), 9)
    assert len(bomb) < 128 << 10
    status, _, body = _post(hp2, bomb, {"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert status == 413 and "decompressed request body exceeds the limit of 1048576 bytes" in json.loads(body)["error"]
    status, _, body = _post(hp2, b"not gzip at all", {"Content-Encoding": "gzip"})
    assert status == 400 and "not valid gzip" in json.loads(body)["error"]
    good = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [4.0]}]}).encode()
    status, _, body = _post(hp2, gzip.compress(good)[:-6], {"Content-Encoding": "gzip"})  # truncated
    assert status == 400, body
    status, _, body = _post(hp2, good, {"Content-Encoding": "br"})
    assert status == 415 and "gzip, deflate or identity" in json.loads(body)["error"]
    # Raw deflate (no zlib header), as some clients send "deflate".
    raw = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    status, _, body = _post(hp2, raw.compress(good) + raw.flush(), {"Content-Encoding": "deflate"})
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == [4.0]
    # curl's own gzip body.
    proc = subprocess.run("printf '%s' | gzip | curl -sS -X POST -H 'Content-Encoding: gzip' --data-binary @- "
                          "http://127.0.0.1:%d/v2/models/half_plus_two/infer" % (good.decode(), hp2.port),
                          shell=True, check=True, capture_output=True, text=True, timeout=60)
    assert json.loads(proc.stdout)["outputs"][0]["data"] == [4.0]
    assert hp2.predict({"instances": [[1.0]]})[0] == 200  # still serving


def test_config_and_stats_as_tritons_tools_read_them(hp2):
    config = hp2.client.get_model_config("half_plus_two")
    assert config["name"] == "half_plus_two" and config["platform"] == "tensorflow_savedmodel"
    assert config["max_batch_size"] == 4
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}]
    assert config["output"] == [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]
    assert config["dynamic_batching"]["preferred_batch_size"] == [1, 4]
    before = hp2.client.get_inference_statistics("half_plus_two")["model_stats"][0]
    hp2.client.infer("half_plus_two", [_x([1.0, 2.0, 3.0])])
    with pytest.raises(InferenceServerException):
        hp2.client.infer("half_plus_two", [_x([1.0])], outputs=[triton.InferRequestedOutput("nope")])
    after = hp2.client.get_inference_statistics("half_plus_two")["model_stats"][0]
    assert after["name"] == "half_plus_two" and after["version"] == "123"
    assert after["inference_count"] == before["inference_count"] + 3
    assert after["execution_count"] == before["execution_count"] + 1
    success, fail = after["inference_stats"]["success"], after["inference_stats"]["fail"]
    assert success["count"] == before["inference_stats"]["success"]["count"] + 1 and success["ns"] > 0
    assert fail["count"] == before["inference_stats"]["fail"]["count"] + 1
    sizes = dict((b["batch_size"], b["compute_infer"]["count"]) for b in after["batch_stats"])
    assert sizes[4] >= 1 and after["last_inference"] > 0
    status, _, body = hp2.request("GET", "/v2/models/other/stats")
    assert status == 404
    assert hp2.request("POST", "/v2/models/half_plus_two/config", b"{}")[0] == 405


def test_class_count_returns_tritons_classification_strings(hp2):
    result = hp2.client.infer("half_plus_two", [_x([1.0, 5.0])],
                              outputs=[triton.InferRequestedOutput("y", binary_data=False, class_count=1)])
    assert result.as_numpy("y").tolist() == [["2.500000:0"], ["4.500000:0"]]
    result = hp2.client.infer("half_plus_two", [_x([1.0])],
                              outputs=[triton.InferRequestedOutput("y", binary_data=True, class_count=3)])
    assert result.as_numpy("y").tolist() == [[b"2.500000:0"]]  # at most as many classes as the output has
    status, _, body = _post(hp2, {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [1]}],
                                  "outputs": [{"name": "y", "parameters": {"classification": -2}}]}, {})
    assert status == 400 and "positive integer" in json.loads(body)["error"]


@pytest.fixture(scope="module")
def raw_bytes_model(tmp_path_factory):
    class Raw(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            return {"raw": tf.io.decode_base64(text)}

    path = tmp_path_factory.mktemp("raw") / "1"
    module = Raw()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    server = Server(path, "raw", "1,4").wait_ready()
    server.client = triton.InferenceServerClient("127.0.0.1:%d" % server.port)
    yield server
    server.client.close()
    assert server.stop() == 0


def test_bytes_outputs_that_are_not_utf8(raw_bytes_model):
    client = raw_bytes_model.client
    text = triton.InferInput("text", [2], "BYTES")
    text.set_data_from_numpy(np.array([b"_-8", b"aGk"], dtype=object), binary_data=False)  # web-safe base64
    result = client.infer("raw", [text], outputs=[triton.InferRequestedOutput("raw", binary_data=True)])
    assert result.as_numpy("raw").tolist() == [b"\xff\xef", b"hi"]
    with pytest.raises(InferenceServerException) as info:
        client.infer("raw", [text], outputs=[triton.InferRequestedOutput("raw", binary_data=False)])
    assert "not UTF-8" in str(info.value) and "binary_data" in str(info.value)
    text = triton.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"aGk"], dtype=object), binary_data=False)
    result = client.infer("raw", [text], outputs=[triton.InferRequestedOutput("raw", binary_data=False)])
    assert result.as_numpy("raw").tolist() == ["hi"]  # text stays text in JSON
