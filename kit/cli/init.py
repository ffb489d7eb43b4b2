"""`kit init`: from a SavedModel to a kit.yaml without reading the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kit.cli.output import emit


def init_command(
    saved_model: Path = typer.Argument(..., help="The SavedModel directory (holds saved_model.pb)."),
    device: str = typer.Option("jetson-nano", "--device", "-d", help="Device profile (kit profiles): "
                               "jetson-nano, jetson-tx2, jetson-xavier-nx, jetson-agx-xavier, cpu."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="metadata.name (default: from the directory name)."),
    signature: Optional[str] = typer.Option(None, "--signature", help="Signature to serve (default: serving_default)."),
    json_out: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
):
    """Write kit.yaml next to a SavedModel: signature and inputs read from the model, the device's defaults,
    an image repository placeholder, comments on what to change. Never overwrites an existing kit.yaml."""
    from kit.cli.views.manifest import render_init
    from kit.manifest.scaffold import init_manifest

    emit(init_manifest(saved_model, device=device, name=name, signature=signature), json_out, render_init,
         lambda r: r.to_dict())
