"""Commands on manifests and profiles: kit validate, kit profiles."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from kit.cli.output import emit
from kit.errors import EXIT_INVALID


def validate_command(
    files: List[Path] = typer.Argument(..., help="Manifest files (kind: Model or Fleet), YAML or JSON."),
    no_file_checks: bool = typer.Option(False, "--no-file-checks", help="Skip checks that need model.path and sample files to exist."),
    json_out: bool = typer.Option(False, "--json", help="Print [{file, kind, valid, problems}] as JSON."),
):
    """Check manifests against the schema and the device profiles; list every problem with its fix."""
    from kit.cli.views.manifest import render_results
    from kit.manifest.validate import validate_files

    results = validate_files(files, check_files=not no_file_checks)
    emit(results, json_out, render_results, lambda rs: [r.to_dict() for r in rs])
    if not all(r.valid for r in results):
        raise typer.Exit(code=EXIT_INVALID)


def profiles_command(json_out: bool = typer.Option(False, "--json", help="Print the profiles and their stacks as JSON.")):
    """List device profiles and the software stack pinned for each."""
    from kit.cli.views.manifest import render_profiles
    from kit.profiles import profile_table

    emit(profile_table(), json_out, render_profiles)
