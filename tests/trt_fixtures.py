"""TF-TRT-converted SavedModels made without TensorRT, for audit and gate tests.

TensorRT cannot run here, so these fixtures are made the way TF-TRT's output
looks on disk: a real SavedModel (tests/models.make_cnn) whose saved_model.pb
is edited as protobuf -- segments of the serving function replaced by
`TRTEngineOp` nodes carrying TF-TRT's attributes, the replaced nodes moved
into `<op>_native_segment` functions -- plus engine assets
`assets/trt-serialized-engine.<op>`: TFRecord files (written by
tf.io.TFRecordWriter) of hand-encoded TRTEngineInstance messages (field 1:
repeated TensorShapeProto input_shapes, field 2: bytes serialized_engine).
TensorFlow need not be able to run them (the engine bytes are not engines);
the audit reads files only. This stands in for TensorRT, and only for it.
"""

import os
import shutil

ENGINE_NAMES = {"2.3": ("TRTEngineOp_0_0", "TRTEngineOp_0_1"), "2.17": ("TRTEngineOp_000_000", "TRTEngineOp_000_001")}

# The CNN's serving function (tests/models.make_cnn): two segments TF-TRT would convert.
SEGMENTS = (
    # nodes, the segment's output tensor, per-example input shape
    (("Conv2D/ReadVariableOp", "Conv2D", "add/ReadVariableOp", "add", "Relu", "Mean/reduction_indices", "Mean"),
     "Mean:output:0", [16, 16, 3]),
    (("MatMul/ReadVariableOp", "MatMul", "add_1/ReadVariableOp", "add_1"), "add_1:z:0", [8]),
)
CONVERTED_OPS = 6  # Conv2D, add, Relu, Mean, MatMul, add_1 (noise excluded)
NATIVE_OPS = 1  # Softmax


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_engine_instance(input_shapes, engine=b"not-a-real-engine"):
    """A TRTEngineInstance message, hand-encoded: 1: repeated TensorShapeProto, 2: bytes."""
    from tensorflow.core.framework import tensor_shape_pb2

    out = b""
    for shape in input_shapes:
        proto = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape])
        body = proto.SerializeToString()
        out += b"\x0a" + _varint(len(body)) + body
    out += b"\x12" + _varint(len(engine)) + engine
    return out


def write_engine_asset(path, instances):
    """instances: list of (input_shapes, engine_bytes)."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as w:
        for shapes, engine in instances:
            w.write(encode_engine_instance(shapes, engine))


def make_trt_saved_model(native_dir, out_dir, built_batch_sizes, naming="2.3", precision="FP16",
                         workspace=1 << 30, max_cached_engines=2):
    """Copy the CNN SavedModel at native_dir to out_dir as if TF-TRT had converted it.

    built_batch_sizes: one entry per engine op: a list of batch sizes that have a saved
    engine, or None for no asset file at all (build() never ran for that op).
    Returns the engine op names.
    """
    from tensorflow.core.framework import attr_value_pb2, node_def_pb2, tensor_shape_pb2, types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    shutil.copytree(native_dir, out_dir)
    pb = os.path.join(out_dir, "saved_model.pb")
    sm = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        sm.ParseFromString(f.read())
    library = sm.meta_graphs[0].graph_def.library
    serve = next(f for f in library.function if f.signature.name.startswith("__inference_serve_"))
    names = ENGINE_NAMES[naming]

    for engine_name, (node_names, out_tensor, example_shape), sizes in zip(names, SEGMENTS, built_batch_sizes):
        moved = [n for n in serve.node_def if n.name in node_names]
        external = []
        for n in moved:
            for i in n.input:
                if not i.startswith("^") and i.split(":")[0] not in node_names and i not in external:
                    external.append(i)
        segment = library.function.add()
        segment.signature.name = engine_name + "_native_segment"
        for k, i in enumerate(external):
            arg = segment.signature.input_arg.add()
            arg.name, arg.type = "input_%d" % k, types_pb2.DT_FLOAT
        out_arg = segment.signature.output_arg.add()
        out_arg.name, out_arg.type = "output_0", types_pb2.DT_FLOAT
        for n in moved:
            segment.node_def.add().CopyFrom(n)
        segment.ret["output_0"] = out_tensor

        engine = node_def_pb2.NodeDef(name=engine_name, op="TRTEngineOp", input=external)
        a = engine.attr
        a["precision_mode"].s = precision.encode()
        a["max_cached_engines_count"].i = max_cached_engines
        a["workspace_size_bytes"].i = workspace
        a["static_engine"].b = False
        a["use_calibration"].b = False
        a["segment_func"].func.name = segment.signature.name
        a["input_shapes"].list.shape.extend([tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in [-1] + example_shape])])
        a["InT"].list.type.extend([types_pb2.DT_FLOAT] * len(external))
        a["OutT"].CopyFrom(attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(type=[types_pb2.DT_FLOAT])))

        kept = [n for n in serve.node_def if n.name not in node_names]
        del serve.node_def[:]
        serve.node_def.extend(kept + [engine])
        replacement = engine_name + ":out_tensor:0"
        for n in serve.node_def:
            for k, i in enumerate(n.input):
                if i == out_tensor:
                    n.input[k] = replacement
                elif i.startswith("^") and i[1:] in node_names:
                    n.input[k] = "^" + engine_name
        for key, value in list(serve.ret.items()):
            if value == out_tensor:
                serve.ret[key] = replacement

        if sizes is not None:
            write_engine_asset(os.path.join(out_dir, "assets", "trt-serialized-engine." + engine_name),
                               [([[b] + example_shape], b"engine-%s-batch-%d" % (engine_name.encode(), b))
                                for b in sizes])

    with open(pb, "wb") as f:
        f.write(sm.SerializeToString())
    return list(names[:len(built_batch_sizes)])
