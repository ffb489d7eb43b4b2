"""The smoke step's reference script (kit.build.smoke.REFERENCE_SCRIPT) on a JPEG model: the request it
writes carries the parity sample's bytes as TF Serving's {"b64": ...}, and it refuses to invent bytes.

Real: the script in a fresh Python with TensorFlow (the builder container runs it the same way), the model."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import numpy as np
import pytest
from lazy_tf import tf

import models

from kit.build import smoke

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def jpeg_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke-jpeg")

    models.make_jpeg_mean(root / "model")
    return root


def _reference(root, samples):
    out = root / ("reference-%s.json" % ("none" if samples == "-" else "samples"))
    proc = subprocess.run([sys.executable, "-c", smoke.REFERENCE_SCRIPT, str(root / "model"), "serving_default",
                           samples, str(out)], capture_output=True, text=True, timeout=300)
    return proc, out


def test_string_samples_become_b64_in_the_smoke_request(jpeg_model):
    images = models.encode_jpegs([100, 7])  # JPEG bytes are not UTF-8: JSON cannot carry them raw
    np.save(jpeg_model / "images.npy", images)
    proc, out = _reference(jpeg_model, str(jpeg_model / "images.npy"))
    assert proc.returncode == 0, proc.stderr
    reference = json.loads(out.read_text())
    assert reference["dtypes"] == {"image_bytes": "string"}
    assert reference["inputs"] == {"image_bytes": [{"b64": base64.b64encode(images[0]).decode()}]}
    assert np.allclose(reference["outputs"]["mean"], [np.mean(tf.io.decode_jpeg(images[0]).numpy())])
    request = smoke.predict_request(reference, "serving_default")
    assert request == {"signature_name": "serving_default", "inputs": reference["inputs"]}


def test_a_string_input_without_samples_is_refused(jpeg_model):
    proc, out = _reference(jpeg_model, "-")
    assert proc.returncode == 1 and not out.exists()
    assert "string input(s) ['image_bytes'] need real samples" in proc.stderr
    assert "give optimize.parity.samples" in proc.stderr
