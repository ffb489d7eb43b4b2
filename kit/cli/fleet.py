"""Commands that ship images to devices: kit push, kit rollout, kit fleet status."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kit.cli.output import emit, progress_console


def push_command(
    target: str = typer.Argument(..., metavar="MANIFEST|IMAGE", help="A model manifest (pushes its image_ref) or an image REPOSITORY:TAG."),
    json_out: bool = typer.Option(False, "--json", help="Print the push record as JSON."),
):
    """Push the image to its registry; print and record its digest (.kit/<name>/push.json)."""
    from kit.cli.views.fleet import render_push
    from kit.fleet.registry import push

    console = progress_console(json_out)
    result = push(target, on_line=lambda line: console.print(f"  {line}", style="dim", markup=False, highlight=False))
    emit(result, json_out, render_push, lambda r: r.to_dict())


def rollout_command(
    fleet: Path = typer.Argument(..., help="The fleet manifest (kind: Fleet)."),
    image: Optional[str] = typer.Option(None, "--image", metavar="REF", help="Roll out this image instead of the manifest's `image`."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve, read every device and print the plan and compose files; change nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan or the rollout record as JSON; progress goes to stderr."),
):
    """Roll an image out to a fleet by digest: gate, canary, waves, health + smoke, rollback on failure."""
    from kit.cli.views import fleet as views
    from kit.errors import RolloutError
    from kit.fleet.rollout import rollout

    result = rollout(fleet, image=image, dry_run=dry_run, progress=views.RolloutProgress(progress_console(json_out)))
    emit(result, json_out, views.render_plan if dry_run else views.render_rollout, lambda r: r.to_dict())
    if not result.ok:
        raise RolloutError(f"{result.status}: {result.reason}", hint=f"see {result.record_path}; "
                           "`kit fleet status` shows what each device runs")


def fleet_status_command(
    fleet: Path = typer.Argument(..., help="The fleet manifest (kind: Fleet)."),
    json_out: bool = typer.Option(False, "--json", help="Print the status as JSON."),
):
    """What each device runs: reachable, running digest, healthy, model version, last rollout."""
    from kit.cli.views.fleet import render_status
    from kit.fleet.status import fleet_status

    emit(fleet_status(fleet), json_out, render_status, lambda s: s.to_dict())
