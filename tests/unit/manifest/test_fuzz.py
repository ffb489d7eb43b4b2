"""Property-based fuzzing: whatever a manifest file holds, loading it gives a
manifest or a ManifestError, never another exception; and rendering the
result never fails either."""

from __future__ import annotations

import copy
import io
import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from kit.errors import ManifestError
from kit.manifest.load import FleetManifest, ModelManifest, load_any
from kit.manifest.validate import validate_file
from kit.cli.views.manifest import render_results

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
VALID = sorted((ROOT / "tests" / "fixtures" / "manifests" / "valid").glob("*"))
KNOWN_KEYS = ["apiVersion", "kind", "metadata", "name", "model", "path", "target", "device", "jetpack", "optimize",
              "precision", "batch_sizes", "max_workspace_size", "memory_limit", "image", "repository", "devices",
              "host", "rollout", "canary", "serve", "port", "parity", "samples", "calibration", "inputs", "shape"]
KNOWN_VALUES = ["kit/v1", "Model", "Fleet", "cpu", "jetson-nano", "4.4.1", "int8", "fp16", "native", "1GiB", "2ms",
                "ssh://h", "ssh://[::1", "tcp://h:99999", "unix://", "a/b:1", "../x", "~", "", "[red]x[/]", "\x00",
                "\x1b[31m", "\ud800", "null", "1e999", "9" * 40 + "GiB"]

SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_TMP = Path(tempfile.mkdtemp(prefix="kit-fuzz-"))

scalars = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | st.sampled_from(KNOWN_VALUES))
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=12), children, max_size=6),
    max_leaves=40,
)


def _check(path: Path, check_files: bool = True):
    """The property: a manifest or a ManifestError; validate_file and rendering never raise."""
    try:
        result = load_any(path, check_files=check_files)
        assert isinstance(result, (ModelManifest, FleetManifest))
    except ManifestError as e:
        assert e.problems and e.exit_code == 2
    r = validate_file(path, check_files)
    render_results([r], Console(file=io.StringIO(), width=80))
    json.dumps(r.to_dict())


def _write(name: str, data) -> Path:
    path = _TMP / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
    return path


@SETTINGS
@given(documents)
def test_random_yaml_documents(doc):
    _check(_write("doc.yaml", yaml.safe_dump(doc, allow_unicode=True)))


@SETTINGS
@given(documents)
def test_random_json_documents(doc):
    _check(_write("doc.json", json.dumps(doc)))  # NaN/Infinity included: not JSON, must be refused cleanly


@SETTINGS
@given(st.text(max_size=300))
def test_random_text(text):
    _check(_write("text.yaml", text.encode("utf-8", "surrogatepass")))


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes(data):
    _check(_write("bytes.yaml", data))
    _check(_write("bytes.json", data))


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _get(node, path):
    for p in path:
        node = node[p]
    return node


def _mutate(doc, data):
    paths = [p for p in _paths(doc) if p]
    op = data.draw(st.sampled_from(["delete", "retype", "insert", "swap", "replace"]))
    path = data.draw(st.sampled_from(paths))
    parent, key = _get(doc, path[:-1]), path[-1]
    if op == "delete":
        del parent[key]
    elif op == "retype":
        value = parent[key]
        parent[key] = data.draw(st.sampled_from([str(value), [value], {"value": value}, None, 7, 2.5, True]))
    elif op == "insert":
        target = parent if isinstance(parent, dict) else doc
        target[data.draw(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8))] = data.draw(scalars)
    elif op == "swap":
        other = data.draw(st.sampled_from(paths))
        other_parent, other_key = _get(doc, other[:-1]), other[-1]
        a, b = copy.deepcopy(parent[key]), copy.deepcopy(other_parent[other_key])
        parent[key] = b
        try:
            other_parent[other_key] = a
        except (IndexError, KeyError, TypeError):  # the swap reshaped the document; keep what was done
            pass
    else:
        parent[key] = data.draw(documents)
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXAMPLES + [p for p in VALID if p.suffix == ".yaml"]), st.integers(1, 3), st.data())
def test_mutated_examples(source, rounds, data):
    doc = yaml.safe_load(source.read_text())
    for _ in range(rounds):
        if not isinstance(doc, (dict, list)) or not doc:
            break
        doc = _mutate(doc, data)
    # Written beside the source's directory layout is irrelevant: file checks run against _TMP.
    _check(_write("mutated.yaml", yaml.safe_dump(doc, allow_unicode=True)), check_files=data.draw(st.booleans()))
