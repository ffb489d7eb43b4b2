"""Rendering of `kit bench` results (rich)."""

from __future__ import annotations

from rich import box
from rich.table import Table


def render_bench(report, console) -> None:
    table = Table(title=f"{report.name}: {report.warmup} warm-up + {report.runs_per_batch} timed runs per row, "
                  "latency in ms", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("model", "batch", "images/s", "speedup", "mean", "p50", "p90", "p99", "peak MiB"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for run in report.runs:
        if run.error:
            table.add_row(run.label, str(run.batch_size), "[red]failed[/]", "", "", "", "", "", "")
            continue
        r = run.result
        lat = r["latency_ms"]
        speedup = report.speedup(run)
        table.add_row(run.label, str(run.batch_size), f"{r['images_per_second']:.1f}",
                      f"{speedup:.2f}x" if speedup else "", f"{lat['mean']:.2f}", f"{lat['p50']:.2f}",
                      f"{lat['p90']:.2f}", f"{lat['p99']:.2f}", f"{r['peak_memory_bytes'] / 1048576:.0f}")
    console.print(table)
    if report.note:
        console.print(report.note, highlight=False)
    for run in report.runs:
        if run.error:
            console.print(f"[red]{run.label} batch {run.batch_size} failed:[/] {run.error}", highlight=False)
        elif run.result:
            means = ", ".join(f"{m:.2f}" for m in run.result["window_mean_ms"][:12])
            more = " ..." if len(run.result["window_mean_ms"]) > 12 else ""
            console.print(f"[dim]{run.label} batch {run.batch_size} ({run.result['optimization']} graph, "
                          f"{run.model_dir}): mean every {run.result['window']} runs: {means}{more}[/]",
                          highlight=False)
