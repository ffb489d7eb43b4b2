"""testkit.manifests: what it writes is a manifest kit's own loader accepts, with the overrides applied."""

from __future__ import annotations

import copy

import pytest
import yaml

from kit.errors import ManifestError
from kit.manifest.load import load_model
from testkit import manifests


def test_the_minimal_manifest_loads_as_a_cpu_native_model(tmp_path):
    m = load_model(manifests.write_model(tmp_path), check_files=False)
    assert (m.name, m.target.device, m.optimize.precision, m.optimize.batch_sizes) == ("model", "cpu", "native", (1,))
    assert m.file == tmp_path / "kit.yaml"


def test_overrides_merge_into_sections_and_none_removes_a_key(tmp_path):
    path = manifests.write_model(tmp_path / "m.yaml", optimize={"batch_sizes": [8, 1]}, serve={"port": 9001})
    m = load_model(path, check_files=False)
    assert m.optimize.precision == "native"  # kept: the optimize section merged, not replaced
    assert sorted(m.optimize.batch_sizes) == [1, 8] and m.serve.port == 9001
    with pytest.raises(ManifestError) as e:
        load_model(manifests.write_model(tmp_path / "no-image.yaml", image=None), check_files=False)
    assert "image" in str(e.value)


def test_the_nano_preset_is_a_jetson_nano_fp16_target(tmp_path):
    m = load_model(manifests.write_model(tmp_path, manifests.model_doc(**manifests.NANO)), check_files=False)
    assert (m.target.device, m.target.jetpack, m.optimize.precision) == ("jetson-nano", "4.4.1", "fp16")


def test_the_digits_example_is_the_bundled_manifest_with_the_overrides(tmp_path):
    as_shipped = yaml.safe_load(manifests.DIGITS_EXAMPLE.read_text())
    assert manifests.digits_example() == as_shipped
    doc = manifests.digits_example(metadata={"version": "0.2.0"}, optimize={"parity": None})
    assert doc["metadata"] == {"name": "digits", "version": "0.2.0"} and "parity" not in doc["optimize"]
    m = load_model(manifests.write_model(tmp_path, doc), check_files=False)
    assert (m.name, m.version) == ("digits", "0.2.0")


def test_merging_never_changes_the_base():
    before = copy.deepcopy(manifests.MINIMAL)
    doc = manifests.model_doc(metadata={"name": "other"}, optimize={"batch_sizes": [4]})
    doc["model"]["path"] = "./changed"
    assert manifests.MINIMAL == before and doc["metadata"]["name"] == "other"
