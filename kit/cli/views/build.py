"""How `kit base`, `kit build`, `kit optimize` and `kit audit` look on a terminal (rich).

Result objects in (kit/build/*), rich output out; nothing here decides anything.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from kit.build.progress import Reporter, StepResult
from kit.build.report import TIMING_PHASES
from kit.units import format_size

_MARKS = {"ran": "[green]✓[/]", "reused": "[cyan]↺[/]", "skipped": "[yellow]–[/]", "failed": "[red]✗[/]"}


class ConsoleReporter(Reporter):
    """Rich progress: a spinner per step, the step's log dimmed, one line per finished step."""

    def __init__(self, console):
        self.console = console
        self.status = None

    def start(self, step: str, what: str) -> None:
        self.status = self.console.status(f"[bold]{step}[/]: {what}")
        self.status.start()

    def line(self, text: str) -> None:
        if text.strip():
            self.console.print("  | " + text.rstrip(), style="dim", markup=False, highlight=False, soft_wrap=True)

    def end(self, result: StepResult) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
        mark = _MARKS.get(result.status, " ")
        self.console.print(f"{mark} {result.name:<10} {result.status:<8} {result.seconds:7.1f}s  ",
                           highlight=False, end="")
        self.console.print(result.detail, markup=False, highlight=False, soft_wrap=True)


def render_bases(result, console) -> None:
    """`kit base`: one line per base image."""
    for b in (result.debian, result.tensorflow):
        how = "reused" if b.reused else f"built in {b.seconds:.0f}s"
        console.print(f"[green]ok[/] {b.image}  {how}  {b.size / 1e6:.0f} MB  {b.id[:19]}", highlight=False)


def render_build(record: dict, console) -> None:
    """`kit build`: what was built, then each step's status and time."""
    t = Table(title=f"kit build {record['name']}", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    t.add_row("image", record["image"])
    t.add_row("image id", record["image_id"])
    if record.get("repo_digest"):
        t.add_row("digest", record["repo_digest"])
    t.add_row("size", format_size(record["size"]) + f"  (model layer {format_size(record['model_layer']['size'])})")
    t.add_row("optimization", str(record.get("optimization")))
    t.add_row("engines", str(record.get("engines")))
    t.add_row("record", str(Path(record["manifest"]).parent / ".kit" / record["name"] / "build.json"))
    console.print(t)
    steps = Table(box=None, pad_edge=False, show_edge=False)
    steps.add_column("step")
    steps.add_column("status")
    steps.add_column("time", justify="right")
    for s in record["steps"]:
        steps.add_row(s["name"], s["status"], f"{s['seconds']:.1f}s")
    steps.add_row("total", "", f"{record.get('total_seconds', 0):.1f}s", style="bold")
    console.print(steps)


def _plan_value(console, key: str, value) -> None:
    if isinstance(value, dict) and key != "spec_document":
        console.print(f"  {key}:", markup=False)
        for k, v in value.items():
            console.print(f"    {k}={v}", markup=False, highlight=False)
    elif isinstance(value, list):
        console.print(f"  {key}: " + (" ".join(map(str, value)) if key == "command" else ""), markup=False,
                      highlight=False)
        if key != "command":
            for item in value:
                console.print(f"    {item}", markup=False, highlight=False)
    elif key == "spec_document":
        console.print("  spec document: " + json.dumps(value, sort_keys=True), markup=False, highlight=False,
                      soft_wrap=True)
    else:
        console.print(f"  {key}: {value}", markup=False, highlight=False)


def render_plan(plan, console) -> None:
    """`kit build --dry-run`: every step with its images, files copied in and out, commands and env."""
    console.print(f"[bold]kit build --dry-run[/] {plan.manifest}  (nothing runs)", highlight=False)
    console.print(f"image: {plan.image}\nwork dir: {plan.work_dir}", highlight=False, markup=False)
    for step in plan.steps:
        console.print(f"\n[bold]{step['step']}[/]")
        for key, value in step.items():
            if key != "step" and value is not None:
                _plan_value(console, key, value)


def _fmt_seconds(s) -> str:
    return f"{s:.1f}s" if isinstance(s, (int, float)) else "-"


def render_optimize(result, console) -> None:
    """`kit optimize --local`: what the output is (TensorRT or native, and why), parity, timings, paths."""
    d = result.to_dict()
    if result.optimization == "tensorrt":
        console.print(f"[green]optimized[/] {result.name}: TensorRT, {d['engines']} engine op(s), "
                      f"coverage {d['coverage_percent']}%", highlight=False)
        for op, sizes in d["engine_batch_sizes"].items():
            console.print(f"  {op}: built for batch sizes {sizes}", highlight=False)
    else:
        console.print(f"[yellow]native[/] {result.name}: the output is NATIVE TensorFlow, 0 TensorRT engines",
                      highlight=False)
        console.print(f"  why: {result.native_reason}", highlight=False, markup=False, soft_wrap=True)
    p = d["parity"]
    if p.get("passed") is not None:
        top1 = "" if p.get("top1_agreement") is None else f", top-1 agreement {p['top1_agreement']:.4f}"
        console.print(f"  parity: {'passed' if p['passed'] else 'FAILED'} (max abs error {p['max_abs_error']:.3g}{top1}; "
                      f"inputs: {p['source']})", highlight=False, markup=False)
    timings = d["timings"]
    parts = [f"{k} {_fmt_seconds(timings[k])}" for k in TIMING_PHASES if k in timings]
    console.print(f"  timings: {', '.join(parts)}; total {_fmt_seconds(timings.get('total'))}", highlight=False)
    if d["peak_rss_bytes"]:
        console.print(f"  peak memory: {d['peak_rss_bytes'] / 2**20:.0f} MiB", highlight=False)
    console.print(f"  output: {d['output_dir']}", highlight=False, markup=False)
    console.print(f"  report: {d['report_path']}", highlight=False, markup=False)
    console.print(f"  log:    {d['log_path']}", highlight=False, markup=False)


def render_audit(result: dict, console) -> None:
    """`kit audit`: the audit's own text form (kit/runtime/audit.py)."""
    from kit.runtime import audit

    console.print(audit.render_text(result), highlight=False, markup=False, soft_wrap=True)
