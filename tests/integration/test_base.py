"""kit/build/base.build_verified, the build -> check -> tag -> clean-up tail that the TF CPU base and
the twin base share, run against the real Docker engine on a tiny two-stage image over the Debian base
(seconds, where a real TF base build takes minutes). Real: the engine, the build, the check run in a
container, the tags and the pruned install stage."""

from __future__ import annotations

import time
import uuid

import pytest

from kit import labels as lb
from kit.build import base as bases
from kit.errors import DockerError

pytestmark = pytest.mark.docker

# The same shape as kit/docker/tf-cpu-base.Dockerfile: a labelled install stage, a final stage that
# copies only its result.
DOCKERFILE = """\
ARG DEBIAN_BASE
FROM ${DEBIAN_BASE} AS install
ARG STAGE
ARG WORD
LABEL kit.build.pipeline-stage="${STAGE}"
RUN test "${WORD}" != fail && echo "${WORD}" > /word
FROM ${DEBIAN_BASE}
COPY --from=install /word /word
"""


def build(engine, throwaway, debian_base, tmp_path, word="hello", expect="hello"):
    """build_verified of the tiny image; returns (spec, result or the DockerError raised)."""
    image = throwaway.image("base-helper")
    stage = f"kit-test-base-helper-install-{uuid.uuid4().hex[:8]}"
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    spec = bases.BaseBuild(
        image, buildargs={"DEBIAN_BASE": debian_base, "STAGE": stage, "WORD": word}, install_stage=stage,
        check=bases.Check(["cat", "/word"], expect=expect, failure="the word is not in the built image"),
        python="3.11", tensorflow="none")
    lines: list[str] = []
    try:
        return spec, bases.build_verified(engine, context, spec, lines.append, force=False,
                                          start=time.monotonic()), lines
    except DockerError as e:
        return spec, e, lines


def leftovers(engine, spec) -> tuple[list[str], list[str]]:
    """Temporary tags of this image, and images still carrying this build's install-stage label."""
    stage_images = engine.client.images.list(all=True, filters={"label": f"{lb.BUILD_STAGE}={spec.install_stage}"})
    return engine.image_refs(f"{spec.image}-tmp-*"), [i.id for i in stage_images]


def test_a_verified_build_is_tagged_and_leaves_no_temporary_tag_or_install_stage(
        engine, throwaway, debian_base, tmp_path):
    spec, result, lines = build(engine, throwaway, debian_base, tmp_path)
    assert isinstance(result, bases.BaseImage), result
    info = engine.image_inspect(spec.image)
    assert (result.image, result.id, result.size, result.reused) == (spec.image, info.id, info.size, False)
    assert info.labels.get(lb.OCI_CREATED, "").endswith("Z")  # stamped by the helper, UTC
    assert engine.run_to_completion(spec.image, ["cat", "/word"], timeout=60).logs.strip() == "hello"
    assert leftovers(engine, spec) == ([], [])
    assert any("  | " in line for line in lines)  # the build's own output went to progress
    assert lines[-1].startswith(f"{spec.image}: built and verified in ")


def test_a_failed_check_tags_nothing_and_says_what_was_expected(engine, throwaway, debian_base, tmp_path):
    spec, result, _ = build(engine, throwaway, debian_base, tmp_path, word="hello", expect="goodbye")
    assert isinstance(result, DockerError), result
    assert "the word is not in the built image (exit 0)" in result.message
    assert result.details[0] == "expected: goodbye" and "hello" in result.details
    assert not engine.image_exists(spec.image)
    assert leftovers(engine, spec) == ([], [])


def test_a_failed_build_tags_nothing(engine, throwaway, debian_base, tmp_path):
    spec, result, _ = build(engine, throwaway, debian_base, tmp_path, word="fail")
    assert isinstance(result, DockerError), result
    assert not engine.image_exists(spec.image)
    assert engine.image_refs(f"{spec.image}-tmp-*") == []

