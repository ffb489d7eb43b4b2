"""The bundled digits example, trained for real once per test session into a
temporary copy of manifests/examples (the repository's copy is left alone)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "manifests" / "examples"
_cache: dict = {}


def trained_digits_example(tmp_path_factory) -> Path:
    """A directory holding digits.yaml and digits/ (saved_model/, parity.npy) made by the real trainer."""
    if "dir" not in _cache:
        out = tmp_path_factory.mktemp("digits-example")
        shutil.copy(EXAMPLES / "digits.yaml", out / "digits.yaml")
        # Few epochs: these tests need a real SavedModel, not an accurate one.
        subprocess.run([sys.executable, str(EXAMPLES / "digits" / "train.py"), "--out", str(out / "digits"),
                        "--epochs", "2"], check=True, timeout=600, capture_output=True)
        _cache["dir"] = out
    return _cache["dir"]
