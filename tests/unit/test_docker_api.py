"""The parts of kit.docker_api and kit.build.base that need no engine: reference
parsing, line splitting of streamed logs, error translation, naming."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from kit.build import base
from kit.docker_api import failed_base_image, LineSplitter, as_docker_error, repository_and_tag
from kit.errors import DockerError
from kit.profiles import CPU_STACK


@pytest.mark.parametrize("ref, expected", [
    ("kit/tf-cpu-base:tf2.17.1", ("kit/tf-cpu-base", "tf2.17.1")),
    ("127.0.0.1:5000/vision/resnet50:1.0.0-r32.4.4-fp16", ("127.0.0.1:5000/vision/resnet50", "1.0.0-r32.4.4-fp16")),
    ("127.0.0.1:5000/vision/resnet50", ("127.0.0.1:5000/vision/resnet50", None)),
    ("busybox", ("busybox", None)),
    ("reg/app@sha256:" + "a" * 64, ("reg/app@sha256:" + "a" * 64, None)),
])
def test_repository_and_tag(ref, expected):
    assert repository_and_tag(ref) == expected


def test_line_splitter_joins_chunks_and_normalises_newlines():
    seen = []
    s = LineSplitter(seen.append)
    for chunk in ["Step 1/2 : FR", "OM x\r\n ---> abc\nSte", "p 2/2", ""]:
        s.feed(chunk)
    assert seen == ["Step 1/2 : FROM x", " ---> abc"]
    s.close()
    assert seen[-1] == "Step 2/2" and s.lines == seen


def test_failed_from_names_the_base_with_build_args_substituted():
    lines = ["Step 1/3 : ARG BASE", "Step 2/3 : FROM ${BASE}"]
    assert failed_base_image(lines, {"BASE": "kit/tf-cpu-base:tf2.17.1"}) == "kit/tf-cpu-base:tf2.17.1"
    assert failed_base_image(lines + ["Step 3/3 : RUN false"], {}) is None
    assert failed_base_image([], {}) is None


def test_translate_gives_hints():
    missing = as_docker_error(docker.errors.ImageNotFound("No such image: x:1"), "inspecting x:1", "unix:///s")
    assert isinstance(missing, DockerError) and "image not found" in missing.message and "kit base" in missing.hint
    down = as_docker_error(requests.exceptions.ConnectionError("Connection refused"), "ping", "unix:///var/run/docker.sock")
    assert down.message.startswith("no Docker engine answers at unix:///var/run/docker.sock")
    assert "dockerd --bridge=none" in down.hint and "scripts/setup-host" in down.hint
    ssh = as_docker_error(requests.exceptions.ConnectionError("Connection aborted"), "ping", "ssh://nvidia@nano-01")
    assert "ssh nvidia@nano-01 docker version" in ssh.hint
    denied = as_docker_error(PermissionError(13, "Permission denied"), "ping", "unix:///var/run/docker.sock")
    assert "permission denied" in denied.message and "docker' group" in denied.hint


def test_tf_base_names_follow_the_cpu_stack():
    assert base.tf_base_image(CPU_STACK.tensorflow) == CPU_STACK.base_image
    assert base.tf_base_image("2.16.2") == "kit/tf-cpu-base:tf2.16.2"


def test_wheel_platforms_cover_bookworm_glibc():
    plats = base.manylinux_platforms()
    # h5py ships manylinux_2_28 only, tensorboard-data-server manylinux_2_31: both must be accepted.
    assert {"manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64",
            "manylinux_2_31_x86_64", "manylinux_2_36_x86_64"} <= set(plats)
    assert "manylinux_2_37_x86_64" not in plats


def test_shipped_dockerfile_is_found():
    assert base.dockerfile_path(base.TF_BASE_DOCKERFILE).read_text().count("FROM ${DEBIAN_BASE}") == 2
