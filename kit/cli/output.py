"""Where the CLI writes: people's output on stdout (`out`), progress and errors on
stderr (`err`), and `--json` machine output through emit()."""

from __future__ import annotations

import json
import sys
from typing import Callable, Optional

from rich.console import Console

out = Console()
err = Console(stderr=True)


def print_json(data) -> None:
    """Machine output: plain JSON on stdout, nothing else."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def emit(result, json_out: bool, render: Callable, as_json: Optional[Callable] = None) -> None:
    """Show a command's result: with --json as JSON (as_json(result), or the result itself),
    else drawn on stdout by the family's renderer (kit/cli/views)."""
    if json_out:
        print_json(as_json(result) if as_json is not None else result)
    else:
        render(result, out)


def progress_console(json_out: bool) -> Console:
    """Progress goes to stderr under --json, so stdout stays one JSON document."""
    return err if json_out else out
