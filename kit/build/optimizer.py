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
  OptimizeResult. Default output: the workspace's, the same layout kit
  build writes (kit/build/workspace.py): `.kit/<name>/optimize/model`, with
  `report.json` and `optimize.log` beside the model and the spec at
  `.kit/<name>/spec.json`. With an explicit output DIR, the report, log and
  spec go beside it, named after it: `DIR.report.json`, `DIR.log`,
  `DIR.spec.json`. Either way the output must pass the same gate as kit
  build's (kit/build/gate.py).

- `audit_dir(path)`: kit.runtime.audit on a SavedModel directory (`kit audit`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kit.atomic import write_json_atomic
from kit.build.gate import gate
from kit.build.report import OptimizeReport, ReportError
from kit.build.workspace import OptimizeOutput, Workspace
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
    """Keyword-only alias of write_spec (kit/build/containers.py uses it)."""
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
    report: OptimizeReport = field(default_factory=OptimizeReport)

    @property
    def optimization(self) -> str | None:
        return self.report.optimization

    @property
    def native_reason(self) -> str | None:
        return self.report.native_reason

    @property
    def engines(self) -> int:
        return int(self.report.engines or 0)

    def to_dict(self) -> dict:
        r = self.report
        return {
            "name": self.name,
            "optimization": self.optimization,
            "native_reason": self.native_reason,
            "engines": self.engines,
            "engine_batch_sizes": r.engine_batch_sizes,
            "coverage_percent": r.coverage_percent,
            "gate": {"passed": r.gate_passed, "reasons": list(r.gate_reasons)},
            "parity": r.parity.as_dict(),
            "timings": r.timings,
            "peak_rss_bytes": r.peak_rss_bytes,
            "output_dir": str(self.output_dir),
            "report_path": str(self.report_path),
            "log_path": str(self.log_path),
            "spec_path": str(self.spec_path),
            "exit_code": self.exit_code,
        }


def raise_for_exit(code: int, report: OptimizeReport | None, report_path, log_path) -> None:
    """Turn the runtime's exit code into the matching KitError (nothing for 0)."""
    if code == 0:
        return
    where = [f"report: {report_path}", f"log:    {log_path}"]
    error = (report.error if report is not None else None) or ReportError()
    message = error.message
    details = list(error.problems) + where
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
    raise cls(message or f"the optimizer exited with code {code}", hint=error.hint, details=details)


# ---- local runs ----------------------------------------------------------------------------------


def _outputs(manifest, output_dir) -> tuple[Workspace, OptimizeOutput, Path]:
    """(workspace, output, spec path): the workspace's layout, or DIR and its neighbours for --output DIR."""
    ws = Workspace(Path(manifest.file).resolve().parent / ".kit" / manifest.name)
    if output_dir is None:
        return ws, ws.optimize, ws.spec
    out = OptimizeOutput.beside(Path(output_dir).resolve())
    if out.model.exists() and not out.model.is_dir():
        raise UsageError(f"--output {out.model} exists and is not a directory")
    return ws, out, out.model.with_name(out.model.name + ".spec.json")


def optimize_local(manifest, output_dir=None, *, allow_version_mismatch: bool = False, python: str | None = None,
                   env: dict | None = None, timeout: float | None = None, stderr=None) -> OptimizeResult:
    """Run the runtime optimizer on this machine, in a fresh process; raise the mapped KitError on failure.

    stderr: where the runtime's progress goes (default: this process's stderr).
    """
    ws, out, spec_path = _outputs(manifest, output_dir)
    with ws.lock() if output_dir is None else contextlib.nullcontext():
        if output_dir is None:
            out.dir.mkdir(parents=True, exist_ok=True)
            # kit build's reuse stamp describes its own run, not this one.
            out.stamp.unlink(missing_ok=True)
        write_spec(manifest, Path(manifest.model.path).resolve(), out.model, report_path=out.report,
                   log_path=out.log, allow_version_mismatch=allow_version_mismatch, path=spec_path)
        # Our own work file: a run that dies before writing must not leave the previous report looking current.
        out.report.unlink(missing_ok=True)
        code = _run_runtime(spec_path, out, python=python, env=env, timeout=timeout, stderr=stderr)
    report = OptimizeReport.read(out.report)
    raise_for_exit(code, report, out.report, out.log)
    if report is None:
        raise KitError("the optimizer exited 0 but wrote no readable report", details=[f"report: {out.report}"])
    gate(manifest, report, out, message="the optimizer's report does not prove its output")
    return OptimizeResult(manifest.name, out.model, out.report, out.log, spec_path, code, report)


def _run_runtime(spec_path: Path, out: OptimizeOutput, *, python, env, timeout, stderr) -> int:
    """`python -m kit.runtime.optimize --spec SPEC` in a fresh process; its exit code."""
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
        raise KitError(f"the optimizer did not finish within {timeout:.0f} s", details=[f"log: {out.log}"]) from None
    return proc.returncode


def _fd_target(stream):
    """A stream subprocess can write to directly, or None (inherit) when it has no file descriptor."""
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return stream


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
