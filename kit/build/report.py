"""The optimizer's report.json, typed on the host.

kit/runtime/report.py documents every key the runtime writes. The host reads
only what it decides on or shows: the gate, the image labels, the summaries.
The report comes from a container, so reading it is tolerant: a missing or
mistyped value reads as None (or empty), and the gate then says what is
missing. This is the one place that digs into the raw document.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA_VERSION = 1

# The timing phases, in the order the optimizer runs them (the summary shows them so).
TIMING_PHASES = ("preflight", "probe", "tensorflow_import", "inputs", "convert", "build", "save", "copy", "audit",
                 "parity", "publish")


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else []


def _sizes(value) -> tuple | None:
    return tuple(value) if isinstance(value, (list, tuple)) else None


@dataclass(frozen=True)
class ReportError:
    """Why the optimizer failed, as it said so."""

    kind: str | None = None
    message: str | None = None
    hint: str | None = None
    problems: tuple = ()


@dataclass(frozen=True)
class EngineAudit:
    """One TRTEngineOp of the output and the batch sizes it has a built engine for."""

    name: str | None
    built_batch_sizes: tuple | None


@dataclass(frozen=True)
class Parity:
    passed: bool | None = None
    max_abs_error: float | None = None
    top1_agreement: float | None = None
    source: str | None = None

    def as_dict(self) -> dict:
        return {"passed": self.passed, "max_abs_error": self.max_abs_error, "top1_agreement": self.top1_agreement,
                "source": self.source}


@dataclass(frozen=True)
class Environment:
    """Versions as the optimizer saw them inside its container."""

    l4t: str | None = None
    jetpack: str | None = None
    tensorrt: str | None = None
    cuda: str | None = None
    tensorflow: str | None = None
    python: str | None = None  # "3.6.15": the interpreter the optimizer ran on


@dataclass(frozen=True)
class OptimizeReport:
    schema_version: object = None
    status: str | None = None
    exit_code: int | None = None
    error: ReportError | None = None
    optimization: str | None = None  # tensorrt | native | None (nothing written)
    native_reason: str | None = None
    precision: str | None = None
    batch_sizes: tuple | None = None
    engines: int | None = None
    output_written: bool = False
    gate_passed: bool | None = None
    gate_reasons: tuple = ()
    audit_engines: tuple = ()  # of EngineAudit
    coverage_percent: float | None = None
    native_fallbacks: tuple = ()  # log lines (findings) where TF-TRT fell back to native TensorFlow
    oom: tuple = ()  # log lines where TensorRT ran out of memory
    parity: Parity = field(default_factory=Parity)
    environment: Environment = field(default_factory=Environment)
    timings: dict = field(default_factory=dict)
    peak_rss_bytes: int | None = None
    finished_at: str | None = None

    @classmethod
    def from_dict(cls, doc: dict) -> "OptimizeReport":
        doc = _dict(doc)
        error = doc.get("error")
        gate, audit, findings = _dict(doc.get("gate")), _dict(doc.get("audit")), _dict(doc.get("findings"))
        parity, env = _dict(doc.get("parity")), _dict(doc.get("environment"))
        return cls(
            schema_version=doc.get("schema_version"),
            status=doc.get("status"),
            exit_code=doc.get("exit_code"),
            error=None if not isinstance(error, dict) else ReportError(
                error.get("kind"), error.get("message"), error.get("hint"), tuple(_list(error.get("problems")))),
            optimization=doc.get("optimization"),
            native_reason=doc.get("native_reason"),
            precision=doc.get("precision"),
            batch_sizes=_sizes(doc.get("batch_sizes")),
            engines=doc.get("engines"),
            output_written=bool(_dict(doc.get("output")).get("written")),
            gate_passed=gate.get("passed"),
            gate_reasons=tuple(_list(gate.get("reasons"))),
            audit_engines=tuple(EngineAudit(_dict(e).get("name"), _sizes(_dict(e).get("built_batch_sizes")))
                                for e in _list(audit.get("engines"))),
            coverage_percent=audit.get("coverage_percent"),
            native_fallbacks=tuple(_list(findings.get("native_fallbacks"))),
            oom=tuple(_list(findings.get("oom"))),
            parity=Parity(parity.get("passed"), parity.get("max_abs_error"), parity.get("top1_agreement"),
                          parity.get("source")),
            environment=Environment(env.get("l4t"), env.get("jetpack"), env.get("tensorrt"), env.get("cuda"),
                                    env.get("tensorflow"), env.get("python")),
            timings=_dict(doc.get("timings")),
            peak_rss_bytes=_dict(doc.get("memory")).get("peak_rss_bytes"),
            finished_at=doc.get("finished_at"),
        )

    @classmethod
    def read(cls, path) -> "OptimizeReport | None":
        """The report at path, or None when it is missing or not a JSON object."""
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return None
        return cls.from_dict(doc) if isinstance(doc, dict) else None

    @property
    def succeeded(self) -> bool:
        return self.status == "ok" and self.exit_code == 0

    @property
    def engine_batch_sizes(self) -> dict:
        """{engine op name: built batch sizes} (JSON-friendly lists)."""
        return {e.name: (None if e.built_batch_sizes is None else list(e.built_batch_sizes))
                for e in self.audit_engines}
