"""Loading manifests into frozen dataclasses: defaults resolved, paths made
absolute, every problem collected, and clean ManifestErrors for bad files."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from _digits import trained_digits_example
from kit.errors import EXIT_INVALID, ManifestError
from kit.manifest.load import (FleetManifest, ModelManifest, Optimize, Parity, Rollout, Serve, TensorSpec, collect_problems,
                          inspect, load_any, load_fleet, load_model)
from kit.profiles import CPU_STACK, JETPACK_441

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "manifests"
VALID = FIXTURES / "valid"
INVALID = FIXTURES / "invalid"
GiB = 1024**3


def test_minimal_model_resolves_every_default():
    m = load_model(VALID / "minimal-model.yaml", check_files=False)
    assert isinstance(m, ModelManifest)
    assert m.file == VALID / "minimal-model.yaml" and m.file.is_absolute()
    assert m.name == "minimal" and m.version == "0.1.0"
    assert m.model.path == VALID / "model"
    assert m.model.signature == "serving_default" and m.model.inputs == {}
    assert (m.target.device, m.target.jetpack, m.target.base_image) == ("cpu", None, None)
    o = m.optimize
    assert o.precision == "native"
    assert o.batch_sizes == (1, 4, 8)  # sorted tuple
    assert o.max_workspace_size == GiB and o.memory_limit == 2 * GiB
    assert o.minimum_segment_size == 3
    assert o.maximum_cached_engines == 3  # default: one per batch size
    assert o.allow_native_fallback is False
    assert o.calibration_samples is None
    assert o.parity == Parity(samples=None, max_abs_error=0.05, min_top1_agreement=0.99)
    assert m.serve == Serve(model_name="minimal", warmup=True, warmup_samples=None, port=8501, grpc_port=8500,
                            max_batch_delay=0.002, max_queue=64)
    assert m.image.repository == "kit/minimal" and m.image.tag is None
    assert m.stack == CPU_STACK and m.base_image == CPU_STACK.base_image
    assert m.tag == "0.1.0-cpu-native" and m.image_ref == "kit/minimal:0.1.0-cpu-native"


def test_minimal_jetson_model():
    m = load_model(VALID / "minimal-jetson.yaml", check_files=False)
    assert m.target.jetpack == "4.4.1" and m.stack == JETPACK_441
    assert m.base_image == "nvcr.io/nvidia/l4t-tensorflow:r32.4.4-tf2.3-py3"
    assert m.model.path == VALID / "models" / "nano"
    assert m.optimize.maximum_cached_engines == 1
    assert m.image_ref == "registry.example.com/minimal-nano:0.1.0-r32.4.4-fp16"


def test_full_model_keeps_every_value():
    m = load_model(VALID / "full-model.yaml", check_files=False)
    assert m.version == "2.1.0-rc1"
    assert m.model.path == Path("/opt/models/full/1")
    assert m.model.signature == "classify"
    assert m.model.inputs == {"image": TensorSpec((224, 224, 3), "uint8"), "mask": TensorSpec((None, 4), "bool")}
    assert m.target.base_image == m.base_image == "nvcr.io/nvidia/l4t-tensorflow:r32.4.4-tf2.3-py3"
    o = m.optimize
    assert o.batch_sizes == (1, 4, 16)
    assert o.max_workspace_size == 1536 * 1024**2 and o.memory_limit == 8 * 1000**3
    assert (o.minimum_segment_size, o.maximum_cached_engines, o.allow_native_fallback) == (5, 4, True)
    assert o.calibration_samples == VALID / "calib" / "samples.npz"
    assert o.parity == Parity(VALID / "parity.npy", 0.2, 0.95)
    assert m.tag == "custom-tag_1.0" and m.image_ref == "localhost:5000/vision/full:custom-tag_1.0"
    assert m.serve == Serve(model_name=m.name, port=9000, max_batch_delay=0.0015, max_queue=256)


def test_json_manifest():
    m = load_any(VALID / "model.json", check_files=False)
    assert m.name == "from-json" and m.version == "3"
    assert m.optimize.max_workspace_size == 268435456 and m.optimize.memory_limit == 4 * GiB
    assert m.serve.max_batch_delay == pytest.approx(0.01)


def test_fleets():
    f = load_fleet(VALID / "fleet-full.yaml")
    assert isinstance(f, FleetManifest) and f.name == "warehouse-east"
    assert f.image.endswith("@sha256:" + "0123456789abcdef" * 4)
    assert [(d.name, d.port) for d in f.devices] == [("nx-01", 8501), ("nx-02", 8502), ("nx-03", None)]
    assert f.devices[0].labels == {"site": "east", "rack": "3"} and f.devices[2].labels == {}
    assert f.rollout == Rollout(canary=2, max_parallel=1, health_timeout=300.0, on_failure="halt")
    minimal = load_any(VALID / "fleet-minimal.yaml")
    assert minimal.rollout == Rollout() and minimal.devices[0].host.startswith("unix://")


def test_anchors_and_merge_keys_load():
    f = load_fleet(VALID / "fleet-anchors.yaml")
    assert [(d.name, d.device, d.labels) for d in f.devices] == [
        ("nano-01", "jetson-nano", {"site": "dock-a"}), ("nano-02", "jetson-nano", {"site": "dock-a"})]


def test_manifests_are_frozen():
    m = load_model(VALID / "minimal-model.yaml", check_files=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.name = "other"  # type: ignore[misc]
    assert isinstance(m.optimize, Optimize)


@pytest.mark.tf
def test_file_checks_pass_on_a_real_saved_model(tmp_path_factory):
    example = trained_digits_example(tmp_path_factory)
    m = load_model(example / "digits.yaml")  # check_files=True
    assert m.model.path == example / "digits" / "saved_model"
    assert (m.model.path / "saved_model.pb").is_file()
    assert m.optimize.parity.samples == example / "digits" / "parity.npy"
    assert m.model.inputs == {"pixels": TensorSpec((8, 8, 1), "float32")}


@pytest.mark.tf
def test_tf_serving_layout_suggests_the_version_directory(tmp_path_factory, tmp_path):
    example = trained_digits_example(tmp_path_factory)
    shutil.copytree(example / "digits" / "saved_model", tmp_path / "digits" / "7")
    manifest = tmp_path / "kit.yaml"
    manifest.write_text((example / "digits.yaml").read_text().replace("./digits/saved_model", "./digits")
                        .replace("    samples: ./digits/parity.npy\n", "    samples: null\n"))
    [p] = collect_problems(manifest)
    assert p.where == "model -> path" and "no saved_model.pb" in p.message
    assert p.fix == "did you mean ./digits/7? (it holds saved_model.pb)"


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    text = (VALID / "minimal-jetson.yaml").read_text()
    text = text.replace("precision: fp16", "precision: int8")  # semantic: no int8 on a Nano
    text = text.replace("name: minimal-nano", "name: Minimal_Nano")  # schema: pattern
    text = text.replace("batch_sizes: [4]", "batch_sizes: [4, 4]")  # schema: unique
    text += "serve:\n  port: 0\n  max_queu: 3\n"  # schema: minimum; misspelt key
    path = tmp_path / "many.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as info:
        load_model(path, check_files=False)
    e = info.value
    assert e.exit_code == EXIT_INVALID
    assert [p.where for p in e.problems] == [
        "metadata -> name", "optimize -> precision", "optimize -> batch_sizes", "serve -> port",
        "serve -> max_queu"]
    assert "5 problems" in e.message
    assert any("did you mean 'max_queue'?" in line for line in e.details)
    assert any("no INT8 support" in line for line in e.details)


def test_semantic_checks_wait_for_the_schema(tmp_path):
    """Checks reading a field the schema rejected stay quiet (and cannot crash on its value):
    no "int8 on ..." for an unknown device, no workspace-vs-limit sum with an unreadable size."""
    path = tmp_path / "m.yaml"
    path.write_text((VALID / "minimal-jetson.yaml").read_text()
                    .replace("device: jetson-nano", "device: jetson-nanoo")
                    .replace("precision: fp16", "precision: int8\n  memory_limit: lots\n  max_workspace_size: 8GiB"))
    problems = collect_problems(path, check_files=False)
    assert [p.where for p in problems] == ["target -> device", "optimize -> memory_limit"]


def test_relative_paths_inside_the_directory_are_fine(tmp_path):
    path = tmp_path / "m.yaml"
    base = (VALID / "minimal-model.yaml").read_text()
    path.write_text(base.replace("path: ./model", "path: sub/../model"))
    assert load_model(path, check_files=False).model.path == tmp_path / "model"
    path.write_text(base.replace("path: ./model", "path: ~/models/x"))
    assert load_model(path, check_files=False).model.path == Path(os.path.expanduser("~/models/x"))
    path.write_text(base.replace("path: ./model", "path: ./a/../../model"))
    [p] = collect_problems(path, check_files=False)
    assert "leaves the manifest's directory" in p.message


def test_kind_mismatch_is_one_plain_problem():
    with pytest.raises(ManifestError) as info:
        load_model(VALID / "fleet-minimal.yaml")
    [p] = info.value.problems
    assert p.message == "expected a Model manifest, this file is a Fleet manifest"
    with pytest.raises(ManifestError) as info:
        load_fleet(VALID / "minimal-model.yaml")
    assert info.value.problems[0].message == "expected a Fleet manifest, this file is a Model manifest"


def test_lowercase_kind_gets_a_suggestion(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text((VALID / "minimal-model.yaml").read_text().replace("kind: Model", "kind: model"))
    [p] = collect_problems(path, check_files=False)
    assert p.where == "kind" and p.fix.startswith("did you mean 'Model'?")


def test_missing_file(tmp_path):
    with pytest.raises(ManifestError) as info:
        load_any(tmp_path / "nope.yaml")
    assert "no such file" in info.value.message and info.value.hint
    assert info.value.exit_code == EXIT_INVALID


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ManifestError) as info:
        load_model(tmp_path)
    assert "is a directory" in info.value.message
    (tmp_path / "kit.yaml").write_text("x: 1\n")
    with pytest.raises(ManifestError) as info:
        load_model(tmp_path)
    assert info.value.hint == f"did you mean {tmp_path / 'kit.yaml'}?"


def test_oversized_file(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (2 << 20) + "\n")
    [p] = collect_problems(path)
    assert "a manifest is at most" in p.message


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + (VALID / "minimal-model.yaml").read_bytes())
    assert load_model(path, check_files=False).name == "minimal"


def test_inspection_never_raises_and_names_the_kind():
    i = inspect(INVALID / "int8-on-nano.yaml", check_files=False)
    assert (i.kind, i.name, i.manifest) == ("Model", "broken", None)
    assert len(i.problems) == 1
    i = inspect(INVALID / "binary-garbage.yaml")
    assert (i.kind, i.name) == (None, None) and i.problems


def test_problem_serialisation():
    [p] = collect_problems(INVALID / "unknown-device.yaml", check_files=False)
    d = p.to_dict()
    assert d == {"path": "target -> device", "message": 'unknown device profile "jetson-nan"', "found": '"jetson-nan"',
                 "fix": d["fix"], "line": 10, "column": 3}
    assert p.lines()[0] == 'target -> device (line 10): unknown device profile "jetson-nan"'


def test_twin_stack_on_the_cpu_profile():
    from kit.profiles import TWIN_STACK

    m = load_model(VALID / "twin-model.yaml", check_files=False)
    assert m.target.stack == "twin" and m.stack == TWIN_STACK
    assert (m.stack.python, m.stack.tensorflow, m.stack.tensorrt) == ("3.6", "2.3.1", None)
    assert m.base_image == "kit/tf-cpu-base:tf2.3.1-py3.6"
    assert m.tag == "0.1.0-twin-native"  # never the cpu stack's tag: both can live in one repository
    plain = load_model(VALID / "minimal-model.yaml", check_files=False)
    assert plain.target.stack is None and plain.stack == CPU_STACK and plain.tag.endswith("-cpu-native")


def _with_serve(tmp_path: Path, serve: str) -> Path:
    text = (VALID / "minimal-model.yaml").read_text()
    path = tmp_path / "kit.yaml"
    path.write_text(text.rstrip("\n") + "\nserve: " + serve + "\n")
    return path


def test_serve_model_name_takes_tf_servings_characters(tmp_path):
    m = load_model(_with_serve(tmp_path, "{model_name: half_plus_two}"), check_files=False)
    assert m.serve.model_name == "half_plus_two" and m.name == "minimal"
    for bad in ("'half plus two'", "'-x'", "'a/b'", "'a:b'", "''"):
        problems = collect_problems(_with_serve(tmp_path, "{model_name: %s}" % bad), check_files=False)
        assert any(p.path == ("serve", "model_name") for p in problems), (bad, problems)


def test_serve_warmup_off_or_samples(tmp_path):
    m = load_model(_with_serve(tmp_path, "{warmup: false}"), check_files=False)
    assert m.serve.warmup is False and m.serve.warmup_samples is None
    (tmp_path / "warm.npz").write_bytes(b"x")
    m = load_model(_with_serve(tmp_path, "{warmup: ./warm.npz}"), check_files=False)
    assert m.serve.warmup is True and m.serve.warmup_samples == tmp_path / "warm.npz"
    for bad, words in (("./missing.npz", "not found"), ("./warm.txt", ".npy file"), ("../up.npz", "leaves")):
        problems = collect_problems(_with_serve(tmp_path, "{warmup: %s}" % bad), check_files=True)
        assert any(p.path == ("serve", "warmup") and words in p.message for p in problems), (bad, problems)
    problems = collect_problems(_with_serve(tmp_path, "{warmup: 3}"), check_files=False)
    assert any(p.path == ("serve", "warmup") for p in problems)
