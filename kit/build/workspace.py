"""The `.kit/` workspace beside a model manifest: the one owner of its layout.

    .kit/<name>/
      build.json             kit build's record (atomic)
      spec.json              the spec of the last optimize run (kit build: container paths;
                             kit optimize --local: this host's paths)
      optimize/              the proven optimizer output, from kit build or kit optimize --local
        model/               the optimized SavedModel (what gets baked, what kit bench times)
        report.json          the optimizer's report (kit/runtime/report.py)
        optimize.log         its captured log
        kit-step.json        kit build's reuse stamp: what the output was made from
        container.log        kit build: the optimizer container's output
      optimize.partial/      kit build's optimizer output while it runs (mounted at /out)
      optimize.failed/       the last output the gate refused (report and log kept)
      smoke-reference.json   the native model's answer to the smoke request
      .lock                  one writer at a time (kit build, kit optimize --local)

Before the layouts were one, `kit optimize --local` wrote `.kit/<name>/optimized`;
kit bench still finds a model there.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kit.errors import KitError


@dataclass(frozen=True)
class OptimizeOutput:
    """Where one optimizer run's files are: the SavedModel and what describes it."""

    dir: Path
    model: Path
    report: Path
    log: Path
    stamp: Path
    container_log: Path

    @classmethod
    def in_dir(cls, d: Path) -> "OptimizeOutput":
        """The workspace form: everything inside one directory."""
        d = Path(d)
        return cls(d, d / "model", d / "report.json", d / "optimize.log", d / "kit-step.json", d / "container.log")

    @classmethod
    def beside(cls, model: Path) -> "OptimizeOutput":
        """An explicit `--output DIR`: DIR is the SavedModel, the rest sits beside it named after it."""
        model = Path(model)

        def named(suffix: str) -> Path:
            return model.with_name(model.name + suffix)

        return cls(model.parent, model, named(".report.json"), named(".log"), named(".kit-step.json"),
                   named(".container.log"))

    @property
    def where(self) -> list:
        """The lines an error shows so the user can read what was kept."""
        return [f"report: {self.report}", f"log:    {self.log}"]


@dataclass(frozen=True)
class Workspace:
    work: Path

    @classmethod
    def for_manifest(cls, manifest) -> "Workspace":
        return cls(Path(manifest.file).parent / ".kit" / manifest.name)

    @property
    def record(self) -> Path:
        return self.work / "build.json"

    @property
    def spec(self) -> Path:
        return self.work / "spec.json"

    @property
    def reference(self) -> Path:
        return self.work / "smoke-reference.json"

    @property
    def optimize(self) -> OptimizeOutput:
        return OptimizeOutput.in_dir(self.work / "optimize")

    @property
    def optimize_partial(self) -> OptimizeOutput:
        return OptimizeOutput.in_dir(self.work / "optimize.partial")

    @property
    def optimize_failed(self) -> OptimizeOutput:
        return OptimizeOutput.in_dir(self.work / "optimize.failed")

    @property
    def legacy_optimized(self) -> Path:
        """Where `kit optimize --local` put its model before the layouts were one."""
        return self.work / "optimized"

    def optimized_model(self) -> Path | None:
        """The optimized SavedModel of this workspace (either layout), or None."""
        for path in (self.optimize.model, self.legacy_optimized):
            if (path / "saved_model.pb").is_file():
                return path
        return None

    @contextmanager
    def lock(self):
        """One writer per workspace at a time (kit build and kit optimize --local share it)."""
        import fcntl

        self.work.mkdir(parents=True, exist_ok=True)
        f = open(self.work / ".lock", "a+")
        try:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise KitError(f"another kit build or kit optimize is using {self.work}",
                               hint="wait for it to finish (or stop it), then run the command again") from None
            yield self
        finally:
            f.close()


def read_json(path: Path) -> dict | None:
    """A JSON object from path, or None when missing, unreadable or not an object."""
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def replace_dir(src: Path, dest: Path) -> None:
    """Move src to dest, replacing dest (renames on the same filesystem)."""
    if dest.exists():
        old = dest.with_name(dest.name + f".old-{uuid.uuid4().hex[:6]}")
        os.rename(dest, old)
        os.rename(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dest)
