"""Read a manifest file into plain data, defensively.

Whatever the file holds (nothing, binary, broken YAML, a billion-laughs
anchor bomb, a 10 000-deep list), the result is data plus a map of where
each field is written, or Problems that say what is wrong. Never an
exception escaping to the user."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from kit.manifest.problems import Problem, show, where

MAX_BYTES = 1 << 20  # a manifest is a page of YAML; anything bigger is a mistake
MAX_NODES = 20_000  # values in the document with aliases expanded (stops anchor bombs)
MAX_DEPTH = 40  # nesting; manifests are 4 levels deep
MAX_INT_DIGITS = 30  # far beyond any size in bytes; Python itself refuses to convert more than 4300 digits


@dataclass
class Document:
    data: object  # what the file holds (a dict when the file is usable)
    positions: dict = field(default_factory=dict)  # path tuple -> (line, column), 1-based
    problems: list = field(default_factory=list)  # non-fatal: duplicate keys, non-string keys, NaN

    def position(self, path: tuple):
        """Where a path (or its nearest written ancestor) is in the file."""
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return self.positions.get((), (None, None))


class Unreadable(Exception):
    """The file cannot be turned into data at all; carries the one Problem why."""

    def __init__(self, problem: Problem):
        super().__init__(problem.message)
        self.problem = problem


class _Loader(yaml.SafeLoader):
    """Safe YAML without timestamps turning into datetimes (kept as strings)."""


# Dates would become datetime objects; a manifest has no use for them and the
# schema should see the text the user wrote.
_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _fatal(message: str, fix: str | None = None, found: str | None = None, line=None, column=None):
    return Unreadable(Problem((), message, found, fix, line, column))


def read_document(path) -> Document:
    """Data and positions of a manifest file. Raises Unreadable."""
    raw = _read_bytes(Path(path))
    text = _decode(raw)
    if Path(path).suffix.lower() == ".json":
        return _parse_json(text)
    return _parse_yaml(text)


def _read_bytes(path: Path) -> bytes:
    try:
        if path.is_dir():
            hint = "give the manifest file, not its directory"
            for candidate in ("kit.yaml", "kit.yml", "fleet.yaml"):
                if (path / candidate).is_file():
                    hint = f"did you mean {path / candidate}?"
                    break
            raise _fatal(f"{path} is a directory, not a manifest file", hint)
        if not path.exists():
            raise _fatal(f"no such file: {path}", "check the path (manifests are YAML or JSON files)")
        if not path.is_file():
            raise _fatal(f"{path} is not a regular file", "give a YAML or JSON manifest file")
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise _fatal(f"{path} is {size} bytes; a manifest is at most {MAX_BYTES} bytes",
                         "check that this is the manifest and not a model or data file")
        with open(path, "rb") as f:
            return f.read(MAX_BYTES + 1)
    except Unreadable:
        raise
    except PermissionError:
        raise _fatal(f"no permission to read {path}", "check the file's permissions") from None
    except OSError as e:
        raise _fatal(f"cannot read {path}: {e.strerror or e}", "check the path") from None


def _utf16(raw: bytes) -> bool:
    """UTF-16 text (a BOM, or NULs in every other byte of ASCII-range text), as some Windows editors save."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True
    head = raw[:200]
    return len(head) >= 8 and (head[1::2].count(0) == len(head) // 2 or head[0::2].count(0) == len(head) // 2)


def _decode(raw: bytes) -> str:
    if _utf16(raw):
        raise _fatal("the file is UTF-16 text; kit reads manifests as UTF-8",
                     "save the manifest as UTF-8 (e.g. `iconv -f UTF-16 -t UTF-8 kit.yaml > kit-utf8.yaml`)")
    if b"\x00" in raw:
        raise _fatal("the file is binary (it contains NUL bytes), not YAML or JSON text",
                     "give the manifest file (YAML), e.g. manifests/examples/digits.yaml")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise _fatal(f"the file is not UTF-8 text (undecodable byte at offset {e.start})",
                     "save the manifest as UTF-8 text") from None


def _blank(text: str) -> bool:
    return not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def _empty():
    return _fatal("the file is empty", "start from an example: manifests/examples/digits.yaml")


def _parse_yaml(text: str) -> Document:
    if _blank(text):
        raise _empty()
    loader = None
    try:
        loader = _Loader(text)  # checks for control characters already
        node = loader.get_single_node()
        if node is None:
            raise _empty()
        doc = Document(data=None)
        _Walker(doc).walk(node, (), 0)
        doc.data = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        raise _yaml_problem(e, text) from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        char = f"#x{e.character:04x}" if isinstance(e.character, int) else repr(e.character)
        raise _fatal(f"the file contains a control character ({char}) at line {line}: {e.reason}",
                     "remove it: manifests are plain text", None, line) from None
    except yaml.YAMLError as e:
        raise _fatal(f"not valid YAML: {_one_line(str(e))}", "fix the file so that it is plain YAML text") from None
    except RecursionError:
        raise _too_deep() from None
    finally:
        if loader is not None:
            loader.dispose()
    _check_values(doc, doc.data, (), 0)
    return doc


def _parse_json(text: str) -> Document:
    if not text.strip():
        raise _empty()
    doc = Document(data=None)

    def pairs(items):
        seen = set()
        for k, _ in items:
            if k in seen:
                doc.problems.append(Problem((), f"duplicate key '{k}' in a JSON object", show(k),
                                            "keep only one of them: JSON readers silently use the last one"))
            seen.add(k)
        return dict(items)

    def constant(name):
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        doc.data = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as e:
        raise _fatal(f"JSON syntax error at line {e.lineno}, column {e.colno}: {e.msg}",
                     "fix the JSON (or write the manifest in YAML)", show(_line(text, e.lineno)), e.lineno, e.colno) from None
    except ValueError as e:
        raise _fatal(f"not valid JSON: {e}", "use finite numbers") from None
    except RecursionError:
        raise _too_deep() from None
    _check_values(doc, doc.data, (), 0)
    return doc


def _too_deep():
    return _fatal(f"the document is nested more than {MAX_DEPTH} levels deep", "a manifest is a few levels of fields; check the file")


class _Walker:
    """Walks the YAML node graph before construction: positions, duplicate and
    non-string keys, and limits that stop anchor bombs and runaway nesting."""

    def __init__(self, doc: Document):
        self.doc = doc
        self.count = 0

    def walk(self, node, path: tuple, depth: int) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise _fatal(f"the document expands to more than {MAX_NODES} values (aliases included)",
                         "a manifest is a page of fields; remove the repeated anchors/aliases")
        if depth > MAX_DEPTH:
            raise _too_deep()
        if path not in self.doc.positions:
            self.doc.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
            digits = sum(c.isdigit() for c in node.value)
            if digits > MAX_INT_DIGITS:  # Python refuses to convert past 4300 digits; no field needs 20
                raise _fatal(f"the number at {where(path)} has {digits} digits; no manifest field takes more than "
                             f"{MAX_INT_DIGITS}", "write an ordinary number (sizes also take units: 1GiB)",
                             show(node.value[:20] + "..."), node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, path + (i,), depth + 1)
        elif isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges; not a field of its own
                    self.walk(value_node, path, depth + 1)
                    continue
                key = self._key(key_node, path)
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.doc.problems.append(Problem(
                        path + (key,), f"duplicate key '{key}' (first written at line {seen[key]})", show(key),
                        "keep only one of them: YAML would silently use the last one", line, key_node.start_mark.column + 1))
                else:
                    seen[key] = line
                    self.doc.positions.setdefault(path + (key,), (line, key_node.start_mark.column + 1))
                self.walk(value_node, path + (key,), depth + 1)

    def _key(self, key_node, path: tuple):
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:str":
            return key_node.value
        shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a " + key_node.id
        self.doc.problems.append(Problem(
            path + (str(shown),), f"key {shown!r} is not a string (YAML read it as {key_node.tag.rsplit(':', 1)[-1]})",
            show(shown), f'quote the key: "{shown}"' if isinstance(key_node, yaml.ScalarNode) else "use a plain name as the key",
            key_node.start_mark.line + 1, key_node.start_mark.column + 1))
        return ("non-string key", key_node.start_mark.index)  # unique, never a valid field


def _check_values(doc: Document, value, path: tuple, depth: int) -> None:
    """Values JSON Schema cannot judge well: NaN/infinity, and non-string keys in JSON."""
    if depth > MAX_DEPTH:
        raise _too_deep()
    if isinstance(value, float) and not math.isfinite(value):
        line, col = doc.position(path)
        doc.problems.append(Problem(path, "not a finite number", show(str(value)), "write an ordinary number", line, col))
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_values(doc, v, path + (k,), depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_values(doc, v, path + (i,), depth + 1)


_YAML_FIXES = (
    ("found character '\\t'", "indent with spaces; YAML does not allow tabs there"),
    ("mapping values are not allowed", "a value containing ': ' must be quoted, or the indentation is off"),
    ("could not find expected ':'", "a key is missing its ':' (or a quote is not closed)"),
    ("expected <block end>", "check the indentation (the keys of one mapping line up) and look for an unclosed quote above"),
    ("found undefined alias", "define the anchor (&name) before using it (*name)"),
    ("could not determine a constructor", "remove the YAML tag (!...): manifests are plain YAML"),
    ("found unhashable key", "keys must be plain names"),
    ("expected a single document", "a manifest is one YAML document: remove the second '---' and what follows"),
    ("found unexpected end of stream", "a quote or bracket is not closed"),
    ("while scanning a quoted scalar", "a quote is not closed"),
    ("found duplicate anchor", "give each anchor (&name) a different name"),
)


def _yaml_problem(e: yaml.MarkedYAMLError, text: str) -> Unreadable:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark else None
    column = mark.column + 1 if mark else None
    what = _one_line(e.problem or e.context or "invalid YAML")
    if e.context and e.problem:
        what = f"{what} ({_one_line(e.context)})"
    fix = next((f for key, f in _YAML_FIXES if key in str(e)), None)
    where = f" at line {line}, column {column}" if line else ""
    fix = fix or "check indentation and quoting there"
    return _fatal(f"YAML syntax error{where}: {what}", fix, show(_line(text, line)) if line else None, line, column)


def _line(text: str, lineno) -> str:
    lines = text.splitlines()
    if lineno and 1 <= lineno <= len(lines):
        return lines[lineno - 1].rstrip()
    return ""


def _one_line(s: str) -> str:
    return " ".join(str(s).split())


def display_path(path) -> str:
    """The path as the user would recognise it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(os.path.abspath(path))
        return path if rel.startswith("..") else rel
    except ValueError:
        return str(path)
