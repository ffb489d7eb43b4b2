"""`kit init` on the bundled example's SavedModel (trained by its own train.py), then
`kit validate` and `kit build` of exactly what init wrote (cpu profile, real engine)."""

from __future__ import annotations

import json
import uuid

import pytest

from test_build import kit, record_of, statuses, trained_example

pytestmark = pytest.mark.docker


def test_init_output_validates_and_builds(engine, tf_base, tmp_path):
    name = f"kit-test-nano-init-{uuid.uuid4().hex[:8]}"
    model = trained_example(tmp_path, epochs=2) / "saved_model"
    proc = kit("init", model, "--device", "cpu", "--name", name, "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = model.parent / "kit.yaml"
    assert json.loads(proc.stdout)["inputs"] == {"pixels": {"shape": [8, 8, 1], "dtype": "float32"}}
    assert kit("validate", manifest).returncode == 0
    record = record_of(kit("build", manifest, "--json"))
    try:
        assert record["image"] == f"registry.example.com/{name}:0.1.0-cpu-native"
        assert set(statuses(record).values()) <= {"ran", "reused"}, statuses(record)
        assert statuses(record)["smoke"] == "ran"
        assert engine.image_inspect(record["image"]).labels["kit.device"] == "cpu"
    finally:
        engine.remove_image(record["image"], force=True)
    again = kit("init", model, "--device", "cpu")
    assert again.returncode == 2 and "already exists" in again.stderr
