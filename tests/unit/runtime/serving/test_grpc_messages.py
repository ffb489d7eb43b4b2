"""kit's in-code gRPC message definitions match the real .proto files field for field.

The reference is the generated code the real clients ship: tensorflow-serving-api's
*_pb2 (TF Serving and TensorFlow messages) and tritonclient's service_pb2 (KServe v2).
Every field kit declares must exist there with the same number, type and label;
a message kit declares must not miss a field the server reads or writes.
"""

import pytest

from kit.runtime.serving.grpc_messages import messages

pytest.importorskip("tensorflow_serving.apis.predict_pb2", reason="tensorflow-serving-api is a test dependency")

from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2, get_model_metadata_pb2, get_model_status_pb2, input_pb2, model_pb2, predict_pb2,
    regression_pb2,
)
from tensorflow_serving.apis import status_pb2  # noqa: E402
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow.core.example import example_pb2, feature_pb2  # noqa: E402
from tritonclient.grpc import service_pb2  # noqa: E402

REFERENCE = [
    predict_pb2.PredictRequest, predict_pb2.PredictResponse, model_pb2.ModelSpec,
    get_model_metadata_pb2.GetModelMetadataRequest, get_model_metadata_pb2.GetModelMetadataResponse,
    get_model_metadata_pb2.SignatureDefMap, get_model_status_pb2.GetModelStatusRequest,
    get_model_status_pb2.ModelVersionStatus, get_model_status_pb2.GetModelStatusResponse, status_pb2.StatusProto,
    classification_pb2.ClassificationRequest, classification_pb2.ClassificationResponse,
    classification_pb2.ClassificationResult, classification_pb2.Classifications, classification_pb2.Class,
    regression_pb2.RegressionRequest, regression_pb2.RegressionResponse, regression_pb2.RegressionResult,
    regression_pb2.Regression, input_pb2.Input, input_pb2.ExampleList, input_pb2.ExampleListWithContext,
    tensor_pb2.TensorProto, tensor_shape_pb2.TensorShapeProto, tensor_shape_pb2.TensorShapeProto.Dim,
    meta_graph_pb2.TensorInfo, meta_graph_pb2.SignatureDef, example_pb2.Example, feature_pb2.Features,
    feature_pb2.Feature, feature_pb2.BytesList, feature_pb2.FloatList, feature_pb2.Int64List,
    service_pb2.ServerLiveRequest, service_pb2.ServerLiveResponse, service_pb2.ServerReadyRequest,
    service_pb2.ServerReadyResponse, service_pb2.ModelReadyRequest, service_pb2.ModelReadyResponse,
    service_pb2.ServerMetadataRequest, service_pb2.ServerMetadataResponse, service_pb2.ModelMetadataRequest,
    service_pb2.ModelMetadataResponse, service_pb2.ModelMetadataResponse.TensorMetadata,
    service_pb2.ModelInferRequest, service_pb2.ModelInferRequest.InferInputTensor,
    service_pb2.ModelInferRequest.InferRequestedOutputTensor, service_pb2.ModelInferResponse,
    service_pb2.ModelInferResponse.InferOutputTensor, service_pb2.InferParameter, service_pb2.InferTensorContents,
]
# Declared with a wire-compatible type instead of the real one (both varints).
SAME_ON_THE_WIRE = {("tensorflow.serving.StatusProto", "error_code")}


def _map_types(field):
    entry = field.message_type
    return tuple((f.type, f.message_type.full_name if f.message_type else None) for f in entry.fields)


@pytest.mark.parametrize("reference", REFERENCE, ids=lambda m: m.DESCRIPTOR.full_name)
def test_fields_match_the_real_proto(reference):
    real = reference.DESCRIPTOR
    ours = messages().pool.FindMessageTypeByName(real.full_name)
    for field in ours.fields:
        assert field.name in real.fields_by_name, "%s.%s is not in the real proto" % (real.full_name, field.name)
        other = real.fields_by_name[field.name]
        assert field.number == other.number, field.name
        assert field.label == other.label, field.name
        if (real.full_name, field.name) not in SAME_ON_THE_WIRE:
            assert field.type == other.type, field.name
        if field.message_type is not None:
            assert field.message_type.full_name.endswith("Entry") == other.message_type.full_name.endswith("Entry")
            if field.message_type.GetOptions().map_entry:
                assert _map_types(field) == _map_types(other), field.name
            else:
                assert field.message_type.full_name == other.message_type.full_name, field.name
        assert (field.containing_oneof.name if field.containing_oneof else None) == (
            other.containing_oneof.name if other.containing_oneof else None)


def test_round_trip_with_the_real_classes():
    """Bytes written by the real client's class parse in kit's, and back."""
    m = messages()
    real = predict_pb2.PredictRequest()
    real.model_spec.name = "half_plus_two"
    real.model_spec.version.value = 123
    real.model_spec.signature_name = "serving_default"
    real.inputs["x"].dtype = 1
    real.inputs["x"].tensor_shape.dim.add(size=3)
    real.inputs["x"].float_val.extend([1.0, 2.0, 5.0])
    ours = m["tensorflow.serving.PredictRequest"].FromString(real.SerializeToString())
    assert ours.model_spec.version.value == 123
    assert list(ours.inputs["x"].float_val) == [1.0, 2.0, 5.0]
    assert predict_pb2.PredictRequest.FromString(ours.SerializeToString()) == real


def test_a_missing_field_would_be_caught():
    """The comparison can fail: a field kit lacks is reported by the reference side."""
    ours = messages().pool.FindMessageTypeByName("tensorflow.serving.PredictRequest")
    assert "predict_streamed_options" not in ours.fields_by_name
    assert "predict_streamed_options" in predict_pb2.PredictRequest.DESCRIPTOR.fields_by_name
