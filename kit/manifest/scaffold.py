"""`kit init`: write a first kit.yaml next to a SavedModel, from the model itself.

The signature and its inputs come from saved_model.pb (kit.manifest.savedmodel,
no TensorFlow needed), the device's defaults from its profile; the image
repository is a placeholder. Every line a user may want to change carries a
comment. The text is validated (schema + semantics + file checks) before it is
put in place, atomically, and an existing file is never overwritten.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kit.errors import ManifestError, UsageError
from kit.manifest.savedmodel import read_signatures
from kit.profiles import JETPACK_441, PROFILES

MANIFEST_NAME = "kit.yaml"
SERVABLE_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
                   "uint32", "uint64", "bool")
REPOSITORY_PLACEHOLDER = "registry.example.com/{name}"


@dataclass(frozen=True)
class InitResult:
    path: Path
    name: str
    device: str
    signature: str
    inputs: dict  # name -> {"shape": [...], "dtype": str}
    unknown_dims: tuple  # input names with a dimension to fill in
    text: str

    def to_dict(self) -> dict:
        return {"path": str(self.path), "name": self.name, "device": self.device, "signature": self.signature,
                "inputs": self.inputs, "unknown_dims": list(self.unknown_dims)}


def model_name(directory: Path) -> str:
    """A metadata.name from the model's directory: lowercase, dashes, at most 63 characters."""
    parts = [p for p in (directory.name, directory.parent.name) if p and not p.isdigit()]
    base = parts[0] if parts else "model"
    base = re.sub(r"(_|-)?saved_?model$", "", base, flags=re.I) or (parts[1] if len(parts) > 1 else "model")
    name = re.sub(r"[^a-z0-9-]+", "-", base.lower()).strip("-")[:63].strip("-")
    return name or "model"


def _choose_signature(signatures: dict, wanted: Optional[str]):
    if not signatures:
        raise ManifestError("the SavedModel has no serving signature",
                            hint="save it with signatures={'serving_default': fn} (tf.saved_model.save)")
    if wanted:
        if wanted not in signatures:
            raise UsageError(f"no signature {wanted!r} in the SavedModel (it has {', '.join(sorted(signatures))})")
        return signatures[wanted]
    return signatures.get("serving_default") or signatures[sorted(signatures)[0]]


def _defaults(device: str) -> dict:
    profile = PROFILES[device]
    if not profile.tensorrt:
        return {"precision": "native", "batch_sizes": [1, 8], "jetpack": None}
    # A Nano (4 GB shared) keeps engines small; the bigger boards take batch 8 too.
    batch = [1, 4] if profile.memory_bytes <= 4 << 30 else [1, 8]
    return {"precision": "fp16" if profile.fp16 else "fp32", "batch_sizes": batch, "jetpack": JETPACK_441.name,
            "memory_limit": "2GiB" if profile.memory_bytes <= 4 << 30 else "4GiB", "workspace": "1GiB"}


def _flow(values) -> str:
    return "[" + ", ".join("null" if v is None else str(v) for v in values) + "]"


def render(name: str, model_rel: str, device: str, signature, inputs: dict, unknown: list, others: list) -> str:
    d = _defaults(device)
    profile = PROFILES[device]
    lines = [
        f"# kit.yaml for {name}, written by `kit init` from {model_rel}/saved_model.pb.",
        "# Check it with `kit validate kit.yaml`, then build with `kit build kit.yaml` (on the device for",
        "# Jetson profiles). Field reference: README.md, section Manifests.",
        "apiVersion: kit/v1",
        "kind: Model",
        "metadata:",
        f"  name: {name}                # names the images and the container (lowercase, digits, dashes)",
        '  version: "0.1.0"            # first part of the image tag; bump it for every new model',
        "model:",
        f"  path: {model_rel}",
        f"  signature: {signature.key}   # from the model; its other signatures: "
        + (", ".join(others) or "none"),
        "  inputs:                     # read from the signature; shapes without the batch dimension",
    ]
    for key, spec in inputs.items():
        note = "  # CHANGE ME: null = unknown in the model; give the size you serve" if key in unknown else ""
        lines.append(f"    {key}: {{shape: {_flow(spec['shape'])}, dtype: {spec['dtype']}}}{note}")
    lines += ["target:", f"  device: {device}            # {profile.description}; `kit profiles` lists them"]
    if d["jetpack"]:
        lines.append(f'  jetpack: "{d["jetpack"]}"           # the pinned stack: L4T {JETPACK_441.l4t}, '
                     f"TensorRT {JETPACK_441.tensorrt}")
    lines += ["optimize:"]
    if profile.tensorrt:
        lines += [f"  precision: {d['precision']}             # fp32 | fp16" + (" | int8 (needs calibration samples)"
                                                                               if profile.int8 else "")
                  + " | native (no TensorRT)",
                  f"  batch_sizes: {_flow(d['batch_sizes'])}       # one engine each; requests are padded up to one",
                  f"  max_workspace_size: {d['workspace']}     # TensorRT builder workspace, below memory_limit",
                  f"  memory_limit: {d['memory_limit']}           # TensorFlow's GPU memory limit "
                  f"(at most {profile.max_memory_limit >> 30} GiB on this device)"]
    else:
        lines += ["  precision: native           # the cpu profile has no TensorRT",
                  f"  batch_sizes: {_flow(d['batch_sizes'])}       # the batches the server pads requests to"]
    lines += ["image:",
              f"  repository: {REPOSITORY_PLACEHOLDER.format(name=name)}   # CHANGE ME: your registry/repository",
              "serve:",
              "  port: 8501                  # TF Serving REST and KServe v2 on this port",
              "  max_batch_delay: 2ms        # how long a request waits for others to batch with",
              ""]
    return "\n".join(lines)


def init_manifest(saved_model: Path, device: str = "jetson-nano", name: Optional[str] = None,
                  signature: Optional[str] = None) -> InitResult:
    """Write kit.yaml beside `saved_model` (the SavedModel directory); refuse to overwrite."""
    from kit.manifest.load import load_model

    saved_model = Path(saved_model).resolve()
    if device not in PROFILES:
        raise UsageError(f"unknown device {device!r}", hint="one of: " + ", ".join(PROFILES))
    if not saved_model.is_dir():
        raise UsageError(f"{saved_model} is not a directory", hint="give the SavedModel directory (it holds saved_model.pb)")
    signatures = read_signatures(saved_model)
    chosen = _choose_signature(signatures, signature)
    name = name or model_name(saved_model)
    if not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", name):
        raise UsageError(f"--name {name!r}: lowercase letters, digits and dashes, at most 63 characters")
    inputs, unknown, refused = {}, [], []
    for t in chosen.inputs:
        if t.dtype not in SERVABLE_DTYPES or t.shape is None or len(t.shape) == 0:
            refused.append(f"{t.key}: {t.dtype}, shape {'unknown rank' if t.shape is None else list(t.shape)}")
            continue
        per_example = list(t.shape[1:])
        if any(d is None for d in per_example):
            unknown.append(t.key)
        inputs[t.key] = {"shape": per_example, "dtype": t.dtype}
    if refused or not inputs:
        raise ManifestError(f"signature {chosen.key!r} has inputs kit cannot serve as batched dense tensors",
                            details=refused, hint="serve a signature with dense numeric inputs of known rank "
                            "(--signature), or re-export the model")
    target = saved_model.parent / MANIFEST_NAME
    if target.exists():
        raise UsageError(f"{target} already exists: kit init does not overwrite it",
                         hint="edit it, remove it, or run kit init on a copy of the model")
    text = render(name, "./" + saved_model.name, device, chosen, inputs, unknown,
                  [k for k in sorted(signatures) if k != chosen.key])
    # Validate beside the model (relative paths), then move into place; never a half-written or invalid file.
    fd, tmp = tempfile.mkstemp(prefix=".kit-init-", suffix=".yaml", dir=str(saved_model.parent))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if not unknown:
            load_model(Path(tmp))
        os.link(tmp, target)  # fails if the target appeared meanwhile: still no overwrite
    except FileExistsError:
        raise UsageError(f"{target} already exists: kit init does not overwrite it") from None
    finally:
        os.unlink(tmp)
    return InitResult(target, name, device, chosen.key, inputs, tuple(unknown), text)
