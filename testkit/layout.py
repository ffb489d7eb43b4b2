"""Size and coupling figures of the kit package, read with `ast` (nothing is imported or run).

    .venv/bin/python -m testkit.layout        # or: bash scripts/layout-figures

prints the number of top-level modules in kit/, the largest class and the largest function
(lines = end_lineno - lineno + 1, decorators left out), and any private name one module takes
from another. tests/unit/test_layout.py holds kit/ to the limits below.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "kit"
MAX_FUNCTION_LINES = 100
MAX_CLASS_LINES = 300


@dataclass(frozen=True)
class Span:
    """A class or function: where it is and how many lines it takes."""

    kind: str  # "class" or "function"
    qualname: str
    path: str  # relative to the repository root
    line: int
    lines: int

    def __str__(self) -> str:
        return f"{self.qualname} ({self.path}:{self.line}), {self.lines} lines"


@dataclass(frozen=True)
class PrivateUse:
    """`from kit.x import _y`, or `x._y` on an imported kit module, in a module other than kit.x."""

    path: str
    line: int
    owner: str  # the module the private name belongs to
    name: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.owner}.{self.name}"


def python_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def top_level_modules(kit: Path = KIT) -> list[str]:
    """The .py files directly in kit/ (kit/__init__.py included)."""
    return sorted(p.name for p in kit.glob("*.py"))


def spans(paths: list[Path]) -> list[Span]:
    """Every class and function (methods and nested functions included) in these files."""
    out = []
    for path in paths:
        out += _spans_in(_parse(path), _relative(path), "")
    return out


def _spans_in(node: ast.AST, path: str, prefix: str) -> list[Span]:
    out = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            qualname = prefix + child.name
            kind = "class" if isinstance(child, ast.ClassDef) else "function"
            out.append(Span(kind, qualname, path, child.lineno, child.end_lineno - child.lineno + 1))
            out += _spans_in(child, path, qualname + ".")
        else:
            out += _spans_in(child, path, prefix)
    return out


def largest(found: list[Span], kind: str) -> Span:
    return max((s for s in found if s.kind == kind), key=lambda s: s.lines)


def over_limits(found: list[Span]) -> list[Span]:
    limit = {"class": MAX_CLASS_LINES, "function": MAX_FUNCTION_LINES}
    return sorted((s for s in found if s.lines > limit[s.kind]), key=lambda s: -s.lines)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _is_kit_module(dotted: str, root: Path) -> bool:
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def private_uses(path: Path, root: Path = ROOT) -> list[PrivateUse]:
    """Private kit names this file takes from another module: imported by name, or read off an
    imported module (`model._tf` on `from kit.runtime import model`). A module's own names, and dunders, are its business."""
    tree = _parse(path)
    try:
        own = module_name(path, root)
    except ValueError:  # not under root (a test's own file)
        own = None
    modules: dict[str, str] = {}  # local name -> the kit module it is bound to
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "kit":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if _is_kit_module(full, root):
                    modules[alias.asname or alias.name] = full
                elif _is_private(alias.name) and node.module != own:
                    out.append(PrivateUse(_relative(path), node.lineno, node.module, alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "kit" and alias.asname:
                    modules[alias.asname] = alias.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and _is_private(node.attr):
            owner = modules.get(node.value.id)
            if owner and owner != own:
                out.append(PrivateUse(_relative(path), node.lineno, owner, node.attr))
    return sorted(out, key=lambda u: (u.path, u.line))


def report(kit: Path = KIT) -> str:
    files = python_files(kit)
    found = spans(files)
    lines = [
        f"top-level modules in kit/: {len(top_level_modules(kit))}",
        f"largest class: {largest(found, 'class')}",
        f"largest function: {largest(found, 'function')}",
    ]
    over = over_limits(found)
    lines.append(f"over the limits ({MAX_FUNCTION_LINES}-line functions, {MAX_CLASS_LINES}-line classes): "
                 + (", ".join(str(s) for s in over) if over else "none"))
    private = [u for p in files for u in private_uses(p)]
    lines.append("private names taken across modules in kit/: "
                 + (", ".join(str(u) for u in private) if private else "none"))
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else KIT))
