"""`kit build` of a model whose input is encoded JPEG bytes (a tf.string decoded in the graph), cpu profile.

Real: a tiny Keras classifier behind tf.io.decode_jpeg, saved by the host's TensorFlow; real JPEG files as
the parity samples (a numpy bytes array); the builder, optimizer, reference, bake and smoke steps (the
smoke request sends the sample as TF Serving's {"b64": ...}); the built image answering curl. Faked: only
what test_build fakes (no Jetson here).
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from kit.net import free_port
from test_build import kit, record_of
from testkit.manifests import write_model

pytestmark = pytest.mark.docker

RUN_ID = uuid.uuid4().hex[:8]
REPOSITORY = f"kit-test/jpeg-{RUN_ID}"
SIDE = 8  # pixels per side: keeps the model and the build small


def _encoded(seed: int) -> bytes:
    import tensorflow as tf

    pixels = np.random.RandomState(seed).randint(0, 256, size=(SIDE, SIDE, 3)).astype(np.uint8)
    return tf.io.encode_jpeg(tf.constant(pixels)).numpy()


def _save_jpeg_classifier(path: Path) -> None:
    import tensorflow as tf

    tf.random.set_seed(7)
    keras_model = tf.keras.Sequential([tf.keras.Input((SIDE, SIDE, 3)), tf.keras.layers.Flatten(),
                                       tf.keras.layers.Dense(3, activation="softmax")])

    class JpegClassifier(tf.Module):
        def __init__(self):
            super().__init__()
            self.model = keras_model

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            decode = lambda b: tf.cast(tf.io.decode_jpeg(b, channels=3), tf.float32) / 255.0  # noqa: E731
            images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([SIDE, SIDE, 3], tf.float32))
            return {"scores": self.model(images)}

    module = JpegClassifier()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def _manifest(project: Path, parity_samples: str | None, version="0.1.0", warmup=True) -> Path:
    return write_model(project / "kit.yaml", metadata={"name": "jpeg", "version": version},
                       model={"path": "./jpeg"}, image={"repository": REPOSITORY}, serve={"warmup": warmup},
                       optimize={"batch_sizes": [1, 4], "parity": {"samples": parity_samples}})


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jpeg-build")
    _save_jpeg_classifier(root / "jpeg")
    np.save(root / "images.npy", np.array([_encoded(seed) for seed in range(3)]))
    return root


@pytest.fixture(scope="module")
def built(engine, tf_base, project):
    record = record_of(kit("build", _manifest(project, "./images.npy"), "--json"))
    yield record
    engine.remove_image(record["image"], force=True)


@contextlib.contextmanager
def _running(engine, image: str, name: str):
    """The image on a free port (host network), ready: (port, container name); removed afterwards."""
    port = free_port()
    cid = engine.run(image, name=name, env={"KIT_PORT": str(port), "KIT_GRPC_PORT": "0", "KIT_HOST": "127.0.0.1"})
    try:
        deadline = time.time() + 180
        while _curl(f"http://127.0.0.1:{port}/v2/health/ready")[0] != 200:
            assert time.time() < deadline and engine.container_state(cid).status == "running", engine.logs(cid)[-3000:]
            time.sleep(0.5)
        yield port, name
    finally:
        engine.remove_container(cid, force=True)


@pytest.fixture(scope="module")
def served(built, engine):
    with _running(engine, built["image"], f"kit-test-jpeg-{RUN_ID}") as running:
        yield running


def _curl(url: str, body: dict | None = None):
    """curl as TF Serving's REST docs call it -> (HTTP status, parsed JSON body or None)."""
    argv = ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", url]
    if body is not None:
        argv += ["-X", "POST", "-H", "Content-Type: application/json", "-d", json.dumps(body)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        return 0, None
    text, _, code = proc.stdout.rpartition("\n")
    return int(code), (json.loads(text) if text.strip() else None)


def test_the_build_smoke_tested_a_b64_jpeg_and_labelled_the_image(built):
    assert built["image"] == f"{REPOSITORY}:0.1.0-cpu-native"
    assert built["smoke"]["passed"] is True and built["smoke"]["max_abs_error"] <= 1e-5
    steps = {s["name"]: s["status"] for s in built["steps"]}
    assert steps["optimize"] == "ran" and steps["smoke"] == "ran"


def test_built_image_answers_a_real_jpeg_like_the_model_in_process(served, project):
    import tensorflow as tf

    port, _ = served
    images = [_encoded(seed) for seed in (11, 12)]  # not among the parity samples
    loaded = tf.saved_model.load(str(project / "jpeg"))
    want = loaded.signatures["serving_default"](image_bytes=tf.constant(images))["scores"].numpy()
    body = {"instances": [{"b64": base64.b64encode(b).decode()} for b in images]}
    status, reply = _curl(f"http://127.0.0.1:{port}/v1/models/jpeg:predict", body)
    assert status == 200, reply
    got = np.asarray(reply["predictions"], np.float32)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    status, reply = _curl(f"http://127.0.0.1:{port}/v1/models/jpeg:predict",
                          {"instances": [{"b64": base64.b64encode(b"not a jpeg").decode()}]})
    assert status == 400, reply


def test_built_image_skips_the_default_warmup_for_string_inputs(served, engine):
    """serve.warmup is true (default) and there is no warm-up file: the image does not invent bytes."""
    _, name = served
    logs = engine.logs(name)
    assert "warm-up skipped: signature serving_default takes strings (image_bytes)" in logs
    assert logs.index("warm-up skipped") < logs.index("ready: model 'jpeg'")


def test_a_build_without_samples_fails_with_exit_2_and_the_fix(project):
    proc = kit("build", _manifest(project, None))
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 2, out
    assert "input 'image_bytes' has dtype string, which the optimizer cannot feed" in out
    assert "give optimize.parity.samples" in out and "np.save(path, np.array([open(f, 'rb').read()" in out


def test_serve_warmup_samples_of_jpegs_run_in_the_image_at_every_batch_size(engine, tf_base, project):
    """serve.warmup names real JPEG samples: the image runs them at batch sizes 1 and 4 before it is ready."""
    record = record_of(kit("build", _manifest(project, "./images.npy", version="0.2.0", warmup="./images.npy"),
                           "--json"))
    try:
        with _running(engine, record["image"], f"kit-test-jpeg-warm-{RUN_ID}") as (port, name):
            proc = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}/metrics"], capture_output=True,
                                  text=True, timeout=60, check=True)
            runs = sorted(line for line in proc.stdout.splitlines() if line.startswith("kit_warmup_runs_total"))
            assert runs == ['kit_warmup_runs_total{source="samples",batch_size="1"} 1',
                            'kit_warmup_runs_total{source="samples",batch_size="4"} 1']
            logs = engine.logs(name)
            assert "warm-up: samples from /opt/kit/warmup/samples.npy at batch sizes 1,4" in logs
            assert "warm-up skipped" not in logs
    finally:
        engine.remove_image(record["image"], force=True)
