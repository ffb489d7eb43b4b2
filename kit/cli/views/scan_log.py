"""Rendering of `kit scan-log` results (rich)."""

from __future__ import annotations


def render_scan(result, console) -> None:
    d = result["diagnosis"]
    f = result["findings"]
    console.print(f"[bold]{result['path']}[/]: {f['lines']} log line(s) read", highlight=False)
    for note in d["notes"]:
        console.print(f"  {note}", highlight=False, markup=False, soft_wrap=True)
    for i, p in enumerate(d["problems"], 1):
        console.print(f"[bold red]problem {i}:[/] {p['what']}", highlight=False, soft_wrap=True)
        console.print(f"  [bold]fix:[/] {p['fix']}", highlight=False, soft_wrap=True)
    style = "bold red" if d["failed"] else "bold green"
    console.print(f"[{style}]verdict:[/] {d['verdict']}", highlight=False, soft_wrap=True)
