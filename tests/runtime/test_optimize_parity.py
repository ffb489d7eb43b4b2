"""kit.runtime.parity: real models compared on the same inputs."""

import numpy as np

from kit.runtime import parity
from kit.runtime import signature as sig
import pytest


def test_compare_metrics_and_reasons():
    ref = {"p": np.array([[0.1, 0.9], [0.8, 0.2]], np.float32), "n": np.array([1, 2])}
    same, reasons = parity.compare(ref, dict(ref), 0.05, 0.99)
    assert reasons == [] and same["p"] == {"shape": [2, 2], "max_abs_error": 0.0, "top1_agreement": 1.0}
    flipped = {"p": np.array([[0.1, 0.9], [0.2, 0.8]], np.float32), "n": np.array([1, 2])}
    m, reasons = parity.compare(ref, flipped, 0.05, 0.99)
    assert m["p"]["top1_agreement"] == 0.5 and abs(m["p"]["max_abs_error"] - 0.6) < 1e-6
    assert reasons == ["output 'p': max abs error 0.6 > 0.05", "output 'p': top-1 agreement 0.5000 < 0.9900"]
    _, reasons = parity.compare(ref, {"p": ref["p"][:1], "n": ref["n"]}, 0.05, 0.99)
    assert reasons == ["output 'p' has shape [1, 2], native [2, 2]"]
    _, reasons = parity.compare(ref, {"p": np.full((2, 2), np.nan, np.float32), "n": ref["n"]}, 0.05, 0.99)
    assert "non-finite" in reasons[0]
    _, reasons = parity.compare(ref, {"p": ref["p"]}, 0.05, 0.99)
    assert reasons == ["output 'n' is missing from the optimized model"]


def _feeds(model_dir, sizes=(1, 8)):
    s = sig.read_signature(model_dir, "serving_default", ["serve"])
    return sig.feeds(sig.resolve_inputs(s["inputs"], {}, list(sizes)), list(sizes), seed=0)


@pytest.mark.tf
def test_same_model_passes(saved_models):
    import tensorflow as tf

    r = parity.run_parity(tf, saved_models["cnn"], saved_models["cnn"], "serving_default", ["serve"],
                          _feeds(saved_models["cnn"]), 0.0, 1.0)
    assert r["passed"] and r["max_abs_error"] == 0.0 and r["top1_agreement"] == 1.0
    assert [b["batch_size"] for b in r["batches"]] == [1, 8]
    assert r["batches"][1]["outputs"]["probabilities"]["shape"] == [8, 5]


@pytest.mark.tf
def test_a_different_model_fails_parity(saved_models):
    """An "optimized" model that answers differently: same graph, other weights (a real model, not a stub)."""
    import tensorflow as tf

    r = parity.run_parity(tf, saved_models["cnn"], saved_models["cnn_other"], "serving_default", ["serve"],
                          _feeds(saved_models["cnn"]), 0.05, 0.99)
    assert not r["passed"]
    assert r["max_abs_error"] > 0.05
    assert any("batch 8: output 'logits': max abs error" in x for x in r["reasons"])
    assert any("top-1 agreement" in x for x in r["reasons"])


@pytest.mark.tf
def test_two_inputs_and_non_classifier_outputs(saved_models):
    import tensorflow as tf

    r = parity.run_parity(tf, saved_models["two_inputs"], saved_models["two_inputs"], "serving_default", ["serve"],
                          _feeds(saved_models["two_inputs"]), 0.0, 1.0)
    assert r["passed"]
    outputs = r["batches"][0]["outputs"]
    assert outputs["total"]["top1_agreement"] is None  # 1-D: no top-1
    assert outputs["score"]["top1_agreement"] == 1.0
