"""`kit build`: manifest -> optimized, proven, baked, smoke-tested image.

Steps (kit/build/steps.py; each reused when its inputs did not change, and said so):

  preflight  the host can do it (kit/build/preflight.py)
  base       the base image is present; its id keys everything below
  builder    base + kit/runtime                     key: base id + kit code + Dockerfile
  optimize   optimizer in the builder container     key: model digest + spec + builder id
                                                    (stamped in the output dir: survives a failed build)
  gate       report.json must show a proven result  (always re-checked; kit/build/gate.py)
  reference  native model's answer to the smoke request, in the builder
             (the host of a Jetson may have no TensorFlow)   key: model + samples + builder id
  bake       runtime image, model as the last layer key: optimized model digest + base id
                                                         + kit code + labels + serve settings
  smoke      run it, wait healthy, one prediction   skipped when the final image id is the
             vs the reference                       one the record says passed
  record     .kit/<name>/build.json (atomic)

The optimizer writes into .kit/<name>/optimize.partial/ (mounted at /out); it
becomes .kit/<name>/optimize/ once the gate passed, or .kit/<name>/optimize.failed/
(report and log kept, paths printed) when it did not (kit/build/workspace.py
owns that layout). The runtime image is built under a temporary tag and gets
its final tag only after the smoke test passed; a failure leaves no tag behind.

This module only orchestrates: the state is kit/build/state.py, the steps
kit/build/steps.py, the dry-run plan kit/build/plan.py.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import kit
from kit import labels as lb
from kit.atomic import write_json_atomic
from kit.build import images, steps
from kit.build.progress import Reporter, StepResult
from kit.build.state import BuildState
from kit.errors import DockerError
from kit.units import utc_timestamp

RECORD_VERSION = 1


def with_base_image(manifest, base_image: str | None):
    """The manifest with target.base_image overridden (--base-image)."""
    if not base_image:
        return manifest
    return dataclasses.replace(manifest, target=dataclasses.replace(manifest.target, base_image=base_image))


def _run_step(state: BuildState, name: str, what: str, fn):
    """Run one step with progress and timing; returns the value it adds."""
    state.reporter.start(name, what)
    start = time.monotonic()
    try:
        done = fn(state)
    except BaseException as e:
        result = StepResult(name, "failed", time.monotonic() - start, getattr(e, "message", str(e))[:200])
        state.steps.append(result)
        state.reporter.end(result)
        raise
    result = StepResult(name, done.status, time.monotonic() - start, done.detail)
    state.steps.append(result)
    state.reporter.end(result)
    return done.value


def _record(state: BuildState, started: float) -> dict:
    """The build record, from the state (what build.json holds and kit build --json prints)."""
    from kit.build.preflight import tree_size

    m, baked = state.manifest, state.baked
    info = state.engine.image_inspect(baked.final_ref)
    record = {"preflight": state.preflight, "base": state.base.as_record(), "builder": state.builder.as_record(),
              "optimize": state.optimized.as_record(), "bake": baked.as_record(), "smoke": state.smoke}
    record.update({
        "record_version": RECORD_VERSION,
        "kit_version": kit.__version__,
        "manifest": str(m.file),
        "name": m.name,
        "device": m.profile.name,
        "image": baked.final_ref,
        "image_id": info.id,
        "repo_digest": info.digest_for(m.image.repository),
        "size": info.size,
        "layers": list(info.layers),
        "model_layer": {"digest": info.layers[-1] if info.layers else None,
                        "size": tree_size(state.optimized.output.model)},
        "labels": baked.labels,
        "optimization": baked.labels.get(lb.OPTIMIZATION),
        "engines": baked.labels.get(lb.ENGINES),
        "built": utc_timestamp(),
        "total_seconds": round(time.monotonic() - started, 3),
        "steps": [s.as_dict() for s in state.steps],
    })
    return record


def _tag_final(state: BuildState) -> None:
    if state.pending_tag:
        state.engine.tag(state.pending_tag, state.baked.final_ref)
        state.engine.remove_image(state.pending_tag)
        state.pending_tag = None


def _drop_pending_tag(state: BuildState) -> None:
    """A failed build leaves no half-tagged image: drop the temporary tag."""
    if state.pending_tag and state.engine is not None:
        try:
            state.engine.remove_image(state.pending_tag, force=True)
        except DockerError:
            pass


def _run_steps(state: BuildState, started: float) -> dict:
    m = state.manifest
    state.engine, state.preflight = _run_step(state, "preflight", "checking the host", steps.preflight)
    state.base = _run_step(state, "base", f"base image {m.base_image}", steps.base)
    state.kit_snapshot = images.snapshot_kit_code(Path(tempfile.mkdtemp(prefix=".kit-code-", dir=state.workspace.work)))
    state.builder = _run_step(state, "builder", "builder image (base + kit/runtime)", steps.builder)
    state.optimized = _run_step(state, "optimize", f"optimizing in the builder ({m.optimize.precision})",
                                steps.optimize)
    _run_step(state, "gate", "checking the optimizer's report", steps.check_gate)
    if state.smoke_enabled:
        state.reference = _run_step(state, "reference", "native model's reference output", steps.reference)
    state.baked = _run_step(state, "bake", f"runtime image {m.image_ref}", steps.bake)
    state.pending_tag = state.baked.temp_ref
    state.smoke = _run_step(state, "smoke", "smoke test: run, wait healthy, one prediction", steps.smoke)
    _tag_final(state)
    _run_step(state, "record", "build record", lambda s: steps.Done("ran", str(s.workspace.record)))
    record = _record(state, started)
    write_json_atomic(state.workspace.record, record)
    return record


def run(state: BuildState) -> dict:
    """Run every step under the workspace lock; on any failure, leave no temporary tag behind."""
    started = time.monotonic()
    with state.workspace.lock():
        try:
            return _run_steps(state, started)
        except BaseException:
            _drop_pending_tag(state)
            raise
        finally:
            if state.kit_snapshot:
                shutil.rmtree(state.kit_snapshot, ignore_errors=True)
            if state.engine is not None:
                state.engine.close()


# ---- entry point -----------------------------------------------------------------------------


def load(manifest_path: str | Path, base_image: str | None = None):
    from kit.manifest.load import load_model

    return with_base_image(load_model(Path(manifest_path)), base_image)


def build(manifest_path: str | Path, base_image: str | None = None, smoke: bool = True,
          reporter: Reporter | None = None, host: str | None = None) -> dict:
    """Core of `kit build`: run the pipeline, return the build record."""
    manifest = load(manifest_path, base_image)
    return run(BuildState.start(manifest, reporter or Reporter(), smoke, host))
