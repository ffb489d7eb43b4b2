"""The gRPC front, in the same process as REST, sharing the model and the micro-batcher.

Services (method paths as the real clients call them):
  tensorflow.serving.PredictionService  Predict, Classify, Regress, GetModelMetadata
  tensorflow.serving.ModelService       GetModelStatus
  inference.GRPCInferenceService        ServerLive, ServerReady, ModelReady, ServerMetadata,
                                        ModelMetadata, ModelInfer (raw_input_contents and
                                        contents in; raw_output_contents out, as Triton answers),
                                        and Triton's ModelConfig and ModelStatistics (the content of
                                        REST's /v2/models/NAME/config and /stats)

Messages come from grpc_messages (built in code, no protoc); handlers are
registered with grpc.method_handlers_generic_handler. Errors carry the REST
status's gRPC twin (400 INVALID_ARGUMENT, 404 NOT_FOUND, 503 UNAVAILABLE, ...)
and the same message text. Bounded: message size (max_body), concurrent RPCs
(the queue bound plus the worker threads), threads. With KIT_SLOT every RPC's
initial metadata carries kit-slot (REST's Kit-Slot header).
"""

import logging
import time
from collections import OrderedDict
from concurrent import futures

import grpc
import numpy as np
from google.protobuf import json_format

from kit import __version__
from kit.runtime.serving import examples, inference, kserve_v2
from kit.runtime.serving import protocol
from kit.runtime.serving.grpc_messages import messages
from kit.runtime.serving.protocol import RequestError
from kit.runtime.serving.tensor_proto import dtype_name_of, dtype_number, from_numpy, to_numpy

log = logging.getLogger("kit.serve")

_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          501: grpc.StatusCode.UNIMPLEMENTED, 503: grpc.StatusCode.UNAVAILABLE, 500: grpc.StatusCode.INTERNAL}
_STATE_NUMBERS = {"UNKNOWN": 0, "START": 10, "LOADING": 20, "AVAILABLE": 30, "UNLOADING": 40, "END": 50}
_SIGNATURE_DEF_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"


def _handler(state, endpoint, request_class, response_class, method):
    """A unary-unary handler: RequestError -> status code + message, with metrics."""
    # KIT_SLOT: which of two servers sharing the port answered (REST's Kit-Slot header).
    slot = (("kit-slot", state.config.slot),) if state.config.slot else None

    def call(request, context):
        start = time.monotonic()
        if slot:
            context.send_initial_metadata(slot)
        try:
            response = method(state, request)
        except RequestError as e:
            context.set_code(_CODES.get(e.status, grpc.StatusCode.UNKNOWN))
            context.set_details(e.message)
            state.metrics.record_request(endpoint, e.status)
            if endpoint in _INFER_ENDPOINTS:
                state.metrics.model_stats.fail()
            return response_class()
        except Exception as e:  # a bug: answer INTERNAL, keep serving
            log.exception("gRPC %s failed", endpoint)
            context.set_code(grpc.StatusCode.INTERNAL)
            context.set_details("internal error: %s: %s" % (type(e).__name__, e))
            state.metrics.record_request(endpoint, 500)
            return response_class()
        state.metrics.record_request(endpoint, 200)
        if endpoint in _INFER_ENDPOINTS:
            state.metrics.request_latency.observe(time.monotonic() - start)
        return response

    return grpc.unary_unary_rpc_method_handler(call, request_deserializer=request_class.FromString,
                                               response_serializer=response_class.SerializeToString)


_INFER_ENDPOINTS = ("grpc_predict", "grpc_classify", "grpc_regress", "grpc_v2_infer")


# ---- TF Serving -------------------------------------------------------------------


def _check_spec(state, spec):
    """model_spec names this model (and its version, when given)."""
    config = state.config
    if spec.name != config.model_name:
        raise RequestError(404, "Servable not found for request: model '%s' (this server serves '%s')"
                           % (spec.name, config.model_name))
    choice = spec.WhichOneof("version_choice")
    if choice == "version" and str(spec.version.value) != str(config.model_version):
        raise RequestError(404, "Servable not found for request: model '%s' version %d (this server serves "
                                "version %s)" % (spec.name, spec.version.value, config.model_version))
    if choice == "version_label":
        raise RequestError(404, "Servable not found for request: version label '%s' (kit serves one version, "
                                "%s, without labels)" % (spec.version_label, config.model_version))


def _fill_spec(state, spec, signature_name):
    spec.name = state.config.model_name
    try:
        spec.version.value = int(state.config.model_version)
    except ValueError:
        pass
    spec.signature_name = signature_name


def _model(state):
    if state.model is None:
        raise inference.unavailable(state, "model '%s' is not ready: %s" % (
            state.config.model_name, inference.not_ready_reason(state)), "not_ready")
    return state.model


def parse_predict(state, request):
    """A PredictRequest -> (ParsedRequest, output keys); checks names, dtypes, shapes, sizes."""
    signature = protocol.pick_signature(state.model, request.model_spec.signature_name or None)
    protocol.check_names(signature, request.inputs, "the request's inputs")
    inputs = OrderedDict()
    for key in signature.inputs:
        inputs[key] = to_numpy(request.inputs[key], key, state.config.max_body)
        info = signature.inputs[key]
        if info.numpy_dtype is not None and inputs[key].dtype.kind != "O" and not info.is_string:
            if inputs[key].dtype != info.numpy_dtype:
                raise RequestError(400, "input '%s' has dtype %s but the model expects %s"
                                   % (key, dtype_name_of(inputs[key].dtype), info.dtype_name))
        elif info.is_string and inputs[key].dtype.kind != "O":
            raise RequestError(400, "input '%s' has dtype %s but the model expects DT_STRING"
                               % (key, dtype_name_of(inputs[key].dtype)))
    parsed = protocol.finish_inputs("grpc", signature, inputs, state.config.max_instances)
    wanted = list(request.output_filter) or list(signature.outputs)
    for key in wanted:
        if key not in signature.outputs:
            raise RequestError(400, "output_filter names '%s', which signature '%s' does not have (it has %s)"
                               % (key, signature.key, ", ".join("'%s'" % k for k in signature.outputs)))
    return parsed, wanted


def predict(state, request):
    _check_spec(state, request.model_spec)
    inference.check_ready(state)
    parsed, wanted = parse_predict(state, request)
    outputs = inference.run(state, parsed)
    response = messages()["tensorflow.serving.PredictResponse"]()
    _fill_spec(state, response.model_spec, parsed.signature.key)
    for key in wanted:
        from_numpy(outputs[key], parsed.signature.outputs[key].dtype_name, response.outputs[key])
    return response


def parse_examples(state, request, method):
    """A ClassificationRequest / RegressionRequest -> ParsedRequest of serialized tf.Examples."""
    signature = protocol.pick_signature(state.model, request.model_spec.signature_name or None)
    kind = request.input.WhichOneof("kind")
    if kind is None:
        raise RequestError(400, "the request has no input: set input.example_list or input.example_list_with_context")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request.input.example_list.examples]
    else:
        listing = request.input.example_list_with_context
        serialized = examples.with_context([e.SerializeToString() for e in listing.examples],
                                           listing.context.SerializeToString(),
                                           messages()["tensorflow.Example"])
    return examples.parsed_request(signature, method, serialized, state.config.max_instances)


def _examples_request(state, request, method):
    _check_spec(state, request.model_spec)
    inference.check_ready(state)
    parsed = parse_examples(state, request, method)
    return parsed.signature, parsed.rows, inference.run(state, parsed)


def classify(state, request):
    signature, rows, outputs = _examples_request(state, request, "classify")
    response = messages()["tensorflow.serving.ClassificationResponse"]()
    _fill_spec(state, response.model_spec, signature.key)
    for row in examples.classifications(outputs, rows):
        entry = response.result.classifications.add()
        for label, score in row:
            entry.classes.add(label=label, score=score)
    return response


def regress(state, request):
    signature, rows, outputs = _examples_request(state, request, "regress")
    response = messages()["tensorflow.serving.RegressionResponse"]()
    _fill_spec(state, response.model_spec, signature.key)
    for value in examples.regressions(outputs, rows):
        response.result.regressions.add(value=value)
    return response


def _tensor_info(info, proto):
    proto.name = info.tensor_name
    proto.dtype = dtype_number(info.dtype_name)
    if info.shape is None:
        proto.tensor_shape.unknown_rank = True
    else:
        for d in info.shape:
            proto.tensor_shape.dim.add(size=int(d))


def get_model_metadata(state, request):
    _check_spec(state, request.model_spec)
    model = _model(state)
    fields = list(request.metadata_field)
    if not fields:
        raise RequestError(400, "GetModelMetadataRequest must name at least one metadata_field "
                                "(kit supports 'signature_def')")
    for field in fields:
        if field != "signature_def":
            raise RequestError(400, "metadata field '%s' is not supported (kit supports 'signature_def')" % field)
    m = messages()
    sigmap = m["tensorflow.serving.SignatureDefMap"]()
    for key, signature in model.signatures.items():
        sdef = sigmap.signature_def[key]
        sdef.method_name = signature.method_name
        for k, info in signature.inputs.items():
            _tensor_info(info, sdef.inputs[k])
        for k, info in signature.outputs.items():
            _tensor_info(info, sdef.outputs[k])
    response = m["tensorflow.serving.GetModelMetadataResponse"]()
    _fill_spec(state, response.model_spec, "")
    entry = response.metadata["signature_def"]
    entry.type_url = _SIGNATURE_DEF_URL
    entry.value = sigmap.SerializeToString()
    return response


def get_model_status(state, request):
    _check_spec(state, request.model_spec)
    response = messages()["tensorflow.serving.GetModelStatusResponse"]()
    status = response.model_version_status.add()
    try:
        status.version = int(state.config.model_version)
    except ValueError:
        pass
    status.state = _STATE_NUMBERS[inference.model_state(state)]
    if state.failed:
        status.status.error_code = 13  # tensorflow.error.INTERNAL
        status.status.error_message = state.failed
    return response


# ---- KServe v2 --------------------------------------------------------------------

_V2_FIELDS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
              "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
              "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
              "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def _check_v2_model(state, name, version):
    config = state.config
    if name != config.model_name:
        raise RequestError(404, "unknown model '%s' (this server serves '%s')" % (name, config.model_name))
    if version and version != str(config.model_version):
        raise RequestError(404, "model '%s' has no version '%s' (it has %s)" % (name, version, config.model_version))


def server_live(state, request):
    return messages()["inference.ServerLiveResponse"](live=True)


def server_ready(state, request):
    return messages()["inference.ServerReadyResponse"](ready=state.is_ready())


def model_ready(state, request):
    _check_v2_model(state, request.name, request.version)
    return messages()["inference.ModelReadyResponse"](ready=state.is_ready())


def server_metadata(state, request):
    return messages()["inference.ServerMetadataResponse"](name="kit", version=__version__,
                                                          extensions=["binary_tensor_data"])


def model_metadata(state, request):
    _check_v2_model(state, request.name, request.version)
    meta = _model(state).v2_metadata()
    response = messages()["inference.ModelMetadataResponse"](name=meta["name"], versions=meta["versions"],
                                                             platform=meta["platform"])
    for side in ("inputs", "outputs"):
        for tensor in meta[side]:
            getattr(response, side).add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    return response


def model_config(state, request):
    """Triton's ModelConfig: the JSON REST answers, parsed into the message (one source for both fronts)."""
    _check_v2_model(state, request.name, request.version)
    body = dict(kserve_v2.model_config(_model(state), state.config))
    if not str(state.config.model_version).isdigit():
        body.pop("version_policy")  # Triton's versions are integers; kit's may be "1.0.0"
    response = messages()["inference.ModelConfigResponse"]()
    json_format.ParseDict(body, response.config)
    return response


def model_statistics(state, request):
    """Triton's ModelStatistics; an empty name asks for every model: here, the one."""
    if request.name or request.version:
        _check_v2_model(state, request.name, request.version)
    body = kserve_v2.model_stats(_model(state), state.metrics)
    response = messages()["inference.ModelStatisticsResponse"]()
    json_format.ParseDict(body, response)
    return response


def _param(params, name, kind, default):
    if name not in params:
        return default
    choice = params[name].WhichOneof("parameter_choice")
    if choice != kind:
        raise RequestError(400, "parameter '%s' must be a %s" % (name, kind.replace("_param", "")))
    return getattr(params[name], kind)


def model_infer(state, request):
    _check_v2_model(state, request.model_name, request.model_version)
    inference.check_ready(state)
    model = state.model
    signature = protocol.pick_signature(model, _param(request.parameters, "signature_name", "string_param", None))
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise RequestError(400, "raw_input_contents has %d entries for %d inputs: give one per input, or none"
                           % (len(raw), len(request.inputs)))
    given = OrderedDict()
    for i, tensor in enumerate(request.inputs):
        if tensor.name in given:
            raise RequestError(400, "input '%s' is given twice" % tensor.name)
        given[tensor.name] = (i, tensor)
    protocol.check_names(signature, given, "\"inputs\"")
    inputs = OrderedDict()
    max_bytes = state.config.max_body
    for key, (i, tensor) in given.items():
        info = signature.inputs[key]
        if tensor.datatype != info.v2_datatype:
            raise RequestError(400, "input '%s' has datatype %s but the model expects %s"
                               % (key, tensor.datatype or '""', info.v2_datatype or info.dtype_name))
        shape = [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            raise RequestError(400, "input '%s': shape must hold non-negative sizes, got %s" % (key, shape))
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if raw:
            inputs[key] = kserve_v2.decode_binary_tensor(raw[i], shape, count, info, key)
        else:
            field = _V2_FIELDS.get(tensor.datatype)
            if field is None:
                raise RequestError(400, "input '%s': %s data must come in raw_input_contents" % (key, tensor.datatype))
            values = getattr(tensor.contents, field)
            if len(values) != count:
                raise RequestError(400, "input '%s': contents has %d values but shape %s needs %d"
                                   % (key, len(values), shape, count))
            if info.is_string:
                array = np.empty(count, dtype=object)
                array[:] = list(values)
            else:
                if count * info.numpy_dtype.itemsize > max_bytes:
                    raise RequestError(400, "input '%s' is larger than a request may be" % key)
                array = np.array(values, dtype=info.numpy_dtype)
            inputs[key] = array.reshape(shape)
    parsed = protocol.finish_inputs("v2", signature, inputs, state.config.max_instances)
    wanted = [o.name for o in request.outputs] or list(signature.outputs)
    classes = {}
    for out in request.outputs:
        kserve_v2.check_output(signature, out.name)
        if "classification" in out.parameters:
            count = _param(out.parameters, "classification", "int64_param", 0)
            classes[out.name] = kserve_v2.class_count(signature, out.name, int(count))
    for name in wanted:
        kserve_v2.check_output(signature, name)
    outputs = inference.run(state, parsed)
    response = messages()["inference.ModelInferResponse"](model_name=state.config.model_name,
                                                          model_version=str(state.config.model_version),
                                                          id=request.id)
    for name in wanted:
        array = outputs[name]
        info = signature.outputs[name]
        datatype = info.v2_datatype or info.dtype_name
        if name in classes:  # Triton's classification extension: "value:index" strings
            array, datatype = kserve_v2.classifications(array, classes[name], signature.batchable), "BYTES"
        response.outputs.add(name=name, datatype=datatype, shape=[int(d) for d in array.shape])
        response.raw_output_contents.append(kserve_v2.encode_binary_tensor(array))
    return response


# ---- the server --------------------------------------------------------------------


def _services():
    tfs = "tensorflow.serving."
    v2 = "inference."
    return [
        ("tensorflow.serving.PredictionService", [
            ("Predict", "grpc_predict", tfs + "PredictRequest", tfs + "PredictResponse", predict),
            ("Classify", "grpc_classify", tfs + "ClassificationRequest", tfs + "ClassificationResponse", classify),
            ("Regress", "grpc_regress", tfs + "RegressionRequest", tfs + "RegressionResponse", regress),
            ("GetModelMetadata", "grpc_metadata", tfs + "GetModelMetadataRequest", tfs + "GetModelMetadataResponse",
             get_model_metadata),
        ]),
        ("tensorflow.serving.ModelService", [
            ("GetModelStatus", "grpc_status", tfs + "GetModelStatusRequest", tfs + "GetModelStatusResponse",
             get_model_status),
        ]),
        ("inference.GRPCInferenceService", [
            ("ServerLive", "grpc_v2_live", v2 + "ServerLiveRequest", v2 + "ServerLiveResponse", server_live),
            ("ServerReady", "grpc_v2_ready", v2 + "ServerReadyRequest", v2 + "ServerReadyResponse", server_ready),
            ("ModelReady", "grpc_v2_model_ready", v2 + "ModelReadyRequest", v2 + "ModelReadyResponse", model_ready),
            ("ServerMetadata", "grpc_v2_server_metadata", v2 + "ServerMetadataRequest", v2 + "ServerMetadataResponse",
             server_metadata),
            ("ModelMetadata", "grpc_v2_metadata", v2 + "ModelMetadataRequest", v2 + "ModelMetadataResponse",
             model_metadata),
            ("ModelInfer", "grpc_v2_infer", v2 + "ModelInferRequest", v2 + "ModelInferResponse", model_infer),
            ("ModelConfig", "grpc_v2_config", v2 + "ModelConfigRequest", v2 + "ModelConfigResponse", model_config),
            ("ModelStatistics", "grpc_v2_stats", v2 + "ModelStatisticsRequest", v2 + "ModelStatisticsResponse",
             model_statistics),
        ]),
    ]


def start(state, host, port, workers=8):
    """Bind and start the gRPC server; returns (server, bound port). Raises OSError if it cannot bind."""
    m = messages()
    config = state.config
    handlers = []
    for service, methods in _services():
        table = dict((name, _handler(state, endpoint, m[req], m[resp], fn))
                     for name, endpoint, req, resp, fn in methods)
        handlers.append(grpc.method_handlers_generic_handler(service, table))
    limit = int(min(config.max_body, 2 ** 31 - 1))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kit-grpc"),
        handlers=handlers,
        options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", -1),
                 ("grpc.so_reuseport", 1 if config.reuse_port else 0)],
        # Beyond this many RPCs in flight new ones get RESOURCE_EXHAUSTED at once: memory stays bounded.
        maximum_concurrent_rpcs=config.max_queue + workers,
    )
    address = "%s:%d" % (host or "0.0.0.0", port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError("cannot listen on %s: %s" % (address, e))
    if not bound:
        raise OSError("cannot listen on %s" % address)
    server.start()
    return server, bound
