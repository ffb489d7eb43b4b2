"""Small real SavedModels for tests (plain tf.Module + tf.function + tf.saved_model.save).

Each maker writes a TF2 SavedModel with a serving_default signature and
returns its directory. Deterministic: weights come from seeded stateless
random ops, so two models with the same seed answer identically and models
with different seeds do not.

- make_cnn:       images float32 [n, 16, 16, 3] -> logits [n, 5], probabilities [n, 5]
- make_two_input: zeta float32 [n, 4], alpha float32 [n, 3] -> score [n, 2], total [n]
                  (declared zeta first, so sorted order differs from declaration order)
- make_dynamic:   x float32 [n, None, 3] (dynamic batch AND a dynamic non-batch dim)
                  -> mean [n, 3]
- make_tf1_multi_input: a TF1 SavedModel (tf.compat.v1 graph + SavedModelBuilder, as TF 1.x
                  exported them) with inputs zeta [n, 4], mid [n, 4], alpha [n, 4] -> out
                  = 100 zeta + 10 mid + alpha [n, 4], and total [n]; the widths of mid and
                  alpha can differ (widths=...). TF 2.3.1 loads its signature with the
                  inputs in protobuf map order (zeta, mid, alpha), not sorted.
- make_jpeg_mean: image_bytes string [n] (encoded 4x4 RGB JPEGs, decoded in the graph) -> mean [n];
                  encode_jpegs(values) makes samples for it (a numpy bytes array)
"""

import os


def _tf():
    import tensorflow as tf

    return tf


def make_cnn(path, seed=0):
    """A 3x3 conv (8) -> relu -> global mean -> dense 5 classifier."""
    tf = _tf()
    init = tf.random.stateless_normal

    class Cnn(tf.Module):
        def __init__(self):
            super().__init__(name="cnn")
            self.w1 = tf.Variable(init([3, 3, 3, 8], seed=[seed, 1]) * 0.5, name="conv_w")
            self.b1 = tf.Variable(init([8], seed=[seed, 2]) * 0.1, name="conv_b")
            self.w2 = tf.Variable(init([8, 5], seed=[seed, 3]), name="fc_w")
            self.b2 = tf.Variable(init([5], seed=[seed, 4]) * 0.1, name="fc_b")

        @tf.function(input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32, name="images")])
        def serve(self, images):
            h = tf.nn.relu(tf.nn.conv2d(images, self.w1, strides=1, padding="SAME") + self.b1)
            h = tf.reduce_mean(h, axis=[1, 2])
            logits = tf.matmul(h, self.w2) + self.b2
            return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    module = Cnn()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def make_two_input(path, seed=0):
    tf = _tf()
    init = tf.random.stateless_normal

    class TwoInputs(tf.Module):
        def __init__(self):
            super().__init__(name="two_inputs")
            self.wz = tf.Variable(init([4, 2], seed=[seed, 1]), name="wz")
            self.wa = tf.Variable(init([3, 2], seed=[seed, 2]), name="wa")

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="zeta"),
                                      tf.TensorSpec([None, 3], tf.float32, name="alpha")])
        def serve(self, zeta, alpha):
            score = tf.matmul(zeta, self.wz) + tf.matmul(alpha, self.wa)
            return {"score": score, "total": tf.reduce_sum(zeta, axis=1) - tf.reduce_sum(alpha, axis=1)}

    module = TwoInputs()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def make_dynamic(path):
    tf = _tf()

    class Dynamic(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"mean": tf.reduce_mean(x, axis=1) * 2.0 + 1.0}

    module = Dynamic()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def make_tf1_multi_input(path, widths=(4, 4, 4)):
    tf = _tf()
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        zeta = v1.placeholder(tf.float32, [None, widths[0]], name="zeta")
        mid = v1.placeholder(tf.float32, [None, widths[1]], name="mid")
        alpha = v1.placeholder(tf.float32, [None, widths[2]], name="alpha")
        total = tf.identity(tf.reduce_sum(zeta, 1) * 100.0 + tf.reduce_sum(mid, 1) * 10.0 + tf.reduce_sum(alpha, 1),
                            name="total")
        outputs = {"total": total}
        if widths[0] == widths[1] == widths[2]:
            outputs["out"] = tf.identity(zeta * 100.0 + mid * 10.0 + alpha, name="out")
        with v1.Session(graph=graph) as sess:
            builder = v1.saved_model.Builder(str(path))
            sig = v1.saved_model.predict_signature_def({"zeta": zeta, "mid": mid, "alpha": alpha}, outputs)
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"serving_default": sig})
            builder.save()
    return str(path)


def make_jpeg_mean(path):
    """The usual way to serve images: encoded bytes in, tf.io.decode_jpeg in the graph."""
    tf = _tf()

    class Jpeg(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            images = tf.map_fn(lambda b: tf.cast(tf.io.decode_jpeg(b, channels=3), tf.float32), image_bytes,
                               fn_output_signature=tf.TensorSpec([4, 4, 3], tf.float32))
            return {"mean": tf.reduce_mean(images, axis=[1, 2, 3])}

    module = Jpeg()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def encode_jpegs(values):
    """One 4x4 JPEG per value (every pixel that value), as a numpy bytes array (dtype S: no pickle)."""
    import numpy as np

    tf = _tf()
    return np.array([tf.io.encode_jpeg(tf.constant(np.full((4, 4, 3), v, np.uint8))).numpy() for v in values])


def saved_model_exists(path):
    return os.path.isfile(os.path.join(str(path), "saved_model.pb"))
