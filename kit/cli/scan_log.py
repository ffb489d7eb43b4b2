"""`kit scan-log FILE`: read a TF-TRT log (kit's, a notebook's, any TF 2.3-2.17 run), say what happened and
how to fix it. The parser and the diagnosis are kit.runtime.trtlog's, the same the optimizer, the gate and
the server use."""

from __future__ import annotations

from pathlib import Path

import typer

from kit.cli.output import emit
from kit.errors import EXIT_GATE, UsageError


def scan_log_command(
    log_file: Path = typer.Argument(..., help="A TF-TRT log: stderr of a conversion, build or serving run."),
    json_out: bool = typer.Option(False, "--json", help="Print the findings and the diagnosis as JSON."),
):
    """Find TF-TRT's silent failures in a log: segments replaced or kept native (and why), engines built and
    for which input shapes, fallbacks to native TensorFlow at build and at run time, out-of-memory,
    calibration failures, TensorRT version warnings; then a verdict with the fix for each problem.

    Exit 0: no failure in the log. 5: a fallback, a segment left unconverted by an error, an engine not built,
    or any other failure. 2: the file cannot be read.

    For a complete log, run TensorFlow with TF_CPP_MIN_LOG_LEVEL=0 and
    TF_CPP_VMODULE=segment=2,convert_graph=2,convert_nodes=2,trt_engine_op=2,trt_logger=2
    (engine builds are logged at VLOG(1) only).
    """
    from kit.cli.views.scan_log import render_scan
    from kit.runtime.trtlog import scan

    try:
        result = scan(str(log_file))
    except (IOError, OSError) as e:
        raise UsageError(f"cannot read {log_file}: {e.strerror or e}",
                         hint="give the path of a log file (e.g. TensorFlow's stderr: python3 app.py 2> trt.log)")
    emit(result, json_out, render_scan)
    if result["diagnosis"]["failed"]:
        raise typer.Exit(code=EXIT_GATE)
