"""Request parsing, validation and response shaping for the two wire protocols.

TensorFlow Serving REST (`/v1/models/{name}:predict`):
  row format      {"signature_name": s, "instances": [...]}    -> {"predictions": [...]}
  columnar format {"signature_name": s, "inputs": {...} | x}    -> {"outputs": {...} | x}
  A signature with a single output answers without names (a list per
  instance / one list); several outputs answer a dict per instance (row) or
  a dict of lists (columnar), exactly as TF Serving does. Strings travel as
  JSON strings or {"b64": "..."}; outputs whose key ends in "_bytes" are
  answered as {"b64": ...}.

KServe v2 / Open Inference Protocol (`/v2/models/{name}/infer`), JSON and
the binary tensor data extension: the body is a JSON header of
Inference-Header-Content-Length bytes followed by the tensors whose
parameters carry "binary_data_size", in the order they are listed (little
endian, row major; BYTES elements as a 4-byte little-endian length + bytes).
Outputs come back binary when the request sets "binary_data": true on the
output or "binary_data_output": true in its parameters.

Everything a client sends is checked against the signature: names, shapes
(the message gives the expected one), dtypes, sizes. Problems raise
RequestError(status, message); the server answers {"error": message}.

Parsing yields a ParsedRequest: numpy inputs with a common leading batch
dimension (`rows`), ready for the batcher. Python 3.6, numpy, stdlib only.
"""

import base64
import json
import struct
from collections import OrderedDict

import numpy as np

from kit.runtime.serving import fastjson


MAX_RANK = 32  # numpy's limit on dimensions
MAX_ELEMENTS = 1 << 40  # beyond any body the server accepts; keeps the shape arithmetic within int64


class RequestError(Exception):
    """A client error: answered with `status` and {"error": message}."""

    def __init__(self, status, message, headers=None):
        Exception.__init__(self, message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ParsedRequest(object):
    """A validated inference request.

    fmt: "row" | "columnar" | "v2"; inputs: OrderedDict key -> numpy array
    (batch dimension first when the signature is batchable); rows: examples
    in the request. v2 only: request_id, outputs (keys to return, in order),
    binary (key -> bool).
    """

    def __init__(self, fmt, signature, inputs, rows):
        self.fmt = fmt
        self.signature = signature
        self.inputs = inputs
        self.rows = rows
        self.request_id = None
        self.outputs = list(signature.outputs)
        self.binary = {}
        # False: run as sent, alone (no padding, splitting or sharing a batch).
        self.batchable = signature.batchable


# ---- shared validation ----------------------------------------------------------


def _refuse_constant(name):
    raise ValueError("%s is not valid JSON (send finite numbers)" % name)


def _finite_float(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number %s is out of range for a float" % text[:40])
    return value


def _load_json(body, what="request body"):
    if not body:
        raise RequestError(400, "empty %s: send a JSON object" % what)
    try:
        data = json.loads(body.decode("utf-8") if isinstance(body, (bytes, bytearray, memoryview)) else body,
                          parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise RequestError(400, "the %s nests JSON arrays or objects too deeply" % what)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, "malformed JSON in the %s: %s" % (what, e))
    if not isinstance(data, dict):
        raise RequestError(400, "the %s must be a JSON object, got %s" % (what, type(data).__name__))
    return data


def _load_json_fast(body, what="request body"):
    """Like _load_json, with large dense numeric arrays decoded by numpy (see fastjson): -> Decoded."""
    if not body:
        raise RequestError(400, "empty %s: send a JSON object" % what)
    try:
        decoded = fastjson.loads(body if isinstance(body, (bytes, memoryview)) else bytes(body),
                                 parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise RequestError(400, "the %s nests JSON arrays or objects too deeply" % what)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, "malformed JSON in the %s: %s" % (what, e))
    if not isinstance(decoded.data, dict):
        raise RequestError(400, "the %s must be a JSON object, got %s" % (what, type(decoded.data).__name__))
    return decoded


_NO_ARRAYS = fastjson.Decoded(None, {})


def _shape_list(shape):
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def check_shape(info, array, batchable):
    """Raise 400 unless `array` fits the signature input `info`."""
    if info.shape is None:
        if batchable and array.ndim < 1:
            raise RequestError(400, "input '%s' needs a batch dimension: got a scalar, expected a list of examples"
                               % info.key)
        return
    if not _fits(info, array):
        raise RequestError(
            400,
            "input '%s' has shape %s but the model expects %s (-1: any size; the first dimension is the batch)"
            % (info.key, _shape_list(array.shape), info.shape_text()),
        )


def _fits(info, array):
    expected = info.shape
    return expected is None or (len(array.shape) == len(expected)
                                and all(e < 0 or e == g for e, g in zip(expected, array.shape)))


class _Unshaped(object):
    """The same input with an unknown shape: only the batch dimension rule applies."""

    def __init__(self, info):
        self.key = info.key
        self.shape = None


def _check_names(signature, given, where):
    expected = list(signature.inputs)
    missing = [k for k in expected if k not in given]
    unknown = [k for k in given if k not in signature.inputs]
    if unknown:
        raise RequestError(400, "unknown input %s in %s: signature '%s' takes %s"
                           % (", ".join("'%s'" % k for k in unknown), where, signature.key,
                              ", ".join("'%s'" % k for k in expected)))
    if missing:
        raise RequestError(400, "missing input %s in %s: signature '%s' takes %s"
                           % (", ".join("'%s'" % k for k in missing), where, signature.key,
                              ", ".join("'%s'" % k for k in expected)))


def finish_inputs(fmt, signature, inputs, max_instances):
    """Shape checks, the common batch dimension, the instance limit -> ParsedRequest."""
    if signature.unsupported:
        raise RequestError(400, "signature '%s' has tensors without a dense form (%s): it cannot be served over REST"
                           % (signature.key, ", ".join(signature.unsupported)))
    batchable = signature.batchable
    loose = False
    for key, info in signature.inputs.items():
        if signature.checks_shapes:
            check_shape(info, inputs[key], batchable)
        else:
            # TF1 graphs: TF Serving feeds the tensor as sent (Session::Run checks no static shape).
            check_shape(_Unshaped(info), inputs[key], batchable)
            loose = loose or not _fits(info, inputs[key])
    if not batchable:
        return ParsedRequest(fmt, signature, inputs, 1)
    if loose:
        # Shaped otherwise than the signature says: run alone, as sent (no padding, splitting or sharing).
        parsed = ParsedRequest(fmt, signature, inputs, max(int(a.shape[0]) for a in inputs.values()))
        if parsed.rows > max_instances:
            raise RequestError(400, "too many instances: %d in one request, the limit is %d (split the request)"
                               % (parsed.rows, max_instances))
        parsed.batchable = False
        return parsed
    sizes = set(int(a.shape[0]) for a in inputs.values())
    if len(sizes) != 1 and fmt in ("columnar", "grpc"):
        # TF Serving feeds columnar inputs as they are: their 0th dimensions need not agree.
        if max(sizes) > max_instances:
            raise RequestError(400, "too many instances: %d in one request, the limit is %d (split the request)"
                               % (max(sizes), max_instances))
        parsed = ParsedRequest(fmt, signature, inputs, max(sizes))
        parsed.batchable = False
        return parsed
    if len(sizes) != 1:
        raise RequestError(400, "all inputs must have the same size in dimension 0 (the batch), got %s"
                           % ", ".join("'%s': %d" % (k, a.shape[0]) for k, a in inputs.items()))
    rows = sizes.pop()
    if rows == 0:
        raise RequestError(400, "empty batch: the request has no examples")
    if rows > max_instances:
        raise RequestError(400, "too many instances: %d in one request, the limit is %d (split the request)"
                           % (rows, max_instances))
    return ParsedRequest(fmt, signature, inputs, rows)


# ---- JSON values -> numpy ---------------------------------------------------------


def _decode_string(value, key):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and list(value) == ["b64"] and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError) as e:
            raise RequestError(400, "input '%s': invalid base64 in {\"b64\": ...}: %s" % (key, e))
    raise RequestError(400, "input '%s' is a string tensor: each value must be a JSON string or {\"b64\": \"...\"}, "
                            "got %s" % (key, type(value).__name__))


def _strings(value, key):
    if isinstance(value, list):
        return [_strings(v, key) for v in value]
    return _decode_string(value, key)


def _nested_shape_ok(value):
    """np.array of bytes objects would flatten ragged lists silently into an object array; check first."""
    if not isinstance(value, list):
        return ()
    shapes = set(_nested_shape_ok(v) for v in value)
    if len(shapes) > 1:
        raise ValueError("ragged")
    return (len(value),) + (shapes.pop() if shapes else ())


def _string_array(value, key):
    decoded = _strings(value, key)
    try:
        shape = _nested_shape_ok(decoded)
    except ValueError:
        raise RequestError(400, "input '%s' is ragged: every list at one depth must have the same length" % key)
    out = np.empty(shape, dtype=object)
    if shape == ():
        out[()] = decoded
    else:
        flat = out.reshape(-1)
        _fill(flat, decoded, [0])
    return out


def _fill(flat, value, position):
    if isinstance(value, list):
        for v in value:
            _fill(flat, v, position)
    else:
        flat[position[0]] = value
        position[0] += 1


_KIND_NAMES = {"b": "booleans", "i": "integers", "u": "integers", "f": "numbers", "U": "strings", "S": "strings",
               "O": "mixed values"}


def json_to_array(value, info, decoded=_NO_ARRAYS):
    """A JSON value -> a numpy array of the input's dtype; 400 on the wrong kind of value."""
    if info.numpy_dtype is None:
        raise RequestError(400, "input '%s' has dtype %s, which has no JSON form" % (info.key, info.dtype_name))
    value = decoded.resolve(value)
    if isinstance(value, np.ndarray):
        return _fast_array(value, info)
    if info.is_string:
        return _string_array(value, info.key)
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        raise RequestError(400, "input '%s' is ragged: every list at one depth must have the same length" % info.key)
    target = info.numpy_dtype
    kind = array.dtype.kind
    if kind == "O":
        raise RequestError(400, "input '%s' is ragged or mixes types: expected %s %s values"
                           % (info.key, info.shape_text(), info.dtype_name))
    if array.size == 0:
        return array.astype(target)
    allowed = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}[target.kind]
    if kind not in allowed:
        raise RequestError(400, "input '%s' has dtype %s: got %s, expected %s"
                           % (info.key, info.dtype_name, _KIND_NAMES.get(kind, kind),
                              {"f": "numbers", "i": "integers", "u": "integers", "b": "true/false"}[target.kind]))
    if target.kind in "iu":
        limits = np.iinfo(target)
        if array.min() < limits.min or array.max() > limits.max:
            raise RequestError(400, "input '%s' has dtype %s: values must lie in [%d, %d]"
                               % (info.key, info.dtype_name, limits.min, limits.max))
    return array.astype(target, copy=False)


def _fast_array(array, info):
    """An array fastjson decoded (float64 from number text) -> the input's dtype, with json_to_array's rules."""
    target = info.numpy_dtype
    if info.is_string:
        raise RequestError(400, "input '%s' is a string tensor: each value must be a JSON string or "
                                "{\"b64\": \"...\"}, got numbers" % info.key)
    if target.kind == "f":
        return array.astype(target)
    if target.kind == "b" or not np.array_equal(array, np.floor(array)):
        raise RequestError(400, "input '%s' has dtype %s: got numbers, expected %s"
                           % (info.key, info.dtype_name, "true/false" if target.kind == "b" else "integers"))
    limits = np.iinfo(target)
    if array.min() < limits.min or array.max() > limits.max:
        raise RequestError(400, "input '%s' has dtype %s: values must lie in [%d, %d]"
                           % (info.key, info.dtype_name, limits.min, limits.max))
    return array.astype(target)


# ---- TensorFlow Serving REST ------------------------------------------------------


def _pick_signature(model, name):
    key = name or model.default_signature
    if not isinstance(key, str):
        raise RequestError(400, "signature_name must be a string")
    if key not in model.signatures:
        raise RequestError(400, "Serving signature name: \"%s\" not found in signature def (the model has: %s)"
                           % (key, ", ".join(model.signatures)))
    return model.signatures[key]


def _is_named(instance, signature):
    """Row format: a dict instance names its inputs, except a lone {"b64": ...} string value."""
    if not isinstance(instance, dict):
        return False
    return not (list(instance) == ["b64"] and len(signature.inputs) == 1)


def parse_tfserving(body, model, max_instances):
    decoded = _load_json_fast(body)
    data = decoded.data
    signature = _pick_signature(model, data.get("signature_name"))
    has_rows, has_cols = "instances" in data, "inputs" in data
    if has_rows == has_cols:
        raise RequestError(400, "the request must have exactly one of \"instances\" (row format) or "
                                "\"inputs\" (columnar format)")
    unknown = [k for k in data if k not in ("signature_name", "instances", "inputs")]
    if unknown:
        raise RequestError(400, "unknown field %s in the request (allowed: signature_name, instances, inputs)"
                           % ", ".join("'%s'" % k for k in unknown))
    keys = list(signature.inputs)
    inputs = OrderedDict()
    if has_rows:
        instances = decoded.resolve(data["instances"])
        if not isinstance(instances, (list, np.ndarray)):
            raise RequestError(400, "\"instances\" must be a list (one entry per example)")
        if not len(instances):
            raise RequestError(400, "empty batch: \"instances\" is an empty list")
        if len(instances) > max_instances:
            raise RequestError(400, "too many instances: %d in one request, the limit is %d (split the request)"
                               % (len(instances), max_instances))
        named = isinstance(instances, list) and _is_named(instances[0], signature)
        if isinstance(instances, list) and any(_is_named(i, signature) != named for i in instances):
            raise RequestError(400, "instances mix named (objects) and unnamed values: use one form")
        if named:
            for i, instance in enumerate(instances):
                _check_names(signature, instance, "instance %d" % i)
            for key in keys:
                inputs[key] = json_to_array([instance[key] for instance in instances], signature.inputs[key],
                                            decoded)
        else:
            if len(keys) != 1:
                raise RequestError(400, "signature '%s' takes several inputs (%s): each instance must be an object "
                                        "naming them" % (signature.key, ", ".join(keys)))
            inputs[keys[0]] = json_to_array(instances, signature.inputs[keys[0]], decoded)
        return finish_inputs("row", signature, inputs, max_instances)
    columns = decoded.resolve(data["inputs"])
    if isinstance(columns, dict) and not (list(columns) == ["b64"] and len(keys) == 1):
        _check_names(signature, columns, "\"inputs\"")
        for key in keys:
            inputs[key] = json_to_array(columns[key], signature.inputs[key], decoded)
    else:
        if len(keys) != 1:
            raise RequestError(400, "signature '%s' takes several inputs (%s): \"inputs\" must be an object naming "
                                    "them" % (signature.key, ", ".join(keys)))
        inputs[keys[0]] = json_to_array(columns, signature.inputs[keys[0]], decoded)
    return finish_inputs("columnar", signature, inputs, max_instances)


def _output_json(key, array):
    """An output array as JSON-ready lists; strings as text, or base64 for keys ending in _bytes."""
    if array.dtype.kind in "OS":
        if key.endswith("_bytes"):
            convert = lambda b: {"b64": base64.b64encode(b).decode("ascii")}  # noqa: E731
        else:
            convert = lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)  # noqa: E731
        flat = [convert(b) for b in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    return array.tolist()


def tfserving_response(parsed, outputs):
    """JSON bytes of a TF Serving predict response."""
    keys = list(parsed.signature.outputs)
    if parsed.fmt == "row":
        if len(keys) == 1:
            body = {"predictions": _output_json(keys[0], outputs[keys[0]])}
        else:
            columns = dict((k, _output_json(k, outputs[k])) for k in keys)
            body = {"predictions": [dict((k, columns[k][i]) for k in keys) for i in range(parsed.rows)]}
    else:
        if len(keys) == 1:
            body = {"outputs": _output_json(keys[0], outputs[keys[0]])}
        else:
            body = {"outputs": dict((k, _output_json(k, outputs[k])) for k in keys)}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


# ---- KServe v2 / Open Inference Protocol ------------------------------------------

_V2_NUMPY = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}


def _bool_param(params, name):
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise RequestError(400, "parameter '%s' must be true or false" % name)
    return value


def _v2_params(obj, where):
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise RequestError(400, "\"parameters\" of %s must be an object" % where)
    return params


def _decode_bytes_elements(buffer, count, key):
    """BYTES binary data: `count` elements, each a 4-byte little-endian length then the bytes."""
    out = np.empty(count, dtype=object)
    offset, size = 0, len(buffer)
    for i in range(count):
        if offset + 4 > size:
            raise RequestError(400, "input '%s': binary BYTES data ends after %d of %d elements" % (key, i, count))
        (length,) = struct.unpack_from("<I", buffer, offset)
        offset += 4
        if offset + length > size:
            raise RequestError(400, "input '%s': binary BYTES element %d is longer than the data" % (key, i))
        out[i] = bytes(buffer[offset:offset + length])
        offset += length
    if offset != size:
        raise RequestError(400, "input '%s': %d bytes of binary BYTES data left over after %d elements"
                           % (key, size - offset, count))
    return out


def _header_length(header_length, body_size):
    try:
        hlen = int(header_length)
    except (TypeError, ValueError):
        raise RequestError(400, "Inference-Header-Content-Length must be an integer, got %r" % header_length)
    if hlen < 0 or hlen > body_size:
        raise RequestError(400, "Inference-Header-Content-Length %d is outside the body of %d bytes"
                           % (hlen, body_size))
    return hlen


def parse_v2(body, model, max_instances, header_length=None):
    """An Open Inference Protocol infer request; `header_length` from Inference-Header-Content-Length."""
    view = memoryview(body)
    if header_length is None:
        header, binary = body, view[len(body):]
    else:
        hlen = _header_length(header_length, len(body))
        header, binary = bytes(view[:hlen]), view[hlen:]
    decoded = _load_json_fast(header, "inference request header")
    data = decoded.data
    params = _v2_params(data, "the request")
    signature = _pick_signature(model, params.get("signature_name"))
    raw_inputs = data.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError(400, "\"inputs\" must be a non-empty list of tensors")
    inputs = OrderedDict()
    offset = 0
    given = OrderedDict()
    for i, tensor in enumerate(raw_inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise RequestError(400, "inputs[%d] must be an object with a \"name\"" % i)
        if tensor["name"] in given:
            raise RequestError(400, "input '%s' is given twice" % tensor["name"])
        given[tensor["name"]] = tensor
    _check_names(signature, given, "\"inputs\"")
    for key, tensor in given.items():
        info = signature.inputs[key]
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise RequestError(400, "input '%s': \"shape\" must be a list of non-negative integers" % key)
        if len(shape) > MAX_RANK:
            raise RequestError(400, "input '%s': shape has %d dimensions, at most %d are supported"
                               % (key, len(shape), MAX_RANK))
        elements = 1
        for d in shape:
            elements *= d
        if elements > MAX_ELEMENTS:
            raise RequestError(400, "input '%s': shape %s holds %d elements, more than any request can carry "
                               "(at most %d)" % (key, _shape_list(shape), elements, MAX_ELEMENTS))
        datatype = tensor.get("datatype")
        if datatype != info.v2_datatype:
            raise RequestError(400, "input '%s' has datatype %s but the model expects %s"
                               % (key, json.dumps(datatype), info.v2_datatype or info.dtype_name))
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        tparams = _v2_params(tensor, "input '%s'" % key)
        if "binary_data_size" in tparams:
            size = tparams["binary_data_size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise RequestError(400, "input '%s': binary_data_size must be a non-negative integer" % key)
            if header_length is None:
                raise RequestError(400, "input '%s' has binary_data_size but the request has no "
                                        "Inference-Header-Content-Length header" % key)
            if offset + size > len(binary):
                raise RequestError(400, "input '%s': binary_data_size %d runs past the end of the body "
                                        "(%d binary bytes left)" % (key, size, len(binary) - offset))
            chunk = binary[offset:offset + size]
            offset += size
            if info.is_string:
                array = _decode_bytes_elements(chunk, count, key).reshape(shape)
            else:
                dtype = _V2_NUMPY[datatype]
                if size != count * dtype.itemsize:
                    raise RequestError(400, "input '%s': binary_data_size is %d bytes but shape %s of %s needs %d"
                                       % (key, size, _shape_list(shape), datatype, count * dtype.itemsize))
                # Zero copy: the array is a view on the request body.
                array = np.frombuffer(chunk, dtype=dtype).reshape(shape)
                if dtype.byteorder not in ("=", "|") and not dtype.isnative:
                    array = array.astype(dtype.newbyteorder("="))
        else:
            if "data" not in tensor:
                raise RequestError(400, "input '%s' has neither \"data\" nor a binary_data_size parameter" % key)
            array = json_to_array(tensor["data"], info, decoded)
            if array.size != count:
                raise RequestError(400, "input '%s': \"data\" has %d elements but shape %s needs %d"
                                   % (key, array.size, _shape_list(shape), count))
            array = array.reshape(shape)
        inputs[key] = array
    if offset != len(binary):
        raise RequestError(400, "%d bytes of binary data after the tensors the header describes"
                           % (len(binary) - offset))
    parsed = finish_inputs("v2", signature, inputs, max_instances)
    parsed.request_id = data.get("id")
    if parsed.request_id is not None and not isinstance(parsed.request_id, str):
        raise RequestError(400, "\"id\" must be a string")
    all_binary = _bool_param(params, "binary_data_output")
    requested = data.get("outputs")
    if requested is None:
        parsed.outputs = list(signature.outputs)
        parsed.binary = dict((k, all_binary) for k in parsed.outputs)
    else:
        if not isinstance(requested, list):
            raise RequestError(400, "\"outputs\" must be a list")
        parsed.outputs = []
        for i, out in enumerate(requested):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise RequestError(400, "outputs[%d] must be an object with a \"name\"" % i)
            name = out["name"]
            if name not in signature.outputs:
                raise RequestError(400, "unknown output '%s': signature '%s' has %s"
                                   % (name, signature.key, ", ".join("'%s'" % k for k in signature.outputs)))
            oparams = _v2_params(out, "output '%s'" % name)
            parsed.outputs.append(name)
            parsed.binary[name] = _bool_param(oparams, "binary_data") if "binary_data" in oparams else all_binary
    return parsed


def _bytes_elements(array):
    parts = []
    for b in array.reshape(-1):
        b = b if isinstance(b, bytes) else str(b).encode("utf-8")
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def v2_response(parsed, outputs, model):
    """(body parts, headers) of an Open Inference Protocol response.

    Binary outputs are returned as buffers on the arrays themselves (no copy);
    the server writes the parts in order.
    """
    described = []
    binaries = []
    for key in parsed.outputs:
        array = outputs[key]
        info = parsed.signature.outputs[key]
        entry = OrderedDict([("name", key), ("datatype", info.v2_datatype or info.dtype_name),
                             ("shape", [int(d) for d in array.shape])])
        if parsed.binary.get(key):
            if array.dtype.kind in "OS":
                data = _bytes_elements(array)
            else:
                flat = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False)).reshape(-1)
                data = memoryview(flat).cast("B")
            entry["parameters"] = {"binary_data_size": len(data)}
            binaries.append(data)
        else:
            if array.dtype.kind in "OS":
                entry["data"] = [b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)
                                 for b in array.reshape(-1)]
            else:
                entry["data"] = array.reshape(-1).tolist()
        described.append(entry)
    body = OrderedDict([("model_name", model.name), ("model_version", model.version)])
    if parsed.request_id is not None:
        body["id"] = parsed.request_id
    body["outputs"] = described
    header = json.dumps(body, separators=(",", ":")).encode("utf-8")
    if not binaries:
        return [header], {"Content-Type": "application/json"}
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(header))}
    return [header] + binaries, headers


def decode_binary_tensor(chunk, shape, count, info, key):
    """One tensor's raw bytes (binary extension or gRPC raw_input_contents) -> numpy array of `shape`."""
    if info.is_string:
        return _decode_bytes_elements(memoryview(chunk), count, key).reshape(shape)
    dtype = _V2_NUMPY[info.v2_datatype]
    if len(chunk) != count * dtype.itemsize:
        raise RequestError(400, "input '%s': %d bytes of data but shape %s of %s needs %d"
                           % (key, len(chunk), _shape_list(shape), info.v2_datatype, count * dtype.itemsize))
    array = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def encode_binary_tensor(array):
    """An output array as raw little-endian bytes (BYTES: 4-byte length + bytes per element)."""
    if array.dtype.kind in "OSU":
        return _bytes_elements(array)
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False)).tobytes()


# Shared with the gRPC front.
pick_signature = _pick_signature
check_names = _check_names
load_json = _load_json


# ---- client helpers (tests, benchmarks, the bench client) ----------------------------


def v2_binary_request(inputs, binary_output=True, outputs=None, parameters=None):
    """(body bytes, headers) of a binary-extension infer request for numpy `inputs` (key -> array)."""
    described, blobs = [], []
    for key, array in inputs.items():
        array = np.asarray(array)
        datatype = next((name for name, dt in _V2_NUMPY.items() if dt == array.dtype.newbyteorder("<")), None)
        if array.dtype.kind in "OS":
            datatype, blob = "BYTES", _bytes_elements(array)
        elif datatype is None:
            raise ValueError("no Open Inference Protocol datatype for %s" % array.dtype)
        else:
            blob = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False)).tobytes()
        described.append({"name": key, "shape": list(array.shape), "datatype": datatype,
                          "parameters": {"binary_data_size": len(blob)}})
        blobs.append(blob)
    header = {"inputs": described}
    params = dict(parameters or {})
    if binary_output:
        params["binary_data_output"] = True
    if params:
        header["parameters"] = params
    if outputs is not None:
        header["outputs"] = [{"name": k, "parameters": {"binary_data": binary_output}} for k in outputs]
    head = json.dumps(header).encode("utf-8")
    return head + b"".join(blobs), {"Content-Type": "application/octet-stream",
                                     "Inference-Header-Content-Length": str(len(head))}


def v2_decode_response(body, header_length=None):
    """An Open Inference Protocol response -> (header dict, OrderedDict name -> numpy array)."""
    hlen = len(body) if header_length is None else int(header_length)
    header = json.loads(bytes(body[:hlen]).decode("utf-8"))
    arrays = OrderedDict()
    offset = hlen
    for out in header.get("outputs", []):
        size = (out.get("parameters") or {}).get("binary_data_size")
        shape = out["shape"]
        if size is None:
            data = out["data"]
            arrays[out["name"]] = (np.array(data, dtype=object) if out["datatype"] == "BYTES"
                                   else np.array(data, dtype=_V2_NUMPY[out["datatype"]])).reshape(shape)
            continue
        chunk = body[offset:offset + size]
        offset += size
        if out["datatype"] == "BYTES":
            count = int(np.prod(shape)) if shape else 1
            arrays[out["name"]] = _decode_bytes_elements(memoryview(chunk), count, out["name"]).reshape(shape)
        else:
            arrays[out["name"]] = np.frombuffer(chunk, dtype=_V2_NUMPY[out["datatype"]]).reshape(shape)
    return header, arrays
