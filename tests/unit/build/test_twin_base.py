"""The twin base's host side: its pinned package list, the interpreter it copies, what the copy leaves out.
The image itself is built and run by tests/integration/test_twin_build.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kit.build import twin_base
from kit.errors import KitError, PreflightError
from kit.profiles import JETPACK_441, TWIN_STACK


def test_the_pins_are_the_jetsons_stack_and_complete():
    pins = twin_base.read_requirements(twin_base.requirements_path().read_text())
    by_name = {n: (v, source) for n, v, source in pins}
    assert by_name["tensorflow-cpu"][0] == TWIN_STACK.tensorflow == JETPACK_441.tensorflow == "2.3.1"
    assert by_name["numpy"][0] == "1.16.1" and by_name["protobuf"][0] == "3.8.0"
    assert by_name["pip"][0] == "21.3.1"  # the Dockerfile runs pip from this wheel
    assert [n for n, (_, source) in by_name.items() if source] == ["termcolor"]  # no cp36 wheel on PyPI
    assert len(by_name) == len(pins)  # no package twice
    # TensorFlow 2.3.1's own requirements are all pinned (with --no-deps nothing else comes in).
    for dep in ("absl-py", "astunparse", "gast", "google-pasta", "h5py", "keras-preprocessing", "opt-einsum",
                "six", "tensorboard", "tensorflow-estimator", "termcolor", "wrapt", "wheel", "grpcio"):
        assert dep in by_name, dep


def test_a_line_that_is_not_a_pin_is_refused():
    with pytest.raises(KitError, match="not a pin"):
        twin_base.read_requirements("numpy>=1.16\n")
    assert twin_base.read_requirements("# c\n\nsix==1.17.0  # source\n") == [("six", "1.17.0", True)]


def test_a_missing_python_36_is_a_preflight_error_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv(twin_base.PYTHON_ENV, raising=False)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path))
    with pytest.raises(PreflightError) as e:
        twin_base.find_python()
    assert "needs this host's Python 3.6" in e.value.message and "pyenv install 3.6.15" in e.value.hint
    monkeypatch.setenv(twin_base.PYTHON_ENV, "/usr/bin/python3")  # Debian's 3.11
    with pytest.raises(PreflightError, match="the twin base needs Python 3.6"):
        twin_base.find_python()


def _pyenv_36():
    try:
        return twin_base.find_python()
    except PreflightError:
        return None


@pytest.mark.skipif(_pyenv_36() is None, reason="no Python 3.6 on this host (scripts/setup-host requires one)")
def test_the_copy_leaves_out_site_packages_tests_and_the_static_library(tmp_path):
    prefix, version = twin_base.find_python()
    assert version.startswith("3.6.")
    size = twin_base.copy_python(prefix, tmp_path / "python")
    lib = tmp_path / "python" / "lib" / "python3.6"
    assert (lib / "os.py").is_file() and (tmp_path / "python/bin/python3.6").is_file()
    assert list((lib / "site-packages").iterdir()) == []  # the host's packages and .pth files stay out
    assert not (lib / "test").exists() and not (lib / "tkinter").exists()
    assert not list((tmp_path / "python").rglob("*.a")) and not list((tmp_path / "python").rglob("sitecustomize.py"))
    assert 20e6 < size < 120e6
