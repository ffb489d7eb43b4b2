"""`kit bench`: the benchmark protocol (warm-up, timed runs, images/s, latency
percentiles, peak memory), from a model manifest.

With --local it runs under this host's Python and TensorFlow, each benchmark
in a fresh process so its peak memory is its own: the native model and the
optimized one side by side. Without --local it runs in the built runtime
image through Docker (this engine or a device's), one container per batch
size for the same reason.
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kit import labels as lb
from kit.atomic import write_bytes_atomic
from kit.errors import DockerError, UsageError
from kit.serve.local import input_shapes_arg, require_tensorflow, runtime_env


@dataclass
class BenchRun:
    label: str  # native | optimized
    model_dir: Path
    batch_size: int
    result: dict | None = None
    error: str | None = None

    def to_json(self) -> dict:
        return {"label": self.label, "model_dir": str(self.model_dir), "batch_size": self.batch_size,
                "result": self.result, "error": self.error}


@dataclass
class BenchReport:
    name: str
    runs_per_batch: int
    warmup: int
    runs: list = field(default_factory=list)
    image: str | None = None  # the runtime image the runs ran in (None: on this host)
    note: str | None = None  # what the reader must know to read the rows

    @property
    def failed(self) -> list:
        return [r for r in self.runs if r.error]

    def speedup(self, run: BenchRun) -> float | None:
        """Optimized throughput / native throughput at the same batch size."""
        if run.label == "native" or not run.result:
            return None
        base = next((r for r in self.runs if r.label == "native" and r.batch_size == run.batch_size and r.result),
                    None)
        if not base:
            return None
        return run.result["images_per_second"] / base.result["images_per_second"]

    def to_json(self) -> dict:
        return {"name": self.name, "protocol": {"warmup": self.warmup, "runs": self.runs_per_batch},
                "image": self.image, "note": self.note, "runs": [r.to_json() for r in self.runs]}


def optimized_model_dir(manifest) -> Path | None:
    """The optimizer's output for this manifest in its workspace (kit build's or kit optimize --local's,
    the old `.kit/<name>/optimized` included), when it exists."""
    from kit.build.workspace import Workspace

    return Workspace.for_manifest(manifest).optimized_model()


def bench_args(manifest, model_dir, batch_size: int, runs: int, warmup: int) -> list[str]:
    """`python3 -m kit.runtime.bench` arguments (JSON result on stdout)."""
    args = ["--model-dir", str(model_dir), "--batch-size", str(batch_size), "--runs", str(runs),
            "--warmup", str(warmup), "--signature", manifest.model.signature, "--json"]
    shapes = input_shapes_arg(manifest)
    if shapes:
        args += ["--input-shapes", shapes]
    return args


def _check_protocol(runs: int, warmup: int, sizes) -> None:
    if runs < 1 or warmup < 0:
        raise UsageError("--runs must be >= 1 and --warmup >= 0")
    if any(b < 1 for b in sizes):
        raise UsageError("--batch-size must be >= 1")


def _result_line(text: str) -> dict | None:
    """The benchmark's JSON result: the last output line that is a JSON object."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and "images_per_second" in doc:
                return doc
    return None


def _run_one(run: BenchRun, manifest, runs: int, warmup: int, progress) -> None:
    cmd = [sys.executable, "-m", "kit.runtime.bench"] + bench_args(manifest, run.model_dir, run.batch_size,
                                                                    runs, warmup) + ["--quiet"]
    if progress:
        progress(f"{run.label} model, batch size {run.batch_size}: {warmup} warm-up + {runs} timed runs")
    proc = subprocess.run(cmd, env=runtime_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-3:]
        run.error = f"exit code {proc.returncode}: " + (" | ".join(tail) or "no output")
        return
    run.result = _result_line(proc.stdout)
    if run.result is None:
        run.error = "the benchmark printed no JSON result"


def bench_local(manifest, batch_sizes=None, runs: int = 1000, warmup: int = 50, optimized: Path | None = None,
                progress=None) -> BenchReport:
    """The benchmark protocol on this host: native model, and the optimized one when it exists."""
    require_tensorflow()
    sizes = list(batch_sizes or manifest.optimize.batch_sizes)
    _check_protocol(runs, warmup, sizes)
    if optimized is not None and not (Path(optimized) / "saved_model.pb").is_file():
        raise UsageError(f"--optimized {optimized}: no saved_model.pb there",
                         hint="point it at an optimized SavedModel directory (kit build and kit optimize --local write .kit/<name>/optimize/model)")
    variants = [("native", Path(manifest.model.path))]
    opt = Path(optimized) if optimized is not None else optimized_model_dir(manifest)
    if opt is not None:
        variants.append(("optimized", opt))
    report = BenchReport(manifest.name, runs, warmup)
    for size in sizes:
        for label, path in variants:
            run = BenchRun(label, path, size)
            _run_one(run, manifest, runs, warmup, progress)
            report.runs.append(run)
    return report


# ---- kit bench (in the runtime image) --------------------------------------------------

IMAGE_MODEL_DIR = "/opt/kit/model"  # where runtime.Dockerfile puts the optimized model


def bench_image(manifest, image: str | None = None, batch_sizes=None, runs: int = 1000, warmup: int = 50,
                host: str | None = None, progress=None) -> BenchReport:
    """The benchmark protocol in the built runtime image (default: the manifest's image_ref),
    one container per batch size, on this Docker engine or the device's (`host`)."""
    from kit.docker_api import connect

    ref = image or manifest.image_ref
    _check_protocol(runs, warmup, batch_sizes or [])  # before connecting: usage errors come first
    with connect(host) as engine:
        if not engine.image_exists(ref):
            raise DockerError(f"image {ref} is not on the Docker engine at {engine.host}",
                              hint=f"run `kit build {manifest.file}` first" if image is None else
                              "build it first (kit build MANIFEST), or name a built image with --image")
        info = engine.image_inspect(ref)
        optimization = info.labels.get(lb.OPTIMIZATION) or "unknown"
        # The image's own batch sizes are the ones it was built (and has engines) for.
        sizes = list(batch_sizes or lb.batch_sizes(info.labels) or manifest.optimize.batch_sizes)
        report = BenchReport(manifest.name, runs, warmup, image=ref, note=(
            f"in image {ref} ({info.id[7:19]}): the image holds only the model kit built ({optimization}), "
            "so there is no native row to compare with; `kit bench --local` times native and optimized side by side"))
        for size in sizes:
            run = BenchRun(optimization, Path(IMAGE_MODEL_DIR), size)
            _run_in_image(engine, ref, run, manifest, runs, warmup, progress)
            report.runs.append(run)
    return report


def _run_in_image(engine, ref: str, run: BenchRun, manifest, runs: int, warmup: int, progress) -> None:
    import uuid

    from kit.build.containers import container_runtime

    if progress:
        progress(f"{run.label} model in {ref}, batch size {run.batch_size}: {warmup} warm-up + {runs} timed runs")

    def on_line(line: str) -> None:
        if progress and line.startswith("kit-bench: "):
            progress("  " + line[len("kit-bench: "):])

    command = ["python3", "-m", "kit.runtime.bench"] + bench_args(manifest, run.model_dir, run.batch_size,
                                                                   runs, warmup)
    result = engine.run_to_completion(
        ref, command, on_line=on_line, name=f"kit-bench-{manifest.name}-{uuid.uuid4().hex[:6]}",
        env={"TF_CPP_MIN_LOG_LEVEL": "1"}, runtime=container_runtime(manifest), labels={lb.BENCH_CONTAINER: manifest.name},
        # no health probe: it would start a Python process every 5 s beside the timed runs
        healthcheck={"test": ["NONE"]})
    if result.exit_code != 0:
        tail = [line for line in result.logs.splitlines() if line.strip()][-3:]
        why = "killed for lack of memory" if result.oom_killed else f"exit code {result.exit_code}"
        run.error = f"{why}: " + (" | ".join(tail) or "no output")
        return
    run.result = _result_line(result.logs)
    if run.result is None:
        run.error = "the benchmark printed no JSON result"


def bench(manifest, local: bool = False, image: str | None = None, host: str | None = None,
          optimized: Path | None = None, **protocol) -> BenchReport:
    """Core of `kit bench`: in the runtime image (default), or on this host with local=True.
    protocol: batch_sizes, runs, warmup, progress."""
    if local:
        if image or host:
            raise UsageError("--image and --host run the benchmark in the runtime image; --local runs it on this "
                             "host", hint="drop --local, or drop --image/--host")
        return bench_local(manifest, optimized=optimized, **protocol)
    if optimized is not None:
        raise UsageError("--optimized compares a SavedModel on this host: add --local",
                         hint="without --local, kit bench times the model baked into the runtime image")
    return bench_image(manifest, image=image, host=host, **protocol)


def check_plot_support() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib, which is not installed on this host",
                         hint="pip install matplotlib, or drop --plot (--json carries every latency)")


def plot_latencies(report: BenchReport, path: Path) -> Path:
    """A PNG of the latency distribution of every run (one histogram each), written atomically."""
    check_plot_support()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run in report.runs:
        if run.result:
            ax.hist(run.result["latencies_ms"], bins=60, alpha=0.55,
                    label=f"{run.label}, batch {run.batch_size} (p50 {run.result['latency_ms']['p50']:.2f} ms)")
    ax.set_xlabel("latency per run (ms)")
    ax.set_ylabel("runs")
    ax.set_title(f"{report.name}: {report.runs_per_batch} timed runs after {report.warmup} warm-up")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    path = Path(path)
    write_bytes_atomic(path, buf.getvalue())
    return path
