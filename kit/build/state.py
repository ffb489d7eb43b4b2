"""The state of one `kit build` run, declared in one place.

Each step (kit/build/steps.py) reads the state and returns what it adds; the
pipeline (kit/build/pipeline.py) stores that here. A field is None until its
step has run. The build record is made from this state at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kit.build.progress import Reporter, StepResult
from kit.build.report import OptimizeReport
from kit.build.workspace import OptimizeOutput, Workspace, read_json


@dataclass(frozen=True)
class BaseImage:
    ref: str
    id: str
    size: int

    def as_record(self) -> dict:
        return {"image": self.ref, "id": self.id, "size": self.size}


@dataclass(frozen=True)
class BuilderImage:
    tag: str
    id: str
    key: str
    code_hash: str  # of the kit code it carries (the runtime image carries the same)

    def as_record(self) -> dict:
        return {"image": self.tag, "id": self.id, "key": self.key, "kit_code": self.code_hash}


@dataclass(frozen=True)
class Optimized:
    key: str
    output: OptimizeOutput
    spec: Path
    report: OptimizeReport
    source_digest: str
    model_digest: str

    def as_record(self) -> dict:
        return {"key": self.key, "dir": str(self.output.dir), "model_dir": str(self.output.model),
                "report": str(self.output.report), "log": str(self.output.log), "source_digest": self.source_digest,
                "model_digest": self.model_digest, "spec": str(self.spec)}


@dataclass(frozen=True)
class Baked:
    key: str
    image_id: str
    labels: dict
    final_ref: str
    temp_ref: str | None  # None: the final tag already names this image (reused)

    @property
    def ref(self) -> str:
        """What to run the smoke test on."""
        return self.temp_ref or self.final_ref

    def as_record(self) -> dict:
        return {"key": self.key, "image_id": self.image_id}


@dataclass
class BuildState:
    manifest: object
    workspace: Workspace
    reporter: Reporter
    smoke_enabled: bool = True
    host: str | None = None  # the Docker engine (None: DOCKER_HOST or the local one)
    previous: dict = field(default_factory=dict)  # the last build record of this workspace
    engine: object = None  # kit.docker_api.Engine, once preflight connected
    kit_snapshot: Path | None = None  # the kit code both images carry, copied once per build
    preflight: dict | None = None
    base: BaseImage | None = None
    builder: BuilderImage | None = None
    optimized: Optimized | None = None
    reference: dict | None = None  # the native model's request and answer
    baked: Baked | None = None
    smoke: dict | None = None
    pending_tag: str | None = None  # a temporary tag a failed build must remove
    steps: list = field(default_factory=list)  # of StepResult

    @classmethod
    def start(cls, manifest, reporter: Reporter, smoke: bool, host: str | None) -> "BuildState":
        ws = Workspace.for_manifest(manifest)
        return cls(manifest, ws, reporter, smoke, host, read_json(ws.record) or {})

    def previous_step(self, name: str) -> dict | None:
        value = self.previous.get(name)
        return value if isinstance(value, dict) else None

    def add_step(self, result: StepResult) -> None:
        self.steps.append(result)
