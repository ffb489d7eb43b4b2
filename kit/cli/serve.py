"""Commands that run the model on a host: kit serve, kit bench."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from kit.cli.output import emit, err, out
from kit.errors import KitError


def serve_command(
    manifest: Path = typer.Argument(..., help="The model manifest (kind: Model)."),
    local: bool = typer.Option(False, "--local", help="Run the model server on this host (development)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port to listen on (default: the manifest's serve.port)."),
    grpc_port: Optional[int] = typer.Option(None, "--grpc-port", help="gRPC port (default: the manifest's "
                                            "serve.grpc_port, 8500); 0 turns gRPC off."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    warmup: bool = typer.Option(True, "--warmup/--no-warmup", help="--no-warmup: ready at once, without the "
                                "manifest's serve.warmup (the first requests may be slow)."),
):
    """Serve a model on this host: TF Serving REST and gRPC, KServe v2 REST and gRPC, as the runtime image does
    (foreground)."""
    from kit.errors import UsageError

    if not local:
        raise UsageError("kit serve runs the model server on this host: add --local",
                         hint="on devices the runtime image serves the model (kit build, kit rollout)")
    from kit.manifest.load import load_model
    from kit.serve.local import serve_local

    code = serve_local(load_model(manifest), port=port, host=host, grpc_port=grpc_port, warmup=warmup,
                       announce=lambda line: err.print(line, highlight=False, markup=False))
    if code != 0:
        raise KitError(f"the model server exited with code {code}", hint="its log above says why")


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
                                             "(default: the workspace's, from kit build or kit optimize --local, "
                                             "when it exists)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the latency distribution to this PNG "
                                        "(needs matplotlib)."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
):
    """The benchmark protocol in the runtime image (or --local): warm-up, timed runs, images/s, latency
    percentiles, peak memory."""
    from kit.cli.views.serve import render_bench
    from kit.manifest.load import load_model
    from kit.serve.bench import bench, check_plot_support, plot_latencies

    if plot is not None:
        check_plot_support()
    # In the image, the model comes from the image: the manifest's files need not exist here.
    report = bench(load_model(manifest, check_files=local), local=local, image=image, host=host,
                   optimized=optimized, batch_sizes=batch_size, runs=runs, warmup=warmup,
                   progress=None if json_out else (lambda line: err.print(line, highlight=False)))
    emit(report, json_out, render_bench, lambda r: r.to_json())
    if plot is not None and any(r.result for r in report.runs):
        written = plot_latencies(report, plot)
        if not json_out:
            out.print(f"latency plot: {written}")
    if report.failed:
        raise KitError(f"{len(report.failed)} of {len(report.runs)} benchmark runs failed",
                       details=[f"{r.label}, batch {r.batch_size}: {r.error}" for r in report.failed])
