"""Manifests: load, validate against the JSON Schema, check semantics, and
turn into frozen dataclasses. Core code never sees raw dicts."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kit.errors import ManifestError
from kit.manifest.reader import Document, Unreadable, display_path, read_document
from kit.manifest.problems import Problem, show
from kit.manifest.schema import KINDS, schema_check
from kit.manifest.semantics import Context, semantic_problems
from kit.units import parse_duration
from kit.manifest.types import (FleetDevice, Swarm, FleetManifest, ImageSpec, ModelManifest, ModelSource, Optimize, Parity,
                                 Rollout, Serve, Target, TensorSpec)

__all__ = [
    "TensorSpec", "ModelSource", "Target", "Parity", "Optimize", "ImageSpec", "Serve", "ModelManifest",
    "FleetDevice", "Rollout", "FleetManifest", "Problem", "ManifestError", "Inspection", "inspect",
    "collect_problems", "load_model", "load_fleet", "load_any",
]


# read (YAML/JSON, defensively) -> JSON Schema -> semantic checks -> dataclasses.
# Every problem is collected, not just the first; ManifestError carries them all.


@dataclass
class Inspection:
    """Everything known about one manifest file after checking it."""

    file: Path  # absolute
    kind: str | None  # "Model" / "Fleet" when the file says so
    name: str | None  # metadata.name when readable
    problems: list  # of Problem; empty when valid
    manifest: ModelManifest | FleetManifest | None = None


def inspect(path, check_files: bool = True, expect: str | None = None) -> Inspection:
    """Check a manifest file completely. Never raises for bad input: problems are returned.

    expect: "Model" or "Fleet" to insist on a kind; None to go by the file's `kind`."""
    file = Path(os.path.abspath(os.fspath(path)))
    try:
        doc = read_document(file)
    except Unreadable as e:
        return Inspection(file, None, None, [e.problem])
    data = doc.data
    if not isinstance(data, dict):
        found = "a list" if isinstance(data, list) else f"the single value {show(data)}"
        return Inspection(file, None, None, [Problem(
            (), f"the top level must be a mapping of fields (apiVersion, kind, metadata, ...), found {found}",
            show(data), "start from an example: manifests/examples/digits.yaml", 1, 1)])

    written_kind = data.get("kind")
    kind_known = isinstance(written_kind, str) and written_kind in KINDS
    name = data.get("metadata", {}).get("name") if isinstance(data.get("metadata"), dict) else None
    name = name if isinstance(name, str) else None
    problems = list(doc.problems)
    if kind_known and expect and written_kind != expect:
        return Inspection(file, written_kind, name, [Problem(
            ("kind",), f"expected a {expect} manifest, this file is a {written_kind} manifest", show(written_kind),
            f"give a {expect} manifest (kind: {expect}) here", *doc.position(("kind",)))])
    if kind_known:
        kind = written_kind
    elif expect:
        kind = expect  # the schema reports the wrong kind
    else:
        kind = "Fleet" if "devices" in data else "Model"  # check against the likelier schema
        problems.append(_kind_problem(written_kind, "kind" in data, doc))

    found, rejected = schema_check(data, kind, doc.position)
    if not kind_known and not expect:
        found = [p for p in found if p.path != ("kind",)]
    problems.extend(found)
    bad_paths = [p.path for p in problems] + rejected
    for p in semantic_problems(kind, data, file.parent, check_files, bad_paths):
        line, column = doc.position(p.path)
        problems.append(Problem(p.path, p.message, p.found, p.fix, line, column))
    if problems:
        problems.sort(key=lambda p: (p.line or 1 << 30, p.column or 0))  # file order; stable otherwise
        return Inspection(file, written_kind if kind_known else None, name, problems)
    ctx = Context(kind, data, file.parent, check_files)
    manifest = _build_model(file, ctx) if kind == "Model" else _build_fleet(file, ctx)
    return Inspection(file, kind, name, [], manifest)


def _kind_problem(written, present: bool, doc: Document) -> Problem:
    line, column = doc.position(("kind",))
    if not present:
        return Problem(("kind",), "missing required field 'kind'", None,
                       "add `kind: Model` (a model manifest) or `kind: Fleet` (a fleet)", line, column)
    fix = "use Model (a model manifest) or Fleet (a fleet)"
    if isinstance(written, str):
        for k in KINDS:
            if k.lower() == written.strip().lower() or (len(written) > 2 and k.lower().startswith(written.lower())):
                fix = f"did you mean '{k}'? ({fix})"
                break
    return Problem(("kind",), "kind must be Model or Fleet", show(written), fix, line, column)


def collect_problems(path, check_files: bool = True) -> list:
    """Every Problem in a manifest file (Model or Fleet); empty when it is valid."""
    return inspect(path, check_files).problems


def _raise(inspection: Inspection):
    shown = display_path(str(inspection.file))
    problems = inspection.problems
    if len(problems) == 1 and problems[0].path == () and problems[0].line is None:
        p = problems[0]  # the file itself (missing, binary, empty...): one plain sentence
        raise ManifestError(f"{shown}: {p.message}", p.fix, problems=problems)
    details = [line for p in problems for line in p.lines()]
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    raise ManifestError(f"{shown} is not a valid manifest ({count})", None, details, problems=problems)


def load_model(path, check_files: bool = True) -> ModelManifest:
    """A validated Model manifest. Raises ManifestError listing every problem.

    check_files=False skips checks that need model.path and the sample files to exist."""
    inspection = inspect(path, check_files, expect="Model")
    if inspection.problems:
        _raise(inspection)
    return inspection.manifest


def load_fleet(path) -> FleetManifest:
    """A validated Fleet manifest. Raises ManifestError listing every problem."""
    inspection = inspect(path, True, expect="Fleet")
    if inspection.problems:
        _raise(inspection)
    return inspection.manifest


def load_any(path, check_files: bool = True):
    """A validated ModelManifest or FleetManifest, told apart by `kind`. Raises ManifestError."""
    inspection = inspect(path, check_files)
    if inspection.problems:
        _raise(inspection)
    return inspection.manifest


def _optional_path(ctx: Context, path: tuple) -> Path | None:
    value = ctx.get(path) if ctx.has(path) else None
    return ctx.resolve(value) if value is not None else None


def _build_model(file: Path, ctx: Context) -> ModelManifest:
    g = ctx.get
    batch_sizes = tuple(sorted(int(b) for b in g(("optimize", "batch_sizes"))))
    inputs = {name: TensorSpec(tuple(None if d is None else int(d) for d in spec["shape"]), spec["dtype"])
              for name, spec in g(("model", "inputs")).items()}
    cached = g(("optimize", "maximum_cached_engines"))
    warmup = g(("serve", "warmup"))
    return ModelManifest(
        file=file,
        name=g(("metadata", "name")),
        version=g(("metadata", "version")),
        model=ModelSource(path=ctx.resolve(g(("model", "path"))), signature=g(("model", "signature")), inputs=inputs),
        target=Target(device=g(("target", "device")), jetpack=g(("target", "jetpack")),
                      base_image=g(("target", "base_image")), stack=g(("target", "stack"))),
        optimize=Optimize(
            precision=g(("optimize", "precision")),
            batch_sizes=batch_sizes,
            max_workspace_size=ctx.size(("optimize", "max_workspace_size")),
            memory_limit=ctx.size(("optimize", "memory_limit")),
            minimum_segment_size=int(g(("optimize", "minimum_segment_size"))),
            maximum_cached_engines=int(cached) if cached is not None else len(batch_sizes),
            allow_native_fallback=g(("optimize", "allow_native_fallback")),
            calibration_samples=_optional_path(ctx, ("optimize", "calibration", "samples")),
            parity=Parity(
                samples=_optional_path(ctx, ("optimize", "parity", "samples")),
                max_abs_error=float(g(("optimize", "parity", "max_abs_error"))),
                min_top1_agreement=float(g(("optimize", "parity", "min_top1_agreement"))),
            ),
        ),
        image=ImageSpec(repository=g(("image", "repository")), tag=g(("image", "tag"))),
        serve=Serve(model_name=g(("serve", "model_name")) or g(("metadata", "name")),
                    warmup=g(("serve", "warmup")) is not False,
                    warmup_samples=ctx.resolve(warmup) if isinstance(warmup, str) else None,
                    port=int(g(("serve", "port"))), grpc_port=int(g(("serve", "grpc_port"))),
                    max_batch_delay=parse_duration(g(("serve", "max_batch_delay"))),
                    max_queue=int(g(("serve", "max_queue"))),
                    max_connections=int(g(("serve", "max_connections"))),
                    max_header_bytes=ctx.size(("serve", "max_header_bytes")),
                    max_headers=int(g(("serve", "max_headers"))),
                    max_json_body=ctx.size(("serve", "max_json_body")),
                    max_body=ctx.size(("serve", "max_body")),
                    max_buffered=ctx.size(("serve", "max_buffered")),
                    idle_timeout=parse_duration(g(("serve", "idle_timeout"))),
                    body_timeout=parse_duration(g(("serve", "body_timeout")))),
    )


def _build_fleet(file: Path, ctx: Context) -> FleetManifest:
    g = ctx.get
    devices = tuple(
        FleetDevice(name=d["name"], host=d["host"], device=d["device"],
                    port=int(d["port"]) if d.get("port") is not None else None, labels=dict(d.get("labels", {})),
                    grpc_port=int(d["grpc_port"]) if d.get("grpc_port") is not None else None)
        for d in g(("devices",))
    )
    return FleetManifest(
        file=file,
        name=g(("metadata", "name")),
        image=g(("image",)),
        devices=devices,
        rollout=Rollout(canary=int(g(("rollout", "canary"))), max_parallel=int(g(("rollout", "max_parallel"))),
                        health_timeout=parse_duration(g(("rollout", "health_timeout"))),
                        on_failure=g(("rollout", "on_failure"))),
        swarm=Swarm(manager=g(("swarm", "manager"))) if g(("swarm",)) else None,
    )
