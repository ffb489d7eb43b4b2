"""Model manifests (kit.yaml) for tests and benchmarks, written from data instead of formatted strings.

    write_model(tmp_path, model={"path": "./sm"}, target={"device": "jetson-nano", "jetpack": "4.4.1"})
    write_model(work, digits_example(), image={"repository": repo}, metadata={"version": "0.2.0"})

`MINIMAL` is the smallest valid model manifest (cpu profile, native precision, batch size 1). Overrides
are merged section by section: a dict merges into the dict it meets, any other value replaces it, and
None removes the key (`optimize={"parity": None}`). Nothing here checks the result: the tests load it
with kit's own loader, so a manifest a test gets wrong fails there, with kit's message.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DIGITS_EXAMPLE = REPO / "manifests" / "examples" / "digits.yaml"

MINIMAL: dict[str, Any] = {
    "apiVersion": "kit/v1",
    "kind": "Model",
    "metadata": {"name": "model"},
    "model": {"path": "./model"},
    "target": {"device": "cpu"},
    "optimize": {"precision": "native", "batch_sizes": [1]},
    "image": {"repository": "kit-test/model"},
}

# A Jetson Nano with the pinned JetPack, fp16 (TensorRT's precision on the Nano): the target the
# host-side checks (preflight, doctor, gate) are about.
NANO = {"target": {"device": "jetson-nano", "jetpack": "4.4.1"}, "optimize": {"precision": "fp16"}}


def merged(base: dict, overrides: dict) -> dict:
    """A copy of `base` with `overrides` merged in (dicts merge, other values replace, None removes)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def model_doc(base: dict | None = None, **sections: Any) -> dict:
    """The manifest as data: `base` (MINIMAL when not given) with `sections` merged in."""
    return merged(MINIMAL if base is None else base, sections)


def digits_example(**sections: Any) -> dict:
    """The bundled example's manifest (manifests/examples/digits.yaml) with `sections` merged in.
    Its paths are relative (./digits/...): write it beside a copy of the trained example."""
    return model_doc(yaml.safe_load(DIGITS_EXAMPLE.read_text()), **sections)


def write_model(path: Path | str, base: dict | None = None, **sections: Any) -> Path:
    """Write model_doc(base, **sections) as YAML to `path` (a directory: its kit.yaml); returns the file."""
    path = Path(path)
    if path.is_dir():
        path = path / "kit.yaml"
    path.write_text(yaml.safe_dump(model_doc(base, **sections), sort_keys=False))
    return path
