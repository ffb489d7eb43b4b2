"""kit.runtime.trt_shim: converter arguments for both TF-TRT API shapes.

TensorRT does not exist here, so TF 2.3's and TF >= 2.8's converter classes
are stood in for by Fake* classes that record their constructor arguments
(they mock TensorRT's Python API only). The real TF 2.17 class is checked by
its signature, which needs no TensorRT.
"""

import collections
import inspect

import pytest

from kit.runtime import trt_shim

# TF 2.3's namedtuple, field for field (tf-trt-jetpack-facts.md).
TrtConversionParams23 = collections.namedtuple("TrtConversionParams", [
    "rewriter_config_template", "max_workspace_size_bytes", "precision_mode", "minimum_segment_size",
    "is_dynamic_op", "maximum_cached_engines", "use_calibration", "max_batch_size", "allow_build_at_runtime"])


class FakeTrt23Module:
    """Mock of TF 2.3's trt_convert module (no TensorRT here)."""

    DEFAULT_TRT_CONVERSION_PARAMS = TrtConversionParams23(None, 1 << 30, "FP32", 3, True, 1, True, 1, True)

    class TrtGraphConverterV2:
        calls = []

        def __init__(self, input_saved_model_dir=None, input_saved_model_tags=None,
                     input_saved_model_signature_key=None, conversion_params=None):
            self.calls.append(dict(input_saved_model_dir=input_saved_model_dir,
                                   input_saved_model_tags=input_saved_model_tags,
                                   input_saved_model_signature_key=input_saved_model_signature_key,
                                   conversion_params=conversion_params))


class FakeTrt28Module:
    """Mock of TF >= 2.8's trt_convert module (keyword arguments)."""

    class TrtGraphConverterV2:
        calls = []

        def __init__(self, input_saved_model_dir=None, input_saved_model_tags=None,
                     input_saved_model_signature_key=None, use_dynamic_shape=None,
                     dynamic_shape_profile_strategy=None, max_workspace_size_bytes=1 << 30, precision_mode="FP32",
                     minimum_segment_size=3, maximum_cached_engines=1, use_calibration=True,
                     allow_build_at_runtime=True, conversion_params=None):
            self.calls.append(dict(max_workspace_size_bytes=max_workspace_size_bytes, precision_mode=precision_mode,
                                   minimum_segment_size=minimum_segment_size,
                                   maximum_cached_engines=maximum_cached_engines, use_calibration=use_calibration,
                                   allow_build_at_runtime=allow_build_at_runtime,
                                   conversion_params=conversion_params,
                                   input_saved_model_dir=input_saved_model_dir))


PARAMS = trt_shim.conversion_parameters("fp16", 512 << 20, 5, 2)


def test_conversion_parameters():
    assert PARAMS == {"precision_mode": "FP16", "max_workspace_size_bytes": 512 << 20, "minimum_segment_size": 5,
                      "maximum_cached_engines": 2, "use_calibration": False, "allow_build_at_runtime": True}
    assert trt_shim.conversion_parameters("int8", 1, 3, 1)["use_calibration"] is True
    assert trt_shim.conversion_parameters("fp32", 1, 3, 1)["precision_mode"] == "FP32"


def test_tf23_gets_a_replaced_namedtuple_and_never_allow_build_at_runtime():
    FakeTrt23Module.TrtGraphConverterV2.calls.clear()
    converter, kwargs, api = trt_shim.make_converter(FakeTrt23Module, "/m", "serving_default", ["serve"], PARAMS)
    assert api == trt_shim.API_CONVERSION_PARAMS
    (call,) = FakeTrt23Module.TrtGraphConverterV2.calls
    cp = call["conversion_params"]
    assert isinstance(cp, TrtConversionParams23)
    assert (cp.precision_mode, cp.max_workspace_size_bytes, cp.minimum_segment_size, cp.maximum_cached_engines,
            cp.use_calibration) == ("FP16", 512 << 20, 5, 2, False)
    # Untouched 2.3 defaults stay: is_dynamic_op True (False raises in TF2), allow_build_at_runtime default.
    assert cp.is_dynamic_op is True and cp.max_batch_size == 1 and cp.allow_build_at_runtime is True
    assert call["input_saved_model_dir"] == "/m" and call["input_saved_model_tags"] == ["serve"]
    assert call["input_saved_model_signature_key"] == "serving_default"
    assert set(kwargs) == {"input_saved_model_dir", "input_saved_model_tags", "input_saved_model_signature_key",
                           "conversion_params"}
    described = trt_shim.describe_arguments(kwargs)["conversion_params"]
    assert described["precision_mode"] == "FP16" and "rewriter_config_template" not in described


def test_tf23_namedtuple_with_allow_build_at_runtime_false_is_never_passed_through():
    params = dict(PARAMS, allow_build_at_runtime=False)  # even if asked: TF 2.3's save() breaks on it
    kwargs, _ = trt_shim.converter_arguments(FakeTrt23Module.TrtGraphConverterV2, FakeTrt23Module, "/m", "s",
                                             ["serve"], params)
    assert kwargs["conversion_params"].allow_build_at_runtime is True


def test_tf28_gets_keyword_arguments():
    FakeTrt28Module.TrtGraphConverterV2.calls.clear()
    _, kwargs, api = trt_shim.make_converter(FakeTrt28Module, "/m", "serving_default", ["serve"], PARAMS)
    assert api == trt_shim.API_KWARGS
    (call,) = FakeTrt28Module.TrtGraphConverterV2.calls
    assert call["conversion_params"] is None
    assert {k: call[k] for k in PARAMS} == PARAMS


def _tf_release():
    import tensorflow as tf

    return tuple(int(p) for p in tf.__version__.split(".")[:2])


@pytest.mark.tf
def test_real_converter_takes_the_arguments_of_this_tensorflow():
    """TF 2.3.1 (the twin, tests/runtime/requirements-twin.txt): the namedtuple; TF >= 2.8: keyword arguments."""
    trt = trt_shim.import_trt()
    kwargs, api = trt_shim.converter_arguments(trt.TrtGraphConverterV2, trt, "/m", "serving_default", ["serve"],
                                               PARAMS)
    accepted = set(inspect.signature(trt.TrtGraphConverterV2.__init__).parameters)
    assert set(kwargs) <= accepted
    if _tf_release() >= (2, 8):
        assert api == trt_shim.API_KWARGS and "conversion_params" not in kwargs
        # ... and constructing it here fails loudly, which is why the preflight probes TensorRT first.
        with pytest.raises(RuntimeError, match="TensorRT"):
            trt.TrtGraphConverterV2(**kwargs)
    else:
        assert api == trt_shim.API_CONVERSION_PARAMS
        params = kwargs["conversion_params"]
        assert (params.precision_mode, params.max_workspace_size_bytes, params.allow_build_at_runtime) == (
            PARAMS["precision_mode"], PARAMS["max_workspace_size_bytes"], True)


@pytest.mark.tf
def test_tensorrt_absent_converter_on_tf23_converts_nothing_silently(saved_models, tmp_path):
    """tensorflow-cpu 2.3.1 has no TensorRT, yet its converter constructs, converts and saves without a word:
    the silent failure kit's TensorRT probe (preflight) and the engines check of the gate exist for.
    On TF >= 2.8 the constructor raises instead."""
    from kit.runtime import audit, gate

    trt = trt_shim.import_trt()
    converter_cls = trt.TrtGraphConverterV2
    if _tf_release() >= (2, 8):
        with pytest.raises(RuntimeError, match="TensorRT"):
            trt_shim.make_converter(trt, saved_models["cnn"], "serving_default", ["serve"], PARAMS)
        return
    converter, _, _ = trt_shim.make_converter(trt, saved_models["cnn"], "serving_default", ["serve"], PARAMS)
    assert isinstance(converter, converter_cls)
    converter.convert()  # no exception, no TensorRT
    out = str(tmp_path / "converted")
    converter.save(out)
    result = audit.audit_saved_model(out, "serving_default", ["serve"])
    assert result["engines"] == []
    verdict = gate.evaluate_tensorrt([1, 8], result, {"native_fallbacks": [], "oom": []},
                                     {"passed": True, "max_abs_error": 0.0, "max_abs_error_limit": 0.05,
                                      "top1_agreement": None, "min_top1_agreement_limit": 0.99, "reasons": []})
    assert not verdict["passed"] and "0 TensorRT engines" in verdict["reasons"][0]


def test_unknown_api_shape_is_a_clear_error():
    class Odd:
        class TrtGraphConverterV2:
            def __init__(self, input_saved_model_dir=None):
                pass

    with pytest.raises(RuntimeError, match="TF 2.3 to 2.17"):
        trt_shim.converter_arguments(Odd.TrtGraphConverterV2, Odd, "/m", "s", ["serve"], PARAMS)


class FakeGpuConfig:
    """Stands in for tf.config on a machine with a GPU (there is none here); records calls."""

    def __init__(self, with_experimental=True):
        self.calls = []
        calls = self.calls

        class VirtualDeviceConfiguration:
            def __init__(self, memory_limit):
                self.memory_limit = memory_limit

        class Experimental:
            pass

        exp = Experimental()
        if with_experimental:
            exp.VirtualDeviceConfiguration = VirtualDeviceConfiguration
            exp.set_virtual_device_configuration = lambda gpu, cfgs: calls.append(("virtual", gpu, cfgs[0].memory_limit))
        exp.list_physical_devices = lambda kind: ["GPU:0"]
        self.experimental = exp
        self.LogicalDeviceConfiguration = VirtualDeviceConfiguration
        self.set_logical_device_configuration = lambda gpu, cfgs: calls.append(("logical", gpu, cfgs[0].memory_limit))


class FakeTf:
    def __init__(self, config):
        self.config = config


def test_memory_limit_uses_the_tf23_names_in_mib():
    cfg = FakeGpuConfig()
    how = trt_shim.set_memory_limit(FakeTf(cfg), "GPU:0", 2 << 30)
    assert cfg.calls == [("virtual", "GPU:0", 2048)] and "set_virtual_device_configuration" in how
    cfg = FakeGpuConfig(with_experimental=False)
    trt_shim.set_memory_limit(FakeTf(cfg), "GPU:0", 1536 << 20)
    assert cfg.calls == [("logical", "GPU:0", 1536)]
    assert trt_shim.list_gpus(FakeTf(cfg)) == ["GPU:0"]


@pytest.mark.tf
def test_list_gpus_on_real_tensorflow_here_is_empty():
    import tensorflow as tf

    assert trt_shim.list_gpus(tf) == []
