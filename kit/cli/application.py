"""The `kit` command line: the application object, the root options, main() and
error rendering. The commands live in one module per family (kit/cli/manifest.py,
build.py, serve.py, fleet.py) and are registered below, one line each; each
parses its arguments, calls one core function that returns a result, and
renders it (kit/cli/views). No docker calls or business rules here. Errors are
rendered once, in main()."""

from __future__ import annotations

import sys
import traceback
from typing import List, Optional

import typer

from kit import __version__
from kit.cli import build, doctor, fleet, init, manifest, scan_log, serve
from kit.cli.output import err, out
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


def _version(value: bool):
    if value:
        out.print(f"kit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks for errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
):
    """--debug is read by main() from the arguments (errors are rendered there, outside typer)."""


# ---- commands, in the order `kit --help` lists them --------------------------------------

app.command("base")(build.base_command)
app.command("build")(build.build_command)
app.command("init")(init.init_command)
app.command("validate")(manifest.validate_command)
app.command("profiles")(manifest.profiles_command)
app.command("push")(fleet.push_command)
app.command("rollout")(fleet.rollout_command)
fleet_app.command("status")(fleet.fleet_status_command)
app.command("serve")(serve.serve_command)
app.command("bench")(serve.bench_command)
app.command("optimize")(build.optimize_command)
app.command("audit")(build.audit_command)
app.command("scan-log")(scan_log.scan_log_command)
app.command("doctor")(doctor.doctor_command)


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
