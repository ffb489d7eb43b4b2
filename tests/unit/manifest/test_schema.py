"""The JSON Schemas are the contract: well-formed, documented, strict, and in
sync with the code (units patterns, profiles, dataclass defaults, the copy
shipped in the package)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from kit.manifest import load as km
from kit.profiles import PROFILES, STACKS
from kit.manifest.schema import SCHEMA_DIR, load_schema
from kit.manifest.semantics import schema_default
from kit.units import DURATION_PATTERN, SIZE_PATTERN, parse_duration, parse_size

ROOT = Path(__file__).resolve().parents[3]
KINDS = ("Model", "Fleet")


def _objects(node, path=()):
    """Every object schema (with its path) in a schema document."""
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for k, v in node.items():
            yield from _objects(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _objects(v, path + (i,))


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft_2020_12_with_an_id(kind):
    schema = load_schema(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"urn:kit:schema:v1:{kind.lower()}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_is_described_and_objects_are_closed(kind):
    objects = list(_objects(load_schema(kind)))
    assert len(objects) > 3
    for path, obj in objects:
        if "properties" in obj:
            assert obj.get("additionalProperties") is False, path
            for name, prop in obj["properties"].items():
                assert prop.get("description"), path + (name,)
        else:  # maps (inputs, labels): values are constrained instead
            assert isinstance(obj.get("additionalProperties"), dict), path


def test_required_fields_match_the_contract():
    model = load_schema("Model")
    assert model["required"] == ["apiVersion", "kind", "metadata", "model", "target", "optimize", "image"]
    p = model["properties"]
    assert p["metadata"]["required"] == ["name"]
    assert p["model"]["required"] == ["path"]
    assert p["target"]["required"] == ["device"]
    assert p["optimize"]["required"] == ["precision", "batch_sizes"]
    assert p["image"]["required"] == ["repository"]
    assert p["optimize"]["properties"]["precision"]["enum"] == ["fp32", "fp16", "int8", "native"]
    assert p["metadata"]["properties"]["name"]["pattern"] == "^[a-z0-9][a-z0-9-]{0,62}$"
    fleet = load_schema("Fleet")
    assert fleet["required"] == ["apiVersion", "kind", "metadata", "image", "devices"]
    assert fleet["properties"]["devices"]["items"]["required"] == ["name", "host", "device"]
    assert "rollout" not in fleet["required"]


@pytest.mark.parametrize("kind", KINDS)
def test_size_and_duration_patterns_match_units(kind):
    defs = load_schema(kind)["$defs"]
    if "size" in defs:
        assert defs["size"]["anyOf"][1]["pattern"] == SIZE_PATTERN
    assert defs["duration"]["anyOf"][1]["pattern"] == DURATION_PATTERN


@pytest.mark.parametrize("text", ["1GiB", "512 MiB", "1.5GiB", "10KB", "7", "3TiB", " 2 GB "])
def test_every_size_the_schema_accepts_parses(text):
    assert re.match(SIZE_PATTERN, text)
    assert parse_size(text) > 0


@pytest.mark.parametrize("text", ["2ms", "90s", "2m", "1h", "0.5", "1.5 ms"])
def test_every_duration_the_schema_accepts_parses(text):
    assert re.match(DURATION_PATTERN, text)
    assert parse_duration(text) >= 0


def test_enums_match_profiles_and_stacks():
    model = load_schema("Model")["properties"]
    assert model["target"]["properties"]["device"]["enum"] == list(PROFILES)
    assert model["target"]["properties"]["jetpack"]["enum"] == [*STACKS, None]
    fleet = load_schema("Fleet")["properties"]
    assert fleet["devices"]["items"]["properties"]["device"]["enum"] == list(PROFILES)


def _dataclass_default(cls, name):
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


# (kind, schema path, dataclass, field, how the schema default is resolved)
DEFAULTS = [
    ("Model", ("metadata", "version"), None, None, None),
    ("Model", ("model", "signature"), km.ModelSource, "signature", None),
    ("Model", ("target", "jetpack"), km.Target, "jetpack", None),
    ("Model", ("target", "base_image"), km.Target, "base_image", None),
    ("Model", ("optimize", "max_workspace_size"), km.Optimize, "max_workspace_size", parse_size),
    ("Model", ("optimize", "memory_limit"), km.Optimize, "memory_limit", parse_size),
    ("Model", ("optimize", "minimum_segment_size"), km.Optimize, "minimum_segment_size", None),
    ("Model", ("optimize", "allow_native_fallback"), km.Optimize, "allow_native_fallback", None),
    ("Model", ("optimize", "parity", "samples"), km.Parity, "samples", None),
    ("Model", ("optimize", "parity", "max_abs_error"), km.Parity, "max_abs_error", None),
    ("Model", ("optimize", "parity", "min_top1_agreement"), km.Parity, "min_top1_agreement", None),
    ("Model", ("image", "tag"), km.ImageSpec, "tag", None),
    ("Model", ("serve", "port"), km.Serve, "port", None),
    ("Model", ("serve", "max_batch_delay"), km.Serve, "max_batch_delay", parse_duration),
    ("Model", ("serve", "max_queue"), km.Serve, "max_queue", None),
    ("Model", ("serve", "max_connections"), km.Serve, "max_connections", None),
    ("Model", ("serve", "max_header_bytes"), km.Serve, "max_header_bytes", parse_size),
    ("Model", ("serve", "max_headers"), km.Serve, "max_headers", None),
    ("Model", ("serve", "max_json_body"), km.Serve, "max_json_body", parse_size),
    ("Model", ("serve", "max_body"), km.Serve, "max_body", parse_size),
    ("Model", ("serve", "max_buffered"), km.Serve, "max_buffered", parse_size),
    ("Model", ("serve", "idle_timeout"), km.Serve, "idle_timeout", parse_duration),
    ("Model", ("serve", "body_timeout"), km.Serve, "body_timeout", parse_duration),
    ("Fleet", ("rollout", "canary"), km.Rollout, "canary", None),
    ("Fleet", ("rollout", "max_parallel"), km.Rollout, "max_parallel", None),
    ("Fleet", ("rollout", "health_timeout"), km.Rollout, "health_timeout", parse_duration),
    ("Fleet", ("rollout", "on_failure"), km.Rollout, "on_failure", None),
]


@pytest.mark.parametrize("kind,path,cls,name,convert", DEFAULTS, ids=lambda v: ".".join(v) if isinstance(v, tuple) else None)
def test_schema_defaults_equal_dataclass_defaults(kind, path, cls, name, convert):
    default = schema_default(kind, path)
    if cls is None:
        assert default == "0.1.0"
        return
    assert (convert(default) if convert else default) == _dataclass_default(cls, name)


def test_every_optional_field_has_a_default_or_says_why():
    """Optional fields carry `default`, except those resolved from other fields (documented)."""
    resolved_elsewhere = {("optimize", "maximum_cached_engines"), ("optimize", "calibration", "samples"),
                          ("devices", "port"), ("devices", "grpc_port"), ("optimize", "calibration"), ("swarm",)}
    for kind in KINDS:
        for path, obj in _objects(load_schema(kind)):
            section = tuple(p for p in path if p not in ("properties", "items", "$defs"))
            for name, prop in obj.get("properties", {}).items():
                if name in obj.get("required", ()) or section[:1] == ("tensor",):
                    continue
                if section + (name,) in resolved_elsewhere:
                    assert "Default" in prop["description"] or "Required when" in prop["description"], name
                    continue
                assert "default" in prop, (kind, section, name)


def test_packaged_schemas_are_the_manifests_schemas():
    shipped = ROOT / "manifests" / "schema"
    assert shipped.resolve() == SCHEMA_DIR.resolve() or all(
        (shipped / f.name).read_bytes() == f.read_bytes() for f in SCHEMA_DIR.glob("*.json"))
    for name in ("model.schema.json", "fleet.schema.json"):
        assert json.loads((shipped / name).read_text()) == json.loads((SCHEMA_DIR / name).read_text())
    assert SCHEMA_DIR == Path(km.__file__).parent.parent / "schema"


def test_examples_of_the_schema_are_valid_values():
    """`examples` feed the "add `field: example`" fixes and the README; they must validate."""
    for kind in KINDS:
        schema = load_schema(kind)
        for path, obj in _objects(schema):
            for name, prop in obj.get("properties", {}).items():
                for example in prop.get("examples", []):
                    sub = dict(prop, **{"$defs": schema["$defs"]})
                    assert not list(Draft202012Validator(sub).iter_errors(example)), (name, example)
