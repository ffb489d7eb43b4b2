"""A model with a string input (encoded JPEG bytes) needs optimize.parity.samples: `kit validate`
says so on the host, from saved_model.pb read without TensorFlow, before any build runs.

TensorFlow only makes the real SavedModel (marker `tf`); the check itself reads protobuf."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import models

from kit.manifest.load import collect_problems

pytestmark = pytest.mark.tf

MANIFEST = """apiVersion: kit/v1
kind: Model
metadata: {{name: jpeg}}
model: {{path: ./jpeg}}
target: {{device: cpu}}
optimize:
  precision: native
  batch_sizes: [1]
  parity: {parity}
image: {{repository: kit/jpeg}}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jpeg")

    models.make_jpeg_mean(root / "jpeg")
    np.save(root / "images.npy", np.array([b"\xff\xd8 not really a jpeg"]))
    return root


def _problems(project: Path, parity: str, check_files: bool = True):
    manifest = project / "kit.yaml"
    manifest.write_text(MANIFEST.format(parity=parity))
    return collect_problems(manifest, check_files=check_files)


def test_a_string_input_without_parity_samples_is_refused_with_the_fix(project):
    problems = _problems(project, "{samples: null}")
    assert [p.where for p in problems] == ["optimize -> parity -> samples"]
    assert problems[0].message.startswith("input 'image_bytes' has dtype string, which the optimizer cannot feed")
    assert problems[0].fix.startswith("give optimize.parity.samples:")
    assert "np.save(path, np.array([open(f, 'rb').read() for f in files]))" in problems[0].fix


def test_no_parity_section_at_all_is_refused_too(project):
    assert [p.where for p in _problems(project, "{}")] == ["optimize -> parity -> samples"]


def test_parity_samples_satisfy_the_check(project):
    assert _problems(project, "{samples: ./images.npy}") == []


def test_without_file_checks_the_optimizer_is_left_to_say_it(project):
    assert _problems(project, "{samples: null}", check_files=False) == []


def test_kit_validate_exits_non_zero_and_prints_the_fix(project):
    _problems(project, "{samples: null}")
    proc = subprocess.run([sys.executable, "-m", "kit.cli", "validate", str(project / "kit.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    out = " ".join((proc.stdout + proc.stderr).split())
    assert "has dtype string" in out and "give optimize.parity.samples" in out
