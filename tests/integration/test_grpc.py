"""The gRPC front, called with the real clients: tensorflow-serving-api's stubs and tritonclient.grpc.

The server is `python -m kit.runtime.serving.main` (see test_server.Server) with
TF Serving's own half_plus_two (TF1 signatures: predict, classify, regress) and
the bundled digits CNN; every RPC and every error class a client can meet.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

grpc = pytest.importorskip("grpc")
tf = pytest.importorskip("tensorflow")
tfs_apis = pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc",
                               reason="tensorflow-serving-api (scripts/setup-host installs it with --no-deps)")
tritongrpc = pytest.importorskip("tritonclient.grpc")

from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
    prediction_service_pb2_grpc, regression_pb2,
)
from google.protobuf import json_format  # noqa: E402
from tritonclient.grpc import model_config_pb2, service_pb2  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

import models  # noqa: E402
from testkit.manifests import write_model  # noqa: E402
from testkit.server import HALF_PLUS_TWO, ServerProcess as Server  # noqa: E402


@pytest.fixture(scope="module")
def hp2():
    server = Server(HALF_PLUS_TWO, "half_plus_two", "1,4", env={"KIT_MAX_INSTANCES": "64"}).wait_ready()
    server.channel = grpc.insecure_channel("127.0.0.1:%d" % server.grpc_port)
    server.stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    server.triton = tritongrpc.InferenceServerClient("127.0.0.1:%d" % server.grpc_port)
    yield server
    server.channel.close()
    assert server.stop() == 0


def _predict_request(name="half_plus_two", x=None, signature=None, version=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if signature:
        request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    x = np.array([[1.0], [2.0], [5.0]], np.float32) if x is None else x
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    return request


def _code(call):
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


# ---- TF Serving PredictionService / ModelService ---------------------------------------


def test_predict(hp2):
    response = hp2.stub.Predict(_predict_request(version=123), timeout=30)
    assert np.allclose(tf.make_ndarray(response.outputs["y"]).ravel(), [2.5, 3.0, 4.5])
    assert response.model_spec.name == "half_plus_two" and response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_predict_typed_fields_and_broadcast(hp2):
    """float_val instead of tensor_content; one value fills the shape (TensorFlow's rule)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].dtype = 1
    request.inputs["x"].tensor_shape.dim.add(size=2)
    request.inputs["x"].tensor_shape.dim.add(size=1)
    request.inputs["x"].float_val.append(4.0)
    response = hp2.stub.Predict(request, timeout=30)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[4.0], [4.0]]


def test_predict_errors(hp2):
    code, details = _code(lambda: hp2.stub.Predict(_predict_request(name="nope"), timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details
    code, details = _code(lambda: hp2.stub.Predict(_predict_request(version=7), timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND and "version 7" in details
    code, details = _code(lambda: hp2.stub.Predict(_predict_request(signature="missing"), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "missing" in details
    code, details = _code(lambda: hp2.stub.Predict(_predict_request(x=np.zeros((2, 1), np.int32)), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "DT_INT32" in details and "DT_FLOAT" in details
    request = _predict_request()
    request.inputs["x"].tensor_content = b"\0" * 5
    code, details = _code(lambda: hp2.stub.Predict(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensor_content" in details
    request = _predict_request()
    request.inputs["wrong"].CopyFrom(request.inputs["x"])
    del request.inputs["x"]
    code, details = _code(lambda: hp2.stub.Predict(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'wrong'" in details
    request = _predict_request()
    request.output_filter.append("z")
    code, details = _code(lambda: hp2.stub.Predict(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "output_filter" in details
    # A tiny message asking for a huge broadcast is refused, not allocated.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].dtype = 1
    request.inputs["x"].tensor_shape.dim.add(size=10 ** 10)
    request.inputs["x"].float_val.append(1.0)
    code, details = _code(lambda: hp2.stub.Predict(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in details
    # Too many instances (KIT_MAX_INSTANCES=64).
    code, details = _code(lambda: hp2.stub.Predict(_predict_request(x=np.ones((65, 1), np.float32)), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "too many instances" in details


def test_classify_and_regress(hp2):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    for value in (2.0, 6.0):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(value)
    response = hp2.stub.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [3.0, 5.0]
    assert response.model_spec.signature_name == "regress_x_to_y"

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    listing = request.input.example_list_with_context
    listing.context.features.feature["x"].float_list.value.append(10.0)  # the example's own x wins
    listing.examples.add().features.feature["x"].float_list.value.append(4.0)
    listing.examples.add()  # only the context's x
    response = hp2.stub.Classify(request, timeout=30)
    assert [[c.score for c in row.classes] for row in response.result.classifications] == [[4.0], [7.0]]


def test_classify_errors(hp2):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "half_plus_two"  # serving_default is a predict signature
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(1.0)
    code, details = _code(lambda: hp2.stub.Classify(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "tensorflow/serving/classify" in details
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    code, details = _code(lambda: hp2.stub.Regress(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no input" in details
    # An example the graph cannot parse: TensorFlow's own message comes back whole.
    request.input.example_list.examples.add().features.feature["x"].bytes_list.value.append(b"not a float")
    code, details = _code(lambda: hp2.stub.Regress(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "the model rejected the input" in details


def test_metadata_and_status(hp2):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "half_plus_two"
    request.metadata_field.append("signature_def")
    response = hp2.stub.GetModelMetadata(request, timeout=30)
    sigmap = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(sigmap)
    sdef = sigmap.signature_def["serving_default"]
    assert sdef.method_name == "tensorflow/serving/predict"
    assert sdef.inputs["x"].dtype == 1 and [d.size for d in sdef.inputs["x"].tensor_shape.dim] == [-1, 1]
    assert "classify_x_to_y" in sigmap.signature_def
    del request.metadata_field[:]
    code, details = _code(lambda: hp2.stub.GetModelMetadata(request, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "metadata_field" in details

    status_stub = model_service_pb2_grpc.ModelServiceStub(hp2.channel)
    status = status_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "half_plus_two"}), timeout=30)
    assert [(v.version, v.state) for v in status.model_version_status] == [
        (123, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    code, _ = _code(lambda: status_stub.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "other"}), timeout=30))
    assert code == grpc.StatusCode.NOT_FOUND


# ---- KServe v2 GRPCInferenceService (tritonclient) ---------------------------------------


def test_v2_health_and_metadata(hp2):
    c = hp2.triton
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("half_plus_two")
    assert c.get_server_metadata().name == "kit"
    meta = c.get_model_metadata("half_plus_two", as_json=True)
    assert meta["versions"] == ["123"] and meta["platform"] == "tensorflow_savedmodel"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "1"]}]
    with pytest.raises(InferenceServerException) as info:
        c.is_model_ready("nope")
    assert "unknown model" in str(info.value)


def test_v2_infer_raw_and_contents(hp2):
    c = hp2.triton
    x = tritongrpc.InferInput("x", [3, 1], "FP32")
    x.set_data_from_numpy(np.array([[1.0], [2.0], [5.0]], np.float32))  # raw_input_contents
    result = c.infer("half_plus_two", [x], request_id="r-1", outputs=[tritongrpc.InferRequestedOutput("y")])
    assert result.as_numpy("y").ravel().tolist() == [2.5, 3.0, 4.5]
    assert result.get_response().id == "r-1"
    # typed contents (fp32_contents), as other KServe clients send it
    from tritonclient.grpc import service_pb2_grpc

    stub = service_pb2_grpc.GRPCInferenceServiceStub(hp2.channel)
    request = service_pb2.ModelInferRequest(model_name="half_plus_two")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 1])
    tensor.contents.fp32_contents.extend([4.0, 8.0])
    response = stub.ModelInfer(request, timeout=30)
    assert np.frombuffer(response.raw_output_contents[0], "<f4").tolist() == [4.0, 6.0]


def test_v2_class_count(hp2):
    c = hp2.triton
    x = tritongrpc.InferInput("x", [2, 1], "FP32")
    x.set_data_from_numpy(np.array([[1.0], [5.0]], np.float32))
    result = c.infer("half_plus_two", [x], outputs=[tritongrpc.InferRequestedOutput("y", class_count=1)])
    assert result.as_numpy("y").tolist() == [[b"2.500000:0"], [b"4.500000:0"]]
    assert result.get_output("y").datatype == "BYTES"
    with pytest.raises(InferenceServerException) as info:
        c.infer("half_plus_two", [x], outputs=[tritongrpc.InferRequestedOutput("y", class_count=-1)])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT" and "positive integer" in str(info.value)


def test_v2_model_config_and_statistics_match_rest(hp2):
    c = hp2.triton
    config = c.get_model_config("half_plus_two", as_json=True)["config"]
    assert config["name"] == "half_plus_two" and config["platform"] == "tensorflow_savedmodel"
    assert config["max_batch_size"] == 4 and config["backend"] == "tensorflow"
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": ["1"]}]
    assert config["dynamic_batching"]["preferred_batch_size"] == [1, 4]
    assert config["parameters"] == {"signature_name": {"string_value": "serving_default"}}
    typed = c.get_model_config("half_plus_two")  # the message itself, as Triton's tools read it
    assert typed.config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert typed.config.version_policy.specific.versions == [123]
    status, _, body = hp2.get("/v2/models/half_plus_two/config")  # REST's JSON, read into Triton's own message
    assert status == 200 and typed.config == json_format.Parse(body, model_config_pb2.ModelConfig())

    x = tritongrpc.InferInput("x", [3, 1], "FP32")
    x.set_data_from_numpy(np.ones((3, 1), np.float32))
    before = c.get_inference_statistics("half_plus_two", as_json=True)["model_stats"][0]
    c.infer("half_plus_two", [x])
    with pytest.raises(InferenceServerException):
        c.infer("half_plus_two", [tritongrpc.InferInput("x", [3, 1], "FP64").set_data_from_numpy(
            np.ones((3, 1), np.float64))])
    stats = c.get_inference_statistics("half_plus_two", as_json=True)["model_stats"][0]
    assert stats["name"] == "half_plus_two" and stats["version"] == "123"
    success = lambda s, k: int(s["inference_stats"].get(k, {}).get("count", 0))  # noqa: E731
    assert success(stats, "success") == success(before, "success") + 1
    assert success(stats, "fail") == success(before, "fail") + 1
    assert int(stats["inference_count"]) >= 3 and int(stats["last_inference"]) > 0
    status, _, body = hp2.get("/v2/models/half_plus_two/stats")
    assert status == 200 and c.get_inference_statistics("half_plus_two") == json_format.Parse(
        body, service_pb2.ModelStatisticsResponse())
    # an empty name asks for every model (Triton's rule): here, the one
    assert [s.name for s in c.get_inference_statistics().model_stats] == ["half_plus_two"]
    for call in (lambda: c.get_model_config("nope"), lambda: c.get_inference_statistics("nope"),
                 lambda: c.get_model_config("half_plus_two", model_version="7")):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == "StatusCode.NOT_FOUND"


def test_v2_errors(hp2):
    c = hp2.triton
    x = tritongrpc.InferInput("x", [3, 1], "FP64")
    x.set_data_from_numpy(np.ones((3, 1), np.float64))
    with pytest.raises(InferenceServerException) as info:
        c.infer("half_plus_two", [x])
    assert "FP64" in str(info.value) and "FP32" in str(info.value)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    x = tritongrpc.InferInput("x", [3, 1], "FP32")
    x.set_data_from_numpy(np.ones((3, 1), np.float32))
    with pytest.raises(InferenceServerException) as info:
        c.infer("other", [x])
    assert info.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as info:
        c.infer("half_plus_two", [x], outputs=[tritongrpc.InferRequestedOutput("nope")])
    assert "unknown output 'nope'" in str(info.value)


def test_grpc_requests_are_counted_in_metrics(hp2):
    hp2.stub.Predict(_predict_request(), timeout=30)
    metrics = hp2.metrics()
    assert metrics.get('kit_requests_total{endpoint="grpc_predict",code="200"}', 0) >= 1
    assert metrics.get('kit_requests_total{endpoint="grpc_predict",code="404"}', 0) >= 1


def test_overload_and_oversized_messages_get_grpc_codes_and_the_server_recovers():
    """Queue full (REST's 503) is UNAVAILABLE with the same text, to TF Serving's stub and to tritonclient; RPCs
    beyond the bound are RESOURCE_EXHAUSTED at once; a message over KIT_MAX_BODY is RESOURCE_EXHAUSTED."""
    from concurrent.futures import ThreadPoolExecutor

    server = Server(HALF_PLUS_TWO, "half_plus_two", "1", env={
        "KIT_MAX_QUEUE": "2", "KIT_TEST_INFER_DELAY": "0.3", "KIT_MAX_BODY": "64KiB"}).wait_ready()
    channel = grpc.insecure_channel("127.0.0.1:%d" % server.grpc_port)
    triton = tritongrpc.InferenceServerClient("127.0.0.1:%d" % server.grpc_port)
    try:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        x = tritongrpc.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.ones((1, 1), np.float32))

        def tfs():
            try:
                stub.Predict(_predict_request(x=np.ones((1, 1), np.float32)), timeout=60)
                return "OK", ""
            except grpc.RpcError as e:
                return e.code().name, e.details()

        def v2():
            try:
                triton.infer("half_plus_two", [x], client_timeout=60)
                return "OK", ""
            except InferenceServerException as e:
                return e.status().replace("StatusCode.", ""), e.message()

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda i: (tfs if i % 2 else v2)(), range(16)))
        codes = [code for code, _ in results]
        assert "OK" in codes and set(codes) <= {"OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED"}, results
        assert "UNAVAILABLE" in codes, results
        assert all("queue is full" in text for code, text in results if code == "UNAVAILABLE"), results
        assert server.metrics()['kit_rejected_total{reason="queue_full"}'] == codes.count("UNAVAILABLE")
        big = np.ones((20000, 1), np.float32)  # 80 kB of floats: over the 64 KiB message bound
        code, _ = _code(lambda: stub.Predict(_predict_request(x=big), timeout=30))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert tfs() == ("OK", "")  # recovered: the queue drained, the channel still works
    finally:
        channel.close()
        triton.close()
        assert server.stop() == 0


def test_grpc_port_zero_turns_grpc_off(digits_dir):  # noqa: F811
    server = Server(digits_dir / "saved_model", "digits", "1", args=["--grpc-port", "0"]).wait_ready()
    try:
        channel = grpc.insecure_channel("127.0.0.1:%d" % server.grpc_port)
        with pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(channel).result(timeout=2)
        channel.close()
        assert "gRPC listening" not in server.logs()
    finally:
        assert server.stop() == 0


# ---- a JPEG model (tf.string decoded in the graph) and TF Serving's warm-up file -----------------


def _jpeg_model(path):
    return Path(models.make_jpeg_mean(path))  # image_bytes [n] -> mean [n]


def _jpeg(value):
    return tf.io.encode_jpeg(tf.constant(np.full((4, 4, 3), value, np.uint8))).numpy()


def test_jpeg_model_starts_and_serves(tmp_path):
    model = _jpeg_model(tmp_path / "jpeg" / "1")
    server = Server(model, "jpeg", "1,4").wait_ready()
    try:
        assert "warm-up skipped" in server.logs() and "image_bytes" in server.logs()
        assert not any(k.startswith("kit_warmup_runs_total") for k in server.metrics())
        import base64

        status, _, body = server.predict({"instances": [{"b64": base64.b64encode(_jpeg(100)).decode()}]})
        assert status == 200, body
        assert abs(json.loads(body)["predictions"][0] - 100) < 3
        status, _, body = server.predict({"instances": [{"b64": base64.b64encode(b"not a jpeg").decode()}]})
        assert status == 400 and json.loads(body)["error"].startswith("the model rejected the input")
    finally:
        assert server.stop() == 0


def test_tf_serving_warmup_file_is_replayed(tmp_path):
    from tensorflow_serving.apis import prediction_log_pb2

    model = _jpeg_model(tmp_path / "jpeg" / "1")
    (model / "assets.extra").mkdir()
    with tf.io.TFRecordWriter(str(model / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        for n in (1, 4):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "jpeg"
            request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([_jpeg(50)] * n))
            writer.write(prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)).SerializeToString())
    server = Server(model, "jpeg", "1,4").wait_ready()
    try:
        logs = server.logs()
        assert "warm-up: 2 requests from assets.extra/tf_serving_warmup_requests" in logs
        assert "warm-up: batch size 4" in logs
        runs = dict((k, v) for k, v in server.metrics().items() if k.startswith("kit_warmup_runs_total"))
        assert runs == {'kit_warmup_runs_total{source="file",batch_size="1"}': 1,
                        'kit_warmup_runs_total{source="file",batch_size="4"}': 1}
    finally:
        assert server.stop() == 0


def test_broken_warmup_file_fails_the_start(tmp_path):
    model = _jpeg_model(tmp_path / "jpeg" / "1")
    (model / "assets.extra").mkdir()
    (model / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"\x50" + b"\0" * 20)
    server = Server(model, "jpeg", "1")
    try:
        assert server.proc.wait(120) == 1
        assert "past the end of the file" in server.logs()
    finally:
        server.stop()


def test_status_says_loading_until_warm_on_rest_and_grpc(tmp_path):
    """TF Serving's AVAILABLE means inference answers: REST status, gRPC GetModelStatus and KServe v2 ready agree,
    and while LOADING both REST predict (503) and gRPC Predict (UNAVAILABLE) refuse."""
    server = Server(HALF_PLUS_TWO, "half_plus_two", "1,4", env={"KIT_TEST_WARMUP_DELAY": "1.5"})
    channel = grpc.insecure_channel("127.0.0.1:%d" % server.grpc_port)
    try:
        server.wait_live()
        status_stub = model_service_pb2_grpc.ModelServiceStub(channel)
        predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        triton = tritongrpc.InferenceServerClient("127.0.0.1:%d" % server.grpc_port)
        request = get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "half_plus_two"})
        seen = set()
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                grpc_state = status_stub.GetModelStatus(request, timeout=10).model_version_status[0].state
            except grpc.RpcError:
                time.sleep(0.05)  # the gRPC port opens with the HTTP one; retry until it answers
                continue
            rest_state = json.loads(server.get("/v1/models/half_plus_two")[2])["model_version_status"][0]["state"]
            ready = server.get("/v2/health/ready")[0] == 200
            if grpc_state == get_model_status_pb2.ModelVersionStatus.LOADING and rest_state == "LOADING":
                seen.add("loading")
                triton_ready = triton.is_model_ready("half_plus_two")
                code = server.predict({"instances": [[1.0]]})[0]
                if triton_ready or code != 503:
                    # Warm-up ended between the status calls and these (a slow machine, the twin): then the
                    # status must say AVAILABLE by now, never LOADING while inference answers.
                    after = json.loads(server.get("/v1/models/half_plus_two")[2])["model_version_status"][0]
                    assert after["state"] == "AVAILABLE" and code == 200
                else:
                    seen.add("refused while loading")
                    try:
                        predict_stub.Predict(_predict_request(), timeout=10)
                        grpc_code = grpc.StatusCode.OK
                    except grpc.RpcError as e:
                        grpc_code = e.code()
                    if grpc_code == grpc.StatusCode.UNAVAILABLE:
                        seen.add("gRPC refused while loading")
                    else:  # warm-up ended in between: then gRPC answers, and the status says so
                        assert grpc_code == grpc.StatusCode.OK
                        assert status_stub.GetModelStatus(request, timeout=10).model_version_status[0].state == \
                            get_model_status_pb2.ModelVersionStatus.AVAILABLE
            if ready:
                break
            time.sleep(0.1)
        assert "loading" in seen and ready
        assert "refused while loading" in seen  # LOADING was seen with inference refused, not only racing
        assert "gRPC refused while loading" in seen  # TF Serving's Predict answers UNAVAILABLE meanwhile
        assert status_stub.GetModelStatus(request, timeout=10).model_version_status[0].state == \
            get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert json.loads(server.get("/v1/models/half_plus_two")[2])["model_version_status"][0]["state"] == "AVAILABLE"
        assert triton.is_model_ready("half_plus_two")
    finally:
        channel.close()
        assert server.stop() == 0


def _kit_serve(manifest, *flags):
    """`kit serve MANIFEST --local` on free ports: (process, ServerProcess-like handle, gRPC port)."""
    from test_server import KIT, REPO, free_port

    port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(KIT + ["serve", str(manifest), "--local", "--port", str(port), "--grpc-port",
                                   str(grpc_port)] + list(flags),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(REPO),
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    server = Server.__new__(Server)
    server.port, server.name, server.proc = port, "half_plus_two", proc
    server.logs = lambda: "(see the kit serve output)"
    return proc, server, grpc_port


def _stop(proc):
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    return code, proc.stdout.read().decode()


def test_manifest_model_name_and_warmup_samples_through_kit_serve(tmp_path):
    """serve.model_name (TF Serving's '_') is the name on REST and gRPC; serve.warmup samples run before ready;
    kit serve --local --no-warmup turns them off."""
    np.savez(str(tmp_path / "warm.npz"), x=np.array([[1.0], [3.0]], np.float32))
    manifest = write_model(
        tmp_path, metadata={"name": "hp2", "version": "123"}, model={"path": str(HALF_PLUS_TWO)},
        optimize={"batch_sizes": [1, 4]}, image={"repository": "127.0.0.1:5000/kit/hp2"},
        serve={"model_name": "half_plus_two", "warmup": "./warm.npz"})
    proc, server, grpc_port = _kit_serve(manifest)
    try:
        server.wait_ready()
        status, _, body = server.predict({"instances": [[1.0]]})
        assert status == 200 and json.loads(body) == {"predictions": [[2.5]]}
        assert server.request("POST", "/v1/models/hp2:predict", {"instances": [[1.0]]})[0] == 404
        runs = server.metrics()
        assert runs['kit_warmup_runs_total{source="samples",batch_size="1"}'] == 1
        assert runs['kit_warmup_runs_total{source="samples",batch_size="4"}'] == 1
        with grpc.insecure_channel("127.0.0.1:%d" % grpc_port) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(_predict_request(), timeout=30)
            assert response.model_spec.name == "half_plus_two"
            assert tf.make_ndarray(response.outputs["y"]).ravel().tolist() == [2.5, 3.0, 4.5]
        code, output = _stop(proc)
        assert code == 0
        assert "warm-up: samples from %s at batch sizes 1,4" % (tmp_path / "warm.npz") in output
        assert "warm-up: batch size 4 (signature serving_default)" in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc, server, _ = _kit_serve(manifest, "--no-warmup")
    try:
        server.wait_ready()
        assert server.predict({"instances": [[1.0]]})[0] == 200
        code, output = _stop(proc)
        assert code == 0 and "warm-up disabled" in output and "warm-up: samples" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_warmup_samples_fail_the_start(tmp_path):
    np.savez(str(tmp_path / "warm.npz"), y=np.zeros((2, 1), np.float32))
    server = Server(HALF_PLUS_TWO, "half_plus_two", "1", args=["--warmup-samples", str(tmp_path / "warm.npz")])
    try:
        assert server.proc.wait(120) == 1
        assert "hold y, but signature serving_default takes x" in server.logs()
    finally:
        server.stop()


def test_columnar_inputs_with_different_0th_dimensions(tmp_path):
    """TF Serving feeds columnar inputs as sent: their 0th dimensions need not agree (REST and gRPC)."""
    class Two(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                      tf.TensorSpec([None], tf.float32, name="b")])
        def serve(self, a, b):
            return {"twice_a": a * 2.0, "b_plus_1": b + 1.0}

    module = Two()
    path = tmp_path / "two" / "1"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    server = Server(path, "two", "1,4").wait_ready()
    try:
        status, _, body = server.predict({"inputs": {"a": [1.0, 2.0, 3.0], "b": [4.0]}})
        assert status == 200 and json.loads(body) == {"outputs": {"b_plus_1": [5.0], "twice_a": [2.0, 4.0, 6.0]}}, body
        # The row format has one entry per example: there the inputs agree, and are batched.
        status, _, body = server.predict({"instances": [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]})
        assert status == 200 and json.loads(body) == {"predictions": [{"b_plus_1": 3.0, "twice_a": 2.0},
                                                                      {"b_plus_1": 5.0, "twice_a": 6.0}]}, body
        with grpc.insecure_channel("127.0.0.1:%d" % server.grpc_port) as channel:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "two"
            request.inputs["a"].CopyFrom(tf.make_tensor_proto(np.array([1.0], np.float32)))
            request.inputs["b"].CopyFrom(tf.make_tensor_proto(np.array([2.0, 3.0], np.float32)))
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
            assert tf.make_ndarray(response.outputs["twice_a"]).tolist() == [2.0]
            assert tf.make_ndarray(response.outputs["b_plus_1"]).tolist() == [3.0, 4.0]
    finally:
        assert server.stop() == 0
