"""`kit build --dry-run`: what a build would do, as data, without touching Docker or the disk.

The values come from the same functions the steps use (containers.py,
images.py, workspace.py), so the plan shows what a run really does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from kit.build import containers, images
from kit.build.smoke import health_timeout
from kit.build.workspace import Workspace


@dataclass
class BuildPlan:
    """What `kit build` would do (--dry-run): images, files copied in and out, commands, env."""

    manifest: str
    image: str
    work_dir: str
    steps: list = field(default_factory=list)  # of dict, one per step, in order

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _optimize_step(manifest, ws: Workspace, runtime: str | None) -> dict:
    uploads = [f"{u.source or '(empty directory)'} -> {u.target}" for u in containers.optimize_uploads(manifest, ws.spec)]
    downloads = [f"{d.source} -> {d.target}" for d in containers.optimize_downloads(ws.optimize_partial.dir)]
    return {"step": "optimize", "image": "<builder>", "command": containers.optimize_command(),
            "runtime": runtime or "runc", "network": "host", "user": containers.container_user(manifest),
            "copied_in": uploads, "copied_out": downloads,
            "spec": str(ws.spec), "spec_document": containers.spec_document(manifest),
            "output": str(ws.optimize.dir), "reuse_key": "source model digest + spec + builder image id"}


def plan(manifest) -> BuildPlan:
    """What a build would do, without touching Docker or the disk."""
    ws = Workspace.for_manifest(manifest)
    runtime = containers.container_runtime(manifest)
    args = images.serve_build_args(manifest)
    steps = [
        {"step": "preflight", "checks": ["engine", "disk"] + (["l4t", "nvidia", "memory"] if runtime else [])},
        {"step": "base", "image": manifest.base_image},
        {"step": "builder", "image": f"{images.BUILDER_REPOSITORY}:{manifest.stack.name}-<key>",
         "dockerfile": str(images.dockerfile("builder")), "build_args": {"BASE_IMAGE": manifest.base_image},
         "context": [rel for rel, _ in images.kit_code_files()],
         "reuse_key": "base image id + kit/runtime code hash + Dockerfile"},
        _optimize_step(manifest, ws, runtime),
        {"step": "gate", "report": str(ws.optimize.report),
         "requires": "an engine for every batch size, no fallback, parity within bounds (or native as asked)"},
        {"step": "reference", "image": "<builder>",
         "command": ["python3", "-c", "<kit.build.smoke.REFERENCE_SCRIPT>"]
         + containers.reference_command(manifest)[3:], "output": str(ws.reference)},
        {"step": "bake", "image": manifest.image_ref, "temporary_tag": f"{manifest.image.repository}:kit-tmp-<random>",
         "dockerfile": str(images.dockerfile("runtime")), "build_args": {"BASE_IMAGE": manifest.base_image, **args},
         "context": ["kit/...", f"model/ <- {ws.optimize.model}"],
         "labels": "kit.* and org.opencontainers.image.* from the optimizer's report",
         "reuse_key": "optimized model digest + base id + kit code + labels + serve settings"},
        {"step": "smoke", "image": "<temporary tag>", "network": "host", "runtime": runtime or "runc",
         "env": {"KIT_PORT": "<free port>", "KIT_HOST": "127.0.0.1 (unix:// engine), 0.0.0.0 (tcp://, ssh://)"},
         "address": "127.0.0.1, or the endpoint's host for tcp:// and ssh://",
         "request": f"POST /v1/models/{manifest.model_name}:predict (first parity sample, or zeros)",
         "health_timeout_seconds": health_timeout(manifest)},
        {"step": "record", "path": str(ws.record)},
    ]
    return BuildPlan(manifest=str(manifest.file), image=manifest.image_ref, work_dir=str(ws.work), steps=steps)
