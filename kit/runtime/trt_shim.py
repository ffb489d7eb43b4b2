"""The one place for TensorFlow version differences in the TF-TRT and device APIs.

TF 2.3 (JetPack 4.4.1) takes TF-TRT parameters as a `TrtConversionParams`
namedtuple built with `trt.DEFAULT_TRT_CONVERSION_PARAMS._replace(...)` and
passed as `conversion_params=`; TF >= 2.8 takes them as constructor keyword
arguments (conversion_params is deprecated). Which shape a converter class
has is read from its constructor signature, never guessed from a version
string.

TF 2.3 bug: passing allow_build_at_runtime=False breaks save(); the 2.3 path
never passes it (its default, True, is what kit wants anyway: the gate proves
every batch size has a built engine).

Python 3.6; TensorFlow is passed in or imported lazily.
"""

import inspect

PRECISION_MODES = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
API_KWARGS = "keyword arguments (TF >= 2.8)"
API_CONVERSION_PARAMS = "conversion_params namedtuple (TF <= 2.7)"


def import_trt():
    """The TF-TRT python module (present in TF 2.3 .. 2.17)."""
    from tensorflow.python.compiler.tensorrt import trt_convert  # noqa: lazy on purpose
    return trt_convert


def conversion_parameters(precision, max_workspace_size_bytes, minimum_segment_size, maximum_cached_engines):
    """The TF-TRT parameters kit sets, by their TF names."""
    return {
        "precision_mode": PRECISION_MODES[precision],
        "max_workspace_size_bytes": int(max_workspace_size_bytes),
        "minimum_segment_size": int(minimum_segment_size),
        "maximum_cached_engines": int(maximum_cached_engines),
        "use_calibration": precision == "int8",
        "allow_build_at_runtime": True,
    }


def _init_parameters(cls):
    try:
        return set(inspect.signature(cls.__init__).parameters)
    except (TypeError, ValueError):
        return set()


def converter_arguments(converter_cls, trt_module, model_dir, signature, tags, params):
    """Constructor keyword arguments for `converter_cls` and the API shape used.

    Returns (kwargs, api) where api is API_KWARGS or API_CONVERSION_PARAMS.
    """
    kwargs = {
        "input_saved_model_dir": model_dir,
        "input_saved_model_tags": list(tags),
        "input_saved_model_signature_key": signature,
    }
    accepted = _init_parameters(converter_cls)
    if "precision_mode" in accepted:
        for key, value in params.items():
            if key in accepted:
                kwargs[key] = value
        return kwargs, API_KWARGS
    defaults = getattr(trt_module, "DEFAULT_TRT_CONVERSION_PARAMS", None)
    if defaults is None:
        raise RuntimeError("this TensorFlow's TF-TRT converter takes neither precision_mode nor "
                           "conversion_params; kit supports TF 2.3 to 2.17")
    fields = set(getattr(defaults, "_fields", ()))
    replace = {}
    for key, value in params.items():
        if key == "allow_build_at_runtime":
            continue  # TF 2.3 bug: never pass it (its default is True)
        if key in fields:
            replace[key] = value
    kwargs["conversion_params"] = defaults._replace(**replace)
    return kwargs, API_CONVERSION_PARAMS


def make_converter(trt_module, model_dir, signature, tags, params):
    """A TrtGraphConverterV2 for the SavedModel; returns (converter, kwargs, api)."""
    cls = trt_module.TrtGraphConverterV2
    kwargs, api = converter_arguments(cls, trt_module, model_dir, signature, tags, params)
    return cls(**kwargs), kwargs, api


def describe_arguments(kwargs):
    """JSON-friendly view of converter kwargs (the namedtuple becomes a dict)."""
    out = {}
    for key, value in kwargs.items():
        if hasattr(value, "_asdict"):
            value = dict((k, v) for k, v in value._asdict().items() if k != "rewriter_config_template")
        out[key] = value
    return out


# ---- devices -------------------------------------------------------------------

def list_gpus(tf):
    config = tf.config
    fn = getattr(config, "list_physical_devices", None) or config.experimental.list_physical_devices
    return fn("GPU")


def set_memory_limit(tf, gpu, memory_limit_bytes):
    """Cap TensorFlow's memory on one GPU with a virtual (logical) device.

    TF 2.3 names: tf.config.experimental.set_virtual_device_configuration and
    VirtualDeviceConfiguration(memory_limit=MiB); later TF names them
    set_logical_device_configuration / LogicalDeviceConfiguration.
    Must run before the GPU is initialised.
    """
    mib = int(memory_limit_bytes // (1024 * 1024))
    exp = tf.config.experimental
    if hasattr(exp, "set_virtual_device_configuration") and hasattr(exp, "VirtualDeviceConfiguration"):
        exp.set_virtual_device_configuration(gpu, [exp.VirtualDeviceConfiguration(memory_limit=mib)])
        return "tf.config.experimental.set_virtual_device_configuration(memory_limit=%d)" % mib
    tf.config.set_logical_device_configuration(gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=mib)])
    return "tf.config.set_logical_device_configuration(memory_limit=%d)" % mib
