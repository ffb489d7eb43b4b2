"""The core of `kit validate`: check manifest files, return results (the CLI renders them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kit.manifest.load import FleetManifest, ModelManifest, inspect
from kit.manifest.reader import display_path
from kit.manifest.problems import printable
from kit.units import format_size


@dataclass
class ValidationResult:
    file: str  # as the user gave it
    kind: str | None
    name: str | None
    problems: list = field(default_factory=list)  # of kit.manifest.problems.Problem
    manifest: ModelManifest | FleetManifest | None = None

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def summary(self) -> str:
        """One line on what a valid manifest resolves to."""
        m = self.manifest
        if isinstance(m, ModelManifest):
            stack = f"JetPack {m.target.jetpack}" if m.target.jetpack else "no TensorRT"
            sizes = ", ".join(map(str, m.optimize.batch_sizes))
            if m.profile.tensorrt:
                memory = (f", workspace {format_size(m.optimize.max_workspace_size)}"
                          f" < memory limit {format_size(m.optimize.memory_limit)}")
            else:
                memory = ""
            return (f"{m.target.device} ({stack}), {m.optimize.precision}, batch sizes {sizes}{memory}"
                    f" -> {m.image_ref}")
        if isinstance(m, FleetManifest):
            n = len(m.devices)
            return f"{n} device{'s' if n != 1 else ''}, canary {m.rollout.canary}, image {m.image}"
        return ""

    def to_dict(self) -> dict:
        return {"file": self.file, "kind": self.kind, "name": self.name, "valid": self.valid,
                "problems": [p.to_dict() for p in self.problems]}


def validate_file(path, check_files: bool = True) -> ValidationResult:
    inspection = inspect(path, check_files)
    return ValidationResult(printable(display_path(str(path))), inspection.kind, printable(inspection.name),
                            inspection.problems, inspection.manifest)


def validate_files(paths, check_files: bool = True) -> list[ValidationResult]:
    """One result per file, in the order given."""
    return [validate_file(p, check_files) for p in paths]
