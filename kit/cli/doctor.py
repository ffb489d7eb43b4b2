"""`kit doctor`: the first command a Jetson owner runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kit.cli.output import out, print_json


def doctor_command(
    manifest: Optional[Path] = typer.Argument(None, help="A model manifest: also check memory and disk against its "
                                              "optimize.memory_limit and its base image."),
    host: Optional[str] = typer.Option(None, "--host", metavar="ENDPOINT", help="Docker endpoint of the device "
                                       "(ssh://user@nano.local, tcp://..., unix://...). Default: DOCKER_HOST or the "
                                       "local socket, and this host's files."),
    trt_smoke: bool = typer.Option(False, "--trt-smoke", help="Also run a tiny TF-TRT conversion in the builder "
                                   "image (--runtime nvidia): proves TensorRT engines are built and saved here "
                                   "(a minute or two on a Nano)."),
    json_out: bool = typer.Option(False, "--json", help="Print every check and the facts read as JSON."),
):
    """Check this device for kit: L4T/JetPack, Docker and the nvidia runtime, memory and swap, disk, the base image.

    Each check is ok, warn or fail, with the reason and the fix. Exit 0 when
    none fails, 3 when one does (warnings do not fail)."""
    from kit.build.doctor import doctor
    from kit.cli.views.doctor import render_doctor

    report = doctor(host=host, manifest_path=manifest, trt_smoke=trt_smoke)
    if json_out:
        print_json(report.to_dict())
    else:
        render_doctor(report, out)
    if report.exit_code:
        raise typer.Exit(report.exit_code)
