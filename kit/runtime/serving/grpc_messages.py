"""Protocol buffer messages of TF Serving's and KServe v2's gRPC APIs, built in code.

Generated *_pb2 modules are tied to the protoc that wrote them, and the
runtime meets two protobuf worlds: 3.8.0 on the Jetson (TensorFlow 2.3's) and
the host's current release. So the messages are declared here as
FileDescriptorProtos, with the field names, numbers and types of the real
.proto files (tensorflow/core/framework/{types,tensor,tensor_shape}.proto,
tensorflow/core/protobuf/meta_graph.proto, tensorflow/core/example/*.proto,
tensorflow_serving/apis/*.proto, KServe's grpc_predict_v2.proto, and for the
ModelConfig and ModelStatistics RPCs Triton's grpc_service.proto and
model_config.proto), loaded into
a private DescriptorPool (no clash with TensorFlow's or a client's own
definitions in the same process) and turned into classes by message_factory.

Only the fields the server reads or writes are declared: protobuf keeps any
other field a client sends as an unknown field, so the wire stays compatible.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {
    "double": _F.TYPE_DOUBLE, "float": _F.TYPE_FLOAT, "int64": _F.TYPE_INT64, "uint64": _F.TYPE_UINT64,
    "int32": _F.TYPE_INT32, "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES,
    "uint32": _F.TYPE_UINT32,
}


class _File(object):
    """A small builder for one FileDescriptorProto (proto3)."""

    def __init__(self, name, package, deps=()):
        self.proto = descriptor_pb2.FileDescriptorProto(name=name, package=package, syntax="proto3")
        self.proto.dependency.extend(deps)
        self.package = package

    def enum(self, name, values, parent=None):
        enum = (parent or self.proto).enum_type.add(name=name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
        return enum

    def message(self, name, fields):
        """A top-level message. fields: (name, number, type, label); type is a scalar name, '.full.Name'
        (a message) or 'enum:.full.Name'; label is '' | 'repeated' | 'oneof:NAME' | 'map:KEYTYPE'."""
        msg = self.proto.message_type.add(name=name)
        _add_fields(msg, "." + self.package + "." + name, fields)
        return msg


def _nested(parent, parent_full, name, fields):
    """A message nested in `parent` (whose full name, with a leading dot, is parent_full)."""
    msg = parent.nested_type.add(name=name)
    _add_fields(msg, parent_full + "." + name, fields)
    return msg


def _add_fields(msg, full, fields):
    oneof_index = {}
    for fname, number, ftype, label in fields:
        field = msg.field.add(name=fname, number=number, json_name=_camel(fname))
        if label.startswith("map:"):
            # A map is a repeated nested XEntry message (key = 1, value = 2) flagged map_entry.
            entry = msg.nested_type.add(name=_camel(fname, upper=True) + "Entry")
            entry.options.map_entry = True
            _set_type(entry.field.add(name="key", number=1, json_name="key", label=_F.LABEL_OPTIONAL), label[4:])
            _set_type(entry.field.add(name="value", number=2, json_name="value", label=_F.LABEL_OPTIONAL), ftype)
            field.label = _F.LABEL_REPEATED
            field.type = _F.TYPE_MESSAGE
            field.type_name = full + "." + entry.name
            continue
        field.label = _F.LABEL_REPEATED if label == "repeated" else _F.LABEL_OPTIONAL
        _set_type(field, ftype)
        if label.startswith("oneof:"):
            oneof = label[6:]
            if oneof not in oneof_index:
                oneof_index[oneof] = len(msg.oneof_decl)
                msg.oneof_decl.add(name=oneof)
            field.oneof_index = oneof_index[oneof]


def _camel(name, upper=False):
    parts = name.split("_")
    text = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
    return text[:1].upper() + text[1:] if upper else text


def _set_type(field, ftype):
    if ftype in _TYPES:
        field.type = _TYPES[ftype]
    elif ftype.startswith("enum:"):
        field.type = _F.TYPE_ENUM
        field.type_name = ftype[5:]
    else:
        field.type = _F.TYPE_MESSAGE
        field.type_name = ftype


def _wkt_file():
    f = _File("kit/google_protobuf_wkt.proto", "google.protobuf")
    f.message("Any", [("type_url", 1, "string", ""), ("value", 2, "bytes", "")])
    f.message("Int64Value", [("value", 1, "int64", "")])
    return f.proto


# tensorflow/core/framework/types.proto
DATA_TYPES = [
    ("DT_INVALID", 0), ("DT_FLOAT", 1), ("DT_DOUBLE", 2), ("DT_INT32", 3), ("DT_UINT8", 4), ("DT_INT16", 5),
    ("DT_INT8", 6), ("DT_STRING", 7), ("DT_COMPLEX64", 8), ("DT_INT64", 9), ("DT_BOOL", 10), ("DT_QINT8", 11),
    ("DT_QUINT8", 12), ("DT_QINT32", 13), ("DT_BFLOAT16", 14), ("DT_QINT16", 15), ("DT_QUINT16", 16),
    ("DT_UINT16", 17), ("DT_COMPLEX128", 18), ("DT_HALF", 19), ("DT_RESOURCE", 20), ("DT_VARIANT", 21),
    ("DT_UINT32", 22), ("DT_UINT64", 23),
]


def _tensorflow_file():
    f = _File("kit/tensorflow_messages.proto", "tensorflow")
    f.enum("DataType", DATA_TYPES)
    shape = f.message("TensorShapeProto", [("dim", 2, ".tensorflow.TensorShapeProto.Dim", "repeated"),
                                           ("unknown_rank", 3, "bool", "")])
    _nested(shape, ".tensorflow.TensorShapeProto", "Dim", [("size", 1, "int64", ""), ("name", 2, "string", "")])
    f.message("TensorProto", [
        ("dtype", 1, "enum:.tensorflow.DataType", ""),
        ("tensor_shape", 2, ".tensorflow.TensorShapeProto", ""),
        ("version_number", 3, "int32", ""),
        ("tensor_content", 4, "bytes", ""),
        ("half_val", 13, "int32", "repeated"),
        ("float_val", 5, "float", "repeated"),
        ("double_val", 6, "double", "repeated"),
        ("int_val", 7, "int32", "repeated"),
        ("string_val", 8, "bytes", "repeated"),
        ("int64_val", 10, "int64", "repeated"),
        ("bool_val", 11, "bool", "repeated"),
        ("uint32_val", 16, "uint32", "repeated"),
        ("uint64_val", 17, "uint64", "repeated"),
    ])
    f.message("TensorInfo", [
        ("name", 1, "string", "oneof:encoding"),
        ("dtype", 2, "enum:.tensorflow.DataType", ""),
        ("tensor_shape", 3, ".tensorflow.TensorShapeProto", ""),
    ])
    f.message("SignatureDef", [
        ("inputs", 1, ".tensorflow.TensorInfo", "map:string"),
        ("outputs", 2, ".tensorflow.TensorInfo", "map:string"),
        ("method_name", 3, "string", ""),
    ])
    # tensorflow/core/example/feature.proto and example.proto
    f.message("BytesList", [("value", 1, "bytes", "repeated")])
    f.message("FloatList", [("value", 1, "float", "repeated")])
    f.message("Int64List", [("value", 1, "int64", "repeated")])
    f.message("Feature", [("bytes_list", 1, ".tensorflow.BytesList", "oneof:kind"),
                          ("float_list", 2, ".tensorflow.FloatList", "oneof:kind"),
                          ("int64_list", 3, ".tensorflow.Int64List", "oneof:kind")])
    f.message("Features", [("feature", 1, ".tensorflow.Feature", "map:string")])
    f.message("Example", [("features", 1, ".tensorflow.Features", "")])
    return f.proto


def _tfserving_file():
    f = _File("kit/tensorflow_serving_apis.proto", "tensorflow.serving",
              deps=["kit/google_protobuf_wkt.proto", "kit/tensorflow_messages.proto"])
    spec = ".tensorflow.serving.ModelSpec"
    # model.proto
    f.message("ModelSpec", [("name", 1, "string", ""),
                            ("version", 2, ".google.protobuf.Int64Value", "oneof:version_choice"),
                            ("version_label", 4, "string", "oneof:version_choice"),
                            ("signature_name", 3, "string", "")])
    # predict.proto
    f.message("PredictRequest", [("model_spec", 1, spec, ""),
                                 ("inputs", 2, ".tensorflow.TensorProto", "map:string"),
                                 ("output_filter", 3, "string", "repeated")])
    f.message("PredictResponse", [("model_spec", 2, spec, ""),
                                  ("outputs", 1, ".tensorflow.TensorProto", "map:string")])
    # get_model_metadata.proto
    f.message("SignatureDefMap", [("signature_def", 1, ".tensorflow.SignatureDef", "map:string")])
    f.message("GetModelMetadataRequest", [("model_spec", 1, spec, ""), ("metadata_field", 2, "string", "repeated")])
    f.message("GetModelMetadataResponse", [("model_spec", 1, spec, ""),
                                           ("metadata", 2, ".google.protobuf.Any", "map:string")])
    # util/status.proto (error_code is tensorflow.error.Code: an enum, a varint on the wire like int32)
    f.message("StatusProto", [("error_code", 1, "int32", ""), ("error_message", 2, "string", "")])
    # get_model_status.proto
    f.message("GetModelStatusRequest", [("model_spec", 1, spec, "")])
    status = f.message("ModelVersionStatus", [
        ("version", 1, "int64", ""),
        ("state", 2, "enum:.tensorflow.serving.ModelVersionStatus.State", ""),
        ("status", 3, ".tensorflow.serving.StatusProto", ""),
    ])
    f.enum("State", [("UNKNOWN", 0), ("START", 10), ("LOADING", 20), ("AVAILABLE", 30), ("UNLOADING", 40),
                     ("END", 50)], parent=status)
    f.message("GetModelStatusResponse", [("model_version_status", 1, ".tensorflow.serving.ModelVersionStatus",
                                          "repeated")])
    # input.proto
    f.message("ExampleList", [("examples", 1, ".tensorflow.Example", "repeated")])
    f.message("ExampleListWithContext", [("examples", 1, ".tensorflow.Example", "repeated"),
                                         ("context", 2, ".tensorflow.Example", "")])
    f.message("Input", [("example_list", 1, ".tensorflow.serving.ExampleList", "oneof:kind"),
                        ("example_list_with_context", 2, ".tensorflow.serving.ExampleListWithContext", "oneof:kind")])
    # classification.proto
    f.message("Class", [("label", 1, "string", ""), ("score", 2, "float", "")])
    f.message("Classifications", [("classes", 1, ".tensorflow.serving.Class", "repeated")])
    f.message("ClassificationResult", [("classifications", 1, ".tensorflow.serving.Classifications", "repeated")])
    f.message("ClassificationRequest", [("model_spec", 1, spec, ""), ("input", 2, ".tensorflow.serving.Input", "")])
    f.message("ClassificationResponse", [("model_spec", 2, spec, ""),
                                         ("result", 1, ".tensorflow.serving.ClassificationResult", "")])
    # regression.proto
    f.message("Regression", [("value", 1, "float", "")])
    f.message("RegressionResult", [("regressions", 1, ".tensorflow.serving.Regression", "repeated")])
    f.message("RegressionRequest", [("model_spec", 1, spec, ""), ("input", 2, ".tensorflow.serving.Input", "")])
    f.message("RegressionResponse", [("model_spec", 2, spec, ""),
                                     ("result", 1, ".tensorflow.serving.RegressionResult", "")])
    # prediction_log.proto (TF Serving's warm-up file holds these)
    for name, request, response in [("PredictLog", "PredictRequest", "PredictResponse"),
                                    ("ClassifyLog", "ClassificationRequest", "ClassificationResponse"),
                                    ("RegressLog", "RegressionRequest", "RegressionResponse")]:
        f.message(name, [("request", 1, ".tensorflow.serving." + request, ""),
                         ("response", 2, ".tensorflow.serving." + response, "")])
    f.message("PredictionLog", [("classify_log", 2, ".tensorflow.serving.ClassifyLog", "oneof:log_type"),
                                ("regress_log", 3, ".tensorflow.serving.RegressLog", "oneof:log_type"),
                                ("predict_log", 6, ".tensorflow.serving.PredictLog", "oneof:log_type")])
    return f.proto


def _kserve_file():
    f = _File("kit/kserve_grpc_predict_v2.proto", "inference")
    param = ".inference.InferParameter"
    contents = ".inference.InferTensorContents"
    for name, fields in [
        ("ServerLiveRequest", []), ("ServerLiveResponse", [("live", 1, "bool", "")]),
        ("ServerReadyRequest", []), ("ServerReadyResponse", [("ready", 1, "bool", "")]),
        ("ModelReadyRequest", [("name", 1, "string", ""), ("version", 2, "string", "")]),
        ("ModelReadyResponse", [("ready", 1, "bool", "")]),
        ("ServerMetadataRequest", []),
        ("ServerMetadataResponse", [("name", 1, "string", ""), ("version", 2, "string", ""),
                                    ("extensions", 3, "string", "repeated")]),
        ("ModelMetadataRequest", [("name", 1, "string", ""), ("version", 2, "string", "")]),
    ]:
        f.message(name, fields)
    meta = f.message("ModelMetadataResponse", [
        ("name", 1, "string", ""), ("versions", 2, "string", "repeated"), ("platform", 3, "string", ""),
        ("inputs", 4, ".inference.ModelMetadataResponse.TensorMetadata", "repeated"),
        ("outputs", 5, ".inference.ModelMetadataResponse.TensorMetadata", "repeated"),
    ])
    _nested(meta, ".inference.ModelMetadataResponse", "TensorMetadata",
            [("name", 1, "string", ""), ("datatype", 2, "string", ""), ("shape", 3, "int64", "repeated")])
    request = f.message("ModelInferRequest", [
        ("model_name", 1, "string", ""), ("model_version", 2, "string", ""), ("id", 3, "string", ""),
        ("parameters", 4, param, "map:string"),
        ("inputs", 5, ".inference.ModelInferRequest.InferInputTensor", "repeated"),
        ("outputs", 6, ".inference.ModelInferRequest.InferRequestedOutputTensor", "repeated"),
        ("raw_input_contents", 7, "bytes", "repeated"),
    ])
    _nested(request, ".inference.ModelInferRequest", "InferInputTensor", [
        ("name", 1, "string", ""), ("datatype", 2, "string", ""), ("shape", 3, "int64", "repeated"),
        ("parameters", 4, param, "map:string"), ("contents", 5, contents, ""),
    ])
    _nested(request, ".inference.ModelInferRequest", "InferRequestedOutputTensor", [
        ("name", 1, "string", ""), ("parameters", 2, param, "map:string"),
    ])
    response = f.message("ModelInferResponse", [
        ("model_name", 1, "string", ""), ("model_version", 2, "string", ""), ("id", 3, "string", ""),
        ("parameters", 4, param, "map:string"),
        ("outputs", 5, ".inference.ModelInferResponse.InferOutputTensor", "repeated"),
        ("raw_output_contents", 6, "bytes", "repeated"),
    ])
    _nested(response, ".inference.ModelInferResponse", "InferOutputTensor", [
        ("name", 1, "string", ""), ("datatype", 2, "string", ""), ("shape", 3, "int64", "repeated"),
        ("parameters", 4, param, "map:string"), ("contents", 5, contents, ""),
    ])
    f.message("InferParameter", [("bool_param", 1, "bool", "oneof:parameter_choice"),
                                 ("int64_param", 2, "int64", "oneof:parameter_choice"),
                                 ("string_param", 3, "string", "oneof:parameter_choice"),
                                 ("double_param", 4, "double", "oneof:parameter_choice"),
                                 ("uint64_param", 5, "uint64", "oneof:parameter_choice")])
    f.message("InferTensorContents", [
        ("bool_contents", 1, "bool", "repeated"), ("int_contents", 2, "int32", "repeated"),
        ("int64_contents", 3, "int64", "repeated"), ("uint_contents", 4, "uint32", "repeated"),
        ("uint64_contents", 5, "uint64", "repeated"), ("fp32_contents", 6, "float", "repeated"),
        ("fp64_contents", 7, "double", "repeated"), ("bytes_contents", 8, "bytes", "repeated"),
    ])
    _triton_model_config(f)
    _triton_statistics(f)
    return f.proto


def _triton_model_config(f):
    """Triton's ModelConfig RPC (grpc_service.proto) and the part of ModelConfig (model_config.proto, the
    same package) that kit fills: what GET /v2/models/NAME/config answers."""
    f.enum("DataType", [("TYPE_INVALID", 0), ("TYPE_BOOL", 1), ("TYPE_UINT8", 2), ("TYPE_UINT16", 3),
                        ("TYPE_UINT32", 4), ("TYPE_UINT64", 5), ("TYPE_INT8", 6), ("TYPE_INT16", 7),
                        ("TYPE_INT32", 8), ("TYPE_INT64", 9), ("TYPE_FP16", 10), ("TYPE_FP32", 11),
                        ("TYPE_FP64", 12), ("TYPE_STRING", 13), ("TYPE_BF16", 14)])
    f.message("ModelInput", [("name", 1, "string", ""), ("data_type", 2, "enum:.inference.DataType", ""),
                             ("dims", 4, "int64", "repeated")])
    f.message("ModelOutput", [("name", 1, "string", ""), ("data_type", 2, "enum:.inference.DataType", ""),
                              ("dims", 3, "int64", "repeated")])
    policy = f.message("ModelVersionPolicy", [
        ("specific", 3, ".inference.ModelVersionPolicy.Specific", "oneof:policy_choice")])
    _nested(policy, ".inference.ModelVersionPolicy", "Specific", [("versions", 1, "int64", "repeated")])
    f.message("ModelDynamicBatching", [("preferred_batch_size", 1, "int32", "repeated"),
                                       ("max_queue_delay_microseconds", 2, "uint64", "")])
    f.message("ModelParameter", [("string_value", 1, "string", "")])
    f.message("ModelConfig", [
        ("name", 1, "string", ""), ("platform", 2, "string", ""), ("backend", 17, "string", ""),
        ("version_policy", 3, ".inference.ModelVersionPolicy", ""), ("max_batch_size", 4, "int32", ""),
        ("input", 5, ".inference.ModelInput", "repeated"), ("output", 6, ".inference.ModelOutput", "repeated"),
        ("dynamic_batching", 11, ".inference.ModelDynamicBatching", "oneof:scheduling_choice"),
        ("parameters", 14, ".inference.ModelParameter", "map:string"),
    ])
    f.message("ModelConfigRequest", [("name", 1, "string", ""), ("version", 2, "string", "")])
    f.message("ModelConfigResponse", [("config", 1, ".inference.ModelConfig", "")])


def _triton_statistics(f):
    """Triton's ModelStatistics RPC (grpc_service.proto): what GET /v2/models/NAME/stats answers."""
    duration = ".inference.StatisticDuration"
    f.message("StatisticDuration", [("count", 1, "uint64", ""), ("ns", 2, "uint64", "")])
    f.message("InferStatistics", [("success", 1, duration, ""), ("fail", 2, duration, ""),
                                  ("compute_infer", 5, duration, "")])
    f.message("InferBatchStatistics", [("batch_size", 1, "uint64", ""), ("compute_infer", 3, duration, "")])
    f.message("ModelStatistics", [
        ("name", 1, "string", ""), ("version", 2, "string", ""), ("last_inference", 3, "uint64", ""),
        ("inference_count", 4, "uint64", ""), ("execution_count", 5, "uint64", ""),
        ("inference_stats", 6, ".inference.InferStatistics", ""),
        ("batch_stats", 7, ".inference.InferBatchStatistics", "repeated"),
    ])
    f.message("ModelStatisticsRequest", [("name", 1, "string", ""), ("version", 2, "string", "")])
    f.message("ModelStatisticsResponse", [("model_stats", 1, ".inference.ModelStatistics", "repeated")])


class Messages(object):
    """Message classes by full name: messages['tensorflow.serving.PredictRequest']()."""

    def __init__(self):
        self.pool = descriptor_pool.DescriptorPool()
        for proto in (_wkt_file(), _tensorflow_file(), _tfserving_file(), _kserve_file()):
            # AddSerializedFile exists from protobuf 3.x (python and cpp backends) to today's upb.
            self.pool.AddSerializedFile(proto.SerializeToString())
        self._factory = None if hasattr(message_factory, "GetMessageClass") else message_factory.MessageFactory(
            self.pool)
        self._classes = {}

    def __getitem__(self, full_name):
        cls = self._classes.get(full_name)
        if cls is None:
            descriptor = self.pool.FindMessageTypeByName(full_name)
            if self._factory is None:
                cls = message_factory.GetMessageClass(descriptor)
            else:
                cls = self._factory.GetPrototype(descriptor)  # protobuf < 4.21
            self._classes[full_name] = cls
        return cls

    def enum_value(self, enum_full_name, value_name):
        return self.pool.FindEnumTypeByName(enum_full_name).values_by_name[value_name].number


_MESSAGES = []


def messages():
    """The shared Messages (built once, on first use)."""
    if not _MESSAGES:
        _MESSAGES.append(Messages())
    return _MESSAGES[0]
