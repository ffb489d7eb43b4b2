"""Load a SavedModel, describe its signatures and call them.

Runs in the L4T images (Python 3.6, TF >= 2.3) and on the host (TF 2.17).
TensorFlow is imported only when a model is loaded, so importing this module
stays cheap (the health probe imports the server package).

Signatures are described from the SignatureDef protos in saved_model.pb, the
same data TensorFlow Serving reports, so TF1-era models (string inputs,
unknown ranks, several signatures) are described exactly; the functions are
called through tf.saved_model.load(...).signatures.
"""

import os
from collections import OrderedDict

import numpy as np

# Open Inference Protocol (KServe v2) datatypes for the TF dtypes it can carry.
_V2_DATATYPES = {
    "DT_BOOL": "BOOL",
    "DT_UINT8": "UINT8",
    "DT_UINT16": "UINT16",
    "DT_UINT32": "UINT32",
    "DT_UINT64": "UINT64",
    "DT_INT8": "INT8",
    "DT_INT16": "INT16",
    "DT_INT32": "INT32",
    "DT_INT64": "INT64",
    "DT_HALF": "FP16",
    "DT_FLOAT": "FP32",
    "DT_DOUBLE": "FP64",
    "DT_STRING": "BYTES",
}
_NUMPY_DTYPES = {
    "DT_BOOL": np.bool_,
    "DT_UINT8": np.uint8,
    "DT_UINT16": np.uint16,
    "DT_UINT32": np.uint32,
    "DT_UINT64": np.uint64,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_HALF": np.float16,
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_STRING": np.object_,
}

# TF1 SavedModels carry this signature for the variable initialiser; it is not callable.
_INTERNAL_SIGNATURES = ("__saved_model_init_op",)


class ModelError(Exception):
    """The model cannot be loaded or does not fit the configuration."""


class TensorInfo(object):
    """One input or output of a signature.

    key: the signature's name for it (what clients send); tensor_name: the
    graph tensor ("x:0"); dtype_name: "DT_FLOAT"...; shape: list of ints with
    -1 for an unknown dimension, or None for an unknown rank.
    """

    def __init__(self, key, tensor_name, dtype_name, shape):
        self.key = key
        self.tensor_name = tensor_name
        self.dtype_name = dtype_name
        self.shape = shape
        self.numpy_dtype = np.dtype(_NUMPY_DTYPES[dtype_name]) if dtype_name in _NUMPY_DTYPES else None
        self.v2_datatype = _V2_DATATYPES.get(dtype_name)

    @property
    def is_string(self):
        return self.dtype_name == "DT_STRING"

    def shape_text(self):
        if self.shape is None:
            return "any shape (unknown rank)"
        return "[" + ", ".join(str(d) for d in self.shape) + "]"

    def tfserving_json(self):
        dims = [] if self.shape is None else [{"size": str(d), "name": ""} for d in self.shape]
        return {
            "dtype": self.dtype_name,
            "tensor_shape": {"dim": dims, "unknown_rank": self.shape is None},
            "name": self.tensor_name,
        }

    def v2_json(self):
        return {"name": self.key, "datatype": self.v2_datatype or self.dtype_name,
                "shape": [-1] if self.shape is None else list(self.shape)}


class Signature(object):
    """A serving signature: its inputs and outputs (sorted by key) and its function."""

    def __init__(self, key, method_name, inputs, outputs, function, checks_shapes=True):
        self.key = key
        # False for TF1 graphs: TF Serving feeds their tensors without checking the static shape (a
        # [-1, 1] input takes [3]); TF2 functions refuse a tensor that does not fit, so kit checks first.
        self.checks_shapes = checks_shapes
        self.method_name = method_name
        self.inputs = inputs  # OrderedDict key -> TensorInfo
        self.outputs = outputs
        self.function = function
        # Batchable: every input and output has a free leading (batch) dimension
        # (or an unknown rank, where the leading dimension is taken as the batch).
        # Only those are micro-batched, padded and split; others run one request at a time.
        self.batchable = bool(inputs) and all(
            t.shape is None or (len(t.shape) >= 1 and t.shape[0] == -1)
            for t in list(inputs.values()) + list(outputs.values())
        )
        self.unsupported = [t.key for t in list(inputs.values()) + list(outputs.values()) if t.numpy_dtype is None]

    def tfserving_json(self):
        return OrderedDict([
            ("inputs", OrderedDict((k, t.tfserving_json()) for k, t in self.inputs.items())),
            ("outputs", OrderedDict((k, t.tfserving_json()) for k, t in self.outputs.items())),
            ("method_name", self.method_name),
        ])


def read_saved_model_proto(path):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    pb = os.path.join(path, "saved_model.pb")
    pbtxt = os.path.join(path, "saved_model.pbtxt")
    if os.path.isfile(pb):
        with open(pb, "rb") as f:
            proto.ParseFromString(f.read())
    elif os.path.isfile(pbtxt):
        from google.protobuf import text_format

        with open(pbtxt, "r") as f:
            text_format.Parse(f.read(), proto)
    else:
        raise ModelError("no saved_model.pb in %s: not a SavedModel directory" % path)
    for meta_graph in proto.meta_graphs:
        if "serve" in meta_graph.meta_info_def.tags:
            return meta_graph
    if proto.meta_graphs:
        return proto.meta_graphs[0]
    raise ModelError("the SavedModel in %s has no meta graph" % path)


def tensor_info(key, info):
    from tensorflow.core.framework import types_pb2

    if info.WhichOneof("encoding") != "name":
        # Sparse / composite tensors have no dense JSON form: described, refused at request time.
        return TensorInfo(key, key, "DT_COMPOSITE", None)
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = [int(d.size) for d in info.tensor_shape.dim]
    return TensorInfo(key, info.name, types_pb2.DataType.Name(info.dtype), shape)


class Model(object):
    """A loaded SavedModel, its signatures, and how to call them."""

    def __init__(self, path, name, version, default_signature, signatures, tf_version):
        self.path = path
        self.name = name
        self.version = version
        self.default_signature = default_signature
        self.signatures = signatures  # OrderedDict key -> Signature
        self.tf_version = tf_version
        self.tf = None  # the tensorflow module it was loaded with (set by load)
        self.loaded = None  # the loaded SavedModel object: its signature functions need it alive

    @classmethod
    def load(cls, path, name, version="1", default_signature="serving_default"):
        if not os.path.isdir(path):
            raise ModelError("model directory %s does not exist" % path)
        meta_graph = read_saved_model_proto(path)
        import tensorflow as tf

        from kit.runtime import compat

        try:
            compat.check(tf.__version__, path, meta_graph)
        except compat.ModelTooNew as e:
            raise ModelError("%s (%s)" % (e.message, e.hint))
        try:
            loaded = tf.saved_model.load(path)
        except Exception as e:  # TF raises many kinds; report them as one
            raise ModelError("TensorFlow could not load the SavedModel in %s: %s" % (path, e))
        functions = dict(loaded.signatures.items())
        tf1 = not len(meta_graph.object_graph_def.nodes)  # TF1's builder writes no object graph
        signatures = OrderedDict()
        for key in sorted(meta_graph.signature_def):
            if key in _INTERNAL_SIGNATURES or key not in functions:
                continue
            sdef = meta_graph.signature_def[key]
            inputs = OrderedDict((k, tensor_info(k, sdef.inputs[k])) for k in sorted(sdef.inputs))
            outputs = OrderedDict((k, tensor_info(k, sdef.outputs[k])) for k in sorted(sdef.outputs))
            signatures[key] = Signature(key, sdef.method_name, inputs, outputs, functions[key],
                                        checks_shapes=not tf1)
        if default_signature not in signatures:
            raise ModelError(
                "the SavedModel in %s has no signature %r (it has: %s)"
                % (path, default_signature, ", ".join(signatures) or "none")
            )
        model = cls(path, name, version, default_signature, signatures, tf.__version__)
        model.tf = tf
        model.loaded = loaded
        return model

    def signature(self, key):
        return self.signatures[key or self.default_signature]

    def run(self, signature_key, inputs):
        """Call a signature with numpy arrays; returns OrderedDict output key -> numpy array."""
        signature = self.signatures[signature_key]
        tf = self.tf
        feeds = {}
        for key, info in signature.inputs.items():
            value = inputs[key]
            if info.is_string:
                feeds[key] = tf.constant(value, dtype=tf.string)
            else:
                feeds[key] = tf.convert_to_tensor(value)
        result = signature.function(**feeds)
        return OrderedDict((key, result[key].numpy()) for key in signature.outputs)

    def optimization(self):
        """'tensorrt' when the graph holds TF-TRT engine ops, else 'native'."""
        signature = self.signatures[self.default_signature]
        try:
            graph_def = signature.function.graph.as_graph_def()
        except Exception:
            return "unknown"
        ops = set(n.op for n in graph_def.node)
        for fn in graph_def.library.function:
            ops.update(n.op for n in fn.node_def)
        return "tensorrt" if "TRTEngineOp" in ops else "native"

    # ---- descriptions ------------------------------------------------------

    def tfserving_status(self, state="AVAILABLE"):
        return {
            "model_version_status": [
                {"version": self.version, "state": state, "status": {"error_code": "OK", "error_message": ""}}
            ]
        }

    def tfserving_metadata(self):
        return OrderedDict([
            ("model_spec", OrderedDict([("name", self.name), ("signature_name", ""), ("version", self.version)])),
            ("metadata", {"signature_def": {"signature_def": OrderedDict(
                (k, s.tfserving_json()) for k, s in self.signatures.items())}}),
        ])

    def v2_metadata(self):
        signature = self.signatures[self.default_signature]
        return OrderedDict([
            ("name", self.name),
            ("versions", [self.version]),
            ("platform", "tensorflow_savedmodel"),
            ("inputs", [t.v2_json() for t in signature.inputs.values()]),
            ("outputs", [t.v2_json() for t in signature.outputs.values()]),
            ("parameters", {"signature_name": self.default_signature,
                            "signatures": list(self.signatures)}),
        ])


def example_inputs(signature, batch_size, shapes=None, random=False, seed=0):
    """Inputs of batch_size examples for a signature: zeros (or uniform random
    numbers) of each input's shape. `shapes` (key -> per-example shape) fills
    unknown dimensions; without it an unknown dimension becomes 1."""
    shapes = shapes or {}
    rng = np.random.RandomState(seed)
    feeds = OrderedDict()
    for key, info in signature.inputs.items():
        if key in shapes:
            example = list(shapes[key])
        elif info.shape is None:
            example = []
        else:
            example = [1 if d < 0 else d for d in info.shape[1:]]
        if not signature.batchable and info.shape is not None:
            full = [1 if d < 0 else d for d in info.shape]
        else:
            full = [batch_size] + example
        if info.is_string:
            feeds[key] = np.full(full, b"", dtype=object)
        elif random and info.numpy_dtype.kind == "f":
            feeds[key] = rng.uniform(0.0, 1.0, size=full).astype(info.numpy_dtype)
        elif random and info.numpy_dtype.kind in "iu":
            feeds[key] = rng.randint(0, 2, size=full).astype(info.numpy_dtype)
        else:
            feeds[key] = np.zeros(full, dtype=info.numpy_dtype)
    return feeds


def parse_shapes(text):
    """'images=224,224,3;mask=10' -> {'images': [224, 224, 3], 'mask': [10]} (per-example shapes)."""
    shapes = {}
    for part in (text or "").replace(" ", "").split(";"):
        if not part:
            continue
        if "=" not in part:
            raise ValueError("input shape %r: use NAME=D1,D2,... (e.g. images=224,224,3)" % part)
        name, dims = part.split("=", 1)
        try:
            shapes[name] = [int(d) for d in dims.replace("x", ",").split(",") if d]
        except ValueError:
            raise ValueError("input shape %r: dimensions must be integers" % part)
        if any(d < 1 for d in shapes[name]):
            raise ValueError("input shape %r: dimensions must be >= 1" % part)
    return shapes
