"""The gate: does an optimizer report prove a shippable result for this manifest?

One set of rules for `kit build` (before baking an image) and `kit optimize
--local` (before calling its output done). The runtime applies its own gate;
the host re-checks the report's claims (engines per batch size, no fallback,
what was asked for) instead of trusting its "passed".
"""

from __future__ import annotations

from kit.build.report import SCHEMA_VERSION, OptimizeReport
from kit.build.workspace import OptimizeOutput
from kit.errors import OptimizeError

DEFAULT_HINT = ("read the report's findings and the log: keep max_workspace_size < memory_limit < free memory, "
                "or set optimize.allow_native_fallback: true to ship native TensorFlow, labelled as such")


def _tensorrt_problems(report: OptimizeReport, opt) -> list[str]:
    problems = []
    if opt.precision == "native":
        problems.append("the manifest asks for precision native but the report says tensorrt")
    if not report.audit_engines:
        problems.append("the report says tensorrt but its audit lists 0 TensorRT engines")
    for e in report.audit_engines:
        lacking = [b for b in opt.batch_sizes if b not in (e.built_batch_sizes or ())]
        if lacking:
            problems.append(f"{e.name} has no built engine for batch size(s) {lacking}")
    if report.native_fallbacks:
        # Whatever the report's own gate says: a fallback in the log refuses a TensorRT result.
        problems.append(f"{len(report.native_fallbacks)} fallback(s) to native TensorFlow in the optimizer's log")
    return problems


def _native_problems(report: OptimizeReport, opt) -> list[str]:
    problems = []
    if not report.native_reason:
        problems.append("the output is native but the report gives no reason")
    if opt.precision != "native" and not opt.allow_native_fallback:
        problems.append(f"the output is native TensorFlow but the manifest asks for {opt.precision} "
                        "without allow_native_fallback")
    if report.engines:
        problems.append("the report says native but counts TensorRT engines")
    return problems


def gate_problems(report: OptimizeReport | None, manifest) -> list[str]:
    """Why a report does not prove a shippable result for this manifest (empty: it does)."""
    if report is None:
        return ["no report"]
    opt = manifest.optimize
    problems = []
    if report.schema_version != SCHEMA_VERSION:
        problems.append(f"report schema_version {report.schema_version!r}, expected {SCHEMA_VERSION}")
    if not report.succeeded:
        err = report.error.message if report.error else None
        problems.append(f"the optimizer failed (exit {report.exit_code}): {err or 'no reason given'}")
        return problems
    if not report.output_written:
        problems.append("the report says no output was written")
    if not report.gate_passed:
        problems.extend(report.gate_reasons or ["the report's gate did not pass"])
    if list(report.batch_sizes or []) != list(opt.batch_sizes):
        asked = None if report.batch_sizes is None else list(report.batch_sizes)
        problems.append(f"the report is for batch sizes {asked}, the manifest asks {list(opt.batch_sizes)}")
    if report.optimization == "tensorrt":
        problems += _tensorrt_problems(report, opt)
    elif report.optimization == "native":
        problems += _native_problems(report, opt)
    else:
        problems.append(f"the report's optimization is {report.optimization!r} (expected tensorrt or native)")
    return list(dict.fromkeys(problems))


def gate_hint(report: OptimizeReport | None, manifest) -> str:
    """What to do about a refused report: the optimizer's own hint, else one for its findings."""
    if report is not None and report.error and report.error.hint:
        return report.error.hint
    if report is not None and report.oom:
        return ("TensorRT ran out of memory: keep optimize.max_workspace_size well below optimize.memory_limit, "
                "and memory_limit below the RAM available on the device")
    if report is not None and report.native_fallbacks:
        return "read the fallback lines in the optimizer's log; unsupported ops or memory are the usual causes"
    return DEFAULT_HINT


def gate(manifest, report: OptimizeReport | None, output: OptimizeOutput,
         message: str = "the optimization is not proven; refusing to bake an image") -> OptimizeReport:
    """The report if it proves the optimization; OptimizeError (exit 5) naming the kept report and log otherwise."""
    if report is None:
        raise OptimizeError(f"the optimizer wrote no readable report ({output.report})", details=output.where,
                            hint="read the optimizer's output above and its log")
    problems = gate_problems(report, manifest)
    if problems:
        raise OptimizeError(message, details=problems + output.where, hint=gate_hint(report, manifest))
    return report
