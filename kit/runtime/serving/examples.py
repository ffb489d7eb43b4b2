"""TF Serving's Classify and Regress: tf.Example inputs, classes/scores and values out.

A Classify or Regress signature (method_name tensorflow/serving/classify or
.../regress) takes one string tensor "inputs" of serialized tf.Example; the
graph parses them. "context" features are merged into every example (the
example's own features win). Classify answers pairs (label, score) per
example from the "classes" and/or "scores" outputs; Regress one value per
example from "outputs". Shared by the REST (:classify, :regress) and gRPC
fronts; JSON examples become tf.Example bytes here too.
"""

import base64
from collections import OrderedDict

import numpy as np

from kit.runtime.serving.protocol import ParsedRequest, RequestError

METHODS = {"classify": "tensorflow/serving/classify", "regress": "tensorflow/serving/regress"}
INPUT_KEY = "inputs"


def with_context(serialized, context, example_class):
    """Each example merged over the context (protobuf merge: the example's features win)."""
    if not context:
        return serialized
    return [example_class.FromString(context + s).SerializeToString() for s in serialized]


def parsed_request(signature, method, serialized, max_instances):
    if signature.method_name != METHODS[method]:
        raise RequestError(400, "signature '%s' is a %s signature, not a %s one: %s needs a signature whose "
                                "method_name is %s" % (signature.key, signature.method_name or "(no method)",
                                                       method, method.capitalize(), METHODS[method]))
    if list(signature.inputs) != [INPUT_KEY] or not signature.inputs[INPUT_KEY].is_string:
        raise RequestError(400, "signature '%s' must take one string input '%s' (serialized tf.Example) to "
                                "serve %s" % (signature.key, INPUT_KEY, method.capitalize()))
    if not serialized:
        raise RequestError(400, "the request has no examples")
    if len(serialized) > max_instances:
        raise RequestError(400, "too many examples: %d in one request, the limit is %d (split the request)"
                           % (len(serialized), max_instances))
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return ParsedRequest(method, signature, OrderedDict([(INPUT_KEY, array)]), len(serialized))


def classifications(outputs, rows):
    """[[(label, score), ...] per example] from the 'classes' and/or 'scores' outputs."""
    classes = outputs.get("classes")
    scores = outputs.get("scores")
    if classes is None and scores is None:
        raise RequestError(500, "the classify signature has neither a 'classes' nor a 'scores' output")
    classes = None if classes is None else np.asarray(classes).reshape(rows, -1)
    scores = None if scores is None else np.asarray(scores, dtype=np.float32).reshape(rows, -1)
    width = (classes if classes is not None else scores).shape[1]
    result = []
    for i in range(rows):
        row = []
        for j in range(width):
            label = "" if classes is None else classes[i, j]
            if isinstance(label, bytes):
                label = label.decode("utf-8", "replace")
            row.append((str(label), 0.0 if scores is None else float(scores[i, j])))
        result.append(row)
    return result


def regressions(outputs, rows):
    values = outputs.get("outputs")
    if values is None:
        raise RequestError(500, "the regress signature has no 'outputs' output")
    flat = np.asarray(values, dtype=np.float32).reshape(-1)
    if flat.size != rows:
        raise RequestError(500, "the regress signature answered %d values for %d examples" % (flat.size, rows))
    return [float(v) for v in flat]


# ---- JSON (REST) -> tf.Example ---------------------------------------------------


def _feature(feature, value, name):
    values = value if isinstance(value, list) else [value]
    if not values:
        raise RequestError(400, "feature '%s' is an empty list" % name)
    if all(isinstance(v, bool) for v in values):
        raise RequestError(400, "feature '%s': booleans have no tf.Example form (use 0/1)" % name)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        feature.int64_list.value.extend(values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        feature.float_list.value.extend(float(v) for v in values)
    elif all(isinstance(v, (str, dict)) for v in values):
        out = []
        for v in values:
            if isinstance(v, str):
                out.append(v.encode("utf-8"))
            elif list(v) == ["b64"] and isinstance(v["b64"], str):
                try:
                    out.append(base64.b64decode(v["b64"], validate=True))
                except (ValueError, TypeError) as e:
                    raise RequestError(400, "feature '%s': invalid base64: %s" % (name, e))
            else:
                raise RequestError(400, "feature '%s': an object value must be {\"b64\": \"...\"}" % name)
        feature.bytes_list.value.extend(out)
    else:
        raise RequestError(400, "feature '%s' mixes kinds of values: use all numbers or all strings" % name)


def json_example(obj, example_class, where):
    if not isinstance(obj, dict):
        raise RequestError(400, "%s must be an object of features (name -> value or list of values)" % where)
    example = example_class()
    for name, value in obj.items():
        _feature(example.features.feature[name], value, name)
    return example.SerializeToString()


def parse_json(data, signature_of, method, example_class, max_instances):
    """A TF Serving REST classify/regress body (already a dict) -> ParsedRequest."""
    unknown = [k for k in data if k not in ("signature_name", "examples", "context")]
    if unknown:
        raise RequestError(400, "unknown field %s in the request (allowed: signature_name, context, examples)"
                           % ", ".join("'%s'" % k for k in unknown))
    examples = data.get("examples")
    if not isinstance(examples, list):
        raise RequestError(400, "\"examples\" must be a list of objects (one per example)")
    if len(examples) > max_instances:
        raise RequestError(400, "too many examples: %d in one request, the limit is %d (split the request)"
                           % (len(examples), max_instances))
    signature = signature_of(data.get("signature_name"))
    serialized = [json_example(e, example_class, "examples[%d]" % i) for i, e in enumerate(examples)]
    if "context" in data:
        serialized = with_context(serialized, json_example(data["context"], example_class, "\"context\""),
                                  example_class)
    return parsed_request(signature, method, serialized, max_instances)


def classify_json(rows):
    return {"results": [[[label, score] for label, score in row] for row in rows]}


def regress_json(values):
    return {"results": values}
