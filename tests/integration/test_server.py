"""The model server as a real process, with real TensorFlow and real models.

Every server here is `python -m kit.runtime.serving.main` on a free 127.0.0.1 port,
spoken to with plain http.client the way TF Serving and KServe clients do.
Models: the bundled digits CNN (trained fresh for the session), TensorFlow
Serving's own half_plus_two (TF1-era signatures), and, as the stand-in for
what cannot exist here, a model whose graph prints the log lines TF-TRT
writes when it builds an engine or falls back (no TensorRT on this machine).

The slow-server tests use the documented test-only hooks
KIT_TEST_WARMUP_DELAY / KIT_TEST_INFER_DELAY (sleeps in the server), which
make "still warming up", "queue full" and "request in flight" observable
with a fast model.
"""

import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kit.net import free_port
from testkit.server import DIGITS_REQUEST as GOOD, HALF_PLUS_TWO, KIT_CLI as KIT, REPO, SERVER_PYTHON, kit_serve_local
from testkit.server import ServerProcess as Server
from kit.runtime.serving.kserve_v2 import v2_binary_request, v2_decode_response


def batches_by_size(metrics):
    return dict((int(re.search(r'batch_size="(\d+)"', k).group(1)), v)
                for k, v in metrics.items() if k.startswith("kit_batches_total{"))


# ---- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(digits_dir):
    server = Server(digits_dir / "saved_model", "digits", "1,4,8",
                    env={"KIT_MAX_BODY": "256KiB", "KIT_MAX_INSTANCES": "100", "KIT_MAX_BATCH_DELAY": "5ms"})
    server.wait_ready()
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="module")
def half_plus_two():
    server = Server(HALF_PLUS_TWO, "half_plus_two", "1,4").wait_ready()
    yield server
    assert server.stop() == 0


def rows(x):
    return x.tolist()


def predictions(server, x) -> np.ndarray:
    """The server's TF Serving row-format answer for the rows of `x`, as float32."""
    return np.array(json.loads(server.predict({"instances": rows(x)})[2])["predictions"], np.float32)


def predict_counting_batches(server, x):
    """predictions(server, x), and how many batches of each size the server ran meanwhile (from /metrics)."""
    before = batches_by_size(server.metrics())
    answer = predictions(server, x)
    after = batches_by_size(server.metrics())
    return answer, {size: n - before.get(size, 0) for size, n in after.items()}


# ---- TF Serving REST ----------------------------------------------------------------


def test_health_status_and_metadata(digits):
    assert digits.get("/v2/health/live")[0] == 200
    assert digits.get("/v2/health/ready")[0] == 200
    status, headers, body = digits.get("/v1/models/digits")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    status, _, body = digits.get("/v1/models/digits/versions/1/metadata")
    meta = json.loads(body)
    assert status == 200 and meta["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["pixels"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["pixels"]["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    assert [d["size"] for d in sig["outputs"]["probabilities"]["tensor_shape"]["dim"]] == ["-1", "10"]
    status, _, body = digits.get("/v2")
    assert status == 200 and "binary_tensor_data" in json.loads(body)["extensions"]


def test_row_and_columnar_predict_are_accurate_and_identical(digits, digits_images):
    x, y = digits_images
    x, y = x[:40], y[:40]
    status, _, body = digits.predict({"instances": rows(x)})
    assert status == 200
    predictions = np.array(json.loads(body)["predictions"])
    assert predictions.shape == (40, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1.0, atol=1e-5)
    assert (predictions.argmax(axis=1) == y).mean() >= 0.9
    # Columnar, named row instances and the explicit signature name answer the very same numbers.
    for body in ({"inputs": rows(x)}, {"inputs": {"pixels": rows(x)}},
                 {"signature_name": "serving_default", "instances": [{"pixels": rows(i)} for i in x]}):
        status, _, answer = digits.predict(body)
        answer = json.loads(answer)
        got = np.array(answer.get("outputs", answer.get("predictions")))
        assert status == 200 and np.array_equal(got, predictions)


def test_keep_alive_serves_many_requests_on_one_connection(digits, digits_images):
    x, _ = digits_images
    conn = digits.connect()
    status, _, _ = digits.predict({"instances": rows(x[:1])}, conn=conn)
    sock = conn.sock
    for i in range(20):
        status, headers, _ = digits.predict({"instances": rows(x[i:i + 1])}, conn=conn)
        assert status == 200 and headers.get("connection") != "close"
    assert conn.sock is sock  # never reconnected
    conn.close()


# ---- KServe v2 ------------------------------------------------------------------------


def test_v2_binary_request_and_response_match_tfserving(digits, digits_images):
    x, _ = digits_images
    x = x[:5].astype(np.float32)
    reference = predictions(digits, x)
    body, headers = v2_binary_request({"pixels": x})
    status, rheaders, data = digits.request("POST", "/v2/models/digits/infer", body, headers)
    assert status == 200 and rheaders["content-type"] == "application/octet-stream"
    header, arrays = v2_decode_response(data, rheaders["inference-header-content-length"])
    assert header["model_name"] == "digits" and header["model_version"] == "1"
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 5 * 10 * 4
    assert arrays["probabilities"].dtype == np.float32
    np.testing.assert_array_equal(arrays["probabilities"], reference)  # same batch of 8: same bits


def test_v2_json_and_metadata(digits, digits_images):
    x, _ = digits_images
    req = {"id": "r1", "inputs": [{"name": "pixels", "shape": [2, 8, 8, 1], "datatype": "FP32",
                                   "data": x[:2].reshape(-1).tolist()}]}
    status, headers, body = digits.request("POST", "/v2/models/digits/versions/1/infer", req)
    answer = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json" and answer["id"] == "r1"
    out = answer["outputs"][0]
    assert out["name"] == "probabilities" and out["shape"] == [2, 10] and len(out["data"]) == 20
    status, _, body = digits.get("/v2/models/digits")
    meta = json.loads(body)
    assert status == 200 and meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert digits.get("/v2/models/digits/ready")[0] == 200


# ---- malformed input: 4xx, and the server keeps serving ----------------------------------

BINARY_GOOD, BINARY_HEADERS = v2_binary_request({"pixels": np.zeros((1, 8, 8, 1), np.float32)})


MALFORMED = [
    ("bad json", "POST", "/v1/models/digits:predict", b'{"instances": [1, 2', {}, 400, "malformed JSON"),
    ("empty body", "POST", "/v1/models/digits:predict", b"", {}, 400, "empty request body"),
    ("empty batch", "POST", "/v1/models/digits:predict", {"instances": []}, {}, 400, "empty batch"),
    ("wrong input name", "POST", "/v1/models/digits:predict", {"inputs": {"image": [[0]]}}, {}, 400,
     "unknown input 'image'"),
    ("wrong shape", "POST", "/v1/models/digits:predict", {"instances": [[1, 2, 3]]}, {}, 400,
     "expects [-1, 8, 8, 1]"),
    ("wrong dtype", "POST", "/v1/models/digits:predict", {"instances": [[[["a"]] * 8] * 8]}, {}, 400,
     "got strings, expected numbers"),
    ("too many instances", "POST", "/v1/models/digits:predict", {"instances": [[[[0]] * 8] * 8] * 101}, {}, 400,
     "too many instances: 101"),
    ("unknown model", "POST", "/v1/models/nope:predict", GOOD, {}, 404, "Servable not found"),
    ("unknown version", "POST", "/v1/models/digits/versions/7:predict", GOOD, {}, 404, "Servable not found"),
    ("unknown signature", "POST", "/v1/models/digits:predict", dict(GOOD, signature_name="nope"), {}, 400,
     "\"nope\" not found"),
    ("classify a predict signature", "POST", "/v1/models/digits:classify", {"examples": [{"x": 1.0}]}, {}, 400,
     "not a classify one"),
    ("regress without examples", "POST", "/v1/models/digits:regress", GOOD, {}, 400, "unknown field 'instances'"),
    ("unknown verb", "POST", "/v1/models/digits:explain", GOOD, {}, 404, "no such endpoint"),
    ("unknown endpoint", "GET", "/v1/nothing", None, {}, 404, "no such endpoint"),
    ("wrong method", "GET", "/v2/models/digits/infer", None, {}, 405, "use POST"),
    ("bad binary header", "POST", "/v2/models/digits/infer", BINARY_GOOD,
     dict(BINARY_HEADERS, **{"Inference-Header-Content-Length": "12x"}), 400, "must be an integer"),
    ("binary header too long", "POST", "/v2/models/digits/infer", BINARY_GOOD,
     dict(BINARY_HEADERS, **{"Inference-Header-Content-Length": str(len(BINARY_GOOD) + 1)}), 400,
     "outside the body"),
    ("binary size mismatch", "POST", "/v2/models/digits/infer", BINARY_GOOD[:-4], BINARY_HEADERS, 400,
     "runs past the end"),
    ("v2 wrong datatype", "POST", "/v2/models/digits/infer",
     {"inputs": [{"name": "pixels", "shape": [1, 8, 8, 1], "datatype": "INT32", "data": [0] * 64}]}, {}, 400,
     "expects FP32"),
    ("v2 unknown model", "POST", "/v2/models/nope/infer", BINARY_GOOD, BINARY_HEADERS, 404, "Servable not found"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_requests_get_a_4xx_and_the_server_keeps_serving(digits, case):
    _, method, path, body, headers, status, words = case
    got_status, got_headers, data = digits.request(method, path, body, headers)
    assert got_status == status, data
    assert got_headers["content-type"] == "application/json"
    assert words in json.loads(data)["error"]
    assert digits.predict(GOOD)[0] == 200


def test_protocol_level_garbage_and_missing_length(digits):
    with socket.create_connection(("127.0.0.1", digits.port), timeout=10) as s:
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")
    # A POST needs a Content-Length: chunked bodies are refused too (411, see transport.py).
    body = json.dumps(GOOD).encode()
    with socket.create_connection(("127.0.0.1", digits.port), timeout=10) as s:
        s.sendall(b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 411") and b"Content-Length" in reply
    with socket.create_connection(("127.0.0.1", digits.port), timeout=10) as s:
        s.sendall(b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 411") and b"Content-Length" in reply
    assert digits.predict(GOOD)[0] == 200


def _raw_exchange(port, data, read_until_close=False):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        if not read_until_close:
            return s.recv(65536)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_http_details_keep_alive_versions_expect_and_header_limits(digits):
    body = json.dumps(GOOD).encode()
    request = (b"POST /v1/models/digits:predict HTTP/1.0\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    reply = _raw_exchange(digits.port, request, read_until_close=True)  # HTTP/1.0: answered, then closed
    assert reply.startswith(b"HTTP/1.1 200") and b"Connection: close" in reply and b'"predictions"' in reply
    keep = request.replace(b"HTTP/1.0\r\n", b"HTTP/1.0\r\nConnection: keep-alive\r\n")
    with socket.create_connection(("127.0.0.1", digits.port), timeout=10) as s:
        for _ in range(2):  # the same connection serves both
            s.sendall(keep)
            reply = s.recv(65536)
            assert reply.startswith(b"HTTP/1.1 200") and b"connection: keep-alive" in reply.lower()
    with socket.create_connection(("127.0.0.1", digits.port), timeout=10) as s:
        s.sendall(b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert s.recv(4096).startswith(b"HTTP/1.1 100 ")
        s.sendall(body)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
    folded = (b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nX-Note: one\r\n two\r\nContent-Length: %d\r\n\r\n"
              % len(body)) + body
    # Obsolete line folding (RFC 9112 5.2): tornado >= 6.4 refuses it with 400, 6.1 joins the lines.
    reply = _raw_exchange(digits.port, folded)
    assert reply.startswith(b"HTTP/1.1 400") or (reply.startswith(b"HTTP/1.1 200") and b"predictions" in reply)
    many = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n"
    assert _raw_exchange(digits.port, many).startswith(b"HTTP/1.1 431")
    twice = b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    reply = _raw_exchange(digits.port, twice)
    assert reply.startswith(b"HTTP/1.1 400") and b"conflicting Content-Length" in reply
    # HTTP/2 (or any version but 1.x) in an HTTP/1 request line is refused, as tornado frames it: 400.
    assert _raw_exchange(digits.port, b"GET /v2/health/live HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert digits.predict(GOOD)[0] == 200


def test_oversized_bodies_get_413_and_the_server_keeps_serving(digits):
    conn = digits.connect()
    status, headers, data = digits.request("POST", "/v1/models/digits:predict", b" " * (300 * 1024), conn=conn)
    assert status == 413 and "exceeds the limit of 262144 bytes" in json.loads(data)["error"]
    # A moderately oversized body is drained, so the connection stays usable.
    assert digits.predict(GOOD, conn=conn)[0] == 200
    conn.close()
    # A huge one is refused without reading it: answered, then the connection closes.
    with socket.create_connection(("127.0.0.1", digits.port), timeout=10) as s:
        s.sendall(b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (50 << 20))
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413") and b"Connection: close" in reply
    assert digits.predict(GOOD)[0] == 200


# ---- batching through the server ----------------------------------------------------------


def test_padded_partial_batch_gives_exactly_the_unpadded_rows(digits, digits_images):
    x, _ = digits_images
    x = x[:3]
    three, ran = predict_counting_batches(digits, x)
    assert ran.get(4, 0) == 1  # 3 rows ran as the built batch size 4
    # The same batch the server ran, sent whole: the first 3 rows are bit-identical.
    padded = np.concatenate([x, x[-1:]])
    four = predictions(digits, padded)
    np.testing.assert_array_equal(three, four[:3])
    # And batch-1 calls (no padding at all) agree to float32 rounding of different kernel sizes.
    singles = np.concatenate([predictions(digits, x[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(three, singles, rtol=0, atol=1e-6)
    assert set(batches_by_size(digits.metrics())) <= {1, 4, 8}  # never any other size


def test_oversized_request_is_split_and_reassembled(digits, digits_images):
    x, _ = digits_images
    x = x[:19]
    whole, ran = predict_counting_batches(digits, x)
    assert whole.shape == (19, 10)
    assert ran.get(8, 0) == 2 and ran.get(4, 0) == 1  # 8 + 8 + 3(->4)
    parts = [predictions(digits, x[a:b])
             for a, b in ((0, 8), (8, 16), (16, 19))]
    np.testing.assert_array_equal(whole, np.concatenate(parts))  # same chunks, same bits, same order


def test_concurrent_single_requests_are_micro_batched(digits, digits_images):
    x, _ = digits_images
    n = 16
    expected = [np.array(json.loads(digits.predict({"instances": rows(x[i:i + 1])})[2])["predictions"])
                for i in range(n)]
    before = digits.metrics()
    results = [None] * n
    barrier = threading.Barrier(n)

    def client(i):
        conn = digits.connect()
        barrier.wait()
        for _ in range(3):
            status, _, body = digits.predict({"instances": rows(x[i:i + 1])}, conn=conn)
            results[i] = (status, np.array(json.loads(body)["predictions"]))
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = digits.metrics()
    for i in range(n):
        assert results[i][0] == 200
        np.testing.assert_allclose(results[i][1], expected[i], atol=1e-6)
    calls = sum(after[k] - before.get(k, 0) for k in after if k.startswith("kit_batches_total{"))
    real = after["kit_batch_rows_total"] - before["kit_batch_rows_total"]
    assert real == 3 * n
    assert calls < 3 * n  # requests shared model calls


def test_metrics_exposition(digits):
    digits.predict({"instances": [[1]]})  # one 400
    status, headers, body = digits.get("/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    for name in ("kit_requests_total", "kit_request_errors_total", "kit_batches_total", "kit_padding_ratio",
                 "kit_queue_depth", "kit_queue_capacity", "kit_request_latency_seconds_bucket",
                 "kit_inference_latency_seconds_count", "kit_trt_engine_builds_total",
                 "kit_trt_native_fallbacks_total", "kit_ready", "kit_warmup_seconds", "kit_rejected_total"):
        assert "# TYPE " + name.replace("_bucket", "").replace("_count", "") in text, name
    m = digits.metrics()
    assert m['kit_requests_total{endpoint="v1",code="400"}'] >= 1
    assert m['kit_request_errors_total{code="400"}'] >= 1
    assert m["kit_queue_capacity"] == 64 and m["kit_ready"] == 1
    assert 0 < m["kit_padding_ratio"] < 1
    assert m['kit_request_latency_seconds_bucket{le="+Inf"}'] == m["kit_request_latency_seconds_count"] > 0


# ---- half_plus_two: TF Serving's own TF1-era test model -------------------------------------


def tf_example(x):
    """A serialized tf.train.Example {"x": FloatList[x]}, encoded by hand (protobuf wire format)."""
    def field(number, payload):
        return bytes([number << 3 | 2, len(payload)]) + payload
    float_list = field(1, struct.pack("<f", x))
    feature = field(2, float_list)
    entry = field(1, b"x") + field(2, feature)
    return field(1, field(1, entry))


def test_half_plus_two_serving_default_is_exact(half_plus_two):
    status, _, body = half_plus_two.predict({"instances": [[1.0], [2.0], [5.0]]})
    assert status == 200 and json.loads(body) == {"predictions": [[2.5], [3.0], [4.5]]}
    status, _, body = half_plus_two.predict({"inputs": {"x": [[0.0], [-4.0]]}})
    assert status == 200 and json.loads(body) == {"outputs": [[2.0], [0.0]]}
    status, _, body = half_plus_two.request(
        "POST", "/v2/models/half_plus_two/infer",
        {"inputs": [{"name": "x", "shape": [3, 1], "datatype": "FP32", "data": [1, 2, 3]}]})
    assert status == 200 and json.loads(body)["outputs"][0]["data"] == [2.5, 3.0, 3.5]
    # TF Serving's documented request: TF1 graphs take [3] for x's [-1, 1] (no static shape check).
    status, _, body = half_plus_two.predict({"instances": [1.0, 2.0, 5.0]})
    assert status == 200 and json.loads(body) == {"predictions": [2.5, 3.0, 4.5]}, body
    status, _, body = half_plus_two.predict({"inputs": {"x": [[[1.0]], [[3.0]]]}})
    assert status == 200 and json.loads(body) == {"outputs": [[[2.5]], [[3.5]]]}, body
    assert half_plus_two.predict({"instances": [[1.0], [2.0]]})[0] == 200  # still served after the loose ones


def test_half_plus_two_other_signatures(half_plus_two):
    status, _, body = half_plus_two.get("/v1/models/half_plus_two/metadata")
    meta = json.loads(body)
    assert meta["model_spec"]["version"] == "123"
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert sorted(sigs) == ["classify_x_to_y", "regress_x2_to_y3", "regress_x_to_y", "regress_x_to_y2",
                            "serving_default"]
    assert sigs["serving_default"]["inputs"]["x"]["name"] == "x:0"
    assert sigs["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"
    assert sigs["classify_x_to_y"]["inputs"]["inputs"] == {"dtype": "DT_STRING", "name": "tf_example:0",
                                                           "tensor_shape": {"dim": [], "unknown_rank": True}}
    status, _, body = half_plus_two.predict({"signature_name": "regress_x2_to_y3", "instances": [[1.0], [4.0]]})
    assert status == 200 and json.loads(body) == {"predictions": [[3.5], [5.0]]}
    examples = [{"b64": base64.b64encode(tf_example(v)).decode()} for v in (1.0, 4.0, 6.0)]
    for signature, expected in (("classify_x_to_y", [[2.5], [4.0], [5.0]]), ("regress_x_to_y", [[2.5], [4.0], [5.0]]),
                                ("regress_x_to_y2", [[3.5], [5.0], [6.0]])):
        status, _, body = half_plus_two.predict({"signature_name": signature, "instances": examples})
        assert status == 200 and json.loads(body) == {"predictions": expected}, (signature, body)
    status, _, body = half_plus_two.predict({"signature_name": "regress_x_to_y", "instances": ["garbage"]})
    error = json.loads(body)["error"]
    assert status == 400 and "Could not parse example input" in error
    assert "ParseExample" in error.split("Could not parse example input", 1)[1], error  # the whole text, not a line
    assert half_plus_two.predict({"instances": [[1.0]]})[0] == 200
    assert half_plus_two.get("/v1/models/half_plus_two/versions/123")[0] == 200
    assert half_plus_two.get("/v1/models/half_plus_two/versions/1")[0] == 404


def curl(server, path, body):
    """curl, as in TF Serving's REST docs: (status, JSON body)."""
    out = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: application/json",
                          "--data-binary", json.dumps(body), "http://127.0.0.1:%d%s" % (server.port, path)],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    text, code = out.rsplit("\n", 1)
    return int(code), json.loads(text)


def test_tf_serving_rest_docs_requests_with_curl(half_plus_two):
    """The requests of TF Serving's REST API page, on its own half_plus_two, as curl sends them."""
    base = "http://127.0.0.1:%d" % half_plus_two.port
    for path in ("/v1/models/half_plus_two", "/v1/models/half_plus_two/versions/123",
                 "/v1/models/half_plus_two/metadata"):
        out = subprocess.run(["curl", "-sS", "-f", base + path], check=True, capture_output=True, text=True,
                             timeout=60).stdout
        assert json.loads(out), path
    status, body = curl(half_plus_two, "/v1/models/half_plus_two:predict", {"instances": [1.0, 2.0, 5.0]})
    assert status == 200 and body == {"predictions": [2.5, 3.0, 4.5]}
    status, body = curl(half_plus_two, "/v1/models/half_plus_two/versions/123:predict",
                        {"signature_name": "serving_default", "inputs": {"x": [[1.0], [2.0]]}})
    assert status == 200 and body == {"outputs": [[2.5], [3.0]]}
    for path, request, code, words in (
            ("/v1/models/nope:predict", {"instances": [1.0]}, 404, "Servable not found"),
            ("/v1/models/half_plus_two/versions/9:predict", {"instances": [1.0]}, 404, "9"),
            ("/v1/models/half_plus_two:predict", {"instances": ["a"]}, 400, ""),
            ("/v1/models/half_plus_two:predict", {"signature_name": "nope", "instances": [1.0]}, 400, "nope")):
        status, body = curl(half_plus_two, path, request)
        assert status == code and words in body["error"], (path, status, body)


def test_rest_classify_and_regress_with_curl(half_plus_two):
    classify = "/v1/models/half_plus_two:classify"
    regress = "/v1/models/half_plus_two:regress"
    status, body = curl(half_plus_two, classify, {"signature_name": "classify_x_to_y",
                                                  "examples": [{"x": 1.0}, {"x": 4.0}]})
    assert status == 200 and body == {"results": [[["", 2.5]], [["", 4.0]]]}, body
    status, body = curl(half_plus_two, regress, {"signature_name": "regress_x_to_y", "examples": [{"x": 6.0}]})
    assert status == 200 and body == {"results": [5.0]}, body
    # "context" features go into every example; an example's own feature wins.
    status, body = curl(half_plus_two, regress, {"signature_name": "regress_x_to_y2", "context": {"x": 2.0},
                                                 "examples": [{}, {"x": 4.0}]})
    assert status == 200 and body == {"results": [4.0, 5.0]}, body
    # A version in the path; a feature given as a list.
    status, body = curl(half_plus_two, "/v1/models/half_plus_two/versions/123:regress",
                        {"signature_name": "regress_x_to_y", "examples": [{"x": [6.0]}]})
    assert status == 200 and body == {"results": [5.0]}, body
    for path, request, words in (
            (classify, {"examples": [{"x": 1.0}]}, "not a classify one"),  # serving_default is a predict signature
            (regress, {"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]}, "not a regress one"),
            (regress, {"signature_name": "regress_x_to_y", "examples": {"x": 1.0}}, "must be a list"),
            (regress, {"signature_name": "regress_x_to_y", "examples": []}, "no examples"),
            (regress, {"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, "a"]}]}, "mixes kinds"),
            (regress, {"signature_name": "regress_x_to_y", "examples": [{"x": True}]}, "booleans"),
            (regress, {"signature_name": "regress_x_to_y", "examples": [{"x": {"b64": "%%"}}]}, "invalid base64"),
            (regress, {"signature_name": "regress_x_to_y", "examples": [{"y": 1.0}]}, "the model rejected"),
            (classify, {"signature_name": "nope", "examples": [{"x": 1.0}]}, "not found"),
            ("/v1/models/other:classify", {"examples": [{"x": 1.0}]}, "Servable not found")):
        status, body = curl(half_plus_two, path, request)
        assert 400 <= status < 500 and words in body["error"], (request, status, body)
    assert half_plus_two.metrics()['kit_requests_total{endpoint="v1",code="200"}'] >= 4


# ---- lifecycle: warm-up, overload, TF-TRT events, SIGTERM --------------------------------------


def test_not_ready_until_warm_up_ran_every_batch_size_then_overload_gives_503(digits_dir, digits_images):
    x, _ = digits_images
    server = Server(digits_dir / "saved_model", "digits", "1,2",
                    env={"KIT_TEST_WARMUP_DELAY": "1.5", "KIT_TEST_INFER_DELAY": "0.3", "KIT_MAX_QUEUE": "2"})
    try:
        server.wait_live()
        seen_warming = seen_loading = False
        deadline = time.time() + 90
        while time.time() < deadline:
            status, headers, body = server.get("/v2/health/ready")
            if status == 200:
                break
            assert status == 503
            reason = json.loads(body)["error"]
            if "warming up" in reason:
                predicted = server.predict({"instances": rows(x[:1])})
                model_ready = server.get("/v2/models/digits/ready")[0]
                metadata = server.get("/v1/models/digits/metadata")[0]
                state = json.loads(server.get("/v1/models/digits")[2])["model_version_status"][0]["state"]
                if server.get("/v2/health/ready")[0] == 200:
                    continue  # the warm-up ended between the checks (a loaded machine): look again
                seen_warming = True
                status, headers, body = predicted
                assert status == 503 and headers["retry-after"] == "1" and "not ready" in json.loads(body)["error"]
                assert model_ready == 503
                assert metadata == 200  # loaded, not yet warm
                # TF Serving's status says LOADING until inference answers.
                assert state == "LOADING"
                seen_loading = True
            time.sleep(0.1)
        assert seen_warming and seen_loading and status == 200
        assert json.loads(server.get("/v1/models/digits")[2])["model_version_status"][0]["state"] == "AVAILABLE"
        logs = server.logs()
        assert logs.index("warm-up: batch size 1") < logs.index("warm-up: batch size 2") < logs.index("ready:")
        warm = server.metrics()
        assert warm["kit_warmup_seconds"] >= 3.0  # 2 sizes x 1.5 s test delay
        assert warm['kit_warmup_runs_total{source="zeros",batch_size="1"}'] == 1
        assert warm['kit_warmup_runs_total{source="zeros",batch_size="2"}'] == 1

        # Overload: a queue of 2 items and a 0.3 s model call, 12 requests at once.
        results = []
        lock = threading.Lock()
        barrier = threading.Barrier(12)

        def client():
            barrier.wait()
            status, headers, body = server.predict({"instances": rows(x[:1])})
            with lock:
                results.append((status, headers.get("retry-after"), json.loads(body)))

        threads = [threading.Thread(target=client) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        rejected = [r for r in results if r[0] == 503]
        assert rejected and all(r[1] == "1" and "queue is full" in r[2]["error"] for r in rejected)
        assert any(r[0] == 200 for r in results)
        assert all(r[0] in (200, 503) for r in results)
        assert server.metrics()['kit_rejected_total{reason="queue_full"}'] == len(rejected)
        # Recovered: the queue drained, requests succeed again.
        assert server.predict({"instances": rows(x[:1])})[0] == 200
    finally:
        assert server.stop() == 0


def test_sigterm_finishes_requests_in_flight_and_exits_0(digits_dir, digits_images):
    x, _ = digits_images
    server = Server(digits_dir / "saved_model", "digits", "1,8", env={"KIT_TEST_INFER_DELAY": "1.5"}).wait_ready()
    results = []

    def client(i):
        status, _, body = server.predict({"instances": rows(x[i:i + 1])})
        results.append((status, json.loads(body)))

    kept = server.connect()
    assert server.predict({"instances": rows(x[:1])}, conn=kept)[0] == 200  # an open keep-alive connection
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)  # and one kept open by a raw client
    raw.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert raw.recv(4096).startswith(b"HTTP/1.1 200")
    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # all three are in flight: the model call takes 1.5 s
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    # A request on an existing connection during the drain is still served, and the server closes the
    # connection once the answer is out (here while the three requests still run).
    raw.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = raw.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200") and b"Connection: close" in answer
    raw.settimeout(0.5)
    assert raw.recv(4096) == b"" and server.proc.poll() is None
    raw.close()
    status, headers, _ = server.predict({"instances": rows(x[:1])}, conn=kept)
    assert status == 200 and headers.get("connection") == "close"
    with pytest.raises(OSError):  # no new connections once draining
        server.get("/v2/health/live")
    for t in threads:
        t.join(30)
    code = server.proc.wait(30)
    logs = server.logs()
    assert code == 0, logs
    assert [r[0] for r in results] == [200, 200, 200], results
    assert all(len(r[1]["predictions"][0]) == 10 for r in results)
    assert "finishing requests in flight" in logs
    with pytest.raises(OSError):  # no longer listening
        server.get("/v2/health/live")
    server.stop()


@pytest.fixture(scope="module")
def trt_log_model(tmp_path_factory):
    """Stand-in for a TF-TRT model (TensorRT cannot run here): a graph that prints, to the C++
    stderr, the two lines TF-TRT 2.3.1 logs when it builds an engine at runtime (VLOG(1): the
    runtime image sets TF_CPP_VMODULE=trt_engine_op=1) and when a segment falls back to native
    TensorFlow. The server must count both from its own stderr."""
    import tensorflow as tf

    build = ("2020-11-20 10:00:00.000000: I tensorflow/compiler/tf2tensorrt/kernels/trt_engine_op.cc:739] "
             "Building a new TensorRT engine for TRTEngineOp_0_0 with input shapes: [[3,2]]")
    fallback = ("2020-11-20 10:00:00.000000: W tensorflow/compiler/tf2tensorrt/kernels/trt_engine_op.cc:629] "
                "TF-TRT Warning: Engine retrieval for input shapes: [[3,2]] failed. Running native segment for TRTEngineOp_0_0")

    class Noisy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serve(self, x):
            tf.print(build, output_stream=sys.stderr)
            tf.print(fallback, output_stream=sys.stderr)
            return {"y": x * 2.0}

    path = tmp_path_factory.mktemp("trtlog") / "model"
    module = Noisy()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def test_engine_builds_and_fallbacks_are_counted_from_stderr(trt_log_model):
    server = Server(trt_log_model, "noisy", "1,4").wait_ready()
    try:
        for _ in range(3):
            status, _, body = server.predict({"instances": [[1.0, 2.0]]})
            assert status == 200 and json.loads(body) == {"predictions": [[2.0, 4.0]]}
        deadline = time.time() + 10
        while time.time() < deadline:
            m = server.metrics()
            if m["kit_trt_native_fallbacks_total"] >= 5:
                break
            time.sleep(0.1)
        assert m["kit_trt_engine_builds_total"] == 5  # 2 warm-up calls + 3 requests
        assert m["kit_trt_native_fallbacks_total"] == 5
        assert "Building a new TensorRT engine" in server.logs()  # stderr still reaches the log
    finally:
        assert server.stop() == 0


def test_health_probe(digits):
    probe = [SERVER_PYTHON, "-m", "kit.runtime.serving.main", "--probe", "--port", str(digits.port)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    assert subprocess.run(probe, env=env, capture_output=True).returncode == 0
    env["KIT_PORT"] = str(digits.port)
    assert subprocess.run([SERVER_PYTHON, "-m", "kit.runtime.serving.healthcheck"], env=env,
                          capture_output=True).returncode == 0
    env["KIT_PORT"] = str(free_port())  # nothing listens there
    closed = subprocess.run([SERVER_PYTHON, "-m", "kit.runtime.serving.healthcheck"], env=env, capture_output=True)
    assert closed.returncode == 1 and b"not ready" in closed.stderr


def test_health_probe_with_a_slot_counts_only_that_slot_s_server():
    """KIT_SLOT=blue on the server (its Kit-Slot header) and on the probe: the image's
    HEALTHCHECK, run as a start-first update's new task runs it beside the old one."""
    server = Server(HALF_PLUS_TWO, "half_plus_two", "1", env={"KIT_SLOT": "blue", "KIT_TEST_WARMUP_DELAY": "5"})
    try:
        def probe(slot, *argv):
            env = dict(os.environ, PYTHONPATH=str(REPO), KIT_PORT=str(server.port), KIT_SLOT=slot)
            return subprocess.run([SERVER_PYTHON, "-m", *argv], env=env, capture_output=True, text=True, timeout=60)

        server.wait_live()
        warming = probe("blue", "kit.runtime.serving.healthcheck")  # its own server, warming up: 503
        assert warming.returncode == 1 and "slot blue answered HTTP 503" in warming.stderr, warming.stderr
        server.wait_ready()
        assert probe("blue", "kit.runtime.serving.healthcheck").returncode == 0
        assert probe("blue", "kit.runtime.serving.main", "--probe").returncode == 0
        for argv in (["kit.runtime.serving.healthcheck"], ["kit.runtime.serving.main", "--probe"]):
            other = probe("green", *argv)  # a ready server, but another slot's: not this task's health
            assert other.returncode == 1, other.stderr
            assert "not ready for slot green" in other.stderr and "blue" in other.stderr
    finally:
        assert server.stop() == 0


# ---- kit serve --local / kit bench --local (host orchestration) ---------------------------------

def test_runtime_args_come_from_the_manifest(digits_manifest, digits_dir):
    from kit.manifest.load import load_model
    from kit.serve.local import runtime_args

    args = runtime_args(load_model(digits_manifest), port=9123)
    pairs = dict(zip(args[::2], args[1::2]))
    assert pairs == {"--model-dir": str(digits_dir / "saved_model"), "--model-name": "digits",
                     "--model-version": "1", "--signature": "serving_default", "--host": "127.0.0.1",
                     "--port": "9123", "--grpc-port": "8500", "--batch-sizes": "1,4", "--max-batch-delay": "3ms",
                     "--max-queue": "16", "--input-shapes": "pixels=8,8,1",
                     # the serve limits, defaults here (test_server_hardening checks that a manifest's take effect)
                     "--max-connections": "2048", "--max-header-bytes": "65536", "--max-headers": "100",
                     "--max-json-body": str(16 << 20), "--max-body": str(64 << 20), "--max-buffered": str(256 << 20),
                     "--idle-timeout": "20000ms", "--body-timeout": "60000ms"}


def test_kit_serve_local_serves_until_sigterm(digits_manifest, digits_images):
    x, _ = digits_images
    server = kit_serve_local(digits_manifest, "digits", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proc, port = server.proc, server.port
    try:
        server.wait_ready()
        status, _, body = server.predict({"instances": rows(x[:2])})
        assert status == 200 and np.array(json.loads(body)["predictions"]).shape == (2, 10)
        assert batches_by_size(server.metrics()) == {4: 1}  # built sizes from the manifest: 2 rows -> 4
        proc.send_signal(signal.SIGTERM)  # to kit: forwarded to the server, which drains and exits 0
        assert proc.wait(30) == 0
        output = proc.stdout.read().decode()
        assert "POST http://127.0.0.1:%d/v1/models/digits:predict" % port in output
        assert "stopped" in output
        # TF_CPP_MIN_LOG_LEVEL=2 (set above) hides the VLOG lines engine builds show as: kit says so.
        assert "warning: TF_CPP_MIN_LOG_LEVEL=2 hides TensorFlow's VLOG lines" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _children(pid):
    """Pids whose parent is pid (from /proc/*/stat)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                out.append(int(entry))
    return out


def test_kit_serve_local_logs_engine_builds_at_run_time_as_the_image_does(digits_manifest, digits_images):
    """Finding 3 for --local: TF 2.3.1 prints an engine built at run time only at VLOG(1) of trt_engine_op,
    and only at TF_CPP_MIN_LOG_LEVEL 0. kit serve --local sets both, keeping the user's own modules. TensorRT
    is not here: the user's process_function_library_runtime=1 stands in, its VLOG(1) lines must come out."""
    x, _ = digits_images
    port = free_port()
    env = dict(os.environ, TF_CPP_VMODULE="process_function_library_runtime=1")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    proc = subprocess.Popen(KIT + ["serve", str(digits_manifest), "--local", "--port", str(port), "--grpc-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(REPO), env=env)
    server = Server.__new__(Server)
    server.port, server.name, server.proc = port, "digits", proc
    server.logs = lambda: "(see the kit serve output)"
    try:
        server.wait_ready()
        children = _children(proc.pid)
        assert len(children) == 1
        environ = dict(item.split("=", 1) for item in
                       Path("/proc", str(children[0]), "environ").read_text().split("\0") if "=" in item)
        assert environ["TF_CPP_VMODULE"] == "process_function_library_runtime=1,trt_engine_op=1"
        assert environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
        status, _, _ = server.predict({"instances": rows(x[:1])})
        assert status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        output = proc.stdout.read().decode()
        assert "process_function_library_runtime.cc" in output
        assert "hides TensorFlow's VLOG lines" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kit_serve_needs_local_and_a_free_port(digits_manifest):
    no_local = subprocess.run(KIT + ["serve", str(digits_manifest)], capture_output=True, text=True)
    assert no_local.returncode == 2 and "add --local" in no_local.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = subprocess.run(KIT + ["serve", str(digits_manifest), "--local", "--port",
                                      str(busy.getsockname()[1])], capture_output=True, text=True)
    assert taken.returncode == 2 and "cannot listen on 127.0.0.1" in taken.stderr and "--port" in taken.stderr


def test_kit_bench_local_json_native_and_optimized(digits_manifest, digits_dir):
    proc = subprocess.run(KIT + ["bench", str(digits_manifest), "--local", "--runs", "60", "--warmup", "3",
                                 "--batch-size", "4", "--optimized", str(digits_dir / "saved_model"), "--json"],
                          capture_output=True, text=True, cwd=str(REPO), timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["protocol"] == {"warmup": 3, "runs": 60}
    assert [(r["label"], r["batch_size"]) for r in report["runs"]] == [("native", 4), ("optimized", 4)]
    for run in report["runs"]:
        result = run["result"]
        assert run["error"] is None and result["batch_size"] == 4 and result["runs"] == 60
        assert len(result["latencies_ms"]) == 60 and len(result["window_mean_ms"]) == 1  # every 50 runs
        assert result["input_shapes"] == {"pixels": [4, 8, 8, 1]} and result["optimization"] == "native"
        lat = result["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        # images/s = runs x batch / total time of the timed runs
        assert abs(result["images_per_second"] - 60 * 4 / result["total_seconds"]) < 0.01 * result["images_per_second"]
        assert result["peak_memory_bytes"] > 50 << 20


def test_kit_bench_table_plot_and_usage_errors(digits_manifest, tmp_path):
    import importlib.util

    png = tmp_path / "latency.png"
    proc = subprocess.run(KIT + ["bench", str(digits_manifest), "--local", "--runs", "20", "--warmup", "1",
                                 "--batch-size", "1", "--plot", str(png)], capture_output=True, text=True,
                          cwd=str(REPO), timeout=300)
    if importlib.util.find_spec("matplotlib") is None:
        assert proc.returncode == 2 and "--plot needs matplotlib" in proc.stderr and not png.exists()
        proc = subprocess.run(KIT + ["bench", str(digits_manifest), "--local", "--runs", "20", "--warmup", "1",
                                     "--batch-size", "1"], capture_output=True, text=True, cwd=str(REPO),
                              timeout=300)
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert proc.returncode == 0, proc.stderr
    assert "images/s" in proc.stdout and "native" in proc.stdout and "p99" in proc.stdout
    # without --local it runs in the runtime image (tests/integration/test_bench_image.py)
    both = subprocess.run(KIT + ["bench", str(digits_manifest), "--local", "--image", "x"], capture_output=True,
                          text=True)
    assert both.returncode == 2 and "--image and --host run the benchmark in the runtime image" in both.stderr
    bad = subprocess.run(KIT + ["bench", str(digits_manifest), "--local", "--optimized", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "no saved_model.pb" in bad.stderr
