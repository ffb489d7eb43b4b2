"""The bundled example's stated accuracy (README: 97.8 % held-out) is real:
train it as the demo does, reload the SavedModel from disk, and score it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "digits"
sys.path.insert(0, str(EXAMPLE))
from train import load_digits_split  # noqa: E402  (the split the trainer holds out)
import pytest

pytestmark = pytest.mark.tf  # needs TensorFlow (deselected on the Python 3.8 host run)


def test_trained_example_classifies_held_out_digits(tmp_path):
    subprocess.run([sys.executable, str(EXAMPLE / "train.py"), "--out", str(tmp_path)],
                   check=True, timeout=600, capture_output=True)
    import tensorflow as tf

    serve = tf.saved_model.load(str(tmp_path / "saved_model")).signatures["serving_default"]
    _, _, x_test, y_test = load_digits_split()
    probs = serve(pixels=tf.constant(x_test))["probabilities"].numpy()
    accuracy = float((probs.argmax(axis=1) == y_test).mean())

    assert probs.shape == (len(x_test), 10)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert accuracy >= 0.96, accuracy
    recorded = json.loads((tmp_path / "metrics.json").read_text())
    assert abs(recorded["accuracy"] - accuracy) < 1e-6
    # The parity samples are the first held-out images, so the smoke test sends real digits.
    assert np.array_equal(np.load(tmp_path / "parity.npy"), x_test[:64])
