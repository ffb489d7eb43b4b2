"""One problem found in a manifest: where, what, what was there, and the fix.

Shared by the reader (YAML), the schema check and the semantic checks, so
every source of trouble is reported the same way."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_FOUND_MAX = 120
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text):
    """Text any terminal can print: lone surrogates (from JSON escapes or undecodable
    file names) become backslash escapes instead of failing at print time."""
    if not isinstance(text, str):
        return text
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    # Control characters from the file (NUL, ESC sequences, newlines in keys) are shown, not obeyed.
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def where(path: tuple) -> str:
    """`optimize -> batch_sizes -> 0`; `(top level)` for the whole document."""
    return printable(" -> ".join(str(p) for p in path)) if path else "(top level)"


def show(value) -> str:
    """A short, one-line rendering of a value the user wrote (JSON-ish, truncated)."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
        except (TypeError, ValueError, RecursionError):  # circular or exotic: fall back to repr
            text = repr(value)
    if len(text) > _FOUND_MAX:
        text = text[: _FOUND_MAX - 3] + "..."
    return text


@dataclass(frozen=True)
class Problem:
    path: tuple  # keys and list indexes from the top of the document; () for the document itself
    message: str  # what is wrong, in plain words
    found: str | None = None  # what the file holds there (see show()); None when nothing was there
    fix: str | None = None  # what to do about it
    line: int | None = None  # 1-based position in the file, when known
    column: int | None = None

    def __post_init__(self):
        for name in ("message", "found", "fix"):
            object.__setattr__(self, name, printable(getattr(self, name)))

    @property
    def where(self) -> str:
        return where(self.path)

    @property
    def location(self) -> str:
        """`optimize -> precision (line 12)`."""
        if self.line is None:
            return self.where
        return f"{self.where} (line {self.line})"

    def to_dict(self) -> dict:
        return {"path": self.where, "message": self.message, "found": self.found, "fix": self.fix,
                "line": self.line, "column": self.column}

    def lines(self) -> list[str]:
        """Plain text lines, used in error details and `kit validate` output."""
        out = [f"{self.location}: {self.message}"]
        if self.found is not None:
            out.append(f"    found: {self.found}")
        if self.fix:
            out.append(f"    fix: {self.fix}")
        return out
