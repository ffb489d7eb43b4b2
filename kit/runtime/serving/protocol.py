"""What both wire protocols share, over REST and gRPC: errors, parsed requests, checks.

The formats themselves are tfserving.py (TensorFlow Serving REST) and
kserve_v2.py (KServe v2 / Open Inference Protocol). Here:
  RequestError(status, message): a client error, answered with `status` and
    {"error": message} (gRPC maps the status to its code);
  ParsedRequest: numpy inputs with a common leading batch dimension (`rows`),
    ready for the batcher;
  JSON loading (large dense numeric arrays decoded by numpy, see fastjson),
  the checks against the signature (names, shapes, dtypes, sizes, the
  instance limit) and JSON values -> numpy arrays of the input's dtype.
Python 3.6, numpy, stdlib only.
"""

import base64
import json

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
        self.classes = {}  # v2 only: output key -> class count (Triton's classification extension)
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


def load_json(body, what="request body"):
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


def load_json_arrays(body, what="request body"):
    """Like _load_json, with large dense numeric arrays decoded by numpy (see fastjson): -> Decoded."""
    if not body:
        raise RequestError(400, "empty %s: send a JSON object" % what)
    try:
        decoded = fastjson.loads(body if isinstance(body, (bytes, bytearray, memoryview)) else bytes(body),
                                 parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise RequestError(400, "the %s nests JSON arrays or objects too deeply" % what)
    except (ValueError, UnicodeDecodeError) as e:
        raise RequestError(400, "malformed JSON in the %s: %s" % (what, e))
    if not isinstance(decoded.data, dict):
        raise RequestError(400, "the %s must be a JSON object, got %s" % (what, type(decoded.data).__name__))
    return decoded


_NO_ARRAYS = fastjson.Decoded(None, {})


def shape_list(shape):
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
            % (info.key, shape_list(array.shape), info.shape_text()),
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


def check_names(signature, given, where):
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


def pick_signature(model, name):
    key = name or model.default_signature
    if not isinstance(key, str):
        raise RequestError(400, "signature_name must be a string")
    if key not in model.signatures:
        raise RequestError(400, "Serving signature name: \"%s\" not found in signature def (the model has: %s)"
                           % (key, ", ".join(model.signatures)))
    return model.signatures[key]
