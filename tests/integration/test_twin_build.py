"""`kit build` on the twin stack: the bundled example built, optimized and served on the Jetson's
Python 3.6 + TensorFlow 2.3.1 (kit/tf-cpu-base:tf2.3.1-py3.6), then one prediction from the container.

Real: the twin base (this host's Python 3.6.15 and the pinned wheels, cached by name), the builder and
runtime images, the optimizer and the server inside them, the digits model trained and saved by TF 2.3.1
(.venv-twin, which scripts/setup-host makes). Not here: aarch64, CUDA, TensorRT (docs/twin.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kit import net
from testkit.manifests import digits_example, write_model
from testkit.server import held_out_digits

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples"
TWIN_PYTHON = Path(os.environ.get("KIT_TWIN_VENV_PYTHON") or ROOT / ".venv-twin" / "bin" / "python")
RUN_ID = uuid.uuid4().hex[:8]
REPOSITORY = f"kit-test-twin/digits-{RUN_ID}"


def kit(*args, timeout=1800) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kit.cli", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, COLUMNS="200"), timeout=timeout)


def train(python: str, out: Path, epochs: int) -> Path:
    subprocess.run([python, str(EXAMPLE / "digits" / "train.py"), "--out", str(out), "--epochs", str(epochs)],
                   check=True, capture_output=True, timeout=900, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return out


def twin_manifest(dest: Path) -> Path:
    """The bundled example's manifest, on the twin stack."""
    return write_model(dest, digits_example(), target={"device": "cpu", "stack": "twin"},
                       optimize={"parity": {"samples": "./digits/parity.npy"}}, image={"repository": REPOSITORY})


@pytest.fixture(scope="module")
def twin_python():
    if not TWIN_PYTHON.is_file():
        pytest.fail(f"{TWIN_PYTHON} is missing: bash scripts/setup-host makes .venv-twin", pytrace=False)
    return str(TWIN_PYTHON)


@pytest.fixture(scope="module")
def built(engine, twin_base, twin_python, tmp_path_factory):
    """The example trained on TF 2.3.1, then `kit build --json` on the twin stack; its image removed at the end."""
    work = tmp_path_factory.mktemp("twin")
    train(twin_python, work / "digits", epochs=30)
    manifest = twin_manifest(work)
    start = time.monotonic()
    proc = kit("build", manifest, "--json")
    seconds = time.monotonic() - start
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    record = json.loads(proc.stdout)
    print(f"kit build on the twin stack: {seconds:.0f} s", file=sys.stderr)
    yield record, manifest
    engine.remove_image(record["image"], force=True)


def test_twin_build_runs_on_python_36_and_tensorflow_231_and_predicts(built, engine, throwaway):
    record, manifest = built
    assert record["image"] == f"{REPOSITORY}:0.1.0-twin-native"
    info = engine.image_inspect(record["image"])
    labels = info.labels
    # The labels say the stack truthfully, from what the optimizer saw inside the builder.
    assert labels["kit.stack"] == "twin" and labels["kit.device"] == "cpu"
    assert labels["kit.tensorflow"] == "2.3.1" and labels["kit.python"].startswith("3.6.")
    assert labels["kit.optimization"] == "native" and labels["kit.tensorrt"] == "none"
    assert labels["kit.l4t"] == "none" and labels["kit.gpu_arch"] == "none"
    assert labels["org.opencontainers.image.base.name"] == "kit/tf-cpu-base:tf2.3.1-py3.6"
    report = json.loads((manifest.parent / ".kit" / "digits" / "optimize" / "report.json").read_text())
    assert report["environment"]["tensorflow"] == "2.3.1" and report["environment"]["python"].startswith("3.6.")
    assert report["environment"]["numpy"] == "1.16.1"
    assert record["smoke"]["passed"] is True
    print(f"twin runtime image: {info.size / 1e6:.0f} MB", file=sys.stderr)

    # Our own container from the built image, and one held-out digit.
    port, grpc_port = net.free_port(), net.free_port()
    name = throwaway.container("twin-serve")
    engine.run(record["image"], name=name, env={"KIT_PORT": str(port), "KIT_GRPC_PORT": str(grpc_port)})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            if net.http_json(base + "/v2/health/ready", timeout=5).status == 200:
                break
        except Exception:
            pass
        assert time.monotonic() < deadline, engine.logs(name)[-3000:]
        time.sleep(0.5)
    x, y = held_out_digits()
    index = 7
    reply = net.http_json(base + "/v1/models/digits:predict", {"instances": x[index:index + 1].tolist()})
    assert reply.status == 200, reply.body
    probabilities = reply.body["predictions"][0]
    predicted = max(range(10), key=lambda k: probabilities[k])
    print(f"twin prediction: digit {predicted} (label {y[index]}), p={probabilities[predicted]:.3f}", file=sys.stderr)
    assert predicted == int(y[index]) and probabilities[predicted] > 0.5
    status = net.http_json(base + "/v1/models/digits", timeout=10)
    assert status.status == 200

    # The server process really is Python 3.6 + TF 2.3.1, and its environment lets TF 2.3.1's VLOG(1) lines
    # (how an engine built at run time shows) through: a module that runs here stands in for trt_engine_op.
    probe = engine.run_to_completion(record["image"], [
        "python3", "-c", "import sys, tensorflow as tf\n@tf.function\ndef f(x):\n    return x * 2\n"
        "f(tf.constant(1.0))\nprint('twin', sys.version.split()[0], tf.__version__)"],
        env={"TF_CPP_VMODULE": info.env["TF_CPP_VMODULE"] + ",process_function_library_runtime=1"}, timeout=300)
    assert probe.exit_code == 0, probe.logs[-2000:]
    assert "twin 3.6." in probe.logs and " 2.3.1" in probe.logs
    assert "process_function_library_runtime.cc" in probe.logs


def test_a_model_saved_by_a_newer_tensorflow_is_refused_with_the_reason(built, tmp_path):
    """The same example saved by the host's TF 2.17 does not load on 2.3.1: exit 2 naming the op and versions."""
    train(sys.executable, tmp_path / "digits", epochs=1)
    manifest = twin_manifest(tmp_path)
    proc = kit("build", manifest)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "DisableCopyOnRead" in proc.stderr and "TensorFlow 2.3.1 does not have" in proc.stderr
    assert "saved by TensorFlow 2.17" in proc.stderr and "save the model again with TensorFlow 2.3.1" in proc.stderr
    assert not (tmp_path / ".kit" / "digits" / "build.json").exists()
