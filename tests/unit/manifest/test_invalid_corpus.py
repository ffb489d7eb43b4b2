"""The invalid-manifest corpus: every file under tests/fixtures/manifests/invalid/
goes through the real CLI (`kit validate`) and must exit 2 with the specific
problem at the specific path, and never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kit.cli import main
from kit.errors import ManifestError
from kit.manifest.load import collect_problems, load_any

INVALID = Path(__file__).resolve().parents[2] / "fixtures" / "manifests" / "invalid"
TOP = "(top level)"

# file -> (path of the problem, fragment of its message, fragment of its fix or None, needs file checks)
EXPECTED = {
    # reading the file, YAML and JSON
    "empty.yaml": (TOP, "the file is empty", "manifests/examples/digits.yaml", False),
    "only-comments.yaml": (TOP, "the file is empty", None, False),
    "binary-garbage.yaml": (TOP, "the file is binary", None, False),
    "not-utf8.yaml": (TOP, "not UTF-8 text", "UTF-8", False),
    "utf16-text.yaml": (TOP, "the file is UTF-16 text", "save the manifest as UTF-8", False),
    "integer-5000-digits.yaml": (TOP, "the number at optimize -> batch_sizes -> 0 has 5000 digits", "ordinary number", False),
    "not-a-mapping.yaml": (TOP, "top level must be a mapping of fields", None, False),
    "scalar-document.yaml": (TOP, "found the single value", None, False),
    "yaml-syntax-error.yaml": (TOP, "YAML syntax error at line 14, column 15", "indentation", False),
    "yaml-tab-indent.yaml": (TOP, "YAML syntax error at line 13", "tabs", False),
    "yaml-unclosed-quote.yaml": (TOP, "YAML syntax error", "unclosed quote", False),
    "yaml-unclosed-bracket.yaml": (TOP, "while parsing a flow sequence", None, False),
    "yaml-two-documents.yaml": (TOP, "expected a single document", "one YAML document", False),
    "yaml-undefined-alias.yaml": (TOP, "found undefined alias 'sizes'", "define the anchor", False),
    "yaml-python-tag.yaml": (TOP, "could not determine a constructor", "remove the YAML tag", False),
    "anchor-bomb.yaml": (TOP, "expands to more than", "anchors", False),
    "deep-nesting.yaml": (TOP, "nested more than", None, False),
    "duplicate-key.yaml": ("optimize -> precision", "duplicate key 'precision' (first written at line 13)", "keep only one", False),
    "non-string-key.yaml": ("optimize -> 1", "key '1' is not a string", 'quote the key: "1"', False),
    "json-syntax-error.json": (TOP, "JSON syntax error at line 4, column 33", None, False),
    "json-duplicate-key.json": (TOP, "duplicate key 'name'", "keep only one", False),
    # schema: names, kinds, structure
    "misspelt-key-precison.yaml": ("optimize -> precison", "unknown field 'precison'", "did you mean 'precision'?", False),
    "misspelt-section-optimise.yaml": ("optimise", "unknown field 'optimise'", "did you mean 'optimize'?", False),
    "key-in-wrong-section.yaml": ("target -> precision", "unknown field 'precision'", "belongs under optimize", False),
    "missing-api-version.yaml": ("apiVersion", "missing required field 'apiVersion'", "apiVersion: kit/v1", False),
    "wrong-api-version.yaml": ("apiVersion", "apiVersion must be kit/v1", None, False),
    "missing-kind.yaml": ("kind", "missing required field 'kind'", "kind: Model", False),
    "unknown-kind.yaml": ("kind", "kind must be Model or Fleet", None, False),
    "missing-metadata-name.yaml": ("metadata -> name", "missing required field 'name'", None, False),
    "name-uppercase.yaml": ("metadata -> name", '"ResNet50" is not a valid name', "lowercase", False),
    "version-unquoted-float.yaml": ("metadata -> version", "version must be a string, found a number", 'quote it: version: "1.0"', False),
    "missing-model-path.yaml": ("model -> path", "missing required field 'path'", None, False),
    "missing-target-device.yaml": ("target -> device", "missing required field 'device'", None, False),
    "unknown-device.yaml": ("target -> device", 'unknown device profile "jetson-nan"', "did you mean 'jetson-nano'?", False),
    "unknown-jetpack.yaml": ("target -> jetpack", 'JetPack "4.6" is not a pinned stack', "4.4.1", False),
    "jetpack-unquoted-number.yaml": ("target -> jetpack", "JetPack 4.4 is not a pinned stack", "quote it", False),
    "unknown-precision-fp61.yaml": ("optimize -> precision", '"fp61" is not a valid precision', "did you mean 'fp16'?", False),
    "missing-precision.yaml": ("optimize -> precision", "missing required field 'precision'", "precision: fp16", False),
    "missing-batch-sizes.yaml": ("optimize -> batch_sizes", "missing required field 'batch_sizes'", None, False),
    "batch-sizes-empty.yaml": ("optimize -> batch_sizes", "no batch sizes", "at least one", False),
    "batch-sizes-duplicated.yaml": ("optimize -> batch_sizes", "lists 8 more than once", "once", False),
    "batch-size-zero.yaml": ("optimize -> batch_sizes -> 0", "a batch size must be at least 1", None, False),
    "batch-size-negative.yaml": ("optimize -> batch_sizes -> 1", "a batch size must be at least 1", None, False),
    "batch-sizes-not-a-list.yaml": ("optimize -> batch_sizes", "batch_sizes must be a list, found a whole number", "write a list", False),
    "batch-size-string.yaml": ("optimize -> batch_sizes -> 1", "must be a whole number, found a string", "without quotes", False),
    "size-bad-unit.yaml": ("optimize -> memory_limit", "memory_limit is not a size", "1GiB", False),
    "size-negative.yaml": ("optimize -> max_workspace_size", "must be a positive size", None, False),
    "duration-bad.yaml": ("serve -> max_batch_delay", "max_batch_delay is not a duration", "2ms", False),
    "port-out-of-range.yaml": ("serve -> port", "port must be at most 65535", None, False),
    "grpc-port-same-as-port.yaml": ("serve -> grpc_port", "serve.grpc_port and serve.port are both 8500", "0 to turn gRPC off", False),
    "serve-max-body-above-buffered.yaml": ("serve -> max_buffered", "smaller than serve.max_body (512.0 MiB)",
                                           "raise max_buffered to at least max_body", False),
    "serve-header-bytes-too-large.yaml": ("serve -> max_header_bytes", "it must be 1KiB to 1MiB", "default 64KiB", False),
    "serve-body-timeout-zero.yaml": ("serve -> body_timeout", "serve.body_timeout is 0 s: it must be 1s to 1h",
                                     "default 60s", False),
    "serve-max-connections-zero.yaml": ("serve -> max_connections", "at least 1", None, False),
    "image-repository-uppercase.yaml": ("image -> repository", "is not a valid image repository", "lowercase", False),
    "image-repository-with-tag.yaml": ("image -> repository", "is not a valid image repository", "image.tag", False),
    "missing-image-repository.yaml": ("image -> repository", "missing required field 'repository'", None, False),
    "section-null.yaml": ("optimize", "optimize is empty", None, False),
    "section-wrong-type.yaml": ("target", "target must be a mapping of fields, found a string", None, False),
    "input-dtype-misspelt.yaml": ("model -> inputs -> input_1 -> dtype", '"float33" is not a valid dtype', "did you mean 'float32'?", False),
    "input-shape-zero.yaml": ("model -> inputs -> input_1 -> shape -> 1", "must be at least 1", None, False),
    "nan-max-abs-error.yaml": ("optimize -> parity -> max_abs_error", "not a finite number", None, False),
    "bool-as-string.yaml": ("optimize -> allow_native_fallback", "must be true or false, found a string", None, False),
    "top1-above-one.yaml": ("optimize -> parity -> min_top1_agreement", "must be at most 1", None, False),
    # semantics: what the schema cannot say
    "int8-on-nano.yaml": ("optimize -> precision", "jetson-nano has no INT8 support", "use fp16", False),
    "int8-without-calibration.yaml": ("optimize -> calibration", "int8 needs calibration samples", "samples:", False),
    "workspace-ge-memory-limit.yaml": ("optimize -> max_workspace_size", "is not below memory_limit", "smaller than memory_limit", False),
    "memory-limit-above-device-ram.yaml": ("optimize -> memory_limit", "more than jetson-nano can give", "at most 3.0 GiB", False),
    "cached-engines-below-batch-sizes.yaml": ("optimize -> maximum_cached_engines", "less than the number of batch sizes (2)", "at least 2", False),
    "jetpack-missing-on-jetson.yaml": ("target -> jetpack", "target.jetpack is required for jetson-nano", 'jetpack: "4.4.1"', False),
    "jetpack-on-cpu.yaml": ("target -> jetpack", "cpu profile has no JetPack", "remove target.jetpack", False),
    "stack-on-jetson.yaml": ("target -> stack", "target.stack applies to the cpu profile only", "remove target.stack", False),
    "stack-unknown.yaml": ("target -> stack", '"jetpack-4.6" is not a valid stack', "cpu, twin", False),
    "fp16-on-cpu.yaml": ("optimize -> precision", "precision must be native", "precision: native", False),
    "model-path-escapes.yaml": ("model -> path", "leaves the manifest's directory", "absolute path", False),
    "calibration-samples-wrong-suffix.yaml": ("optimize -> calibration -> samples", "must be a .npy file", None, False),
    "model-path-missing.yaml": ("model -> path", "SavedModel directory not found", "--no-file-checks", True),
    "model-path-not-saved-model.yaml": ("model -> path", "no saved_model.pb or saved_model.pbtxt", None, True),
    "model-path-is-a-file.yaml": ("model -> path", "is a file, not a SavedModel directory", None, True),
    "parity-samples-missing.yaml": ("optimize -> parity -> samples", "parity samples file not found", None, True),
    # fleets
    "fleet-duplicate-device-names.yaml": ("devices -> 1 -> name", "device name 'nano-01' is used twice", "its own name", False),
    "fleet-same-host-same-port.yaml": ("devices -> 1 -> port", "both on docker host", "port: 8502", False),
    "fleet-unknown-device-profile.yaml": ("devices -> 0 -> device", 'unknown device profile "jetson-orin"', "kit profiles", False),
    "fleet-image-without-tag.yaml": ("image", "has no tag or digest", "repository@sha256", False),
    "fleet-image-bad-digest.yaml": ("image", "is not a valid image reference", "64 hex digits", False),
    "fleet-canary-exceeds-devices.yaml": ("rollout -> canary", "canary is 3 but the fleet has 2 devices", "at most 2", False),
    "fleet-host-bad-scheme.yaml": ("devices -> 1 -> host", "scheme 'http://' is not a docker endpoint", "ssh://", False),
    "fleet-no-devices.yaml": ("devices", "no devices", None, False),
    "fleet-device-missing-host.yaml": ("devices -> 1 -> host", "missing required field 'host'", None, False),
    "fleet-bad-on-failure.yaml": ("rollout -> on_failure", '"retry" is not a valid on_failure', "rollback, halt", False),
}


def test_every_fixture_has_an_expectation_and_vice_versa():
    on_disk = {p.name for p in INVALID.iterdir()}
    assert on_disk == set(EXPECTED)
    assert len(on_disk) >= 40


def _argv(name: str, json_out: bool = False):
    _, _, _, files = EXPECTED[name]
    argv = ["validate", str(INVALID / name)]
    if not files:
        argv.append("--no-file-checks")
    if json_out:
        argv.append("--json")
    return argv


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_kit_validate_reports_the_problem(name, capsys):
    path, message, fix, _ = EXPECTED[name]
    code = main(_argv(name))
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert code == 2, text
    assert "INVALID" in captured.out
    assert message in text
    assert f"{path}" in text
    if fix:
        assert fix in text
    assert "Traceback" not in text
    assert "internal error" not in text


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_json_output_names_the_path(name, capsys):
    path, message, fix, _ = EXPECTED[name]
    code = main(_argv(name, json_out=True))
    captured = capsys.readouterr()
    assert code == 2
    [result] = json.loads(captured.out)
    assert result["valid"] is False
    matching = [p for p in result["problems"] if p["path"] == path and message in p["message"]]
    assert matching, result["problems"]
    if fix:
        assert fix in (matching[0]["fix"] or "")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loader_raises_manifest_error_with_the_problem(name):
    path, message, _, files = EXPECTED[name]
    with pytest.raises(ManifestError) as info:
        load_any(INVALID / name, check_files=files)
    assert any(p.where == path and message in p.message for p in info.value.problems)
    assert collect_problems(INVALID / name, check_files=files)  # the non-raising API agrees


def test_file_checks_can_be_turned_off():
    """The file-dependent fixtures are valid apart from the missing files."""
    for name, (_, _, _, files) in EXPECTED.items():
        if files:
            assert collect_problems(INVALID / name, check_files=False) == [], name


def test_misspelling_is_reported_once_not_also_as_missing():
    problems = collect_problems(INVALID / "misspelt-key-precison.yaml", check_files=False)
    assert [p.where for p in problems] == ["optimize -> precison"]


def test_problems_carry_line_numbers():
    [p] = collect_problems(INVALID / "workspace-ge-memory-limit.yaml", check_files=False)
    assert (p.line, p.column) == (15, 3)
    assert p.found == '"2GiB"'


SUBPROCESS_SAMPLE = ["binary-garbage.yaml", "yaml-syntax-error.yaml", "int8-on-nano.yaml", "anchor-bomb.yaml",
                     "fleet-same-host-same-port.yaml"]


@pytest.mark.parametrize("name", SUBPROCESS_SAMPLE)
def test_installed_kit_command(name):
    """The console script itself, in a fresh process."""
    kit = Path(sys.executable).with_name("kit")
    proc = subprocess.run([str(kit), *_argv(name)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert EXPECTED[name][1] in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
