"""`kit validate`: the examples validate, output lists every problem with its
fix, --json is machine-readable, exit codes are 0 / 2, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from _digits import trained_digits_example
from kit.cli import main
from kit.manifest.validate import validate_files

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "manifests" / "examples"
FIXTURES = ROOT / "tests" / "fixtures" / "manifests"
EXAMPLE_FILES = ["digits.yaml", "resnet50-nano.yaml", "int8-xavier-nx.yaml", "fleet.yaml"]


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out, captured.err


def test_examples_exist():
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(EXAMPLE_FILES)


def test_every_example_validates_without_file_checks(capsys):
    code, out, _ = run(capsys, "validate", "--no-file-checks", *[EXAMPLES / f for f in EXAMPLE_FILES])
    assert code == 0, out
    assert out.count("OK  ") == 4 and "4 valid, 0 invalid" in out
    assert "Model digits" in out and "Fleet warehouse" in out
    assert "-> 127.0.0.1:5000/kit/digits:0.1.0-cpu-native" in out
    assert "jetson-nano (JetPack 4.4.1), fp16, batch sizes 2, workspace 1.0 GiB < memory limit 2.0 GiB" in out


@pytest.mark.tf
def test_digits_example_validates_with_file_checks(tmp_path_factory, capsys):
    """The trainer made the SavedModel and parity samples the manifest points at."""
    example = trained_digits_example(tmp_path_factory)
    code, out, _ = run(capsys, "validate", example / "digits.yaml")
    assert code == 0, out
    assert out.startswith("OK  ")


def test_digits_example_without_its_model_fails_file_checks(tmp_path, capsys):
    (tmp_path / "digits.yaml").write_text((EXAMPLES / "digits.yaml").read_text())
    code, out, _ = run(capsys, "validate", tmp_path / "digits.yaml")
    assert code == 2
    assert "SavedModel directory not found" in out and "parity samples file not found" in out
    assert "fix: export the model there" in out


def test_example_values_match_the_brief():
    digits, nano, nx, fleet = (r.manifest for r in validate_files([EXAMPLES / f for f in EXAMPLE_FILES], False))
    assert (digits.target.device, digits.optimize.precision, digits.optimize.batch_sizes) == ("cpu", "native", (1, 8))
    assert digits.model.path == EXAMPLES / "digits" / "saved_model" and digits.model.signature == "serving_default"
    assert digits.model.inputs["pixels"].shape == (8, 8, 1) and digits.model.inputs["pixels"].dtype == "float32"
    assert digits.optimize.parity.samples == EXAMPLES / "digits" / "parity.npy"
    assert digits.image.repository == "127.0.0.1:5000/kit/digits" and digits.serve.port == 8501
    assert (nano.target.device, nano.target.jetpack, nano.optimize.precision) == ("jetson-nano", "4.4.1", "fp16")
    assert nano.optimize.batch_sizes == (2,)
    assert (nano.optimize.max_workspace_size, nano.optimize.memory_limit) == (1 << 30, 2 << 30)
    assert (nx.target.device, nx.optimize.precision) == ("jetson-xavier-nx", "int8")
    assert nx.optimize.calibration_samples == EXAMPLES / "calibration.npy"
    assert len(fleet.devices) == 3 and fleet.image == nano.image_ref


def test_mixed_files_list_each_and_exit_2(capsys):
    code, out, _ = run(capsys, "validate", "--no-file-checks", EXAMPLES / "digits.yaml",
                       FIXTURES / "invalid" / "int8-on-nano.yaml", FIXTURES / "invalid" / "empty.yaml")
    assert code == 2
    assert "OK  " in out and out.count("INVALID  ") == 2
    assert "1 valid, 2 invalid" in out
    assert "fix: use fp16 on jetson-nano" in out


def test_json_output(capsys):
    code, out, _ = run(capsys, "validate", "--no-file-checks", "--json", EXAMPLES / "fleet.yaml",
                       FIXTURES / "invalid" / "workspace-ge-memory-limit.yaml")
    assert code == 2
    ok, bad = json.loads(out)
    assert {k: ok[k] for k in ("kind", "name", "valid", "problems")} == {
        "kind": "Fleet", "name": "warehouse", "valid": True, "problems": []}
    assert ok["file"].endswith("manifests/examples/fleet.yaml")
    assert (bad["kind"], bad["name"], bad["valid"]) == ("Model", "broken", False)
    [p] = bad["problems"]
    assert set(p) == {"path", "message", "found", "fix", "line", "column"}
    assert p["path"] == "optimize -> max_workspace_size" and p["found"] == '"2GiB"'
    assert "silently" in p["message"] and p["fix"].startswith("make max_workspace_size smaller")


def test_json_output_all_valid_exits_0(capsys):
    code, out, _ = run(capsys, "validate", "--json", FIXTURES / "valid" / "fleet-minimal.yaml")
    assert code == 0 and json.loads(out)[0]["valid"] is True


def test_missing_file_and_directory(tmp_path, capsys):
    code, out, _ = run(capsys, "validate", tmp_path / "nope.yaml", tmp_path)
    assert code == 2
    assert "no such file" in out and "is a directory, not a manifest file" in out


def test_no_arguments_is_a_usage_error(capsys):
    code, out, err = run(capsys, "validate")
    assert code == 2
    assert "Missing argument" in out + err


def test_user_text_is_not_read_as_markup(tmp_path, capsys):
    path = tmp_path / "m.yaml"
    path.write_text((FIXTURES / "valid" / "minimal-model.yaml").read_text()
                    .replace("name: minimal", 'name: "[bold red]x[/]"'))
    code, out, _ = run(capsys, "validate", "--no-file-checks", path)
    assert code == 2
    assert '"[bold red]x[/]" is not a valid name' in out


def test_console_script_in_a_subprocess():
    kit = Path(sys.executable).with_name("kit")
    proc = subprocess.run([str(kit), "validate", "--no-file-checks", *[EXAMPLES / f for f in EXAMPLE_FILES]],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("OK  ") == 4
    proc = subprocess.run([str(kit), "validate", "--json", str(FIXTURES / "invalid" / "not-a-mapping.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and json.loads(proc.stdout)[0]["valid"] is False


@pytest.mark.parametrize("name", ["binary-garbage.yaml", "deep-nesting.yaml"])
def test_python_m_kit_cli(name):
    """Same through `python -m kit.cli` (no console script)."""
    proc = subprocess.run([sys.executable, "-m", "kit.cli", "validate", str(FIXTURES / "invalid" / name)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr


def test_hostile_text_is_shown_not_obeyed(tmp_path, capsys):
    """Control characters, lone surrogates (JSON escapes), NUL in paths and malformed hosts
    are reported as text; printing them cannot fail or drive the terminal."""
    model = tmp_path / "m.json"
    model.write_text(json.dumps({
        "apiVersion": "kit/v1", "kind": "Model", "metadata": {"name": "x"}, "model": {"path": "./a\u0000b"},
        "target": {"device": "cpu"}, "optimize": {"precision": "native", "batch_sizes": [1]},
        "image": {"repository": "a/b"}, "\ud800": 1, "k\u001b[31m": 2}, ensure_ascii=True))
    fleet = tmp_path / "f.yaml"
    fleet.write_text("apiVersion: kit/v1\nkind: Fleet\nmetadata: {name: f}\nimage: a/b:1\ndevices:\n"
                     '- {name: a, host: "ssh://[::1", device: cpu}\n- {name: b, host: "ssh://[::1", device: cpu}\n')
    code, out, err = run(capsys, "validate", model, fleet)
    assert code == 2
    assert "internal error" not in out + err
    assert "unknown field '\\ud800'" in out
    assert "unknown field 'k\\x1b[31m'" in out and "\x1b" not in out
    assert "SavedModel directory not found" in out and "a\\x00b" in out
    assert "devices 'a' and 'b' are both on docker host ssh://[::1 with port 8501" in out
