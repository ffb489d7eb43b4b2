"""Commands that make images and optimized models: kit base, kit build, kit optimize, kit audit."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from kit.cli.output import emit, progress_console


def base_command(
    tensorflow: Optional[str] = typer.Option(
        None, "--tensorflow", metavar="VERSION", help="TensorFlow version for the CPU base (default: the CPU stack's, 2.17.1)."
    ),
    stack: str = typer.Option(
        "cpu", "--stack", metavar="STACK",
        help="cpu: Debian's Python 3.11 + tensorflow-cpu (kit/tf-cpu-base:tf2.17.1). twin: the JetPack 4.4.1 twin, "
             "the Jetson's Python side on x86-64 (this host's pyenv Python 3.6.15, tensorflow-cpu 2.3.1, numpy 1.16.1, "
             "protobuf 3.8.0: kit/tf-cpu-base:tf2.3.1-py3.6), for manifests with `target.stack: twin`. "
             "See docs/twin.md.",
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild the bases even when present."),
    json_out: bool = typer.Option(False, "--json", help="Machine output (progress goes to stderr)."),
):
    """Assemble the offline CPU bases: Debian (debootstrap) and TensorFlow (wheels from PyPI). Reused when present.

    `kit base --stack twin` assembles the twin base instead of the cpu one: `kit build` of a manifest with
    `target: {device: cpu, stack: twin}` then runs the optimizer and the server on Python 3.6 + TensorFlow 2.3.1,
    as on a Jetson (no TensorRT: the model stays native)."""
    from kit.build.base import build_bases
    from kit.cli.views.build import render_bases

    console = progress_console(json_out)

    def progress(line: str) -> None:
        console.print(line, style="dim" if line.startswith("  |") else None, markup=False, highlight=False, soft_wrap=True)

    result = build_bases(tensorflow=tensorflow, force=force, progress=progress, stack=stack)
    emit(result, json_out, render_bases, lambda r: r.to_dict())


def build_command(
    manifest: Path = typer.Argument(..., help="The model manifest (kind: Model)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (images, files copied in and out, commands, env); run nothing."),
    base_image: Optional[str] = typer.Option(None, "--base-image", metavar="REF", help="Override the base image of the builder and runtime images."),
    no_smoke: bool = typer.Option(False, "--no-smoke", help="Skip the smoke test (run, wait healthy, one prediction)."),
    json_out: bool = typer.Option(False, "--json", help="Print the build record (or the plan) as JSON; progress goes to stderr."),
    host: Optional[str] = typer.Option(None, "--host", metavar="ENDPOINT", help="Docker engine to build on: unix:///PATH, "
                                       "tcp://HOST:PORT or ssh://USER@HOST (default: DOCKER_HOST or the local socket). "
                                       "The model goes to that engine through the Docker API, the optimized model "
                                       "comes back into .kit/, and the smoke test calls the device at the endpoint's "
                                       "host: see README, 'kit on the Nano'."),
):
    """Build the image: preflight, builder, optimize on this host, gate, bake, smoke test, record."""
    from kit.build import pipeline
    from kit.build.plan import plan
    from kit.cli.views.build import ConsoleReporter, render_build, render_plan

    if dry_run:
        emit(plan(pipeline.load(manifest, base_image)), json_out, render_plan, lambda p: p.as_dict())
        return
    record = pipeline.build(manifest, base_image=base_image, smoke=not no_smoke, host=host,
                            reporter=ConsoleReporter(progress_console(json_out)))
    emit(record, json_out, render_build)


def optimize_command(
    manifest: Path = typer.Argument(..., help="The model manifest (kind: Model)."),
    local: bool = typer.Option(False, "--local", help="Run the optimizer on this machine with this Python and TensorFlow."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="DIR",
                                          help="Where the optimized SavedModel goes (default: .kit/<name>/optimize/model "
                                               "beside the manifest, where kit build puts it; with DIR, the report, "
                                               "log and spec go beside it)."),
    allow_version_mismatch: bool = typer.Option(False, "--allow-version-mismatch",
                                                help="Proceed when TensorFlow/TensorRT differ from the pinned stack."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON; progress goes to stderr."),
):
    """Build TF-TRT engines, prove them (engines per batch size, no fallback, parity), write report.json."""
    from kit.errors import UsageError

    if not local:
        raise UsageError("kit optimize runs the optimizer on this machine: add --local",
                         hint="on a Jetson, `kit build MANIFEST` runs it in the builder container on the device")
    from kit.build.optimizer import optimize_local
    from kit.cli.views.build import render_optimize
    from kit.manifest.load import load_model

    result = optimize_local(load_model(manifest), output, allow_version_mismatch=allow_version_mismatch)
    emit(result, json_out, render_optimize, lambda r: r.to_dict())


def audit_command(
    model_dir: Path = typer.Argument(..., help="A SavedModel directory (optimized or not)."),
    signature: Optional[str] = typer.Option(None, "--signature", help="Count ops on this signature's path only "
                                            "(default: every signature)."),
    json_out: bool = typer.Option(False, "--json", help="Print the audit as JSON."),
):
    """Count TensorRT engines, engines built per input shape, and the ops left to native TensorFlow."""
    from kit.build.optimizer import audit_dir
    from kit.cli.views.build import render_audit

    emit(audit_dir(model_dir, signature), json_out, render_audit)
