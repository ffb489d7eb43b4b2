"""A SavedModel signature's inputs: read, resolved against the spec, fed.

The signature is read from saved_model.pb as protobuf (no model load). Input
shapes come from the spec when given, else from the signature; the batch
dimension is the first one, and every other dimension must be known (from
one or the other), or the optimizer stops with an error naming the input.

Feeds are one dict per batch size: the first rows of the samples file
(repeated when it has fewer rows) or seeded random data. String inputs (encoded
images, tf.Example) come only from samples: numpy bytes arrays (dtype S),
never unpickled, never invented.

TF-TRT's converter calls the frozen signature function POSITIONALLY with
what build()/calibration input functions yield, in `frozen_func.inputs`
order. That order is the loaded signature function's argument keywords:
sorted names for TF2 SavedModels, but for TF1 SavedModels loaded in TF 2.3
the signature's protobuf map order (seen: zeta, mid, alpha). Sorting the
names instead builds engines for swapped shapes, or calibrates int8 on the
wrong arrays, without an error when the shapes agree. `positional_order`
asks TensorFlow the way the converter loads the model; `ordered` uses it.

Python 3.6; numpy; TensorFlow's protobuf modules imported lazily.
"""

import os

import numpy as np

_DT_NAMES = {
    "DT_FLOAT": "float32", "DT_HALF": "float16", "DT_DOUBLE": "float64", "DT_INT8": "int8",
    "DT_INT16": "int16", "DT_INT32": "int32", "DT_INT64": "int64", "DT_UINT8": "uint8",
    "DT_UINT16": "uint16", "DT_UINT32": "uint32", "DT_UINT64": "uint64", "DT_BOOL": "bool",
    "DT_STRING": "string", "DT_BFLOAT16": "bfloat16",
}


class InputError(Exception):
    """The inputs cannot be determined or fed (exit 2: fix the manifest/spec)."""


# How to save real encoded inputs (JPEG bytes, tf.Example) as samples numpy loads without pickle.
BYTES_SAMPLES_EXAMPLE = "np.save(path, np.array([open(f, 'rb').read() for f in files]))"
STRING_SAMPLES_FIX = ("give optimize.parity.samples: a .npy (one input) or .npz (one array per input name) of real "
                      "encoded values as a numpy bytes array, e.g. " + BYTES_SAMPLES_EXAMPLE)


def string_input_problem(name):
    """Why a string input needs samples (the host's manifest check gives it with STRING_SAMPLES_FIX)."""
    return ("input %r has dtype string, which the optimizer cannot feed without real samples (kit never invents "
            "bytes)" % name)


def string_input_message(name):
    return "%s; %s" % (string_input_problem(name), STRING_SAMPLES_FIX)


def read_saved_model(model_dir):
    from tensorflow.core.protobuf import saved_model_pb2  # noqa: lazy on purpose

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(model_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    return sm


def meta_graph(saved_model, tags):
    for mg in saved_model.meta_graphs:
        if set(tags) <= set(mg.meta_info_def.tags):
            return mg
    have = [sorted(mg.meta_info_def.tags) for mg in saved_model.meta_graphs]
    raise InputError("the SavedModel has no meta graph with tags %s (it has %s)" % (sorted(tags), have))


def _tensor_info(info):
    from tensorflow.core.framework import types_pb2  # noqa: lazy on purpose

    dtype = _DT_NAMES.get(types_pb2.DataType.Name(info.dtype), types_pb2.DataType.Name(info.dtype))
    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = [None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim]
    return {"shape": shape, "dtype": dtype}


def read_signature(model_dir, signature, tags, saved_model=None):
    """{"inputs": {name: {shape, dtype}}, "outputs": {...}} of one signature (shapes with batch dim)."""
    sm = saved_model or read_saved_model(model_dir)
    mg = meta_graph(sm, tags)
    if signature not in mg.signature_def:
        raise InputError("the SavedModel has no signature %r (it has: %s); set model.signature in the manifest"
                         % (signature, ", ".join(sorted(mg.signature_def)) or "none"))
    sig = mg.signature_def[signature]
    return {
        "inputs": dict((k, _tensor_info(v)) for k, v in sig.inputs.items()),
        "outputs": dict((k, _tensor_info(v)) for k, v in sig.outputs.items()),
    }


def resolve_inputs(signature_inputs, spec_inputs, batch_sizes, has_samples=False):
    """Per-example shapes (no batch dim) and dtypes of every input, all dims known.
    String inputs are fed only from samples (has_samples): their bytes cannot be made up."""
    problems = []
    resolved = {}
    if spec_inputs:
        missing = sorted(set(signature_inputs) - set(spec_inputs))
        extra = sorted(set(spec_inputs) - set(signature_inputs))
        if missing:
            problems.append("model.inputs lacks %s, which the signature needs" % ", ".join(missing))
        if extra:
            problems.append("model.inputs names %s, which the signature does not have (it has %s)"
                            % (", ".join(extra), ", ".join(sorted(signature_inputs))))
    for name in sorted(signature_inputs):
        sig = signature_inputs[name]
        given = (spec_inputs or {}).get(name)
        if sig["dtype"] == "string" and not has_samples:
            problems.append(string_input_message(name))
            continue
        if sig["dtype"] == "bfloat16":
            problems.append("input %r has dtype %s, which the optimizer cannot feed" % (name, sig["dtype"]))
            continue
        if sig["shape"] is None:
            if not given:
                problems.append("input %r has an unknown rank in the signature; give its shape in the manifest: "
                                "model.inputs.%s.shape (per example, no batch dimension)" % (name, name))
                continue
            sig_shape = [None] + [None] * len(given["shape"])
        else:
            sig_shape = sig["shape"]
        if not sig_shape:
            problems.append("input %r is a scalar; TF-TRT needs a batch dimension" % name)
            continue
        batch_dim, example = sig_shape[0], list(sig_shape[1:])
        if batch_dim is not None and any(b != batch_dim for b in batch_sizes):
            problems.append("input %r fixes the batch dimension at %d in the signature, but batch_sizes are %s; "
                            "export the model with a None batch dimension" % (name, batch_dim, list(batch_sizes)))
        if given:
            shape = list(given["shape"])
            dtype = given.get("dtype", "float32")
            if len(shape) != len(example):
                problems.append("model.inputs.%s.shape %s has %d dims but the signature's per-example shape %s has %d"
                                % (name, shape, len(shape), _fmt(example), len(example)))
                continue
            for i, (g, s) in enumerate(zip(shape, example)):
                if g is not None and s is not None and g != s:
                    problems.append("model.inputs.%s.shape %s disagrees with the signature %s at dimension %d"
                                    % (name, shape, _fmt(example), i + 1))
            if dtype != sig["dtype"]:
                problems.append("model.inputs.%s.dtype %s disagrees with the signature's %s" % (name, dtype, sig["dtype"]))
            shape = [g if g is not None else s for g, s in zip(shape, example)]
        else:
            shape, dtype = example, sig["dtype"]
        unknown = [i + 1 for i, d in enumerate(shape) if d is None]
        if unknown:
            problems.append("input %r has unknown dimension(s) %s in %s; TF-TRT builds one engine per concrete "
                            "shape: give the shape in the manifest, model.inputs.%s.shape (per example, no batch "
                            "dimension)" % (name, ", ".join(str(u) for u in unknown), _fmt([None] + shape), name))
            continue
        resolved[name] = {"shape": shape, "dtype": dtype}
    if problems:
        err = InputError("; ".join(problems))
        err.problems = problems
        raise err
    return resolved


def _fmt(shape):
    return "[%s]" % ", ".join("None" if d is None else str(d) for d in shape)


def load_samples(path, inputs):
    """name -> array from a .npy (the model has one input) or .npz (one array per input name)."""
    names = sorted(inputs)
    try:
        data = _read_arrays(path, names)
    except ValueError as e:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
        if "pickle" not in str(e):
            raise InputError("%s: %s" % (path, e))
        raise InputError("%s holds an object array, which kit does not load (loading it would run pickle); "
                         "save strings as a numpy bytes array (dtype 'S'), e.g. %s" % (path, BYTES_SAMPLES_EXAMPLE))
    rows = None
    for name in names:
        arr = data[name]
        want = list(inputs[name]["shape"])
        if list(arr.shape[1:]) != want:
            raise InputError("%s: input %r has shape %s but the model takes [n, %s]"
                             % (path, name, list(arr.shape), ", ".join(str(d) for d in want)))
        if rows is not None and arr.shape[0] != rows:
            raise InputError("%s: inputs have different numbers of rows" % path)
        rows = arr.shape[0]
        if inputs[name]["dtype"] == "string":
            if arr.dtype.kind != "S":
                raise InputError("%s: input %r is a string input but its samples have dtype %s; save the encoded "
                                 "values as a numpy bytes array (dtype 'S'), e.g. %s"
                                 % (path, name, arr.dtype, BYTES_SAMPLES_EXAMPLE))
        else:
            data[name] = arr.astype(inputs[name]["dtype"], copy=False)
    if not rows:
        raise InputError("%s holds no samples" % path)
    return data


def _read_arrays(path, names):
    """name -> array, never unpickling; InputError when the file lacks an input."""
    if path.endswith(".npy"):
        if len(names) != 1:
            raise InputError("%s is a .npy file but the model has %d inputs (%s); use a .npz with one array per "
                             "input name" % (path, len(names), ", ".join(names)))
        return {names[0]: np.load(path, allow_pickle=False)}
    with np.load(path, allow_pickle=False) as npz:
        missing = [n for n in names if n not in npz.files]
        if missing:
            raise InputError("%s lacks arrays for input(s) %s (it has %s)" % (path, ", ".join(missing),
                                                                                ", ".join(npz.files)))
        return dict((n, npz[n]) for n in names)


def random_batch(inputs, batch_size, rng):
    out = {}
    for name in sorted(inputs):
        shape = [batch_size] + list(inputs[name]["shape"])
        dtype = np.dtype(inputs[name]["dtype"])
        if dtype.kind == "f":
            out[name] = rng.random_sample(shape).astype(dtype)
        elif dtype.kind == "b":
            out[name] = rng.random_sample(shape) > 0.5
        else:
            out[name] = rng.randint(0, 10, size=shape).astype(dtype)
    return out


def take_rows(samples, batch_size, start=0):
    """batch_size rows from each array, wrapping around when there are fewer."""
    out = {}
    for name, arr in samples.items():
        idx = (np.arange(batch_size) + start) % arr.shape[0]
        out[name] = arr[idx]
    return out


def feeds(inputs, batch_sizes, samples=None, seed=0):
    """{batch_size: {name: array}} -- the same data for the native and the optimized run."""
    rng = np.random.RandomState(seed)
    out = {}
    for b in batch_sizes:
        out[b] = take_rows(samples, b) if samples else random_batch(inputs, b, rng)
    return out


def positional_order(tf, model_dir, signature, tags, names):
    """Input names in the order the converter feeds them (tf.saved_model.load, as TrtGraphConverterV2 does).

    Raises InputError when the signature function's inputs do not match `names`.
    """
    loaded = tf.saved_model.load(model_dir, tags=list(tags))
    fn = loaded.signatures[signature]
    keywords = [str(k) for k in (getattr(fn, "_arg_keywords", None) or [])]
    if not keywords:  # no keyword list: the placeholders' names, in the function's input order
        keywords = [t.name.split(":")[0] for t in fn.inputs[:len(names)]]
    if sorted(keywords) != sorted(names):
        raise InputError("the signature function of %r takes inputs %s, the signature lists %s"
                         % (signature, keywords, sorted(names)))
    return keywords


def converter_input_order(converter, signature, names):
    """The order from the converter's OWN loaded model (TrtGraphConverterV2 keeps it as _saved_model after
    convert() starts): a TF1 signature's map order can differ between two loads of the same SavedModel,
    so an order read from another load is only a fallback. None when the converter does not expose it."""
    loaded = getattr(converter, "_saved_model", None)
    try:
        fn = loaded.signatures[signature]
    except (AttributeError, KeyError, TypeError):
        return None
    keywords = [str(k) for k in (getattr(fn, "_arg_keywords", None) or [])]
    return keywords if sorted(keywords) == sorted(names) else None


def ordered(feed, order=None):
    """The positional tuple TF-TRT's input functions yield: arrays in `order` (positional_order)."""
    return tuple(feed[name] for name in (order or sorted(feed)))
