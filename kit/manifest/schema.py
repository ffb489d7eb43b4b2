"""The JSON Schemas (the manifest contract) and their errors in plain words.

jsonschema's own messages ("'x' is not valid under any of the given
schemas") are for schema authors. Each error here becomes a Problem that
names the field, says what is wrong and how to fix it, with a "did you
mean" for misspelt keys and enum values."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match, relevance

from kit.manifest.problems import Problem, show

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schema"  # kit/schema (package data)
KINDS = ("Model", "Fleet")


@lru_cache(maxsize=None)
def load_schema(kind: str) -> dict:
    """The JSON Schema of a manifest kind ("Model" or "Fleet")."""
    with open(SCHEMA_DIR / f"{kind.lower()}.schema.json", encoding="utf-8") as f:
        return json.load(f)


@lru_cache(maxsize=None)
def _validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(kind))


def schema_check(data, kind: str, position=None) -> tuple[list[Problem], list[tuple]]:
    """(problems to show, every path the schema rejected). A missing field whose
    misspelling is already reported is not shown twice, but its path still counts
    as rejected, so semantic checks that read it stay quiet."""
    position = position or (lambda path: (None, None))
    root = load_schema(kind)
    found = []  # (sort key, Problem)
    missing, suggested = set(), set()
    for error in _validator(kind).iter_errors(data):
        for problem, meta in _translate(error, root):
            if meta and meta[0] == "missing":
                missing.add(meta[1])
            elif meta and meta[0] == "suggested":
                suggested.add(meta[1])
            line, column = position(problem.path if not meta or meta[0] != "missing" else problem.path[:-1])
            problem = Problem(problem.path, problem.message, problem.found, problem.fix, line, column)
            found.append((meta, problem, relevance(error)))
    out, seen = [], set()
    for meta, problem, rel in sorted(found, key=lambda t: (t[1].line or 1 << 30, t[1].column or 0, t[2])):
        # `precison:` gives both "unknown field precison" and "missing precision": say it once.
        if meta and meta[0] == "missing" and meta[1] in suggested:
            continue
        key = (problem.path, problem.message)
        if key not in seen:
            seen.add(key)
            out.append(problem)
    return out, [problem.path for _, problem, _ in found]


# ---- one jsonschema error -> Problems -----------------------------------------

_TYPE_NAMES = {"object": "a mapping of fields", "array": "a list", "string": "a string", "integer": "a whole number",
               "number": "a number", "boolean": "true or false", "null": "null"}


# What a YAML value is, in words; bool before int (True is an int to isinstance).
_KINDS = ((type(None), "nothing (null)"), (bool, "a boolean"), (int, "a whole number"), (float, "a number"),
          (str, "a string"), (dict, "a mapping"), (list, "a list"))


def _kind_of(value) -> str:
    return next((name for kind, name in _KINDS if isinstance(value, kind)), f"a {type(value).__name__}")


def _label(path: tuple) -> str:
    """`batch_sizes[2]`, `precision`, `the manifest`."""
    keys = [p for p in path if isinstance(p, str)]
    if not keys:
        return "the manifest" if not path else f"item {path[-1]}"
    label = keys[-1]
    if path and not isinstance(path[-1], str):
        label += f"[{path[-1]}]"
    return label


def _field(path: tuple):
    """The last key name in a path (what the field is), ignoring list indexes."""
    for p in reversed(path):
        if isinstance(p, str):
            return p
    return None


def _example(schema: dict):
    if "examples" in schema:
        return schema["examples"][0]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return next(v for v in schema["enum"] if v is not None)
    return None


def _flow(value) -> str:
    """A value as YAML flow text (JSON is valid YAML flow)."""
    if isinstance(value, str) and value.replace("-", "").replace("_", "").replace("/", "").replace(".", "").isalnum() \
            and not value.replace(".", "").isdigit():
        return value
    return json.dumps(value)


def _did_you_mean(word, choices) -> str | None:
    choices = [c for c in choices if isinstance(c, str)]
    word = str(word)
    for c in choices:
        if c.lower() == word.lower():
            return c
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return match[0] if match else None


def _home_of(key: str, root: dict) -> list[str]:
    """Sections whose fields include `key` (for "precision belongs under optimize")."""
    homes = []

    def visit(schema, path, depth):
        props = schema.get("properties", {})
        if key in props and path:
            homes.append(".".join(path))
        if depth < 2:
            for name, sub in props.items():
                if isinstance(sub, dict) and sub.get("type") == "object":
                    visit(sub, path + [name], depth + 1)

    visit(root, [], 0)
    return homes


@dataclass(frozen=True)
class _Error:
    """One jsonschema error, with what every wording below needs from it."""

    error: object  # the jsonschema ValidationError
    root: dict  # the whole schema (to find where a misplaced key belongs)
    path: tuple
    value: object
    schema: dict
    label: str
    field: str | None

    @classmethod
    def of(cls, error, root: dict) -> "_Error":
        path = tuple(error.absolute_path)
        schema = error.schema if isinstance(error.schema, dict) else {}
        return cls(error, root, path, error.instance, schema, _label(path), _field(path))

    @property
    def want(self):
        return self.error.validator_value

    def problem(self, message: str, fix: str | None, meta=None):
        return Problem(self.path, message, show(self.value), fix), meta


def _translate(error, root: dict):
    """Yield (Problem, meta) for one jsonschema error; meta marks misspelling pairs."""
    e = _Error.of(error, root)
    words = _WORDINGS.get(error.validator)
    if words is None:
        yield e.problem(error.message, None)
    else:
        yield from words(e)


def _required(e: _Error):
    for key in e.want:
        if isinstance(e.value, dict) and key not in e.value:
            sub = e.schema.get("properties", {}).get(key, {})
            parent = f"under {' -> '.join(map(str, e.path))}" if e.path else "at the top level"
            example = _example(sub)
            if example is not None:
                fix = f"add `{key}: {_flow(example)}` {parent}"
            elif sub.get("type") == "object" and sub.get("required"):
                fix = f"add the `{key}:` section {parent} with {', '.join(sub['required'])}"
            else:
                fix = f"add `{key}:` {parent}"
            yield Problem(e.path + (key,), f"missing required field '{key}'", None, fix), ("missing", e.path + (key,))


def _additional_properties(e: _Error):
    if not isinstance(e.value, dict):
        yield e.problem(e.error.message, None)
        return
    allowed = list(e.schema.get("properties", {}))
    for key in e.value:
        if key in allowed or not isinstance(key, str):  # non-string keys are reported by the reader
            continue
        guess = _did_you_mean(key, allowed)
        homes = [h for h in _home_of(key, e.root) if h != ".".join(map(str, e.path))]
        if guess:
            fix = f"did you mean '{guess}'?"
            meta = ("suggested", e.path + (guess,))
        elif homes:
            fix = f"'{key}' belongs under {' or '.join(homes)}; move it there"
            meta = None
        else:
            fix = f"remove it; fields allowed here: {', '.join(allowed)}"
            meta = None
        yield Problem(e.path + (key,), f"unknown field '{key}'", show(key), fix), meta


def _type(e: _Error):
    expected = e.want if isinstance(e.want, list) else [e.want]
    want = " or ".join(_TYPE_NAMES.get(t, t) for t in expected if t != "null")
    if "null" in expected:
        want += " (or null)"
    label, value, field = e.label, e.value, e.field
    if value is None:
        yield e.problem(f"{label} is empty; it must be {want}", f"give {label} a value, or remove the line")
        return
    fix = None
    if "string" in expected and isinstance(value, (int, float, bool)):
        fix = f'quote it: {field}: "{value}"' if field else "quote it"
    elif "integer" in expected and isinstance(value, float):
        fix = f"use a whole number, e.g. {int(value) if value == value and abs(value) < 1e18 else 1}"
    elif "integer" in expected or "number" in expected:
        fix = "write a number without quotes"
    elif "array" in expected:
        fix = f"write a list, e.g. {field}: {_flow(_example(e.schema) or [1])}"
    elif "object" in expected:
        fix = f"write {label} as a mapping of fields (key: value lines indented under it)"
    elif "boolean" in expected:
        fix = "write true or false"
    yield e.problem(f"{label} must be {want}, found {_kind_of(value)}", fix)


def _enum(e: _Error):
    choices = [c for c in e.want if c is not None]
    value = e.value
    guess = _did_you_mean(value, choices) if isinstance(value, str) else None
    listed = ", ".join(map(str, choices))
    if e.field == "device":
        message = f"unknown device profile {show(value)}"
        fix = f"use one of: {listed} (`kit profiles` describes them)"
    elif e.field == "jetpack":
        message = f"JetPack {show(value)} is not a pinned stack"
        fix = f"use a pinned JetPack: {listed}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            fix += f' (quote it: jetpack: "{choices[0]}")'
    else:
        message = f"{show(value)} is not a valid {e.label}"
        fix = f"use one of: {listed}"
    if guess:
        fix = f"did you mean '{guess}'? ({fix})"
    yield e.problem(message, fix)


def _const(e: _Error):
    if e.field == "kind":
        yield e.problem(f"kind must be {e.want} in a {e.want} manifest", f"write `kind: {e.want}`")
    else:
        yield e.problem(f"{e.label} must be {e.want}", f"write `{e.field}: {e.want}`")


def _pattern(e: _Error):
    yield e.problem(*_pattern_words(e.field, e.value))


_BOUND_WORDS = {"minimum": "at least", "exclusiveMinimum": "more than", "maximum": "at most",
                "exclusiveMaximum": "less than"}


def _bound(e: _Error):
    words = _BOUND_WORDS[e.error.validator]
    what = "a batch size" if e.field == "batch_sizes" else e.label
    yield e.problem(f"{what} must be {words} {e.want}", f"use a value {words} {e.want}")


def _min_items(e: _Error):
    if e.field == "batch_sizes":
        yield e.problem("no batch sizes: kit builds one TensorRT engine per batch size",
                        "list at least one, e.g. batch_sizes: [1, 8]")
    elif e.field == "devices":
        yield e.problem("no devices: a fleet needs at least one", "list devices, each with name, host and device")
    else:
        yield e.problem(f"{e.label} must list at least {e.want}", "add items")


def _max_items(e: _Error):
    yield e.problem(f"{e.label} lists {len(e.value)} items; at most {e.want} are allowed", "remove some")


def _unique_items(e: _Error):
    value = e.value
    dups = sorted({show(v) for i, v in enumerate(value) if any(v == w for w in value[:i])})
    what = f"lists {', '.join(dups)} more than once" if dups else "has duplicates"
    yield e.problem(f"{e.label} {what}", "list each value once")


def _min_length(e: _Error):
    yield e.problem(f"{e.label} must not be empty", f"give {e.label} a value, or remove it")


def _max_length(e: _Error):
    yield e.problem(f"{e.label} is too long ({len(e.value)} characters; at most {e.want})", "shorten it")


def _any_of(e: _Error):
    title = e.schema.get("title")
    if title == "size":
        bad_number = isinstance(e.value, int) and not isinstance(e.value, bool)
        yield e.problem(f"{e.label} must be a positive size" if bad_number else f"{e.label} is not a size",
                        "use bytes (e.g. 1073741824) or a number with a unit: 1GiB, 512MiB "
                        "(B, KiB, MiB, GiB, TiB, KB, MB, GB)")
    elif title == "duration":
        yield e.problem(f"{e.label} is not a duration", "use seconds (e.g. 90) or a number with a unit: 2ms, 90s, 2m, 1h")
    elif e.error.context:
        yield from _translate(best_match(e.error.context), e.root)
    else:
        yield e.problem(e.error.message, None)


# jsonschema keyword -> the words for its errors; any other keyword keeps jsonschema's own message.
_WORDINGS = {
    "required": _required, "additionalProperties": _additional_properties, "type": _type, "enum": _enum,
    "const": _const, "pattern": _pattern, "minimum": _bound, "exclusiveMinimum": _bound, "maximum": _bound,
    "exclusiveMaximum": _bound, "minItems": _min_items, "maxItems": _max_items, "uniqueItems": _unique_items,
    "minLength": _min_length, "maxLength": _max_length, "anyOf": _any_of, "oneOf": _any_of,
}


def _pattern_words(field, value) -> tuple[str, str]:
    text = str(value)
    if field == "name":
        return (f"{show(value)} is not a valid name",
                "use lowercase letters, digits and dashes, starting with a letter or digit, at most 63 characters, e.g. resnet50")
    if field == "version":
        return (f"{show(value)} is not a valid version (it becomes part of the image tag)",
                "use letters, digits, '_', '.' and '-', not starting with '.' or '-', e.g. \"1.0.0\"")
    if field == "repository":
        fix = "a lowercase repository like registry.example.com/vision/resnet50"
        if ":" in text.rsplit("/", 1)[-1] or "@" in text:
            fix += "; put the tag in image.tag, not in the repository"
        return f"{show(value)} is not a valid image repository", fix
    if field == "tag":
        return (f"{show(value)} is not a valid image tag",
                "use letters, digits, '_', '.' and '-', not starting with '.' or '-', at most 128 characters")
    if field == "base_image":
        return (f"{show(value)} is not a valid image reference",
                "use repository[:tag][@sha256:<64 hex digits>], e.g. nvcr.io/nvidia/l4t-tensorflow:r32.4.4-tf2.3-py3")
    if field == "image":
        last = text.rsplit("/", 1)[-1]
        if ":" not in last and "@" not in last:
            return (f"image {show(value)} has no tag or digest",
                    "pin the image: repository:tag or repository@sha256:<64 hex digits>, as `kit push` printed it")
        return (f"{show(value)} is not a valid image reference",
                "use repository:tag or repository@sha256:<64 hex digits>, with a lowercase repository")
    if field == "host":
        scheme = text.split("://", 1)[0] if "://" in text else None
        what = f"scheme '{scheme}://' is not a docker endpoint" if scheme and scheme not in ("ssh", "tcp", "unix") \
            else f"{show(value)} is not a docker endpoint"
        return what, "use ssh://user@host, tcp://host:2376 or unix:///var/run/docker.sock"
    return f"{show(value)} has the wrong form for {field}", "see the manifest reference in the README"
