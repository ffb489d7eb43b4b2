"""Rendering fleet results for people: push, rollout progress and result, fleet status."""

from __future__ import annotations

import threading

from rich.console import Console
from rich.table import Table

_COLOR = {"done": "green", "unchanged": "green", "rolled-back": "yellow", "refused": "yellow",
          "untouched": "dim", "failed": "red", "running": "cyan", "pending": "dim"}


def short_digest(ref: str | None) -> str:
    """name@sha256:0123456789ab (last path part, 12 hex digits), or '-'. The full
    reference is in --json and in the record."""
    if not ref:
        return "-"
    repo, sep, digest = ref.partition("@")
    if not sep:
        return ref
    return f"{repo.rsplit('/', 1)[-1]}@{digest[:19]}"


def render_push(result, console: Console) -> None:
    console.print(f"[green]pushed[/] {result.ref}", highlight=False)
    console.print(f"digest  {result.digest_ref}", highlight=False, soft_wrap=True)
    console.print(f"record  {result.record}", highlight=False, soft_wrap=True)


class RolloutProgress:
    """Per-device progress lines, safe to call from the rollout's worker threads."""

    def __init__(self, console: Console):
        self.console = console
        self._lock = threading.Lock()

    def __call__(self, device: str, phase: str, message: str) -> None:
        color = _COLOR.get(phase, "cyan")
        with self._lock:
            self.console.print(f"  {device:<14} [{color}]{phase:<11}[/] {message}", highlight=False,
                               soft_wrap=True, markup=True)


def render_plan(result, console: Console) -> None:
    console.print(f"[bold]rollout plan[/] for fleet {result.fleet}: {result.image}", highlight=False)
    console.print(f"  pinned to {result.digest_ref}", highlight=False, soft_wrap=True)
    for p in result.plans:
        color = {"update": "cyan", "unchanged": "green", "refused": "yellow", "unreachable": "red"}[p.action]
        console.print(f"\n[bold]{p.device.name}[/] ({p.device.device}, {p.device.host}): "
                      f"[{color}]{p.action}[/] {p.reason}", highlight=False, soft_wrap=True)
        if p.action == "update":
            console.print(f"  $ DOCKER_HOST={p.device.host} {' '.join(p.command)}", highlight=False,
                          soft_wrap=True, markup=False)
            console.print("  compose file:", highlight=False)
            for line in (p.compose_text or "").splitlines():
                console.print(f"    {line}", highlight=False, markup=False, soft_wrap=True)


def render_rollout(result, console: Console) -> None:
    record = result.record
    table = Table(title=f"rollout of {result.image} = {short_digest(result.digest_ref)}", title_justify="left")
    for col in ("device", "wave", "result", "before", "after", "reason"):
        table.add_column(col, overflow="fold")
    for rec in record.devices.values():
        color = _COLOR.get(rec.result, "white")
        table.add_row(rec.name, "-" if rec.wave is None else ("canary" if rec.wave == 0 else str(rec.wave)),
                      f"[{color}]{rec.result}[/]", short_digest(rec.before), short_digest(rec.after),
                      rec.reason or "")
    console.print(table)
    color = "green" if result.status == "done" else "red"
    console.print(f"[{color}]{result.status}[/]" + (f": {result.reason}" if result.reason else ""), highlight=False,
                  soft_wrap=True)
    console.print(f"record  {result.record_path}", highlight=False, soft_wrap=True)


def render_status(status, console: Console) -> None:
    table = Table(title=f"fleet {status.fleet}  (manifest image {status.image})", title_justify="left")
    for col in ("device", "reachable", "running digest", "healthy", "model version", "last rollout"):
        table.add_column(col, overflow="fold")
    for d in status.devices:
        reach = "[green]yes[/]" if d.reachable else f"[red]no[/] {d.error[:60]}"
        healthy = "-" if d.healthy is None else ("[green]yes[/]" if d.healthy else f"[red]no[/] ({d.state})")
        version = " ".join(x for x in (d.model, d.version) if x) or "-"
        last = f"{d.last_result} {d.last_rollout or ''}".strip() if d.last_result else "-"
        table.add_row(d.name, reach, short_digest(d.digest), healthy, version, last)
    console.print(table)
    if status.last_rollout_status:
        console.print(f"last rollout: {status.last_rollout_status}", highlight=False)
