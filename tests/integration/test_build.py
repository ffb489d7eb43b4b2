"""`kit build` end to end on the real engine, cpu profile (the bundled example).

Real: the TF CPU base, the builder and runtime images, the optimizer run in
the builder container, the smoke container, the digits SavedModel (trained by
the example's own train.py). Faked: only /etc/nv_tegra_release (there is no
Jetson here), through KIT_NV_TEGRA_RELEASE.

One full build is shared by the module (module fixture `built`); the tests
that need their own builds use small copies of the example. That build's
manifest also sets serve.model_name (SERVED_AS, with TF Serving's '_') and
serve.warmup samples, so the real clients prove both in a built image.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from kit.build import images
from testkit import manifests
from testkit.server import held_out_digits

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples"
RUN_ID = uuid.uuid4().hex[:8]
REPOSITORY = f"kit-test/build-{RUN_ID}"
SERVED_AS = "digits_classifier"  # serve.model_name of the shared build: what clients call, not metadata.name
NANO_4_4 = "# R32 (release), REVISION: 4.4, GCID: 23942405, BOARD: t210ref, EABI: aarch64, DATE: Fri Oct 16 19:44:43 UTC 2020\n"
NANO_4_3 = "# R32 (release), REVISION: 4.3, GCID: 21589087, BOARD: t210ref, EABI: aarch64, DATE: Fri Jun 26 04:38:25 UTC 2020\n"


def kit(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess: exit codes and output as a user sees them."""
    full_env = dict(os.environ, COLUMNS="200", **(env or {}))
    return subprocess.run([sys.executable, "-m", "kit.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)


def record_of(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
    return json.loads(proc.stdout)


def statuses(record: dict) -> dict:
    return {s["name"]: s["status"] for s in record["steps"]}


def trained_example(dest: Path, epochs: int | None = None) -> Path:
    """dest/digits/{saved_model,parity.npy}: the example's model, or one trained here."""
    out = dest / "digits"
    src = EXAMPLE / "digits"
    if epochs is None and (src / "saved_model" / "saved_model.pb").is_file() and (src / "parity.npy").is_file():
        shutil.copytree(src / "saved_model", out / "saved_model")
        shutil.copy2(src / "parity.npy", out / "parity.npy")
    else:
        subprocess.run([sys.executable, str(src / "train.py"), "--out", str(out), "--epochs", str(epochs or 30)],
                       check=True, capture_output=True, timeout=600)
    return out


def write_manifest(dest: Path, *, version="0.1.0", device="cpu", model="./digits/saved_model",
                   parity="./digits/parity.npy", repository=REPOSITORY, served_as=None, **extra) -> Path:
    """dest/kit.yaml: the bundled example's manifest for a copy of it in dest (`extra` replaces whole sections).
    served_as: serve.model_name, with serve.warmup samples (dest/digits/warm.npy: three held-out digits, the
    same bytes every time, so the image's warmup/ layer is too)."""
    serve = {}
    if served_as is not None:
        (dest / "digits").mkdir(parents=True, exist_ok=True)
        np.save(dest / "digits" / "warm.npy", held_out_digits()[0][:3].astype(np.float32))
        serve = {"model_name": served_as, "warmup": "./digits/warm.npy"}
    doc = manifests.digits_example(metadata={"version": version}, model={"path": model},
                                   image={"repository": repository}, serve=serve,
                                   optimize={"parity": None if parity is None else {"samples": parity}})
    if device != "cpu":
        doc = manifests.merged(doc, {"target": {"device": device, "jetpack": "4.4.1"}, "optimize": {"precision": "fp16"}})
    doc.update(extra)
    return manifests.write_model(dest / "kit.yaml", doc)


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("example")
    trained_example(d)
    return write_manifest(d, served_as=SERVED_AS)


@pytest.fixture(scope="module")
def built(engine, tf_base, example):
    """One full `kit build --json` of the example; its images removed at the end."""
    proc = kit("build", example, "--json")
    record = record_of(proc)
    yield record, proc
    _remove_repository_tags(engine, record)


def _remove_repository_tags(engine, record):
    for ref in {record["image"]}:
        engine.remove_image(ref, force=True)


# ---- the full build -----------------------------------------------------------------


def test_full_build_tags_and_labels(built, engine, example):
    record, proc = built
    assert record["image"] == f"{REPOSITORY}:0.1.0-cpu-native"
    info = engine.image_inspect(record["image"])
    assert info.id == record["image_id"]
    labels = info.labels
    assert labels["kit.optimization"] == "native" and labels["kit.device"] == "cpu"
    assert labels["kit.batch_sizes"] == "1,8" and labels["kit.precision"] == "native"
    assert labels["kit.engines"] == "0" and labels["kit.tensorrt"] == "none"
    assert labels["kit.tensorflow"].startswith("2.17")
    optimized = Path(record["optimize"]["model_dir"])
    assert labels["kit.model_digest"] == images.tree_digest(optimized) == record["optimize"]["model_digest"]
    assert labels["org.opencontainers.image.title"] == "digits"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    # The record on disk is what --json printed; the smoke test really ran.
    on_disk = json.loads((example.parent / ".kit" / "digits" / "build.json").read_text())
    assert on_disk == record
    assert record["smoke"]["passed"] is True and record["smoke"]["image_id"] == record["image_id"]
    assert statuses(record)["optimize"] == "ran" and statuses(record)["smoke"] == "ran"
    # Progress went to stderr, step by step.
    for step in ("preflight", "builder", "optimize", "gate", "bake", "smoke"):
        assert step in proc.stderr
    # No temporary tag survives.
    assert not any(":kit-tmp-" in t for t in info.tags)
    # The runtime config: numeric user, the server's probe, serve settings from the manifest.
    assert info.config["User"] == "10001:44"
    assert info.config["Healthcheck"]["Test"] == ["CMD", "python3", "-m", "kit.runtime.serving.healthcheck"]
    assert info.config["Cmd"] == ["python3", "-m", "kit.runtime.serving.main"]
    assert "8501/tcp" in info.config["ExposedPorts"]
    env = info.env
    assert env["KIT_MODEL_NAME"] == SERVED_AS and env["KIT_BATCH_SIZES"] == "1,8"
    assert env["KIT_WARMUP"] == "1" and env["KIT_WARMUP_SAMPLES"] == "/opt/kit/warmup/samples.npy"
    assert env["KIT_MODEL_DIR"] == "/opt/kit/model" and "TF_GPU_ALLOCATOR" not in env
    assert env["TF_CPP_VMODULE"] == "trt_engine_op=1"  # engine builds at run time are VLOG(1) on TF 2.3.1
    assert env["KIT_PORT"] == "8501" and env["KIT_MAX_BATCH_DELAY"] == "2ms"
    # The server's limits: the manifest's serve.max_json_body (1MiB), the defaults for the others.
    assert env["KIT_MAX_JSON_BODY"] == str(1 << 20) and env["KIT_MAX_BODY"] == str(64 << 20)
    assert env["KIT_MAX_CONNECTIONS"] == "2048" and env["KIT_IDLE_TIMEOUT"] == "20000ms"


def test_built_image_health_probe_is_slot_aware(built, engine):
    """The image's HEALTHCHECK reads KIT_SLOT from the container's env: healthy on its own
    server's Kit-Slot, and the same probe with another slot is not (as a start-first task's
    probe that reaches the old server)."""
    from kit.net import free_port

    record, _ = built
    port = free_port()
    cid = engine.run(record["image"], name=f"kit-test-slot-{RUN_ID}",
                     env={"KIT_PORT": str(port), "KIT_GRPC_PORT": "0", "KIT_HOST": "127.0.0.1", "KIT_SLOT": "blue"})
    try:
        assert engine.wait_healthy(cid, 180).health == "healthy"  # the image's HEALTHCHECK, KIT_SLOT=blue
        for argv in (["python3", "-m", "kit.runtime.serving.healthcheck"],
                     ["python3", "-m", "kit.runtime.serving.main", "--probe"]):
            other = subprocess.run(["docker", "exec", "-e", "KIT_SLOT=green", cid, *argv], capture_output=True,
                                   text=True, timeout=60)
            assert other.returncode == 1 and "not ready for slot green" in other.stderr, other.stderr
            assert "blue" in other.stderr
    finally:
        engine.remove_container(cid, force=True)


def test_model_layer_is_last_and_the_rest_is_the_builder(built, engine):
    record, _ = built
    layers = engine.layer_digests(record["image"])
    builder = engine.layer_digests(record["builder"]["image"])
    base = engine.layer_digests(record["base"]["image"])
    assert layers[: len(base)] == base
    assert layers[: len(builder)] == builder  # base + kit code, shared with the builder image
    # Then two per-model layers: warmup/ (serve.warmup samples, with fixed modes and mtimes, so
    # byte-identical from one build to the next) and model/, last.
    assert len(layers) == len(builder) + 2


# ---- the built image, called by the real clients --------------------------------------------------
# tensorflow-serving-api's gRPC stubs, tritonclient's http and grpc clients and curl (TF Serving's REST
# docs use curl) against the runtime image of the full build above: the image, not `kit serve --local`.


@pytest.fixture(scope="module")
def served(built, engine):
    """The built image running on free ports (host network), ready; (rest port, grpc port, model name)."""
    from kit.net import free_port

    record, _ = built
    port, grpc_port = free_port(), free_port()
    name = SERVED_CONTAINER
    cid = engine.run(record["image"], name=name, env={"KIT_PORT": str(port), "KIT_GRPC_PORT": str(grpc_port),
                                                      "KIT_HOST": "127.0.0.1"})
    try:
        deadline = time.time() + 180
        while True:
            status = _curl("GET", f"http://127.0.0.1:{port}/v2/health/ready", check=False)[0]
            if status == 200:
                break
            assert time.time() < deadline and engine.container_state(cid).status == "running", engine.logs(cid)[-3000:]
            time.sleep(0.5)
        yield port, grpc_port, SERVED_AS
    finally:
        engine.remove_container(cid, force=True)


SERVED_CONTAINER = f"kit-test-perf-clients-{RUN_ID}"


def _curl(method, url, body=None, check=True):
    """curl as TF Serving's REST docs call it -> (HTTP status, parsed JSON body or None)."""
    argv = ["curl", "-sS", "-X", method, "-o", "-", "-w", "\n%{http_code}", url]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        assert not check, proc.stderr
        return 0, None
    text, _, code = proc.stdout.rpartition("\n")
    return int(code), (json.loads(text) if text.strip() else None)


def _prometheus(text):
    """{'name{labels}': value} of a Prometheus text exposition."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def test_built_image_ran_the_manifests_warmup_samples(served, engine):
    """serve.warmup samples travelled into the image and ran at every built batch size before ready."""
    port, _, _ = served
    proc = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{port}/metrics"], capture_output=True, text=True,
                          timeout=60, check=True)
    runs = {k: v for k, v in _prometheus(proc.stdout).items() if k.startswith("kit_warmup_runs_total")}
    assert runs == {'kit_warmup_runs_total{source="samples",batch_size="1"}': 1,
                    'kit_warmup_runs_total{source="samples",batch_size="8"}': 1}
    logs = engine.logs(SERVED_CONTAINER)
    assert "warm-up: samples from /opt/kit/warmup/samples.npy at batch sizes 1,8" in logs
    assert logs.index("warm-up: batch size 8") < logs.index("ready: model '%s'" % SERVED_AS)


def _pixels(n):
    return np.random.RandomState(n).uniform(0, 16, size=(n, 8, 8, 1)).astype(np.float32)


def test_built_image_answers_curl(served):
    port, _, name = served
    base = f"http://127.0.0.1:{port}"
    status, body = _curl("GET", f"{base}/v1/models/{name}")
    assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"
    status, meta = _curl("GET", f"{base}/v1/models/{name}/metadata")
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert status == 200 and list(signature["inputs"]) == ["pixels"]
    output = next(iter(signature["outputs"]))
    x = _pixels(3)
    status, rows = _curl("POST", f"{base}/v1/models/{name}:predict", {"instances": x.tolist()})
    assert status == 200 and np.asarray(rows["predictions"]).shape[0] == 3
    status, cols = _curl("POST", f"{base}/v1/models/{name}:predict", {"inputs": {"pixels": x.tolist()}})
    assert status == 200 and np.allclose(np.asarray(cols["outputs"]), np.asarray(rows["predictions"]), atol=1e-6)
    status, v2 = _curl("POST", f"{base}/v2/models/{name}/infer", {"inputs": [
        {"name": "pixels", "shape": [3, 8, 8, 1], "datatype": "FP32", "data": x.ravel().tolist()}]})
    assert status == 200 and v2["outputs"][0]["name"] == output
    assert np.allclose(np.asarray(v2["outputs"][0]["data"]).reshape(v2["outputs"][0]["shape"]),
                       np.asarray(rows["predictions"]), atol=1e-6)
    # A client's mistake is a 4xx with a JSON error, never a 500.
    status, bad = _curl("POST", f"{base}/v1/models/{name}:predict", {"instances": [[1.0, 2.0]]})
    assert status == 400 and "pixels" in bad["error"]
    # serve.model_name is the only name: metadata.name ("digits") is not served.
    status, missing = _curl("POST", f"{base}/v1/models/digits:predict", {"instances": x.tolist()})
    assert status == 404 and SERVED_AS in missing["error"]
    assert _curl("GET", f"{base}/v2/models/digits", check=False)[0] == 404


def test_built_image_answers_tensorflow_serving_grpc_stubs(served):
    grpc = pytest.importorskip("grpc")
    tf = pytest.importorskip("tensorflow")
    apis = pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc")
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc, predict_pb2

    _, grpc_port, name = served
    x = _pixels(4)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = apis.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(x))
        response = stub.Predict(request, timeout=60)
        (output,) = response.outputs.values()
        probabilities = tf.make_ndarray(output)
        assert probabilities.shape[0] == 4 and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
        meta_request = get_model_metadata_pb2.GetModelMetadataRequest()
        meta_request.model_spec.name = name
        meta_request.metadata_field.append("signature_def")
        meta = stub.GetModelMetadata(meta_request, timeout=60)
        assert meta.model_spec.name == name and "signature_def" in meta.metadata
        status_request = get_model_status_pb2.GetModelStatusRequest()
        status_request.model_spec.name = name
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=60)
        assert status.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        for other in ("nope", "digits"):  # metadata.name is not a name the image answers to
            request.model_spec.name = other
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, timeout=60)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND and SERVED_AS in info.value.details()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_built_image_answers_tritonclient(served, protocol):
    client_module = pytest.importorskip("tritonclient." + protocol)
    from tritonclient.utils import InferenceServerException

    port, grpc_port, name = served
    client = client_module.InferenceServerClient(f"127.0.0.1:{port if protocol == 'http' else grpc_port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    meta = client.get_model_metadata(name)
    inputs_meta = meta["inputs"] if protocol == "http" else [{"name": i.name} for i in meta.inputs]
    outputs_meta = meta["outputs"] if protocol == "http" else [{"name": o.name} for o in meta.outputs]
    assert [i["name"] for i in inputs_meta] == ["pixels"]
    x = _pixels(8)
    tensor = client_module.InferInput("pixels", list(x.shape), "FP32")
    if protocol == "http":
        tensor.set_data_from_numpy(x, binary_data=True)
        wanted = [client_module.InferRequestedOutput(outputs_meta[0]["name"], binary_data=True)]
    else:
        tensor.set_data_from_numpy(x)
        wanted = [client_module.InferRequestedOutput(outputs_meta[0]["name"])]
    result = client.infer(name, [tensor], outputs=wanted)
    probabilities = result.as_numpy(outputs_meta[0]["name"])
    assert probabilities.shape[0] == 8 and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    wrong = client_module.InferInput("pixels", [1, 8, 8], "FP32")
    wrong.set_data_from_numpy(x[:1, :, :, 0])
    with pytest.raises(InferenceServerException) as info:
        client.infer(name, [wrong])
    assert "shape" in str(info.value)
    with pytest.raises(InferenceServerException) as info:  # metadata.name is not served
        client.infer("digits", [tensor])
    assert "digits" in str(info.value).replace(SERVED_AS, "") and SERVED_AS in str(info.value)
    config = client.get_model_config(name)
    config = config if protocol == "http" else client.get_model_config(name, as_json=True)["config"]
    assert config["name"] == name and config["max_batch_size"] == 8
    stats = client.get_inference_statistics(name)
    stats = stats if protocol == "http" else client.get_inference_statistics(name, as_json=True)
    assert stats["model_stats"][0]["name"] == name and int(stats["model_stats"][0]["inference_count"]) >= 8


def rebuilt_with_stable_code(example, previous: dict) -> tuple[dict, dict]:
    """(previous, again) where `again` is a rebuild with kit's in-image code
    unchanged since `previous`. During development other people edit
    kit/runtime while these tests run; a changed kit code rightly rebuilds the
    builder and what depends on it, so rebuild until the code held still."""
    for _ in range(3):
        again = record_of(kit("build", example, "--json"))
        if again["builder"]["kit_code"] == previous["builder"]["kit_code"]:
            return previous, again
        previous = again
    pytest.fail("kit/runtime kept changing during the test")


def test_no_change_rebuild_reuses_every_step(built, example):
    first, again = rebuilt_with_stable_code(example, built[0])
    st = statuses(again)
    assert st["base"] == "reused" and st["builder"] == "reused" and st["optimize"] == "reused"
    assert st["reference"] == "reused" and st["bake"] == "reused"
    assert st["smoke"] == "skipped"
    assert again["image_id"] == first["image_id"]
    assert again["layers"] == first["layers"]


def test_model_only_change_rebuilds_only_the_top_layer(built, engine, example, tmp_path):
    first, _ = built
    trained_example(tmp_path, epochs=3)  # a different model: retrained with fewer epochs
    manifest = write_manifest(tmp_path, version="0.2.0", served_as=SERVED_AS)  # the same warm-up samples
    second = record_of(kit("build", manifest, "--json"))
    if second["builder"]["kit_code"] != first["builder"]["kit_code"]:
        # kit/runtime was edited meanwhile (development): compare with the example rebuilt on the same code.
        first = record_of(kit("build", example, "--json"))
    assert first["builder"]["kit_code"] == second["builder"]["kit_code"], "kit/runtime kept changing"
    try:
        assert second["image"] == f"{REPOSITORY}:0.2.0-cpu-native"
        assert statuses(second)["builder"] == "reused" and statuses(second)["optimize"] == "ran"
        a, b = engine.layer_digests(first["image"]), engine.layer_digests(second["image"])
        assert len(a) == len(b)
        assert a[:-1] == b[:-1]
        assert a[-1] != b[-1]
        assert second["labels"]["kit.model_digest"] != first["labels"]["kit.model_digest"]
    finally:
        engine.remove_image(second["image"], force=True)


def test_gate_refuses_a_report_with_fallbacks(built, example, tmp_path, engine):
    """A report fixture with fallback findings written into the optimize output
    (TensorRT cannot run here; the findings are parsed by kit.runtime.trtlog
    from TF-TRT's own log line format), then the real `kit build`."""
    from kit.runtime import trtlog

    _, current = rebuilt_with_stable_code(example, built[0])
    work = tmp_path / "copy"
    shutil.copytree(example.parent, work, symlinks=True)  # with .kit/: the optimize step is reused
    report_file = work / ".kit" / "digits" / "optimize" / "report.json"
    report = json.loads(report_file.read_text())
    report.update(optimization="tensorrt", engines=1, findings=trtlog.parse(
        "2020-12-01 10:00:09.000000: W tensorflow/compiler/tf2tensorrt/kernels/trt_engine_op.cc:1013] Engine "
        "creation for StatefulPartitionedCall/TRTEngineOp_0_0 failed. The native segment will be used instead. "
        "Reason: Internal: Failed to build TensorRT engine\n"))
    report_file.write_text(json.dumps(report))
    proc = kit("build", work / "kit.yaml")
    assert proc.returncode == 5, proc.stdout + proc.stderr
    assert "refusing to bake" in proc.stderr and "1 fallback(s) to native TensorFlow" in proc.stderr
    assert f"report: {report_file}" in proc.stderr and "optimize.log" in proc.stderr
    assert report_file.exists() and (report_file.parent / "optimize.log").exists()
    assert "↺ optimize" in proc.stdout and "✗ gate" in proc.stdout
    # The image the earlier build made is untouched.
    assert engine.image_inspect(current["image"]).id == current["image_id"]


# ---- dry run ------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_runs_nothing(engine, tmp_path):
    trained_example(tmp_path)
    manifest = write_manifest(tmp_path, repository=f"{REPOSITORY}-dry")
    proc = kit("build", manifest, "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    steps = {s["step"]: s for s in plan["steps"]}
    assert list(steps) == ["preflight", "base", "builder", "optimize", "gate", "reference", "bake", "smoke", "record"]
    opt = steps["optimize"]
    assert opt["command"] == ["python3", "-m", "kit.runtime.optimize", "--spec", "/in/spec.json"]
    assert any(m.endswith("-> /in/saved_model") for m in opt["copied_in"])
    assert opt["copied_out"] == [f"/out -> {tmp_path / '.kit' / 'digits' / 'optimize.partial'}"]
    assert opt["network"] == "host" and opt["runtime"] == "runc"
    assert steps["bake"]["build_args"]["KIT_BATCH_SIZES"] == "1,8"
    assert steps["bake"]["image"] == f"{REPOSITORY}-dry:0.1.0-cpu-native"
    assert not (tmp_path / ".kit").exists()
    assert not engine.image_exists(f"{REPOSITORY}-dry:0.1.0-cpu-native")
    # --base-image overrides the manifest's base everywhere it is used.
    other = json.loads(kit("build", manifest, "--dry-run", "--json", "--base-image", "kit/custom-base:1").stdout)
    other_steps = {s["step"]: s for s in other["steps"]}
    assert other_steps["base"]["image"] == "kit/custom-base:1"
    assert other_steps["builder"]["build_args"] == {"BASE_IMAGE": "kit/custom-base:1"}
    assert other_steps["bake"]["build_args"]["BASE_IMAGE"] == "kit/custom-base:1"
    # The human form names the same things.
    text = kit("build", manifest, "--dry-run")
    assert text.returncode == 0 and "nothing runs" in text.stdout and "/in/saved_model" in text.stdout


# ---- host preflight (the nv_tegra_release file is the one faked thing) ---------------------


@pytest.fixture
def nano_manifest(tmp_path) -> Path:
    trained_example(tmp_path)
    return write_manifest(tmp_path, device="jetson-nano", repository=f"{REPOSITORY}-nano")


def test_preflight_refuses_a_mismatched_l4t(engine, nano_manifest, tmp_path):
    fake = tmp_path / "nv_tegra_release"  # faked: no Jetson here
    fake.write_text(NANO_4_3)
    proc = kit("build", nano_manifest, env={"KIT_NV_TEGRA_RELEASE": str(fake)})
    assert proc.returncode == 3, proc.stderr
    assert "l4t:" in proc.stderr and "L4T 32.4.3" in proc.stderr and "JetPack 4.4.1 (L4T 32.4.4)" in proc.stderr
    assert "fix:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / ".kit" / "digits" / "build.json").exists()


def test_preflight_accepts_a_matching_l4t_and_names_the_missing_nvidia_runtime(engine, nano_manifest, tmp_path):
    fake = tmp_path / "nv_tegra_release"  # faked: no Jetson here
    fake.write_text(NANO_4_4)
    proc = kit("build", nano_manifest, env={"KIT_NV_TEGRA_RELEASE": str(fake)})
    # The L4T check passes; this engine really has no nvidia runtime.
    assert proc.returncode == 3, proc.stderr
    assert "l4t:" not in proc.stderr
    assert "nvidia container runtime is not registered" in proc.stderr
    assert "daemon.json" in proc.stderr


def test_preflight_names_an_engine_that_does_not_answer(nano_manifest, tmp_path):
    proc = kit("build", nano_manifest.parent / "kit.yaml",
               env={"DOCKER_HOST": f"unix://{tmp_path}/no-such.sock"})
    assert proc.returncode == 3, proc.stderr
    assert "no Docker engine answers" in proc.stderr and "Traceback" not in proc.stderr


# ---- a smoke test that fails ------------------------------------------------------------------


def _model_with_a_build_time_path(path: Path) -> None:
    """A real SavedModel that reads a file by a hard-coded path which exists in the
    builder container (the source model's mount) but not in the runtime image:
    it optimizes and answers in the builder, and fails when served."""
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32, name="pixels")])
        def serve(self, pixels):
            n = tf.strings.length(tf.io.read_file("/in/saved_model/saved_model.pb"))
            scale = tf.cast(n > 0, tf.float32)
            return {"probabilities": tf.nn.softmax(tf.reshape(pixels, [-1, 64])[:, :10] * scale)}

    m = M()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})


def test_failing_smoke_stops_the_build_shows_logs_and_leaves_no_tag(engine, tf_base, tmp_path):
    model = tmp_path / "digits" / "saved_model"
    _model_with_a_build_time_path(model)
    import numpy as np

    np.save(tmp_path / "digits" / "parity.npy", np.random.RandomState(0).rand(8, 8, 8, 1).astype(np.float32))
    manifest = write_manifest(tmp_path, repository=f"{REPOSITORY}-smoke")
    proc = kit("build", manifest)
    final = f"{REPOSITORY}-smoke:0.1.0-cpu-native"
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "smoke test of" in proc.stderr and "failed" in proc.stderr
    assert "container log" in proc.stderr and "/in/saved_model/saved_model.pb" in proc.stderr
    assert not engine.image_exists(final)
    temp = [w for w in proc.stderr.split() if ":kit-tmp-" in w]
    assert temp and not engine.image_exists(temp[0])
    assert engine.image_refs(f"{REPOSITORY}-smoke:*") == []
    assert not (tmp_path / ".kit" / "digits" / "build.json").exists()
    # The optimize output survives the failure: running again does not optimize again.
    again = kit("build", manifest)
    assert again.returncode == 1 and "smoke test of" in again.stderr
    assert "↺ optimize" in again.stdout and "↺ reference" in again.stdout
    assert engine.image_refs(f"{REPOSITORY}-smoke:*") == []


def test_dry_run_on_a_jetson_profile_plans_the_nvidia_runtime(nano_manifest, tmp_path):
    """No Jetson here, but the plan for one is data: runtime, video group, pinned base."""
    proc = kit("build", nano_manifest, "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    steps = {s["step"]: s for s in json.loads(proc.stdout)["steps"]}
    assert steps["base"]["image"] == "nvcr.io/nvidia/l4t-tensorflow:r32.4.4-tf2.3-py3"
    assert steps["optimize"]["runtime"] == "nvidia" and steps["smoke"]["runtime"] == "nvidia"
    assert steps["optimize"]["user"] == f"{os.getuid()}:44"  # video: the GPU device nodes' group
    assert set(steps["preflight"]["checks"]) == {"engine", "disk", "l4t", "nvidia", "memory"}
    assert steps["optimize"]["spec_document"]["stack"]["l4t"] == "32.4.4"
    assert steps["bake"]["image"].endswith(":0.1.0-r32.4.4-fp16")
    assert not (tmp_path / ".kit").exists()
