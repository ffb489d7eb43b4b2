"""tensorflow.TensorProto <-> numpy, for TF Serving's gRPC API.

Clients built on tf.make_tensor_proto send numeric tensors as tensor_content
(raw little-endian bytes): those become numpy views without a copy. The typed
repeated fields (float_val, int_val, ...) are read too, with TensorFlow's
rule that a single value fills the whole shape. Sizes are bounded by
`max_bytes` so a tiny message cannot ask for a huge broadcast.
"""

import numpy as np

from kit.runtime.serving.protocol import RequestError

# DataType number -> (name, numpy dtype, typed field)
_BY_NUMBER = {
    1: ("DT_FLOAT", np.dtype("<f4"), "float_val"),
    2: ("DT_DOUBLE", np.dtype("<f8"), "double_val"),
    3: ("DT_INT32", np.dtype("<i4"), "int_val"),
    4: ("DT_UINT8", np.dtype("<u1"), "int_val"),
    5: ("DT_INT16", np.dtype("<i2"), "int_val"),
    6: ("DT_INT8", np.dtype("<i1"), "int_val"),
    7: ("DT_STRING", np.dtype(object), "string_val"),
    9: ("DT_INT64", np.dtype("<i8"), "int64_val"),
    10: ("DT_BOOL", np.dtype(np.bool_), "bool_val"),
    17: ("DT_UINT16", np.dtype("<u2"), "int_val"),
    19: ("DT_HALF", np.dtype("<f2"), "half_val"),
    22: ("DT_UINT32", np.dtype("<u4"), "uint32_val"),
    23: ("DT_UINT64", np.dtype("<u8"), "uint64_val"),
}
_BY_NAME = dict((name, number) for number, (name, _, _) in _BY_NUMBER.items())


def dtype_number(dtype_name):
    return _BY_NAME.get(dtype_name, 0)


def dtype_name_of(dtype):
    """The TF name of a numpy dtype ("DT_FLOAT"), for messages."""
    for name, candidate, _ in _BY_NUMBER.values():
        if candidate == dtype or (dtype.kind != "O" and candidate == dtype.newbyteorder("<")):
            return name
    return str(dtype)


def to_numpy(proto, key, max_bytes):
    """A TensorProto -> numpy array; RequestError(400) for what cannot be a dense tensor."""
    entry = _BY_NUMBER.get(proto.dtype)
    if entry is None:
        raise RequestError(400, "input '%s': dtype %d is not supported (use a numeric, bool or string tensor)"
                           % (key, proto.dtype))
    name, dtype, field = entry
    if proto.tensor_shape.unknown_rank:
        raise RequestError(400, "input '%s': the tensor has an unknown rank; send its shape" % key)
    shape = [int(d.size) for d in proto.tensor_shape.dim]
    if any(d < 0 for d in shape):
        raise RequestError(400, "input '%s': dimension sizes must be >= 0, got %s" % (key, shape))
    count = 1
    for d in shape:
        count *= d
    itemsize = dtype.itemsize if dtype.kind != "O" else 1
    if count * itemsize > max_bytes:
        raise RequestError(400, "input '%s': shape %s needs %d bytes, more than the %d a request may hold"
                           % (key, shape, count * itemsize, max_bytes))
    if proto.tensor_content and dtype.kind != "O":
        content = proto.tensor_content
        if len(content) != count * dtype.itemsize:
            raise RequestError(400, "input '%s': tensor_content has %d bytes but shape %s of %s needs %d"
                               % (key, len(content), shape, name, count * dtype.itemsize))
        array = np.frombuffer(content, dtype=dtype).reshape(shape)
        return array if dtype.isnative else array.astype(dtype.newbyteorder("="))
    values = getattr(proto, field)
    n = len(values)
    if dtype.kind == "O":
        flat = np.empty(n, dtype=object)
        flat[:] = list(values)
    elif name == "DT_HALF":
        flat = np.array(values, dtype=np.uint16).view(np.float16)
    else:
        flat = np.array(values, dtype=dtype.newbyteorder("="))
    if n == count:
        return flat.reshape(shape)
    if n == 1:
        # TensorFlow's rule: one value fills the whole tensor.
        return np.full(shape, flat[0], dtype=flat.dtype)
    raise RequestError(400, "input '%s': %d values for shape %s, which holds %d" % (key, n, shape, count))


def from_numpy(array, dtype_name, proto):
    """Fill `proto` (a TensorProto) with `array`, whose TF dtype is dtype_name."""
    proto.dtype = dtype_number(dtype_name)
    for d in array.shape:
        proto.tensor_shape.dim.add(size=int(d))
    if array.dtype.kind in "OSU":
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode("utf-8") for v in array.reshape(-1))
    else:
        proto.tensor_content = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False)).tobytes()
    return proto
