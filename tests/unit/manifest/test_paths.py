"""model.path and sample paths must stay inside the manifest's directory, also
when a symbolic link points out of it (the `..` rule must not be bypassed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kit.manifest.load import collect_problems

MANIFEST = """apiVersion: kit/v1
kind: Model
metadata: {{name: links}}
model: {{path: {model}}}
target: {{device: cpu}}
optimize:
  precision: native
  batch_sizes: [1]
  parity: {{samples: {samples}}}
image: {{repository: kit/links}}
"""


def _saved_model(where: Path) -> Path:
    where.mkdir(parents=True)
    (where / "saved_model.pb").write_bytes(b"")
    return where


@pytest.fixture
def layout(tmp_path):
    project, outside = tmp_path / "project", tmp_path / "outside"
    project.mkdir()
    _saved_model(outside / "model")
    np.save(outside / "parity.npy", np.zeros((1, 2), np.float32))
    return project, outside


def _problems(project: Path, model: str, samples: str = "null", check_files: bool = True):
    manifest = project / "kit.yaml"
    manifest.write_text(MANIFEST.format(model=model, samples=samples))
    return collect_problems(manifest, check_files=check_files)


def test_model_path_symlink_out_of_the_directory_is_refused(layout):
    project, outside = layout
    (project / "model").symlink_to(outside / "model")
    problems = _problems(project, "./model")
    assert [p.where for p in problems] == ["model -> path"]
    assert "symbolic link out of the manifest's directory" in problems[0].message
    assert str((outside / "model").resolve()) in problems[0].message
    assert "absolute path" in problems[0].fix


def test_symlinked_parent_directory_is_refused_too(layout):
    project, outside = layout
    (project / "models").symlink_to(outside)
    problems = _problems(project, "models/model")
    assert [p.where for p in problems] == ["model -> path"]


def test_sample_symlink_out_of_the_directory_is_refused(layout):
    project, outside = layout
    _saved_model(project / "model")
    (project / "parity.npy").symlink_to(outside / "parity.npy")
    problems = _problems(project, "./model", "./parity.npy")
    assert [p.where for p in problems] == ["optimize -> parity -> samples"]
    assert "symbolic link" in problems[0].message


def test_symlink_inside_the_directory_and_absolute_paths_are_fine(layout):
    project, outside = layout
    _saved_model(project / "real-model")
    (project / "model").symlink_to(project / "real-model")
    assert _problems(project, "./model") == []
    assert _problems(project, str(outside / "model")) == []


def test_without_file_checks_links_are_not_followed(layout):
    project, outside = layout
    (project / "model").symlink_to(outside / "model")
    assert _problems(project, "./model", check_files=False) == []
