"""Rendering of `kit doctor` (rich)."""

from __future__ import annotations

from rich import box
from rich.table import Table

_STYLE = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]fail[/]"}


def render_doctor(report, console) -> None:
    title = f"kit doctor: {report.host}" + (f" for {report.manifest}" if report.manifest else "")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_lines=False)
    table.add_column("check", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("what was found / the fix")
    for c in report.checks:
        text = c.detail + (f"\n[dim]fix: {c.fix}[/]" if c.fix and c.status != "ok" else "")
        table.add_row(c.name, _STYLE.get(c.status, c.status), text)
    console.print(table, highlight=False)
    failed, warned = report.failed, [c for c in report.checks if c.status == "warn"]
    if failed:
        console.print(f"[bold red]{len(failed)} check(s) failed[/] ({', '.join(c.name for c in failed)})"
                      + (f", {len(warned)} warning(s)" if warned else "") + ": this host cannot build kit images "
                      "for a Jetson until they pass", highlight=False)
    else:
        console.print("[green]all checks passed[/]" + (f" ({len(warned)} warning(s))" if warned else ""),
                      highlight=False)
