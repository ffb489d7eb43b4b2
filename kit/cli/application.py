"""The `kit` command line. Each command parses its arguments, calls one core
function that returns a result, and renders it. No docker calls or business
rules here. Errors are rendered once, in main()."""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from kit import __version__
from kit.errors import EXIT_INTERRUPTED, EXIT_INVALID, KitError

app = typer.Typer(
    name="kit",
    help="Take a TensorFlow SavedModel to a fleet of NVIDIA Jetsons: validate, "
    "build TF-TRT engines on the device, prove them, bake, push, roll out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fleet_app = typer.Typer(help="Inspect a fleet of devices.", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")

out = Console()
err = Console(stderr=True)

_state = {"debug": False}


def _version(value: bool):
    if value:
        out.print(f"kit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    _state["debug"] = debug


def print_json(data) -> None:
    """Machine output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


# ---- commands ---------------------------------------------------------------
# Each command below stays thin: parse, call the core, render.


@app.command()
def base(
    tensorflow: Optional[str] = typer.Option(
        None, "--tensorflow", metavar="VERSION", help="TensorFlow version for the CPU base (default: the CPU stack's, 2.17.1)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild the bases even when present."),
    json_out: bool = typer.Option(False, "--json", help="Machine output (progress goes to stderr)."),
):
    """Assemble the offline CPU bases: Debian (debootstrap) and TensorFlow (wheels from PyPI). Reused when present."""
    from kit.build.base import build_bases

    console = err if json_out else out

    def progress(line: str) -> None:
        console.print(line, style="dim" if line.startswith("  |") else None, markup=False, highlight=False, soft_wrap=True)

    result = build_bases(tensorflow=tensorflow, force=force, progress=progress)
    if json_out:
        print_json(result.to_dict())
        return
    for b in (result.debian, result.tensorflow):
        how = "reused" if b.reused else f"built in {b.seconds:.0f}s"
        out.print(f"[green]ok[/] {b.image}  {how}  {b.size / 1e6:.0f} MB  {b.id[:19]}", highlight=False)


@app.command("build")
def build_command(
    manifest: Path = typer.Argument(..., help="The model manifest (kind: Model)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (images, mounts, commands, env); run nothing."),
    base_image: Optional[str] = typer.Option(None, "--base-image", metavar="REF", help="Override the base image of the builder and runtime images."),
    no_smoke: bool = typer.Option(False, "--no-smoke", help="Skip the smoke test (run, wait healthy, one prediction)."),
    json_out: bool = typer.Option(False, "--json", help="Print the build record (or the plan) as JSON; progress goes to stderr."),
):
    """Build the image: preflight, builder, optimize on this host, gate, bake, smoke test, record."""
    from kit.build import pipeline as kb

    if dry_run:
        plan = kb.plan(kb.load(manifest, base_image))
        if json_out:
            print_json(plan.as_dict())
        else:
            kb.render_plan(plan, out)
        return
    record = kb.build(manifest, base_image=base_image, smoke=not no_smoke,
                      reporter=kb.ConsoleReporter(err if json_out else out))
    if json_out:
        print_json(record)
    else:
        kb.render_summary(record, out)


@app.command("validate")
def validate_command(
    files: List[Path] = typer.Argument(..., help="Manifest files (kind: Model or Fleet), YAML or JSON."),
    no_file_checks: bool = typer.Option(False, "--no-file-checks", help="Skip checks that need model.path and sample files to exist."),
    json_out: bool = typer.Option(False, "--json", help="Print [{file, kind, valid, problems}] as JSON."),
):
    """Check manifests against the schema and the device profiles; list every problem with its fix."""
    from kit.manifest.validate import validate_files

    results = validate_files(files, check_files=not no_file_checks)
    if json_out:
        print_json([r.to_dict() for r in results])
    else:
        from kit.cli.views.manifest import render_results

        render_results(results, out)
    if not all(r.valid for r in results):
        raise typer.Exit(code=EXIT_INVALID)


@app.command("profiles")
def profiles_command(json_out: bool = typer.Option(False, "--json", help="Print the profiles and their stacks as JSON.")):
    """List device profiles and the software stack pinned for each."""
    from kit.profiles import profile_table

    rows = profile_table()
    if json_out:
        print_json(rows)
    else:
        from kit.cli.views.manifest import render_profiles

        render_profiles(rows, out)


@app.command("push")
def push_command(
    target: str = typer.Argument(..., metavar="MANIFEST|IMAGE", help="A model manifest (pushes its image_ref) or an image REPOSITORY:TAG."),
    json_out: bool = typer.Option(False, "--json", help="Print the push record as JSON."),
):
    """Push the image to its registry; print and record its digest (.kit/<name>/push.json)."""
    from kit.cli.views.fleet import render_push
    from kit.fleet.registry import push

    console = err if json_out else out
    result = push(target, on_line=lambda line: console.print(f"  {line}", style="dim", markup=False, highlight=False))
    if json_out:
        print_json(result.to_dict())
    else:
        render_push(result, out)


@app.command("rollout")
def rollout_command(
    fleet: Path = typer.Argument(..., help="The fleet manifest (kind: Fleet)."),
    image: Optional[str] = typer.Option(None, "--image", metavar="REF", help="Roll out this image instead of the manifest's `image`."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Resolve, read every device and print the plan and compose files; change nothing."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan or the rollout record as JSON; progress goes to stderr."),
):
    """Roll an image out to a fleet by digest: gate, canary, waves, health + smoke, rollback on failure."""
    from kit.errors import RolloutError
    from kit.cli.views import fleet as render
    from kit.fleet.rollout import rollout

    progress = render.RolloutProgress(err if json_out else out)
    result = rollout(fleet, image=image, dry_run=dry_run, progress=progress)
    if json_out:
        print_json(result.to_dict())
    elif dry_run:
        render.render_plan(result, out)
    else:
        render.render_rollout(result, out)
    if not result.ok:
        raise RolloutError(f"{result.status}: {result.reason}", hint=f"see {result.record_path}; "
                           "`kit fleet status` shows what each device runs")


@fleet_app.command("status")
def fleet_status_command(
    fleet: Path = typer.Argument(..., help="The fleet manifest (kind: Fleet)."),
    json_out: bool = typer.Option(False, "--json", help="Print the status as JSON."),
):
    """What each device runs: reachable, running digest, healthy, model version, last rollout."""
    from kit.cli.views.fleet import render_status
    from kit.fleet.status import fleet_status

    status = fleet_status(fleet)
    if json_out:
        print_json(status.to_dict())
    else:
        render_status(status, out)


@app.command("serve")
def serve_command(
    manifest: Path = typer.Argument(..., help="The model manifest (kind: Model)."),
    local: bool = typer.Option(False, "--local", help="Run the model server on this host (development)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port to listen on (default: the manifest's serve.port)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
):
    """Serve a model on this host: TF Serving REST and KServe v2, as the runtime image does (foreground)."""
    from kit.errors import UsageError

    if not local:
        raise UsageError("kit serve runs the model server on this host: add --local",
                         hint="on devices the runtime image serves the model (kit build, kit rollout)")
    from kit.manifest.load import load_model
    from kit.serve.local import serve_local

    code = serve_local(load_model(manifest), port=port, host=host,
                       announce=lambda line: err.print(line, highlight=False, markup=False))
    if code != 0:
        raise KitError(f"the model server exited with code {code}", hint="its log above says why")


@app.command("bench")
def bench_command(
    manifest: Path = typer.Argument(..., help="The model manifest (kind: Model)."),
    local: bool = typer.Option(False, "--local", help="Benchmark on this host (native and optimized SavedModels) "
                               "instead of in the runtime image."),
    image: Optional[str] = typer.Option(None, "--image", metavar="REF", help="Runtime image to benchmark "
                                        "(default: the manifest's, as kit build tagged it)."),
    host: Optional[str] = typer.Option(None, "--host", metavar="DOCKER_HOST", help="Docker engine to run it on: "
                                       "ssh://user@device, tcp://HOST:2375 (default: DOCKER_HOST or the local one)."),
    batch_size: Optional[List[int]] = typer.Option(None, "--batch-size", help="Batch size to time (repeatable; "
                                                   "default: every built batch size)."),
    runs: int = typer.Option(1000, "--runs", help="Timed runs per batch size."),
    warmup: int = typer.Option(50, "--warmup", help="Warm-up runs before timing."),
    optimized: Optional[Path] = typer.Option(None, "--optimized", help="Optimized SavedModel to compare "
                                             "(default: kit build's output when it exists)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the latency distribution to this PNG "
                                        "(needs matplotlib)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
):
    """The benchmark protocol in the runtime image (or --local): warm-up, timed runs, images/s, latency
    percentiles, peak memory."""
    from kit.manifest.load import load_model
    from kit.serve.local import bench, check_plot_support, plot_latencies
    from kit.cli.views.serve import render_bench

    if plot is not None:
        check_plot_support()
    # In the image, the model comes from the image: the manifest's files need not exist here.
    report = bench(load_model(manifest, check_files=local), local=local, image=image, host=host,
                   optimized=optimized, batch_sizes=batch_size, runs=runs, warmup=warmup,
                   progress=None if json_out else (lambda line: err.print(line, highlight=False)))
    if json_out:
        print_json(report.to_json())
    else:
        render_bench(report, out)
    if plot is not None and any(r.result for r in report.runs):
        written = plot_latencies(report, plot)
        if not json_out:
            out.print(f"latency plot: {written}")
    if report.failed:
        raise KitError(f"{len(report.failed)} of {len(report.runs)} benchmark runs failed",
                       details=[f"{r.label}, batch {r.batch_size}: {r.error}" for r in report.failed])

@app.command("optimize")
def optimize_command(
    manifest: Path = typer.Argument(..., help="The model manifest (kind: Model)."),
    local: bool = typer.Option(False, "--local", help="Run the optimizer on this machine with this Python and TensorFlow."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="DIR",
                                          help="Where the optimized SavedModel goes (default: .kit/<name>/optimized "
                                               "beside the manifest; report, log and spec go beside it)."),
    allow_version_mismatch: bool = typer.Option(False, "--allow-version-mismatch",
                                                help="Proceed when TensorFlow/TensorRT differ from the pinned stack."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON; progress goes to stderr."),
):
    """Build TF-TRT engines, prove them (engines per batch size, no fallback, parity), write report.json."""
    from kit.errors import UsageError

    if not local:
        raise UsageError("kit optimize runs the optimizer on this machine: add --local",
                         hint="on a Jetson, `kit build MANIFEST` runs it in the builder container on the device")
    from kit.manifest.load import load_model
    from kit.build.optimizer import optimize_local, render_summary

    result = optimize_local(load_model(manifest), output, allow_version_mismatch=allow_version_mismatch)
    if json_out:
        print_json(result.to_dict())
    else:
        render_summary(result, out)


@app.command("audit")
def audit_command(
    model_dir: Path = typer.Argument(..., help="A SavedModel directory (optimized or not)."),
    signature: Optional[str] = typer.Option(None, "--signature", help="Count ops on this signature's path only "
                                            "(default: every signature)."),
    json_out: bool = typer.Option(False, "--json", help="Print the audit as JSON."),
):
    """Count TensorRT engines, engines built per input shape, and the ops left to native TensorFlow."""
    from kit.build.optimizer import audit_dir, render_audit

    result = audit_dir(model_dir, signature)
    if json_out:
        print_json(result)
    else:
        out.print(render_audit(result), highlight=False, markup=False, soft_wrap=True)


from kit.cli.scan_log import scan_log_command  # noqa: E402  (one module per command family)
app.command("scan-log")(scan_log_command)


def render_error(e: KitError) -> None:
    err.print(f"[bold red]{e.title}:[/] {e.message}", highlight=False, markup=True, soft_wrap=True)
    for line in e.details:
        err.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    if e.hint:
        err.print(f"[bold]fix:[/] {e.hint}", highlight=False, soft_wrap=True)


def main(argv: Optional[List[str]] = None) -> int:
    """Console entry point: every KitError is rendered once with its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        # Outside standalone mode, typer returns the code of a typer.Exit instead of raising it.
        code = app(args=args, prog_name="kit", standalone_mode=False)
        return code if isinstance(code, int) and not isinstance(code, bool) else 0
    except KitError as e:
        if debug:
            traceback.print_exc()
        render_error(e)
        return e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED
    except typer.Exit as e:
        return e.exit_code
    except Exception as e:  # click usage errors and anything unexpected
        try:  # typer >= 0.20 vendors click
            from typer._click.exceptions import ClickException, UsageError as ClickUsageError
        except ImportError:
            from click.exceptions import ClickException, UsageError as ClickUsageError

        if isinstance(e, typer.Abort):
            err.print("aborted")
            return EXIT_INTERRUPTED
        if isinstance(e, ClickException):
            e.show()
            return EXIT_INVALID if isinstance(e, ClickUsageError) else e.exit_code
        if debug:
            traceback.print_exc()
        else:
            err.print(f"[bold red]internal error:[/] {type(e).__name__}: {e}", highlight=False)
            err.print("this is a bug in kit; run again with --debug for the traceback and report it")
        return 1


if __name__ == "__main__":
    sys.exit(main())
