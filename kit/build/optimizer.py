"""Host side of the optimizer: manifest -> spec, local runs, reading reports, audits.

The optimizer itself is kit/runtime/optimize.py (Python 3.6, runs in the
builder image on the device, or here with --local). This module:

- `write_spec(manifest, model_dir, output_dir, ...) -> dict` (alias
  `spec_for`): the spec the runtime reads (kit/runtime/spec.py documents
  every key), with the paths AS THE RUNTIME SEES THEM. For a container run
  pass container paths: model_dir where the SavedModel is mounted,
  output_dir on a writable mount, report_path/log_path beside it (never
  inside output_dir), calibration_samples/parity_samples where those files
  are mounted (None = none). Left out, the sample paths default to the
  manifest's own (host) paths, which is right for local runs. `path=`
  also writes the JSON there (atomically).

- the runtime entrypoint `python3 -m kit.runtime.optimize --spec SPEC.json`
  exits with: 0 published (report "optimization": "tensorrt" | "native"),
  1 internal error, 2 invalid spec/inputs, 3 preflight failed (TensorRT
  absent, no GPU, memory rule, versions), 5 not proven (gate), 130
  interrupted; report.json is written at report_path in every case it can
  catch. `raise_for_exit(code, report, ...)` maps these to KitError
  subclasses (2 ManifestError, 3 PreflightError, 5 OptimizeError, 1/signal
  KitError) with the report's reason as the message.

- `optimize_local(manifest, output_dir=None, ...)`: runs the runtime in a
  fresh subprocess with this interpreter (TensorFlow's log environment and
  the fd-level log capture need a fresh process) and returns an
  OptimizeResult. Default output: `.kit/<name>/optimized` beside the
  manifest file; the report, log and spec go beside the output, named after
  it: `optimized.report.json`, `optimized.log`, `optimized.spec.json`.

- `gate_problems(report, manifest)` / `gate_hint(...)`: the host re-checks a
  report before baking it into an image (kit/build/pipeline.py uses them).

- `audit_dir(path)`: kit.runtime.audit on a SavedModel directory (`kit audit`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kit.atomic import write_json_atomic
from kit.errors import KitError, ManifestError, OptimizeError, PreflightError, UsageError

_FROM_MANIFEST = object()

EXIT_TO_ERROR = {2: ManifestError, 3: PreflightError, 5: OptimizeError}


# ---- spec ----------------------------------------------------------------------------------


def _stack_dict(manifest) -> dict:
    st = manifest.stack
    return {"name": st.name, "l4t": st.l4t, "tensorflow": st.tensorflow, "tensorrt": st.tensorrt,
            "cuda": st.cuda, "cudnn": st.cudnn, "python": st.python}


def _path_or_none(p) -> str | None:
    return None if p is None else str(p)


def write_spec(manifest, model_dir, output_dir, *, report_path=None, log_path=None,
               calibration_samples=_FROM_MANIFEST, parity_samples=_FROM_MANIFEST,
               allow_version_mismatch: bool = False, path=None) -> dict:
    """The optimize spec for `manifest`, with the given (runtime-side) paths.

    report_path defaults to `<output_dir>.report.json`, log_path to `<output_dir>.log`.
    """
    output_dir = str(output_dir).rstrip("/")
    opt = manifest.optimize
    if calibration_samples is _FROM_MANIFEST:
        calibration_samples = opt.calibration_samples
    if parity_samples is _FROM_MANIFEST:
        parity_samples = opt.parity.samples
    spec = {
        "spec_version": 1,
        "name": manifest.name,
        "device": manifest.target.device,
        "model_dir": str(model_dir),
        "signature": manifest.model.signature,
        "tags": ["serve"],
        "inputs": {name: {"shape": list(t.shape), "dtype": t.dtype} for name, t in sorted(manifest.model.inputs.items())},
        "output_dir": output_dir,
        "report_path": str(report_path) if report_path else output_dir + ".report.json",
        "log_path": str(log_path) if log_path else output_dir + ".log",
        "precision": opt.precision,
        "batch_sizes": list(opt.batch_sizes),
        "max_workspace_size_bytes": int(opt.max_workspace_size),
        "memory_limit_bytes": int(opt.memory_limit),
        "minimum_segment_size": int(opt.minimum_segment_size),
        "maximum_cached_engines": int(opt.maximum_cached_engines or len(opt.batch_sizes)),
        "allow_native_fallback": bool(opt.allow_native_fallback),
        "allow_version_mismatch": bool(allow_version_mismatch),
        "calibration_samples": _path_or_none(calibration_samples),
        "parity": {"samples": _path_or_none(parity_samples), "max_abs_error": float(opt.parity.max_abs_error),
                   "min_top1_agreement": float(opt.parity.min_top1_agreement), "seed": 0},
        "stack": _stack_dict(manifest),
    }
    if path is not None:
        write_json_atomic(path, spec)
    return spec


def spec_for(manifest, *, model_dir, output_dir, report_path=None, log_path=None,
             calibration_samples=_FROM_MANIFEST, parity_samples=_FROM_MANIFEST, **kw) -> dict:
    """Keyword-only alias of write_spec (kit/build/pipeline.py's name for it)."""
    return write_spec(manifest, model_dir, output_dir, report_path=report_path, log_path=log_path,
                      calibration_samples=calibration_samples, parity_samples=parity_samples, **kw)


# ---- results and errors ------------------------------------------------------------------------


@dataclass
class OptimizeResult:
    name: str
    output_dir: Path
    report_path: Path
    log_path: Path
    spec_path: Path
    exit_code: int
    report: dict = field(default_factory=dict)

    @property
    def optimization(self) -> str | None:
        return self.report.get("optimization")

    @property
    def native_reason(self) -> str | None:
        return self.report.get("native_reason")

    @property
    def engines(self) -> int:
        return int(self.report.get("engines") or 0)

    def to_dict(self) -> dict:
        gate = self.report.get("gate") or {}
        parity = self.report.get("parity") or {}
        audit = self.report.get("audit") or {}
        return {
            "name": self.name,
            "optimization": self.optimization,
            "native_reason": self.native_reason,
            "engines": self.engines,
            "engine_batch_sizes": {e["name"]: e.get("built_batch_sizes") for e in audit.get("engines", [])},
            "coverage_percent": audit.get("coverage_percent"),
            "gate": {"passed": gate.get("passed"), "reasons": gate.get("reasons", [])},
            "parity": {k: parity.get(k) for k in ("passed", "max_abs_error", "top1_agreement", "source")},
            "timings": self.report.get("timings", {}),
            "peak_rss_bytes": (self.report.get("memory") or {}).get("peak_rss_bytes"),
            "output_dir": str(self.output_dir),
            "report_path": str(self.report_path),
            "log_path": str(self.log_path),
            "spec_path": str(self.spec_path),
            "exit_code": self.exit_code,
        }


def read_report(path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def raise_for_exit(code: int, report: dict | None, report_path, log_path) -> None:
    """Turn the runtime's exit code into the matching KitError (nothing for 0)."""
    if code == 0:
        return
    where = [f"report: {report_path}", f"log:    {log_path}"]
    error = (report or {}).get("error") or {}
    message = error.get("message")
    details = list(error.get("problems") or []) + where
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        raise KitError(f"the optimizer process was killed by {sig}"
                       + (" (the kernel's OOM killer sends SIGKILL when memory runs out)" if -code == 9 else ""),
                       hint="check free memory and the log", details=where)
    if code == 130:
        raise KeyboardInterrupt
    if report is None:
        raise KitError(f"the optimizer exited with code {code} and wrote no readable report", details=where,
                       hint="read the log")
    cls = EXIT_TO_ERROR.get(code, KitError)
    if cls is KitError:
        message = f"the optimizer failed: {message or f'exit code {code}'}"
    raise cls(message or f"the optimizer exited with code {code}", hint=error.get("hint"), details=details)


def gate_problems(report: dict | None, manifest) -> list[str]:
    """Why a report does not prove a publishable result for this manifest (empty: it does)."""
    if not report:
        return ["no report"]
    problems = []
    opt = manifest.optimize
    if report.get("schema_version") != 1:
        problems.append(f"report schema_version {report.get('schema_version')!r}, expected 1")
    if report.get("status") != "ok" or report.get("exit_code") != 0:
        err = (report.get("error") or {}).get("message")
        problems.append(f"the optimizer failed (exit {report.get('exit_code')}): {err or 'no reason given'}")
        return problems
    if not (report.get("output") or {}).get("written"):
        problems.append("the report says no output was written")
    gate = report.get("gate") or {}
    if not gate.get("passed"):
        problems.extend(gate.get("reasons") or ["the report's gate did not pass"])
    if list(report.get("batch_sizes") or []) != list(opt.batch_sizes):
        problems.append(f"the report is for batch sizes {report.get('batch_sizes')}, the manifest asks {list(opt.batch_sizes)}")
    optimization = report.get("optimization")
    if optimization == "tensorrt":
        if opt.precision == "native":
            problems.append("the manifest asks for precision native but the report says tensorrt")
        engines = (report.get("audit") or {}).get("engines") or []
        if not engines:
            problems.append("the report says tensorrt but its audit lists 0 TensorRT engines")
        for e in engines:
            lacking = [b for b in opt.batch_sizes if b not in (e.get("built_batch_sizes") or [])]
            if lacking:
                problems.append(f"{e.get('name')} has no built engine for batch size(s) {lacking}")
    elif optimization == "native":
        if not report.get("native_reason"):
            problems.append("the output is native but the report gives no reason")
        if opt.precision != "native" and not opt.allow_native_fallback:
            problems.append(f"the output is native TensorFlow but the manifest asks for {opt.precision} "
                            "without allow_native_fallback")
        if report.get("engines"):
            problems.append("the report says native but counts TensorRT engines")
    else:
        problems.append(f"the report's optimization is {optimization!r} (expected tensorrt or native)")
    return problems


def gate_hint(report: dict | None, manifest) -> str | None:
    error = (report or {}).get("error") or {}
    if error.get("hint"):
        return error["hint"]
    findings = (report or {}).get("findings") or {}
    if findings.get("oom"):
        return ("TensorRT ran out of memory: keep optimize.max_workspace_size well below optimize.memory_limit, "
                "and memory_limit below the RAM available on the device")
    if findings.get("native_fallbacks"):
        return "read the fallback lines in the optimizer's log; unsupported ops or memory are the usual causes"
    return None


# ---- local runs ----------------------------------------------------------------------------------


def default_output_dir(manifest) -> Path:
    """`.kit/<name>/optimized` beside the manifest file."""
    return Path(manifest.file).resolve().parent / ".kit" / manifest.name / "optimized"


def work_paths(output_dir: Path) -> tuple[Path, Path, Path]:
    """(report, log, spec) beside the output dir, named after it."""
    output_dir = Path(output_dir)
    base = output_dir.parent / output_dir.name
    return (base.with_name(base.name + ".report.json"), base.with_name(base.name + ".log"),
            base.with_name(base.name + ".spec.json"))


def optimize_local(manifest, output_dir=None, *, allow_version_mismatch: bool = False, python: str | None = None,
                   env: dict | None = None, timeout: float | None = None, stderr=None) -> OptimizeResult:
    """Run the runtime optimizer on this machine, in a fresh process; raise the mapped KitError on failure.

    stderr: where the runtime's progress goes (default: this process's stderr).
    """
    output_dir = Path(output_dir).resolve() if output_dir else default_output_dir(manifest)
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"--output {output_dir} exists and is not a directory")
    report_path, log_path, spec_path = work_paths(output_dir)
    write_spec(manifest, Path(manifest.model.path).resolve(), output_dir, report_path=report_path, log_path=log_path,
               allow_version_mismatch=allow_version_mismatch, path=spec_path)
    # Our own work file: a run that dies before writing must not leave the previous report looking current.
    report_path.unlink(missing_ok=True)
    run_env = dict(os.environ if env is None else env)
    # The runtime is Python 3.6-compatible code inside this package: make sure the child finds it.
    package_root = str(Path(__file__).resolve().parents[2])
    run_env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, run_env.get("PYTHONPATH")) if p)
    argv = [python or sys.executable, "-m", "kit.runtime.optimize", "--spec", str(spec_path)]
    sink = _fd_target(stderr if stderr is not None else sys.stderr)
    try:
        # The runtime prints nothing on stdout; keep ours clean for --json anyway (fd 2 when inheriting).
        proc = subprocess.run(argv, env=run_env, stdout=sink if sink is not None else 2, stderr=sink,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise KitError(f"the optimizer did not finish within {timeout:.0f} s", details=[f"log: {log_path}"]) from None
    report = read_report(report_path)
    raise_for_exit(proc.returncode, report, report_path, log_path)
    if report is None:
        raise KitError("the optimizer exited 0 but wrote no readable report", details=[f"report: {report_path}"])
    problems = gate_problems(report, manifest)
    if problems:
        raise OptimizeError("the optimizer's report does not prove its output", details=problems,
                            hint=gate_hint(report, manifest))
    return OptimizeResult(manifest.name, output_dir, report_path, log_path, spec_path, proc.returncode, report)


def _fd_target(stream):
    """A stream subprocess can write to directly, or None (inherit) when it has no file descriptor."""
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return stream


def _fmt_seconds(s) -> str:
    return f"{s:.1f}s" if isinstance(s, (int, float)) else "-"


def render_summary(result: OptimizeResult, console) -> None:
    """Human summary of a finished local optimization."""
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
    order = ["preflight", "probe", "tensorflow_import", "inputs", "convert", "build", "save", "copy", "audit",
             "parity", "publish"]
    parts = [f"{k} {_fmt_seconds(timings[k])}" for k in order if k in timings]
    console.print(f"  timings: {', '.join(parts)}; total {_fmt_seconds(timings.get('total'))}", highlight=False)
    if d["peak_rss_bytes"]:
        console.print(f"  peak memory: {d['peak_rss_bytes'] / 2**20:.0f} MiB", highlight=False)
    console.print(f"  output: {d['output_dir']}", highlight=False, markup=False)
    console.print(f"  report: {d['report_path']}", highlight=False, markup=False)
    console.print(f"  log:    {d['log_path']}", highlight=False, markup=False)


# ---- audit ---------------------------------------------------------------------------------------


def audit_dir(path, signature: str | None = None) -> dict:
    """kit.runtime.audit of a SavedModel directory; UsageError for a bad path or file."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory", hint="give the SavedModel directory (it holds saved_model.pb)")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # only protobuf is needed: keep TF's startup chatter quiet
    from kit.runtime import audit

    try:
        return audit.audit_saved_model(str(path), signature)
    except audit.AuditError as e:
        raise UsageError(str(e), hint="give a TF2 SavedModel directory") from None
    except ImportError as e:
        raise KitError(f"kit audit reads SavedModels with TensorFlow's protobuf definitions: {e}",
                       hint="pip install 'kit[tf]'") from None


def render_audit(result: dict) -> str:
    from kit.runtime import audit

    return audit.render_text(result)
