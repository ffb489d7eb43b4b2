"""How `kit validate` and `kit profiles` look on a terminal (rich). Data comes
from kit.manifest.validate and kit.profiles; nothing here decides anything."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from kit.profiles import MEMORY_RESERVE_BYTES
from kit.units import format_size


def render_results(results, console: Console) -> None:
    """OK with what the manifest resolves to, or every problem with its fix.
    User text is never read as rich markup (a value like "[1]" prints as written)."""
    for r in results:
        line = Text()
        if r.valid:
            line.append("OK", style="bold green")
            line.append(f"  {r.file}: {r.kind} {r.name}")
            summary = r.summary
            if summary:
                line.append(f"  {summary}", style="dim")
            console.print(line, soft_wrap=True)
            continue
        n = len(r.problems)
        line.append("INVALID", style="bold red")
        what = f" ({r.kind} {r.name})" if r.kind and r.name else ""
        line.append(f"  {r.file}{what}: {n} problem{'s' if n != 1 else ''}")
        console.print(line, soft_wrap=True)
        for p in r.problems:
            console.print(Text.assemble("  ", (p.location, "bold"), f": {p.message}"), soft_wrap=True)
            if p.found is not None:
                console.print(Text.assemble("      found: ", (p.found, "yellow")), soft_wrap=True)
            if p.fix:
                console.print(Text.assemble("      fix: ", (p.fix, "cyan")), soft_wrap=True)
    if len(results) > 1:
        bad = sum(1 for r in results if not r.valid)
        console.print(f"{len(results) - bad} valid, {bad} invalid", highlight=False)


def render_profiles(rows, console: Console) -> None:
    """Two tables that fit 80 columns: profiles, then the stacks they pin (base images listed below)."""
    profiles = Table(title="Device profiles", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1), collapse_padding=True)
    for column in ("profile", "GPU", "RAM", "max limit", "precisions", "JetPack"):
        profiles.add_column(column, no_wrap=True)
    stacks = {}
    for row in rows:
        limit = row["memory_bytes"] - MEMORY_RESERVE_BYTES
        profiles.add_row(
            row["name"], row["gpu_arch"] or "-",
            format_size(row["memory_bytes"]) if row["memory_bytes"] else "-",
            format_size(limit) if row["tensorrt"] else "-",
            " ".join(row["precisions"]), ", ".join(row["jetpacks"]) or "-",
        )
        for stack in row["stacks"]:
            stacks.setdefault(stack["name"], stack)
    console.print(profiles)
    console.print(f"max limit: the largest optimize.memory_limit, device RAM minus {format_size(MEMORY_RESERVE_BYTES)} "
                  "kept for the system and the server.", highlight=False)
    console.print()
    pinned = Table(title="Pinned stacks", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1), collapse_padding=True)
    for column in ("stack", "L4T", "TensorRT", "CUDA", "cuDNN", "TensorFlow", "Python"):
        pinned.add_column(column, no_wrap=True)
    for st in stacks.values():
        pinned.add_row(st["name"], st["l4t"] or "-", st["tensorrt"] or "-", st["cuda"] or "-", st["cudnn"] or "-",
                       st["tensorflow"], st["python"])
    console.print(pinned)
    for st in stacks.values():
        console.print(Text(f"base image ({st['name']}): {st['base_image']}"), soft_wrap=True)


def render_init(result, console) -> None:
    console.print(f"[green]wrote[/] {result.path}  ({result.name}, {result.device}, signature {result.signature})",
                  highlight=False)
    for key, spec in result.inputs.items():
        console.print(f"  input {key}: shape {spec['shape']}, {spec['dtype']}", highlight=False)
    if result.unknown_dims:
        console.print(f"[yellow]edit first:[/] {', '.join(result.unknown_dims)} has a dimension the model leaves "
                      "unknown (null): give the size you serve", highlight=False)
    console.print("next: set image.repository, then `kit validate` and `kit build` it", highlight=False)
