"""The `.kit/` workspace: one layout for kit build and kit optimize --local, found by kit bench."""

from __future__ import annotations

from pathlib import Path

import pytest

from kit.build.workspace import OptimizeOutput, Workspace, replace_dir
from kit.errors import KitError
from kit.manifest.load import ImageSpec, ModelManifest, ModelSource, Optimize, Serve, Target
from kit.serve.bench import optimized_model_dir


def manifest(tmp_path: Path) -> ModelManifest:
    return ModelManifest(
        file=tmp_path / "kit.yaml", name="m", version="1.0.0", model=ModelSource(path=tmp_path / "model"),
        target=Target(device="cpu"), optimize=Optimize(precision="native", batch_sizes=(1, 8)),
        image=ImageSpec(repository="example.com/m"), serve=Serve(),
    )


def saved_model(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"\x08\x01")
    return path


def test_the_layout(tmp_path):
    ws = Workspace.for_manifest(manifest(tmp_path))
    assert ws.work == tmp_path / ".kit" / "m"
    assert (ws.record.name, ws.spec.name, ws.reference.name) == ("build.json", "spec.json", "smoke-reference.json")
    out = ws.optimize
    assert out.dir == ws.work / "optimize" and out.model == out.dir / "model"
    assert (out.report, out.log, out.stamp) == (out.dir / "report.json", out.dir / "optimize.log",
                                                out.dir / "kit-step.json")
    assert ws.optimize_partial.dir.name == "optimize.partial" and ws.optimize_failed.dir.name == "optimize.failed"
    assert out.where == [f"report: {out.report}", f"log:    {out.log}"]


def test_an_explicit_output_keeps_its_files_beside_it(tmp_path):
    out = OptimizeOutput.beside(tmp_path / "x" / "opt")
    assert out.model == tmp_path / "x" / "opt"
    assert (out.report, out.log) == (tmp_path / "x" / "opt.report.json", tmp_path / "x" / "opt.log")


def test_bench_finds_the_optimized_model_in_either_layout(tmp_path):
    m = manifest(tmp_path)
    ws = Workspace.for_manifest(m)
    assert optimized_model_dir(m) is None
    legacy = saved_model(ws.legacy_optimized)  # kit optimize --local before the layouts were one
    assert optimized_model_dir(m) == legacy
    current = saved_model(ws.optimize.model)  # kit build, kit optimize --local now
    assert optimized_model_dir(m) == current  # the current layout wins
    (current / "saved_model.pb").unlink()  # a directory without a SavedModel is not one
    assert optimized_model_dir(m) == legacy


def test_one_writer_at_a_time(tmp_path):
    ws = Workspace.for_manifest(manifest(tmp_path))
    with ws.lock():
        with pytest.raises(KitError, match="another kit build or kit optimize is using"):
            with ws.lock():
                pass
    with ws.lock():  # released
        pass


def test_replace_dir_replaces(tmp_path):
    src, dest = tmp_path / "a", tmp_path / "b"
    src.mkdir()
    (src / "new").write_text("1")
    dest.mkdir()
    (dest / "old").write_text("0")
    replace_dir(src, dest)
    assert not src.exists() and [p.name for p in dest.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no .old-* left
