"""The smoke test of a baked image: one real prediction, checked against the
native model.

The expected output is computed by the NATIVE SavedModel inside the builder
container (the same TensorFlow the device runs; the host of a Jetson may have
no TensorFlow at all). That run also picks the request: the first parity
sample when the manifest has them, else zeros in the signature's input shape
(unknown dimensions as 1). Both go to a JSON file the smoke test reads, so
the image is asked exactly what the reference answered. String inputs
(encoded JPEG bytes) are sent as TF Serving's {"b64": ...}; they come only
from the parity samples, since kit never invents bytes.
"""

from __future__ import annotations

import json

import numpy as np

from kit.errors import KitError
from kit.net import http_json

# Runs in the builder container: Python 3.6, TF >= 2.3, numpy. argv: model_dir
# signature samples|- out.json. Writes {"inputs": {name: nested list, strings as {"b64": ...}},
# "dtypes": {name: dtype}, "outputs": {name: nested list}}.
REFERENCE_SCRIPT = r"""
import base64, json, sys
import numpy as np
import tensorflow as tf
model_dir, signature, samples, out = sys.argv[1:5]
# Keep the loaded object: on TF 2.3 a signature function does not keep the model's variables alive
# ("Error while reading resource variable ... uninitialized" once the loaded object is collected).
loaded = tf.saved_model.load(model_dir)
fn = loaded.signatures[signature]
specs = fn.structured_input_signature[1]
names = sorted(specs)
arrays = {}
if samples != "-":
    data = np.load(samples, allow_pickle=False)
    if hasattr(data, "files"):
        missing = [n for n in names if n not in data.files]
        if missing:
            sys.exit("parity samples lack inputs %s (have %s)" % (missing, data.files))
        arrays = dict((n, data[n][:1]) for n in names)
    elif len(names) == 1:
        arrays = {names[0]: data[:1]}
    else:
        sys.exit("a .npy holds one input but the signature takes %s: use an .npz" % names)
else:
    strings = [n for n in names if specs[n].dtype == tf.string]
    if strings:
        sys.exit("string input(s) %s need real samples for the smoke request: give optimize.parity.samples" % strings)
    for n in names:
        dims = specs[n].shape.as_list() if specs[n].shape.rank is not None else [1]
        arrays[n] = np.zeros([1] + [d or 1 for d in dims[1:]], dtype=specs[n].dtype.as_numpy_dtype)
arrays = dict((n, np.asarray(a).astype(specs[n].dtype.as_numpy_dtype)) for n, a in arrays.items())
result = fn(**dict((n, tf.constant(a)) for n, a in arrays.items()))
def as_json(value):
    # bytes travel as TF Serving's {"b64": ...}: JSON has no bytes, and encoded images are not UTF-8
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value
doc = {"inputs": dict((n, as_json(a.tolist())) for n, a in arrays.items()),
       "dtypes": dict((n, "string" if specs[n].dtype == tf.string else str(a.dtype)) for n, a in arrays.items()),
       "outputs": dict((k, v.numpy().tolist()) for k, v in result.items())}
with open(out, "w") as f:
    json.dump(doc, f)
print("reference: inputs %s -> outputs %s" % (
    dict((n, list(a.shape)) for n, a in arrays.items()), dict((k, list(v.shape)) for k, v in result.items())))
"""


def predict_request(reference: dict, signature: str) -> dict:
    """TF Serving REST columnar request for the reference inputs."""
    return {"signature_name": signature, "inputs": reference["inputs"]}


def response_outputs(body: dict, output_names: list[str]) -> dict:
    """Outputs by name from a TF Serving REST response (columnar or row format)."""
    if "outputs" in body:
        outs = body["outputs"]
        if isinstance(outs, dict):
            return outs
        if len(output_names) == 1:
            return {output_names[0]: outs}
    if "predictions" in body:
        preds = body["predictions"]
        if preds and isinstance(preds[0], dict):
            return {k: [row[k] for row in preds] for k in preds[0]}
        if len(output_names) == 1:
            return {output_names[0]: preds}
    raise KitError(f"unexpected predict response: keys {sorted(body)}")


def compare(expected: dict, got: dict) -> tuple[float, list[str]]:
    """(max abs error over all outputs, problems) between two {name: nested list}."""
    problems, worst = [], 0.0
    for name, want in expected.items():
        if name not in got:
            problems.append(f"output {name!r} missing from the response (got {sorted(got)})")
            continue
        a, b = np.asarray(want), np.asarray(got[name])
        if a.shape != b.shape:
            problems.append(f"output {name!r}: shape {list(b.shape)}, expected {list(a.shape)}")
            continue
        if a.dtype.kind in "fiub" and b.dtype.kind in "fiub":
            err = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
            worst = max(worst, err)
        elif a.tolist() != b.tolist():
            problems.append(f"output {name!r} differs")
    return worst, problems


def predict_and_compare(port: int, model_name: str, signature: str, reference: dict, max_abs_error: float,
                        host: str = "127.0.0.1") -> dict:
    """One prediction against a running server; raises KitError if it fails or drifts."""
    url = f"http://{host}:{port}/v1/models/{model_name}:predict"
    reply = http_json(url, predict_request(reference, signature))
    status, body, seconds = reply.status, reply.body, reply.seconds
    if status != 200 or not isinstance(body, dict):
        raise KitError(f"the smoke prediction failed: HTTP {status} from {url}: {body if isinstance(body, str) else json.dumps(body)[:300]}")
    got = response_outputs(body, sorted(reference["outputs"]))
    worst, problems = compare(reference["outputs"], got)
    if not problems and worst > max_abs_error:
        problems.append(f"max abs error {worst:.3g} exceeds optimize.parity.max_abs_error {max_abs_error:g}")
    if problems:
        raise KitError("the smoke prediction does not match the native model", details=problems)
    return {"url": url, "max_abs_error": worst, "seconds": round(seconds, 4)}


# How long the smoke test waits for the container to report healthy.
HEALTH_TIMEOUT = {"cpu": 180.0}
HEALTH_TIMEOUT_DEFAULT = 900.0  # a Nano loading TF and deserializing engines is slow


def health_timeout(manifest) -> float:
    return HEALTH_TIMEOUT.get(manifest.profile.name, HEALTH_TIMEOUT_DEFAULT)
