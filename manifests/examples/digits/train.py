"""Train the bundled example: a small CNN on scikit-learn's 8x8 digits.

Writes next to this file:
  saved_model/   a TF2 SavedModel, signature serving_default:
                 pixels float32 [n, 8, 8, 1] (0..1) -> probabilities float32 [n, 10]
  parity.npy     held-out test images, the manifest's parity samples
  metrics.json   accuracy on the held-out split

Plain TensorFlow (variables, tf.nn ops, a GradientTape loop), no Keras, so the
same model saves and loads on every TF from 2.3 to the newest. Deterministic:
a fixed seed and a fixed split.

    python manifests/examples/digits/train.py [--out DIR] [--epochs N]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def load_digits_split(seed=0):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]  # [n, 8, 8, 1]
    y = digits.target.astype(np.int64)
    order = np.random.RandomState(seed).permutation(len(x))
    n_test = len(x) // 4
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def build_module(tf, seed=0):
    """A 3x3 conv (16) -> relu -> dense 64 -> relu -> dense 10 -> softmax classifier."""
    init = tf.random.stateless_normal

    class Digits(tf.Module):
        def __init__(self):
            super().__init__(name="digits")
            self.w1 = tf.Variable(init([3, 3, 1, 16], seed=[seed, 1]) * 0.3, name="conv_w")
            self.b1 = tf.Variable(tf.zeros([16]), name="conv_b")
            self.w2 = tf.Variable(init([8 * 8 * 16, 64], seed=[seed, 2]) * 0.04, name="fc1_w")
            self.b2 = tf.Variable(tf.zeros([64]), name="fc1_b")
            self.w3 = tf.Variable(init([64, 10], seed=[seed, 3]) * 0.12, name="fc2_w")
            self.b3 = tf.Variable(tf.zeros([10]), name="fc2_b")

        def logits(self, pixels):
            h = tf.nn.relu(tf.nn.conv2d(pixels, self.w1, strides=1, padding="SAME") + self.b1)
            h = tf.reshape(h, [-1, 8 * 8 * 16])
            h = tf.nn.relu(tf.matmul(h, self.w2) + self.b2)
            return tf.matmul(h, self.w3) + self.b3

        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="pixels")])
        def serve(self, pixels):
            return {"probabilities": tf.nn.softmax(self.logits(pixels))}

    return Digits()


def train(out_dir, epochs=30, seed=0):
    import tensorflow as tf

    x_train, y_train, x_test, y_test = load_digits_split(seed)
    model = build_module(tf, seed)
    variables = model.trainable_variables
    velocity = [tf.Variable(tf.zeros_like(v)) for v in variables]
    lr, momentum, batch = 0.05, 0.9, 64
    rng = np.random.RandomState(seed)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=yb, logits=model.logits(xb)))
        grads = tape.gradient(loss, variables)
        for v, g, vel in zip(variables, grads, velocity):
            vel.assign(momentum * vel - lr * g)
            v.assign_add(vel)
        return loss

    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            step(tf.constant(x_train[idx]), tf.constant(y_train[idx]))

    probs = model.serve(tf.constant(x_test))["probabilities"].numpy()
    accuracy = float((probs.argmax(axis=1) == y_test).mean())

    # Atomic: write everything into a temp dir beside the destination, then rename.
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".saved_model.", dir=out_dir)
    try:
        tf.saved_model.save(model, os.path.join(tmp, "saved_model"), signatures={"serving_default": model.serve})
        np.save(os.path.join(tmp, "parity.npy"), x_test[:64])
        with open(os.path.join(tmp, "metrics.json"), "w") as f:
            json.dump({"accuracy": accuracy, "test_samples": int(len(x_test)), "epochs": epochs,
                       "tensorflow": tf.__version__}, f, indent=2)
        for name in ("saved_model", "parity.npy", "metrics.json"):
            dest = os.path.join(out_dir, name)
            if os.path.isdir(dest):
                shutil.rmtree(dest)
            elif os.path.exists(dest):
                os.remove(dest)
            os.rename(os.path.join(tmp, name), dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=HERE, help="directory to write saved_model/, parity.npy, metrics.json")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    accuracy = train(args.out, args.epochs)
    print("digits CNN: held-out accuracy %.4f -> %s" % (accuracy, os.path.join(args.out, "saved_model")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
