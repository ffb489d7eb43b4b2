"""TensorFlow Serving's REST predict format (`/v1/models/{name}:predict`).

  row format      {"signature_name": s, "instances": [...]}    -> {"predictions": [...]}
  columnar format {"signature_name": s, "inputs": {...} | x}    -> {"outputs": {...} | x}

A signature with a single output answers without names (a list per instance
/ one list); several outputs answer a dict per instance (row) or a dict of
lists (columnar), exactly as TF Serving does. Strings travel as JSON strings
or {"b64": "..."}; outputs whose key ends in "_bytes" are answered as
{"b64": ...}. Classify and regress (tf.Example) are examples.py.
"""

import base64
import json
from collections import OrderedDict

import numpy as np

from kit.runtime.serving.protocol import (RequestError, check_names, finish_inputs, json_to_array, load_json_arrays,
                                          pick_signature)


def _is_named(instance, signature):
    """Row format: a dict instance names its inputs, except a lone {"b64": ...} string value."""
    if not isinstance(instance, dict):
        return False
    return not (list(instance) == ["b64"] and len(signature.inputs) == 1)


def parse_tfserving(body, model, max_instances):
    decoded = load_json_arrays(body)
    data = decoded.data
    signature = pick_signature(model, data.get("signature_name"))
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
                check_names(signature, instance, "instance %d" % i)
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
        check_names(signature, columns, "\"inputs\"")
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
