"""Semantic checks: what a JSON Schema cannot say.

Each check names the fields it reads and runs only when the schema found
nothing wrong with them, so it can trust their types. Each problem says in
plain words why the combination fails on a real device, and the fix."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from kit.manifest.problems import Problem, show, where
from kit.profiles import MEMORY_RESERVE_BYTES, PROFILES
from kit.manifest.schema import load_schema
from kit.net import DEFAULT_PORT
from kit.units import format_size, parse_duration, parse_size

SAMPLE_SUFFIXES = (".npy", ".npz")

_CHECKS = {"Model": [], "Fleet": []}


def _check(kind: str, *reads: tuple, files: bool = False):
    def register(fn):
        _CHECKS[kind].append((fn, reads, files))
        return fn

    return register


def schema_default(kind: str, path: tuple):
    """The schema's `default` for a field (None when it has none)."""
    node = load_schema(kind)
    for p in path:
        if isinstance(p, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(p, {})
    return node.get("default")


class Context:
    """What a check sees: the document, its directory, and values with defaults filled in."""

    def __init__(self, kind: str, data: dict, base_dir: Path, check_files: bool):
        self.kind = kind
        self.data = data
        self.base_dir = base_dir
        self.check_files = check_files

    def has(self, path: tuple) -> bool:
        node = self.data
        for p in path:
            if isinstance(node, dict) and p in node:
                node = node[p]
            elif isinstance(node, list) and isinstance(p, int) and 0 <= p < len(node):
                node = node[p]
            else:
                return False
        return True

    def get(self, path: tuple):
        """The value written at path, else the schema default."""
        node = self.data
        for p in path:
            if isinstance(node, dict) and p in node:
                node = node[p]
            elif isinstance(node, list) and isinstance(p, int) and 0 <= p < len(node):
                node = node[p]
            else:
                return schema_default(self.kind, path)
        return node

    def size(self, path: tuple) -> int:
        value = self.get(path)
        return int(value) if isinstance(value, float) else parse_size(value)

    def resolve(self, text: str) -> Path:
        p = Path(os.path.expanduser(text))
        return Path(os.path.normpath(p if p.is_absolute() else self.base_dir / p))


def _blocked(reads, bad_paths) -> bool:
    """A check is skipped when the schema found a problem at, above or below a field it reads."""
    for r in reads:
        for b in bad_paths:
            n = min(len(r), len(b))
            if r[:n] == b[:n]:
                return True
    return False


def semantic_problems(kind: str, data: dict, base_dir: Path, check_files: bool, bad_paths=()) -> list[Problem]:
    """Every semantic problem of a document whose schema problems are at bad_paths."""
    ctx = Context(kind, data, Path(base_dir), check_files)
    out = []
    for fn, reads, files in _CHECKS[kind]:
        if files and not check_files:
            continue
        if _blocked(reads, list(bad_paths)):
            continue
        out.extend(fn(ctx))
    return out


# ---- Model --------------------------------------------------------------------

DEVICE = ("target", "device")
JETPACK = ("target", "jetpack")
STACK = ("target", "stack")
PRECISION = ("optimize", "precision")
BATCH_SIZES = ("optimize", "batch_sizes")
WORKSPACE = ("optimize", "max_workspace_size")
MEMORY_LIMIT = ("optimize", "memory_limit")
CACHED = ("optimize", "maximum_cached_engines")
CALIBRATION = ("optimize", "calibration")
CALIBRATION_SAMPLES = ("optimize", "calibration", "samples")
PARITY_SAMPLES = ("optimize", "parity", "samples")
WARMUP = ("serve", "warmup")
MODEL_PATH = ("model", "path")


@_check("Model", DEVICE, JETPACK)
def _jetpack(ctx: Context):
    device = ctx.get(DEVICE)
    profile = PROFILES[device]
    jetpack = ctx.get(JETPACK)
    pinned = ", ".join(profile.jetpacks)
    if profile.tensorrt and jetpack is None:
        yield Problem(JETPACK, f"target.jetpack is required for {device}: TensorRT engines only run on the JetPack "
                      "they were built with", None,
                      f'add `jetpack: "{profile.jetpacks[0]}"` under target (pinned for {device}: {pinned})')
    elif not profile.tensorrt and jetpack is not None:
        yield Problem(JETPACK, f"the {device} profile has no JetPack; target.jetpack must be absent", show(jetpack),
                      "remove target.jetpack (or target a Jetson profile)")
    elif profile.tensorrt and jetpack not in profile.jetpacks:
        yield Problem(JETPACK, f"JetPack {jetpack} is not pinned for {device}", show(jetpack),
                      f"use one of: {pinned}")


@_check("Model", DEVICE, STACK)
def _stack(ctx: Context):
    device, stack = ctx.get(DEVICE), ctx.get(STACK)
    if PROFILES[device].tensorrt and stack is not None:
        yield Problem(STACK, f"target.stack applies to the cpu profile only; {device} takes its stack from "
                      "target.jetpack", show(stack),
                      "remove target.stack (the twin stack is for building on x86-64: target.device: cpu)")


@_check("Model", DEVICE, PRECISION)
def _precision(ctx: Context):
    device = ctx.get(DEVICE)
    profile = PROFILES[device]
    precision = ctx.get(PRECISION)
    if not profile.tensorrt and precision != "native":
        yield Problem(PRECISION, f"the {device} profile has no TensorRT, so precision must be native", show(precision),
                      "set `precision: native` (or target a Jetson profile to use TensorRT)")
    elif precision == "int8" and not profile.int8:
        yield Problem(PRECISION, f"{device} has no INT8 support ({profile.description}): TensorRT cannot build "
                      "int8 engines on it", show(precision),
                      f"use fp16 on {device}, or target an int8-capable profile "
                      f"({', '.join(p.name for p in PROFILES.values() if p.int8)})")
    elif precision not in profile.precisions:
        yield Problem(PRECISION, f"{device} does not support precision {precision}", show(precision),
                      f"use one of: {', '.join(profile.precisions)}")


@_check("Model", DEVICE, PRECISION, CALIBRATION)
def _int8_calibration(ctx: Context):
    if not PROFILES[ctx.get(DEVICE)].int8:
        return  # int8 itself is the problem there (_precision)
    if ctx.get(PRECISION) == "int8" and not ctx.has(CALIBRATION_SAMPLES):
        yield Problem(CALIBRATION, "precision int8 needs calibration samples: TensorRT measures activation ranges "
                      "on real inputs", None,
                      "add `calibration: {samples: ./calibration.npy}` under optimize "
                      "(a few hundred representative inputs, .npy or .npz)")


@_check("Model", WORKSPACE, MEMORY_LIMIT)
def _positive_sizes(ctx: Context):
    for path in (WORKSPACE, MEMORY_LIMIT):
        if ctx.has(path) and ctx.size(path) <= 0:
            yield Problem(path, f"{path[-1]} must be more than 0 bytes", show(ctx.get(path)), "give a size like 1GiB")


@_check("Model", DEVICE, WORKSPACE, MEMORY_LIMIT)
def _workspace_below_memory_limit(ctx: Context):
    if not PROFILES[ctx.get(DEVICE)].tensorrt:
        return  # no TensorRT, no workspace
    workspace, limit = ctx.size(WORKSPACE), ctx.size(MEMORY_LIMIT)
    if 0 < limit <= workspace:
        yield Problem(WORKSPACE, f"max_workspace_size ({format_size(workspace)}) is not below memory_limit "
                      f"({format_size(limit)}): TensorRT cannot get its workspace inside TensorFlow's memory, so every "
                      "engine build fails and TF silently runs the native graph instead", show(ctx.get(WORKSPACE)),
                      f"make max_workspace_size smaller than memory_limit, e.g. {format_size(limit // 2)}")


@_check("Model", DEVICE, MEMORY_LIMIT)
def _memory_limit_fits_device(ctx: Context):
    profile = PROFILES[ctx.get(DEVICE)]
    if not profile.tensorrt:
        return  # the limit configures a GPU virtual device; cpu has none
    limit = ctx.size(MEMORY_LIMIT)
    if limit > profile.max_memory_limit:
        yield Problem(MEMORY_LIMIT, f"memory_limit ({format_size(limit)}) is more than {profile.name} can give "
                      f"TensorFlow: {format_size(profile.memory_bytes)} of RAM minus {format_size(MEMORY_RESERVE_BYTES)} "
                      "kept for the system and the server", show(ctx.get(MEMORY_LIMIT)),
                      f"use at most {format_size(profile.max_memory_limit)}")


@_check("Model", BATCH_SIZES, CACHED)
def _cached_engines(ctx: Context):
    if not ctx.has(CACHED):
        return  # default: one per batch size
    n, cached = len(ctx.get(BATCH_SIZES)), ctx.get(CACHED)
    if cached < n:
        yield Problem(CACHED, f"maximum_cached_engines ({cached}) is less than the number of batch sizes ({n}): "
                      "engines would be evicted and rebuilt at runtime (minutes each on a Jetson)", show(cached),
                      f"remove it (the default is {n}) or set it to at least {n}")


PORT = ("serve", "port")
GRPC_PORT = ("serve", "grpc_port")


@_check("Model", PORT, GRPC_PORT)
def _ports_differ(ctx: Context):
    port, grpc_port = ctx.get(PORT), ctx.get(GRPC_PORT)
    if grpc_port and grpc_port == port:
        yield Problem(GRPC_PORT, f"serve.grpc_port and serve.port are both {port}: HTTP and gRPC need a port each",
                      show(grpc_port), "pick another grpc_port (TF Serving uses 8500 for gRPC), or 0 to turn gRPC off")


KIB, MIB = 1 << 10, 1 << 20
HEADER_BYTES = ("serve", "max_header_bytes")
JSON_BODY = ("serve", "max_json_body")
BODY = ("serve", "max_body")
BUFFERED = ("serve", "max_buffered")
IDLE_TIMEOUT = ("serve", "idle_timeout")
BODY_TIMEOUT = ("serve", "body_timeout")


@_check("Model", HEADER_BYTES, JSON_BODY, BODY, BUFFERED)
def _serve_sizes(ctx: Context):
    """The server's byte limits: each within its range, and each body limit within the next one."""
    header, json_body, body, buffered = (ctx.size(p) for p in (HEADER_BYTES, JSON_BODY, BODY, BUFFERED))
    if not KIB <= header <= MIB:
        yield Problem(HEADER_BYTES, f"serve.max_header_bytes is {format_size(header)}: it must be 1KiB to 1MiB "
                      "(every open connection may hold that much)", show(ctx.get(HEADER_BYTES)),
                      "remove it (default 64KiB) or pick a size from 1KiB to 1MiB")
    for path, value in ((JSON_BODY, json_body), (BODY, body), (BUFFERED, buffered)):
        if value < KIB:
            yield Problem(path, f"serve.{path[1]} is {value} bytes: it must be at least 1KiB",
                          show(ctx.get(path)), f"remove it (default {schema_default('Model', path)}) or raise it")
    if KIB <= json_body and body < json_body:
        yield Problem(JSON_BODY, f"serve.max_json_body ({format_size(json_body)}) is larger than serve.max_body "
                      f"({format_size(body)}): a JSON body is a body too", show(ctx.get(JSON_BODY)),
                      "lower max_json_body or raise max_body")
    if KIB <= body and buffered < body:
        yield Problem(BUFFERED, f"serve.max_buffered ({format_size(buffered)}) is smaller than serve.max_body "
                      f"({format_size(body)}): a body that large could never be received whole",
                      show(ctx.get(BUFFERED)), "raise max_buffered to at least max_body, or lower max_body")


@_check("Model", IDLE_TIMEOUT, BODY_TIMEOUT)
def _serve_timeouts(ctx: Context):
    for path in (IDLE_TIMEOUT, BODY_TIMEOUT):
        seconds = parse_duration(ctx.get(path))
        if not 1 <= seconds <= 3600:
            yield Problem(path, f"serve.{path[1]} is {seconds:g} s: it must be 1s to 1h (shorter cuts off slow "
                          "clients, longer lets stalled ones hold the server)", show(ctx.get(path)),
                          f"remove it (default {schema_default('Model', path)}) or pick a duration from 1s to 1h")


def _escapes(text: str) -> bool:
    """A relative path that climbs out of the manifest's directory with `..`."""
    expanded = os.path.expanduser(text)
    if os.path.isabs(expanded):
        return False
    return os.path.normpath(expanded).split(os.sep)[0] == ".."


def _escapes_by_link(ctx: Context, text: str) -> bool:
    """A relative path whose real location (symlinks resolved) is outside the manifest's directory."""
    expanded = os.path.expanduser(text)
    if os.path.isabs(expanded):
        return False
    try:
        base = os.path.realpath(str(ctx.base_dir))
        real = os.path.realpath(os.path.join(base, expanded))
    except (ValueError, OSError):  # a NUL byte, a loop: the existence checks report the path itself
        return False
    return os.path.commonpath([base, real]) != base


def _path_problems(ctx: Context, path: tuple, what: str):
    text = ctx.get(path)
    if not isinstance(text, str):
        return
    if _escapes(text):
        yield Problem(path, f"{what} {text} leaves the manifest's directory (..): the build context holds only "
                      "what is under it", show(text),
                      f"move it under {ctx.base_dir}, or give an absolute path")
    elif ctx.check_files and _escapes_by_link(ctx, text):
        real = os.path.realpath(os.path.join(str(ctx.base_dir), os.path.expanduser(text)))
        yield Problem(path, f"{what} {text} is a symbolic link out of the manifest's directory (to {real}): "
                      "relative paths must stay inside it", show(text),
                      f"give the absolute path {real}, or move the files under {ctx.base_dir}")


@_check("Model", MODEL_PATH)
def _model_path_inside(ctx: Context):
    yield from _path_problems(ctx, MODEL_PATH, "model.path")


@_check("Model", CALIBRATION_SAMPLES)
def _calibration_path(ctx: Context):
    if ctx.has(CALIBRATION_SAMPLES):
        yield from _sample_problems(ctx, CALIBRATION_SAMPLES, "calibration samples")


@_check("Model", PARITY_SAMPLES)
def _parity_path(ctx: Context):
    if ctx.get(PARITY_SAMPLES) is not None:
        yield from _sample_problems(ctx, PARITY_SAMPLES, "parity samples")


@_check("Model", WARMUP)
def _warmup_path(ctx: Context):
    if isinstance(ctx.get(WARMUP), str):
        yield from _sample_problems(ctx, WARMUP, "warm-up samples")


def _sample_problems(ctx: Context, path: tuple, what: str):
    text = ctx.get(path)
    if not text.lower().endswith(SAMPLE_SUFFIXES):
        yield Problem(path, f"{what} must be a .npy file (one input) or a .npz file (name -> array)", show(text),
                      "save them with numpy.save (.npy) or numpy.savez (.npz)")
    problems = list(_path_problems(ctx, path, what))
    yield from problems
    if problems or not ctx.check_files:
        return
    resolved = ctx.resolve(text)
    if not resolved.is_file():
        state = "is a directory" if resolved.is_dir() else "not found"
        yield Problem(path, f"{what} file {state}: {resolved}", show(text),
                      "create it with numpy.save, or fix the path (relative paths are relative to the manifest)")


@_check("Model", MODEL_PATH, files=True)
def _saved_model(ctx: Context):
    text = ctx.get(MODEL_PATH)
    if _escapes(text) or _escapes_by_link(ctx, text):
        return  # reported by _model_path_inside
    resolved = ctx.resolve(text)
    fix_missing = ("export the model there (tf.saved_model.save), fix model.path (relative to the manifest), "
                   "or validate without file checks: kit validate --no-file-checks")
    if not resolved.exists():
        yield Problem(MODEL_PATH, f"SavedModel directory not found: {resolved}", show(text), fix_missing)
    elif resolved.is_file():
        fix = "point model.path at the directory that holds saved_model.pb" if resolved.name.startswith("saved_model.") \
            else "model.path must be a SavedModel directory (tf.saved_model.save writes one)"
        yield Problem(MODEL_PATH, f"model.path is a file, not a SavedModel directory: {resolved}", show(text), fix)
    elif not any((resolved / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt")):
        fix = "model.path must be a directory written by tf.saved_model.save"
        try:
            versions = sorted(d.name for d in resolved.iterdir() if (d / "saved_model.pb").is_file())
        except OSError:
            versions = []
        if versions:  # TF Serving layout: model/<version>/saved_model.pb
            fix = f"did you mean {text.rstrip('/')}/{versions[-1]}? (it holds saved_model.pb)"
        yield Problem(MODEL_PATH, f"not a SavedModel: no saved_model.pb or saved_model.pbtxt in {resolved}",
                      show(text), fix)


SIGNATURE = ("model", "signature")


@_check("Model", MODEL_PATH, SIGNATURE, PARITY_SAMPLES, files=True)
def _string_inputs_have_samples(ctx: Context):
    """A string input (encoded JPEG bytes, tf.Example) is fed to the optimizer only from real samples: say so
    here, before a build, when the host can read the signature (else the optimizer says it, exit 2)."""
    if ctx.get(PARITY_SAMPLES) is not None:
        return
    from kit.errors import ManifestError
    from kit.manifest.savedmodel import read_signatures
    from kit.runtime.signature import STRING_SAMPLES_FIX, string_input_problem

    text = ctx.get(MODEL_PATH)
    if _escapes(text) or _escapes_by_link(ctx, text):
        return  # reported by _model_path_inside
    try:
        signatures = read_signatures(ctx.resolve(text))
    except (ManifestError, OSError):
        return  # not a readable SavedModel: _saved_model says why, or the optimizer does
    signature = signatures.get(ctx.get(SIGNATURE))
    for tensor in signature.inputs if signature else ():
        if tensor.dtype == "string":
            yield Problem(PARITY_SAMPLES, string_input_problem(tensor.key), None, STRING_SAMPLES_FIX)


# ---- Fleet --------------------------------------------------------------------

DEVICES = ("devices",)
CANARY = ("rollout", "canary")


@_check("Fleet", DEVICES)
def _unique_device_names(ctx: Context):
    first = {}
    for i, device in enumerate(ctx.get(DEVICES)):
        name = device["name"]
        if name in first:
            yield Problem(("devices", i, "name"), f"device name '{name}' is used twice (also at "
                          f"{where(('devices', first[name], 'name'))})", show(name), "give each device its own name")
        else:
            first[name] = i


def _docker_host(url: str):
    """What identifies one docker host: the machine (user and scheme aside), or the socket path."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket: compare the text as written
        return ("text", url)
    if parts.scheme == "unix":
        return ("unix", os.path.normpath(parts.path or parts.netloc))
    try:
        port = parts.port
    except ValueError:
        port = None
    return ("net", (parts.hostname or parts.netloc).lower(), port)


@_check("Fleet", DEVICES)
def _one_port_per_host(ctx: Context):
    taken = {}
    for i, device in enumerate(ctx.get(DEVICES)):
        port = device.get("port", DEFAULT_PORT)
        key = (_docker_host(device["host"]), port)
        if key in taken:
            other = ctx.get(DEVICES)[taken[key]]["name"]
            yield Problem(("devices", i, "port"), f"devices '{other}' and '{device['name']}' are both on docker host "
                          f"{device['host']} with port {port}: the second server could not bind it", show(port),
                          f"give one of them another port, e.g. `port: {port + 1}`")
        else:
            taken[key] = i


@_check("Fleet", DEVICES, ("swarm",))
def _one_port_on_a_swarm(ctx: Context):
    """A swarm runs one service spec on every node: one KIT_PORT for all."""
    if not ctx.get(("swarm",)):
        return
    devices = ctx.get(DEVICES)
    ports = [d.get("port", DEFAULT_PORT) for d in devices]
    for i, port in enumerate(ports):
        if port != ports[0]:
            yield Problem(("devices", i, "port"), f"on a swarm every device serves on the same port (one service "
                          f"spec for all nodes): '{devices[0]['name']}' has {ports[0]}, '{devices[i]['name']}' "
                          f"has {port}", show(port), f"use `port: {ports[0]}` on every device (or none)")
            return


@_check("Fleet", DEVICES, CANARY)
def _canary_fits(ctx: Context):
    canary, n = ctx.get(CANARY), len(ctx.get(DEVICES))
    if canary > n:
        yield Problem(CANARY, f"canary is {canary} but the fleet has {n} device{'s' if n != 1 else ''}", show(canary),
                      f"use at most {n} (or 0 for no canary wave)")
