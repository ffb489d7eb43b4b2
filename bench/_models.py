"""Models and a server harness shared by the serving benchmarks.

MobileNetV2 at 224x224 with random weights: keras.applications with
weights=None builds the architecture and downloads nothing; KERAS_HOME points
at an empty directory and is checked afterwards to prove it.
"""

import os
import tempfile
from pathlib import Path

from testkit.server import ServerProcess

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("KIT_BENCH_CACHE", Path(tempfile.gettempdir()) / "kit-bench-models"))


def export_mobilenet_v2(path=None):
    """A SavedModel (signature serving_default: images float32 [n,224,224,3] -> probabilities [n,1000])."""
    path = Path(path or CACHE / "mobilenet_v2_224")
    if (path / "saved_model.pb").is_file():
        return path
    keras_home = Path(tempfile.mkdtemp(prefix="kit-bench-keras-home-"))
    os.environ["KERAS_HOME"] = str(keras_home)
    import tensorflow as tf
    import keras

    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))

    @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32, name="images")])
    def serve(images):
        return {"probabilities": model(images, training=False)}

    module = tf.Module()
    module.model = model
    module.serve = serve
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mobilenet.", dir=str(path.parent)))
    tf.saved_model.save(module, str(tmp / "m"), signatures={"serving_default": serve})
    # Keras writes its config file (keras.json) there on import; anything else would be a download.
    downloads = [p for p in keras_home.rglob("*") if p.is_file() and p.name != "keras.json"]
    if downloads:
        raise RuntimeError("building MobileNetV2(weights=None) downloaded files: %s" % downloads)
    os.replace(tmp / "m", path)
    return path


def export_mean_model(path=None):
    """A trivial SavedModel with MobileNet's input: images [n,224,224,3] -> mean [n,3] (serving cost alone)."""
    path = Path(path or CACHE / "mean_224")
    if (path / "saved_model.pb").is_file():
        return path
    import tensorflow as tf

    class Mean(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32, name="images")])
        def serve(self, images):
            return {"mean": tf.reduce_mean(images, axis=[1, 2])}

    module = Mean()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".mean.", dir=str(path.parent)))
    tf.saved_model.save(module, str(tmp / "m"), signatures={"serving_default": module.serve})
    os.replace(tmp / "m", path)
    return path


def start_server(model_dir, batch_sizes, max_batch_delay="2ms", max_queue=64, env=None, name="m"):
    """testkit's server process with the benchmarks' settings, ready to answer (use .open() for connections)."""
    server = ServerProcess(model_dir, name, batch_sizes, env=env, log_level="2",
                           args=["--max-batch-delay", max_batch_delay, "--max-queue", str(max_queue),
                                 "--max-body", "512MiB", "--max-json-body", "512MiB"])
    try:
        return server.wait_ready(180)
    except AssertionError:
        server.stop()
        raise


def post(conn, path, body, headers):
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError("HTTP %d: %s" % (response.status, data[:300]))
    return response, data
