"""Build contexts, content digests, labels and the smoke comparison: no Docker."""

from __future__ import annotations

import json
import os
import dataclasses
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from kit.build import images
from kit.build import smoke
from kit.build.report import OptimizeReport
from kit.errors import KitError
from kit.manifest.load import ImageSpec, ModelManifest, ModelSource, Optimize, Serve, Target


def manifest(tmp_path: Path, device="cpu") -> ModelManifest:
    jetson = device != "cpu"
    return ModelManifest(
        file=tmp_path / "kit.yaml", name="digits", version="1.2.0", model=ModelSource(path=tmp_path / "m"),
        target=Target(device=device, jetpack="4.4.1" if jetson else None),
        optimize=Optimize(precision="fp16" if jetson else "native", batch_sizes=(1, 8)),
        image=ImageSpec(repository="127.0.0.1:5000/digits"), serve=Serve(port=9000, max_batch_delay=0.002, max_queue=32),
    )


def make_tree(root: Path) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "saved_model.pb").write_bytes(b"graph")
    (root / "variables" / "variables.index").write_bytes(b"index")
    return root


def test_tree_digest_ignores_mtimes_and_location(tmp_path):
    a = make_tree(tmp_path / "a")
    b = make_tree(tmp_path / "b")
    os.utime(b / "saved_model.pb", (1, 1))
    assert images.tree_digest(a) == images.tree_digest(b)
    assert images.tree_digest(a).startswith("sha256:")


def test_tree_digest_sees_content_names_and_exec_bit(tmp_path):
    a = make_tree(tmp_path / "a")
    before = images.tree_digest(a)
    (a / "saved_model.pb").write_bytes(b"graph2")
    changed = images.tree_digest(a)
    assert changed != before
    (a / "variables" / "variables.index").rename(a / "variables" / "other.index")
    assert images.tree_digest(a) != changed
    renamed = images.tree_digest(a)
    os.chmod(a / "saved_model.pb", 0o755)
    assert images.tree_digest(a) != renamed


def test_runtime_context_is_normalized_and_small(tmp_path):
    model = make_tree(tmp_path / "model")
    os.chmod(model / "saved_model.pb", 0o600)
    ctx = images.assemble_context(tmp_path / "ctx", "runtime", model)
    names = sorted(p.relative_to(ctx).as_posix() for p in ctx.rglob("*") if p.is_file())
    assert "Dockerfile" in names and "kit/__init__.py" in names and "model/saved_model.pb" in names
    assert all(n == "Dockerfile" or n.startswith(("kit/__init__.py", "kit/runtime/", "model/")) for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    for p in ctx.rglob("*"):
        st = p.stat()
        assert st.st_mtime == images.FIXED_MTIME
        assert (st.st_mode & 0o777) in (0o644, 0o755)
    assert (ctx / "model" / "saved_model.pb").stat().st_mode & 0o777 == 0o644


def test_same_inputs_same_context_digest(tmp_path):
    model = make_tree(tmp_path / "model")
    one = images.assemble_context(tmp_path / "one", "runtime", model)
    two = images.assemble_context(tmp_path / "two", "runtime", model)
    assert images.tree_digest(one) == images.tree_digest(two)


def test_builder_context_has_no_model(tmp_path):
    ctx = images.assemble_context(tmp_path / "ctx", "builder")
    assert not (ctx / "model").exists() and (ctx / "kit" / "runtime" / "__init__.py").is_file()


def test_runtime_context_needs_the_model(tmp_path):
    with pytest.raises(KitError):
        images.assemble_context(tmp_path / "ctx", "runtime")


def test_serve_build_args(tmp_path):
    args = images.serve_build_args(manifest(tmp_path))
    assert args == {"KIT_MODEL_NAME": "digits", "KIT_MODEL_VERSION": "1", "KIT_SIGNATURE": "serving_default",
                    "KIT_PORT": "9000", "KIT_GRPC_PORT": "8500", "KIT_BATCH_SIZES": "1,8", "KIT_MAX_BATCH_DELAY": "2ms",
                    "KIT_MAX_QUEUE": "32", "KIT_WARMUP": "1", "KIT_WARMUP_SAMPLES": "",
                    "KIT_MAX_CONNECTIONS": "2048", "KIT_MAX_HEADER_BYTES": "65536",
                    "KIT_MAX_HEADERS": "100", "KIT_MAX_JSON_BODY": str(16 << 20), "KIT_MAX_BODY": str(64 << 20),
                    "KIT_MAX_BUFFERED": str(256 << 20), "KIT_IDLE_TIMEOUT": "20000ms", "KIT_BODY_TIMEOUT": "60000ms"}
    assert set(args) == set(images.SERVE_BUILD_ARGS)  # the ones runtime.Dockerfile declares (test_dockerfiles)


def test_serve_model_name_and_warmup_reach_the_image(tmp_path):
    samples = tmp_path / "warm.NPZ"
    samples.write_bytes(b"samples")
    m = dataclasses.replace(manifest(tmp_path), serve=Serve(model_name="half_plus_two", warmup_samples=samples))
    args = images.serve_build_args(m)
    assert args["KIT_MODEL_NAME"] == "half_plus_two" and args["KIT_WARMUP"] == "1"
    assert args["KIT_WARMUP_SAMPLES"] == "/opt/kit/warmup/samples.npz"
    ctx = images.assemble_context(tmp_path / "ctx", "runtime", make_tree(tmp_path / "m"), warmup_samples=samples)
    assert (ctx / "warmup" / "samples.npz").read_bytes() == b"samples"
    assert images.serve_build_args(dataclasses.replace(m, serve=Serve(warmup=False)))["KIT_WARMUP"] == "0"
    empty = images.assemble_context(tmp_path / "ctx2", "runtime", make_tree(tmp_path / "m2"))
    assert (empty / "warmup").is_dir() and not list((empty / "warmup").iterdir())


def test_labels_come_from_the_report_not_the_manifest(tmp_path):
    # A Jetson report (shaped like the optimizer's): the labels say what was built.
    report = {"optimization": "tensorrt", "precision": "fp16", "batch_sizes": [1, 8], "engines": 2,
              "environment": {"tensorflow": "2.3.1+nv20.12", "tensorrt": "7.1.3", "cuda": "10.2", "l4t": "32.4.4",
                              "jetpack": "4.4.1"}}
    labels = images.labels_for(manifest(tmp_path, "jetson-nano"), OptimizeReport.from_dict(report), "sha256:abc", "base:1", "2024-01-01T00:00:00Z")
    assert labels["kit.optimization"] == "tensorrt" and labels["kit.engines"] == "2"
    assert labels["kit.tensorflow"] == "2.3.1+nv20.12" and labels["kit.tensorrt"] == "7.1.3"
    assert labels["kit.gpu_arch"] == "sm_53" and labels["kit.l4t"] == "32.4.4" and labels["kit.jetpack"] == "4.4.1"
    assert labels["kit.batch_sizes"] == "1,8" and labels["kit.model_digest"] == "sha256:abc"
    assert labels["org.opencontainers.image.created"] == "2024-01-01T00:00:00Z"
    assert labels["kit.memory_limit"] == str(2 << 30)


def test_cpu_labels_say_native_and_none(tmp_path):
    report = {"optimization": "native", "engines": 0, "environment": {"tensorflow": "2.17.1"}}
    labels = images.labels_for(manifest(tmp_path), OptimizeReport.from_dict(report), "sha256:abc", "kit/tf-cpu-base:tf2.17.1", "t")
    assert labels["kit.optimization"] == "native" and labels["kit.engines"] == "0"
    assert labels["kit.device"] == "cpu" and labels["kit.tensorrt"] == "none" and labels["kit.l4t"] == "none"
    assert all(isinstance(v, str) for v in labels.values())


# ---- smoke comparison ----


def test_response_outputs_formats():
    assert smoke.response_outputs({"outputs": [[1, 2]]}, ["y"]) == {"y": [[1, 2]]}
    assert smoke.response_outputs({"outputs": {"a": [1], "b": [2]}}, ["a", "b"]) == {"a": [1], "b": [2]}
    assert smoke.response_outputs({"predictions": [[1, 2]]}, ["y"]) == {"y": [[1, 2]]}
    assert smoke.response_outputs({"predictions": [{"a": 1, "b": 2}]}, ["a", "b"]) == {"a": [1], "b": [2]}
    with pytest.raises(KitError):
        smoke.response_outputs({"error": "x"}, ["y"])


def test_compare():
    assert smoke.compare({"y": [[0.5, 0.5]]}, {"y": [[0.5, 0.5]]}) == (0.0, [])
    worst, problems = smoke.compare({"y": [[0.5, 0.5]]}, {"y": [[0.4, 0.6]]})
    assert abs(worst - 0.1) < 1e-9 and problems == []
    _, problems = smoke.compare({"y": [[0.5, 0.5]]}, {"y": [0.5, 0.5]})
    assert "shape" in problems[0]
    _, problems = smoke.compare({"y": [1]}, {"z": [1]})
    assert "missing" in problems[0]


class _Server:
    """A real HTTP server on 127.0.0.1 answering :predict with a fixed body."""

    def __init__(self, body: dict, status=200):
        outer = self
        self.requests = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.requests.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


REFERENCE = {"inputs": {"x": [[1.0], [2.0]]}, "dtypes": {"x": "float32"}, "outputs": {"y": [[2.5], [3.0]]}}


def test_predict_and_compare_against_a_real_http_server():
    server = _Server({"outputs": [[2.5], [3.01]]})
    try:
        result = smoke.predict_and_compare(server.port, "half", "serving_default", REFERENCE, 0.05)
    finally:
        server.close()
    assert abs(result["max_abs_error"] - 0.01) < 1e-6
    path, body = server.requests[0]
    assert path == "/v1/models/half:predict"
    assert body == {"signature_name": "serving_default", "inputs": {"x": [[1.0], [2.0]]}}


def test_predict_and_compare_refuses_drift_and_errors():
    server = _Server({"outputs": [[2.5], [4.0]]})
    try:
        with pytest.raises(KitError) as e:
            smoke.predict_and_compare(server.port, "half", "serving_default", REFERENCE, 0.05)
        assert "max abs error 1" in e.value.details[0]
    finally:
        server.close()
    server = _Server({"error": "Servable not found for request: Latest(half)"}, status=404)
    try:
        with pytest.raises(KitError) as e:
            smoke.predict_and_compare(server.port, "half", "serving_default", REFERENCE, 0.05)
        assert "HTTP 404" in e.value.message and "Servable not found" in e.value.message
    finally:
        server.close()


def test_reference_script_runs_on_python_36(tmp_path):
    """The smoke reference runs in the L4T builder (Python 3.6): vermin must agree."""
    import subprocess
    import sys

    script = tmp_path / "reference.py"
    script.write_text(smoke.REFERENCE_SCRIPT)
    vermin = Path(sys.executable).parent / "vermin"
    proc = subprocess.run([str(vermin), "-q", "--violations", "-t=3.6-", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.tf
@pytest.mark.slow
def test_reference_script_on_a_real_model(tmp_path):
    """The script itself, with this host's TensorFlow, on a SavedModel made here:
    parity sample and zeros, as the builder container runs it."""
    import subprocess
    import sys

    import numpy as np
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 2.0 + 1.0}

    m = M()
    tf.saved_model.save(m, str(tmp_path / "model"), signatures={"serving_default": m.serve})
    np.save(tmp_path / "samples.npy", np.arange(6, dtype=np.float64).reshape(2, 3))
    for samples, want_in, want_out in ((str(tmp_path / "samples.npy"), [[0, 1, 2]], [[1, 3, 5]]),
                                       ("-", [[0, 0, 0]], [[1, 1, 1]])):
        out = tmp_path / "ref.json"
        proc = subprocess.run([sys.executable, "-c", smoke.REFERENCE_SCRIPT, str(tmp_path / "model"),
                               "serving_default", samples, str(out)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        doc = json.loads(out.read_text())
        assert doc["inputs"] == {"x": want_in} and doc["dtypes"] == {"x": "float32"}
        assert doc["outputs"] == {"y": want_out}


def test_labels_read_back_through_the_fingerprint(tmp_path):
    """What labels_for writes is what kit.labels reads: the wire contract, both ends."""
    from kit import labels as lb

    report = {"optimization": "tensorrt", "precision": "fp16", "batch_sizes": [1, 8], "engines": 2,
              "environment": {"tensorflow": "2.3.1+nv20.12", "tensorrt": "7.1.3", "cuda": "10.2", "l4t": "32.4.4",
                              "jetpack": "4.4.1"}}
    written = images.labels_for(manifest(tmp_path, "jetson-nano"), OptimizeReport.from_dict(report), "sha256:abc", "base:1", "t")
    fp = lb.Fingerprint.from_labels(written, "arm64")
    assert (fp.device, fp.optimization, fp.model_digest, fp.l4t, fp.tensorrt, fp.gpu_arch, fp.precision) == \
        ("jetson-nano", "tensorrt", "sha256:abc", "32.4.4", "7.1.3", "sm_53", "fp16")
    assert fp.jetson and fp.version == "1.2.0" and fp.memory_limit == 2 << 30 and fp.engines == "2"
    assert lb.batch_sizes(written) == [1, 8]
    cpu = lb.Fingerprint.from_labels(images.labels_for(manifest(tmp_path), OptimizeReport.from_dict({}), "sha256:abc", "b", "t"), "amd64")
    assert cpu.device == "cpu" and not cpu.jetson and cpu.tensorrt is None and cpu.l4t is None
