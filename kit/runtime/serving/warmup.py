"""What the server runs before it turns ready.

In order of preference:
  0. Samples the manifest names (serve.warmup: ./warmup.npz, --warmup-samples):
     real examples, run at every built batch size (rows repeated to fill one).
  1. TF Serving's warm-up file, assets.extra/tf_serving_warmup_requests in the
     SavedModel: a TFRecord file of PredictionLog (predict, classify or regress
     requests), each replayed once, as TF Serving does.
  2. Zeros at every built batch size (so TF-TRT has run every engine), for
     signatures whose inputs are all numeric.
  3. Nothing, for signatures with string inputs (encoded images, tf.Example):
     invented bytes would make the graph's decoder fail. The log says how to
     warm such a model (the warm-up file).
`--no-warmup` (KIT_WARMUP=0, serve.warmup: false, kit serve --local --no-warmup)
turns all of it off.
"""

import logging
import os
import struct
from collections import OrderedDict

from kit.runtime.model import example_inputs

log = logging.getLogger("kit.serve")

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000  # TF Serving's own limit on warm-up records


class WarmupError(Exception):
    """The warm-up file is unreadable or holds a request the model refuses."""


def read_records(path, max_bytes):
    """The records of a TFRecord file (length, crc, data, crc); lengths are checked against the file."""
    size = os.path.getsize(path)
    if size > max_bytes:
        raise WarmupError("%s is %d bytes, more than the %d a warm-up file may be" % (path, size, max_bytes))
    records = []
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        if offset + 12 > len(data):
            raise WarmupError("%s: truncated record header at byte %d" % (path, offset))
        (length,) = struct.unpack_from("<Q", data, offset)
        start = offset + 12
        if start + length + 4 > len(data):
            raise WarmupError("%s: record at byte %d says %d bytes, past the end of the file" % (path, offset, length))
        records.append(data[start:start + length])
        offset = start + length + 4
        if len(records) > MAX_RECORDS:
            raise WarmupError("%s holds more than %d records" % (path, MAX_RECORDS))
    return records


def file_requests(state):
    """ParsedRequests from the model's warm-up file, or None when it has none."""
    path = os.path.join(state.config.model_dir, WARMUP_FILE)
    if not os.path.isfile(path):
        return None
    from kit.runtime.serving import grpc_server
    from kit.runtime.serving.grpc_messages import messages
    from kit.runtime.serving.protocol import RequestError

    log_class = messages()["tensorflow.serving.PredictionLog"]
    parsed = []
    for i, record in enumerate(read_records(path, state.config.max_body)):
        try:
            entry = log_class.FromString(record)
        except Exception as e:  # protobuf's DecodeError differs between versions
            raise WarmupError("%s: record %d is not a PredictionLog: %s" % (path, i, e))
        kind = entry.WhichOneof("log_type")
        try:
            if kind == "predict_log":
                parsed.append(grpc_server.parse_predict(state, entry.predict_log.request)[0])
            elif kind == "classify_log":
                parsed.append(grpc_server.parse_examples(state, entry.classify_log.request, "classify"))
            elif kind == "regress_log":
                parsed.append(grpc_server.parse_examples(state, entry.regress_log.request, "regress"))
            else:
                raise WarmupError("%s: record %d is a %s; kit replays predict, classify and regress logs"
                                  % (path, i, kind or "PredictionLog without a request"))
        except RequestError as e:
            raise WarmupError("%s: record %d: %s" % (path, i, e.message))
    return parsed


def sample_requests(state, signature):
    """[(signature key, inputs)] from --warmup-samples: .npy (one input) or .npz (name -> array), one example per
    row, repeated to fill every built batch size."""
    import numpy as np

    path = state.config.warmup_samples
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise WarmupError("warm-up samples %s cannot be read: %s" % (path, e))
    keys = list(signature.inputs)
    if isinstance(loaded, np.ndarray):
        if len(keys) != 1:
            raise WarmupError("warm-up samples %s hold one array, but signature %s takes %s: save them with "
                              "numpy.savez(name=array, ...)" % (path, signature.key, ", ".join(keys)))
        arrays = {keys[0]: loaded}
    else:
        arrays = dict((k, loaded[k]) for k in loaded.files)
        if sorted(arrays) != sorted(keys):
            raise WarmupError("warm-up samples %s hold %s, but signature %s takes %s"
                              % (path, ", ".join(sorted(arrays)) or "nothing", signature.key, ", ".join(keys)))
    rows = set(len(a) if a.ndim else 0 for a in arrays.values())
    if len(rows) != 1 or 0 in rows:
        raise WarmupError("warm-up samples %s: every array needs the same number of examples (>= 1) in "
                          "dimension 0" % path)
    count = rows.pop()
    sizes = state.config.batch_sizes if signature.batchable else [1]
    runs = []
    for size in sizes:
        pick = np.arange(size) % count
        inputs = OrderedDict()
        for key in keys:
            value = arrays[key][pick]
            if signature.inputs[key].is_string:
                value = value.astype(object) if value.dtype.kind == "S" else value
            elif signature.inputs[key].numpy_dtype is not None:
                value = value.astype(signature.inputs[key].numpy_dtype)
            inputs[key] = value
        runs.append((signature.key, inputs))
    return runs


def plan(state, signature):
    """([(signature key, inputs)] to run before ready, their source: 'samples' | 'file' | 'zeros' | None, and a
    line saying where they came from)."""
    config = state.config
    if not config.warmup:
        return [], None, "warm-up disabled: the first requests may be slow (TF-TRT could build engines)"
    if config.warmup_samples:
        runs = sample_requests(state, signature)
        return runs, "samples", "warm-up: samples from %s at batch sizes %s" % (
            config.warmup_samples, ",".join(str(next(iter(i.values())).shape[0]) for _, i in runs))
    from_file = file_requests(state)
    if from_file is not None:
        return ([(p.signature.key, p.inputs) for p in from_file], "file",
                "warm-up: %d requests from %s" % (len(from_file), WARMUP_FILE))
    if any(info.is_string for info in signature.inputs.values()):
        return [], None, ("warm-up skipped: signature %s takes strings (%s), which kit will not invent; add TF Serving's "
                    "warm-up file (%s) to the SavedModel to warm it"
                    % (signature.key, ", ".join(k for k, i in signature.inputs.items() if i.is_string), WARMUP_FILE))
    sizes = config.batch_sizes if signature.batchable else [1]
    return ([(signature.key, example_inputs(signature, size, config.input_shapes)) for size in sizes], "zeros",
            "warm-up: zeros at batch sizes %s" % ",".join(str(s) for s in sizes))
