"""Shared Docker fixtures for the integration tests.

- `engine`: the connected engine (session). No engine -> the test skips,
  unless KIT_REQUIRE_DOCKER=1 (CI, scripts/test), where it FAILS: CI must
  never go green by skipping the docker tests.
- `debian_base`, `tf_base`, `twin_base`: kit's offline bases, built once per machine
  (cached by image name, exactly like `kit base`).
- `throwaway`: unique `kit-test-*` image and container names, removed at
  teardown whatever the test did.
- `digits_dir`, `digits_images`, `digits_manifest`: the bundled example trained
  fresh on the server's TensorFlow (testkit.server), its held-out images, and a
  cpu manifest for it (the model server tests).

Any test that uses `engine` is marked `docker` automatically.
"""

from __future__ import annotations

import os
import sys
import uuid

import pytest

from kit.docker_api import Engine, connect
from kit import net
from kit.errors import DockerError
from testkit.manifests import write_model

REQUIRE_DOCKER = os.environ.get("KIT_REQUIRE_DOCKER") == "1"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "engine" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.docker)


def _progress(line: str) -> None:
    # Visible with -s, and in the captured output of a failing test.
    print(line, file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def engine():
    try:
        eng = connect()
    except DockerError as e:
        why = f"no Docker engine: {e.message}"
        if REQUIRE_DOCKER:
            pytest.fail(f"{why}\n(KIT_REQUIRE_DOCKER=1: docker tests must run here; fix: {e.hint})", pytrace=False)
        pytest.skip(why)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def debian_base(engine: Engine) -> str:
    """kit/debian-python:bookworm (debootstrap on first use: about a minute, needs root)."""
    from kit.build.base import ensure_debian_base

    return ensure_debian_base(engine, progress=_progress)


@pytest.fixture(scope="session")
def tf_base(engine: Engine) -> str:
    """kit/tf-cpu-base:tf2.17.1 (first use: wheels download + build, a few minutes)."""
    from kit.build.base import ensure_tf_base

    return ensure_tf_base(engine, progress=_progress)


@pytest.fixture(scope="session")
def twin_base(engine: Engine) -> str:
    """kit/tf-cpu-base:tf2.3.1-py3.6, the twin (first use: this host's Python 3.6 + ~300 MB of wheels, ~10 min)."""
    from kit.build.twin_base import ensure_twin_base

    return ensure_twin_base(engine, progress=_progress)


class Throwaway:
    """Unique names for images and containers a test makes; all removed at teardown."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.run_id = uuid.uuid4().hex[:8]
        self.images: list[str] = []
        self.containers: list[str] = []

    def image(self, purpose: str = "img") -> str:
        ref = f"kit-test/{purpose}:{self.run_id}-{len(self.images)}"
        self.images.append(ref)
        return ref

    def container(self, purpose: str = "ctr") -> str:
        name = f"kit-test-{purpose}-{self.run_id}-{len(self.containers)}"
        self.containers.append(name)
        return name

    def track_image(self, ref: str) -> str:
        self.images.append(ref)
        return ref

    def track_container(self, id_or_name: str) -> str:
        self.containers.append(id_or_name)
        return id_or_name

    def cleanup(self) -> list[str]:
        problems = []
        for c in reversed(self.containers):
            try:
                self.engine.remove_container(c, force=True)
            except DockerError as e:
                problems.append(e.message)
        for ref in reversed(self.images):
            try:
                self.engine.remove_image(ref, force=True)
            except DockerError as e:
                problems.append(e.message)
        return problems


@pytest.fixture
def throwaway(engine: Engine):
    t = Throwaway(engine)
    yield t
    problems = t.cleanup()
    assert not problems, f"teardown could not remove test resources: {problems}"


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (host networking: containers bind it directly)."""
    return net.free_port()


# ---- the bundled example, for the model server tests ------------------------------------------


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """saved_model/ and parity.npy of the bundled example, trained fresh (about 6 s) on the server's TensorFlow."""
    from testkit.server import train_digits

    return train_digits(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def digits_images(digits_dir):
    """Held-out digits with their labels (the same split train.py used)."""
    from testkit.server import held_out_digits

    return held_out_digits()


@pytest.fixture(scope="session")
def digits_manifest(digits_dir, tmp_path_factory):
    """A cpu model manifest for the trained example (batch sizes 1 and 4)."""
    return write_model(
        tmp_path_factory.mktemp("manifest"), metadata={"name": "digits", "version": "0.3.0"},
        model={"path": str(digits_dir / "saved_model"), "inputs": {"pixels": {"shape": [8, 8, 1], "dtype": "float32"}}},
        optimize={"batch_sizes": [1, 4]}, image={"repository": "127.0.0.1:5000/kit/digits"},
        serve={"port": 8501, "max_batch_delay": "3ms", "max_queue": 16})
