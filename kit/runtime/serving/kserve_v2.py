"""KServe v2 / Open Inference Protocol (`/v2/models/{name}/infer`), shared by REST and gRPC.

JSON and the binary tensor data extension: the body is a JSON header of
Inference-Header-Content-Length bytes followed by the tensors whose
parameters carry "binary_data_size", in the order they are listed (little
endian, row major; BYTES elements as a 4-byte little-endian length + bytes).
Outputs come back binary when the request sets "binary_data": true on the
output or "binary_data_output": true in its parameters. Triton's
classification extension: an output requested with {"classification": N}
answers the N largest values of each example as BYTES "value:index".
"""

import json
import struct
from collections import OrderedDict

import numpy as np

from kit.runtime.serving.protocol import (MAX_ELEMENTS, MAX_RANK, RequestError, check_names, finish_inputs,
                                          json_to_array, load_json_arrays, pick_signature, shape_list)

V2_NUMPY = {
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
    decoded = load_json_arrays(header, "inference request header")
    data = decoded.data
    params = _v2_params(data, "the request")
    signature = pick_signature(model, params.get("signature_name"))
    given = _given_inputs(data.get("inputs"), signature)
    inputs = OrderedDict()
    offset = 0
    for key, tensor in given.items():
        inputs[key], offset = _input_array(key, tensor, signature.inputs[key], binary, offset, decoded,
                                           header_length is not None)
    if offset != len(binary):
        raise RequestError(400, "%d bytes of binary data after the tensors the header describes"
                           % (len(binary) - offset))
    parsed = finish_inputs("v2", signature, inputs, max_instances)
    parsed.request_id = data.get("id")
    if parsed.request_id is not None and not isinstance(parsed.request_id, str):
        raise RequestError(400, "\"id\" must be a string")
    _requested_outputs(parsed, data.get("outputs"), _bool_param(params, "binary_data_output"))
    return parsed


def _given_inputs(raw_inputs, signature):
    """The request's "inputs" by name, checked against the signature's."""
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError(400, "\"inputs\" must be a non-empty list of tensors")
    given = OrderedDict()
    for i, tensor in enumerate(raw_inputs):
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise RequestError(400, "inputs[%d] must be an object with a \"name\"" % i)
        if tensor["name"] in given:
            raise RequestError(400, "input '%s' is given twice" % tensor["name"])
        given[tensor["name"]] = tensor
    check_names(signature, given, "\"inputs\"")
    return given


def _tensor_shape(key, shape):
    """A tensor's "shape" checked (rank, element count) -> (shape, element count)."""
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
                           "(at most %d)" % (key, shape_list(shape), elements, MAX_ELEMENTS))
    return shape, elements


def _input_array(key, tensor, info, binary, offset, decoded, has_binary_header):
    """One input tensor -> (numpy array, offset of the next binary tensor)."""
    shape, count = _tensor_shape(key, tensor.get("shape"))
    datatype = tensor.get("datatype")
    if datatype != info.v2_datatype:
        raise RequestError(400, "input '%s' has datatype %s but the model expects %s"
                           % (key, json.dumps(datatype), info.v2_datatype or info.dtype_name))
    tparams = _v2_params(tensor, "input '%s'" % key)
    if "binary_data_size" not in tparams:
        if "data" not in tensor:
            raise RequestError(400, "input '%s' has neither \"data\" nor a binary_data_size parameter" % key)
        array = json_to_array(tensor["data"], info, decoded)
        if array.size != count:
            raise RequestError(400, "input '%s': \"data\" has %d elements but shape %s needs %d"
                               % (key, array.size, shape_list(shape), count))
        return array.reshape(shape), offset
    size = tparams["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RequestError(400, "input '%s': binary_data_size must be a non-negative integer" % key)
    if not has_binary_header:
        raise RequestError(400, "input '%s' has binary_data_size but the request has no "
                                "Inference-Header-Content-Length header" % key)
    if offset + size > len(binary):
        raise RequestError(400, "input '%s': binary_data_size %d runs past the end of the body "
                                "(%d binary bytes left)" % (key, size, len(binary) - offset))
    if not info.is_string and size != count * V2_NUMPY[datatype].itemsize:
        raise RequestError(400, "input '%s': binary_data_size is %d bytes but shape %s of %s needs %d"
                           % (key, size, shape_list(shape), datatype, count * V2_NUMPY[datatype].itemsize))
    # Zero copy for numbers: the array is a view on the request body.
    return decode_binary_tensor(binary[offset:offset + size], shape, count, info, key), offset + size


def _requested_outputs(parsed, requested, all_binary):
    """parsed.outputs / .binary / .classes from the request's "outputs" (None: every output)."""
    signature = parsed.signature
    parsed.classes = {}
    if requested is None:
        parsed.outputs = list(signature.outputs)
        parsed.binary = dict((k, all_binary) for k in parsed.outputs)
        return
    if not isinstance(requested, list):
        raise RequestError(400, "\"outputs\" must be a list")
    parsed.outputs = []
    for i, out in enumerate(requested):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise RequestError(400, "outputs[%d] must be an object with a \"name\"" % i)
        name = out["name"]
        check_output(signature, name)
        oparams = _v2_params(out, "output '%s'" % name)
        parsed.outputs.append(name)
        parsed.binary[name] = _bool_param(oparams, "binary_data") if "binary_data" in oparams else all_binary
        if "classification" in oparams:
            parsed.classes[name] = class_count(signature, name, oparams["classification"])


def check_output(signature, name):
    if name not in signature.outputs:
        raise RequestError(400, "unknown output '%s': signature '%s' has %s"
                           % (name, signature.key, ", ".join("'%s'" % k for k in signature.outputs)))


def class_count(signature, name, value):
    """Triton's classification extension: a positive count of classes, on a numeric output."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RequestError(400, "output '%s': classification must be a positive integer (the number of classes "
                                "to return), got %s" % (name, json.dumps(value)))
    info = signature.outputs[name]
    if info.is_string or info.numpy_dtype is None or info.numpy_dtype.kind == "b":
        raise RequestError(400, "output '%s' is %s: classification needs a numeric output (scores per class)"
                           % (name, info.v2_datatype or info.dtype_name))
    return value


def classifications(array, count, batched):
    """The `count` largest values of each example as Triton's "value:index" strings (BYTES, [rows, count])."""
    array = np.asarray(array)
    rows = array.reshape(array.shape[0], -1) if batched and array.ndim >= 1 else array.reshape(1, -1)
    count = min(count, rows.shape[1])
    order = np.argsort(-rows, axis=1, kind="stable")[:, :count]
    out = np.empty((rows.shape[0], count), dtype=object)
    for r in range(rows.shape[0]):
        for c, index in enumerate(order[r]):
            out[r, c] = ("%f:%d" % (float(rows[r, index]), int(index))).encode("ascii")
    return out if batched else out.reshape(count)


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
    classes = parsed.classes
    for key in parsed.outputs:
        array = outputs[key]
        info = parsed.signature.outputs[key]
        datatype = info.v2_datatype or info.dtype_name
        if key in classes:
            array, datatype = classifications(array, classes[key], parsed.signature.batchable), "BYTES"
        entry = OrderedDict([("name", key), ("datatype", datatype), ("shape", [int(d) for d in array.shape])])
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
                entry["data"] = text_elements(key, array)
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


def _config_tensor(info, batched):
    """One input/output in Triton's model configuration: TYPE_* and dims without the batch dimension."""
    if info.shape is None:
        dims = [-1]
    else:
        dims = [int(d) for d in (info.shape[1:] if batched else info.shape)]
    datatype = info.v2_datatype or info.dtype_name
    return OrderedDict([("name", info.key), ("data_type", "TYPE_STRING" if datatype == "BYTES" else "TYPE_" + datatype),
                        ("dims", dims)])


def model_config(model, config):
    """GET /v2/models/NAME/config: Triton's model configuration (as JSON) of the default signature."""
    signature = model.signatures[model.default_signature]
    batched = signature.batchable
    body = OrderedDict([
        ("name", model.name), ("platform", "tensorflow_savedmodel"), ("backend", "tensorflow"),
        ("version_policy", {"specific": {"versions": [model.version]}}),
        # Triton's rule: max_batch_size > 0 means every dims list leaves out the batch dimension.
        ("max_batch_size", config.batch_sizes[-1] if batched else 0),
        ("input", [_config_tensor(t, batched) for t in signature.inputs.values()]),
        ("output", [_config_tensor(t, batched) for t in signature.outputs.values()]),
    ])
    if batched:
        body["dynamic_batching"] = OrderedDict([
            ("preferred_batch_size", list(config.batch_sizes)),
            ("max_queue_delay_microseconds", int(round(config.max_batch_delay * 1e6)))])
    body["parameters"] = {"signature_name": {"string_value": model.default_signature}}
    return body


def _duration(count, ns):
    return OrderedDict([("count", int(count)), ("ns", int(ns))])


def model_stats(model, metrics):
    """GET /v2/models/NAME/stats: Triton's statistics extension, with what kit measures (requests answered
    and failed, model calls per batch size and their time; no separate queue or input/output copy times)."""
    stats = metrics.model_stats
    latency = metrics.request_latency
    batches = [OrderedDict([("batch_size", size), ("compute_infer", _duration(calls, ns))])
               for size, (calls, ns) in sorted(stats.batches.items())]
    entry = OrderedDict([
        ("name", model.name), ("version", model.version), ("last_inference", stats.last_inference_ms),
        ("inference_count", stats.inference_count), ("execution_count", stats.execution_count),
        ("inference_stats", OrderedDict([
            ("success", _duration(latency.count, latency.total * 1e9)),
            ("fail", _duration(stats.failures, 0)),
            ("compute_infer", _duration(sum(c for c, _ in stats.batches.values()),
                                        sum(n for _, n in stats.batches.values()))),
        ])),
        ("batch_stats", batches),
    ])
    return {"model_stats": [entry]}


def text_elements(key, array):
    """BYTES elements as JSON strings; bytes that are not UTF-8 have no JSON string form, so the client is told
    to ask for the output binary (what tritonclient does by default) instead of getting them mangled."""
    out = []
    for b in array.reshape(-1):
        if not isinstance(b, bytes):
            out.append(str(b))
            continue
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(400, "output '%s' holds bytes that are not UTF-8 text, which JSON cannot carry: "
                                    "request it binary ({\"name\": \"%s\", \"parameters\": {\"binary_data\": "
                                    "true}})" % (key, key))
    return out


def decode_binary_tensor(chunk, shape, count, info, key):
    """One tensor's raw bytes (binary extension or gRPC raw_input_contents) -> numpy array of `shape`."""
    if info.is_string:
        return _decode_bytes_elements(memoryview(chunk), count, key).reshape(shape)
    dtype = V2_NUMPY[info.v2_datatype]
    if len(chunk) != count * dtype.itemsize:
        raise RequestError(400, "input '%s': %d bytes of data but shape %s of %s needs %d"
                           % (key, len(chunk), shape_list(shape), info.v2_datatype, count * dtype.itemsize))
    array = np.frombuffer(chunk, dtype=dtype).reshape(shape)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


def encode_binary_tensor(array):
    """An output array as raw little-endian bytes (BYTES: 4-byte length + bytes per element)."""
    if array.dtype.kind in "OSU":
        return _bytes_elements(array)
    return np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False)).tobytes()


# ---- client helpers (tests, benchmarks, the bench client) ----------------------------


def v2_binary_request(inputs, binary_output=True, outputs=None, parameters=None):
    """(body bytes, headers) of a binary-extension infer request for numpy `inputs` (key -> array)."""
    described, blobs = [], []
    for key, array in inputs.items():
        array = np.asarray(array)
        datatype = next((name for name, dt in V2_NUMPY.items() if dt == array.dtype.newbyteorder("<")), None)
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
                                   else np.array(data, dtype=V2_NUMPY[out["datatype"]])).reshape(shape)
            continue
        chunk = body[offset:offset + size]
        offset += size
        if out["datatype"] == "BYTES":
            count = int(np.prod(shape)) if shape else 1
            arrays[out["name"]] = _decode_bytes_elements(memoryview(chunk), count, out["name"]).reshape(shape)
        else:
            arrays[out["name"]] = np.frombuffer(chunk, dtype=V2_NUMPY[out["datatype"]]).reshape(shape)
    return header, arrays
