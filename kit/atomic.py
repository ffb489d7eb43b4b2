"""Atomic file writes for host code: readers see the old or the new file, never half of one.

Temp file in the same directory (so the rename stays on one filesystem),
fsync, then os.replace. A failed write removes its temp file and leaves the
old content in place. kit/runtime does not import this: it stays Python 3.6
and self-contained."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` (parents made as needed), mode 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; records, specs and compose files are for people too
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data) -> None:
    """JSON with sorted keys, indent 2 and a trailing newline; unknown types via str()."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
