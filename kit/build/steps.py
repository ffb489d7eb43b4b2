"""The steps of `kit build`. Each takes the BuildState, returns a Done (status,
detail for the progress line, and the value it adds to the state), and
changes nothing else; kit/build/pipeline.py runs them in order and stores the
values. Reuse: every step that can be skipped compares a key of its inputs
with what the last run recorded, and says so.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import kit
from kit import labels as lb
from kit.atomic import write_json_atomic
from kit.build import containers, images
from kit.build.gate import gate
from kit.build.report import OptimizeReport
from kit.build.smoke import health_timeout
from kit.build.state import BaseImage, Baked, BuilderImage, BuildState, Optimized
from kit.build.workspace import OptimizeOutput, read_json, replace_dir
from kit.errors import DockerError, KitError, OptimizeError, PreflightError
from kit.units import utc_timestamp

OPTIMIZE_TIMEOUT = 4 * 3600.0  # engine builds take ~30 min for ResNet-50 on a Nano
REFERENCE_TIMEOUT = 1800.0


class Done(NamedTuple):
    status: str  # ran | reused | skipped
    detail: str
    value: object = None


def _digest_or_none(path: Path | None) -> str | None:
    return images.file_digest(path) if path else None


# ---- preflight, base, builder --------------------------------------------------------------


def preflight(state: BuildState) -> Done:
    """Connect to the engine and check the host. Value: (engine, preflight record)."""
    from kit.build import preflight as checks
    from kit.docker_api import connect

    engine, error = None, None
    try:
        engine = connect(state.host)
    except DockerError as e:
        error = e.message
    try:
        result = checks.run(state.manifest, engine, error, state.workspace.work.parent)
    except BaseException:
        if engine is not None:
            engine.close()
        raise
    return Done("ran", "; ".join(f"{c.name} ok" for c in result.checks), (engine, result.as_dict()))


def _pull_base(state: BuildState, ref: str) -> None:
    from kit.profiles import CPU_STACKS

    for stack in CPU_STACKS.values():
        if ref == stack.base_image:  # made by `kit base`, never pulled
            option = "" if stack.name == "cpu" else f" --stack {stack.name}"
            raise PreflightError(f"the {stack.name} base image {ref} is not present",
                                 hint=f"assemble it once: kit base{option} (a few minutes; offline after the wheels)")
    state.reporter.line(f"{ref} is not present: pulling it")
    try:
        state.engine.pull(ref, on_line=state.reporter.line)
    except DockerError as e:
        raise DockerError(f"the base image {ref} is not present and pulling it failed: {e.message}",
                          hint="pull or `docker load` it on this host first (on a Jetson: docker pull "
                               f"{ref}), or pass --base-image with an image this engine has") from None


def base(state: BuildState) -> Done:
    """The base image is present (pulled if it can be) and of the device's architecture. Value: BaseImage."""
    m, ref = state.manifest, state.manifest.base_image
    if not state.engine.image_exists(ref):
        _pull_base(state, ref)
    info = state.engine.image_inspect(ref)
    if m.profile.architecture and info.architecture and info.architecture != m.profile.architecture:
        raise PreflightError(f"the base image {ref} is {info.architecture}, but {m.profile.name} runs "
                             f"{m.profile.architecture}",
                             hint="build on the device itself, or pass --base-image for this architecture")
    _check_base_python(m, ref, info.labels)
    return Done("reused", f"{ref} {info.id[7:19]}", BaseImage(ref, info.id, info.size))


def _check_base_python(manifest, ref: str, labels: dict) -> None:
    """A base that states its Python (kit's offline bases do) must carry the stack's: the server's wheels
    (tornado) are fetched for the stack's Python, and the optimizer checks the stack's TensorFlow."""
    stated = lb.value(labels, lb.PYTHON)
    want = manifest.stack.python
    if stated and stated.split(".")[:2] != want.split(".")[:2]:
        other = [s.name for s in _cpu_stacks() if s.python.split(".")[:2] == stated.split(".")[:2]]
        hint = (f"set target.stack: {other[0]} in the manifest" if other and not manifest.profile.tensorrt
                else f"use a base image with Python {want}")
        raise PreflightError(f"the base image {ref} carries Python {stated}, but the {manifest.stack.name} stack "
                             f"runs Python {want}", hint=hint)


def _cpu_stacks():
    from kit.profiles import CPU_STACKS

    return list(CPU_STACKS.values())


def server_wheels(manifest) -> list:
    """tornado for the image's Python and architecture (downloaded once, cached on the host)."""
    from kit.build.base import cache_dir
    from kit.build.wheels import server_wheels as wheels_for

    return wheels_for(manifest.stack.python, manifest.profile.architecture, cache_dir())


def builder(state: BuildState) -> Done:
    """The builder image: base + kit/runtime, reused when its key matches. Value: BuilderImage."""
    m, engine = state.manifest, state.engine
    code = images.runtime_code_hash(state.kit_snapshot)
    wheels = server_wheels(m)
    key = images.combine("builder", state.base.id, code, images.file_digest(images.dockerfile("builder")),
                         [w.name for w in wheels])
    tag = images.builder_tag(m.stack.name, key)
    if engine.image_exists(tag) and engine.image_inspect(tag).labels.get(lb.BUILDER_KEY) == key:
        status, image_id = "reused", engine.image_inspect(tag).id
    else:
        with tempfile.TemporaryDirectory(prefix="kit-builder-") as ctx:
            images.assemble_context(Path(ctx), "builder",
                                    labels={lb.BUILDER_KEY: key, lb.KIT_VERSION: kit.__version__},
                                    kit_snapshot=state.kit_snapshot, wheels=wheels)
            image_id = images.build_image(engine, Path(ctx), tag, {"BASE_IMAGE": m.base_image},
                                          on_line=state.reporter.line)
        status = "ran"
    return Done(status, f"{tag} {image_id[7:19]}", BuilderImage(tag, image_id, key, code))


# ---- optimize and gate -------------------------------------------------------------------------


def _reusable(out: OptimizeOutput, key: str) -> bool:
    """The output's stamp says it was made from these inputs, and the model is still what it was."""
    stamp = read_json(out.stamp) or {}
    return (stamp.get("key") == key and out.report.is_file() and out.model.is_dir()
            and images.tree_digest(out.model) == stamp.get("model_digest"))


def _keep_failed(state: BuildState, partial: OptimizeOutput) -> OptimizeOutput:
    failed = state.workspace.optimize_failed
    replace_dir(partial.dir, failed.dir)
    return failed


def _refuse_failed_run(state: BuildState, result, partial: OptimizeOutput) -> None:
    """The optimizer exited non-zero or left no report or model: keep its output, raise why."""
    from kit.build import optimizer

    failed = _keep_failed(state, partial)
    where = failed.where + [f"output: {failed.container_log}"]
    if result.oom_killed:
        raise OptimizeError("the optimizer was killed for lack of memory", details=where,
                            hint="lower optimize.max_workspace_size and memory_limit, add swap, "
                                 "or stop other containers")
    optimizer.raise_for_exit(result.exit_code, OptimizeReport.read(failed.report), failed.report, failed.log)
    raise OptimizeError("the optimizer exited 0 but wrote no report or no model", details=where)


def _run_optimizer(state: BuildState, key: str) -> None:
    """Run the optimizer into optimize.partial/; publish it as optimize/ once the gate passed."""
    m = state.manifest
    partial = state.workspace.optimize_partial
    shutil.rmtree(partial.dir, ignore_errors=True)
    partial.dir.mkdir(parents=True)
    # Copied in and out, never bind-mounted: the engine may be a device that does not see this disk.
    result = state.engine.run_to_completion(
        state.builder.tag, containers.optimize_command(), on_line=state.reporter.line, timeout=OPTIMIZE_TIMEOUT,
        uploads=containers.optimize_uploads(m, state.workspace.spec),
        downloads=containers.optimize_downloads(partial.dir),
        runtime=containers.container_runtime(m), user=containers.container_user(m),
        name=f"kit-optimize-{m.name}-{uuid.uuid4().hex[:6]}",
    )
    partial.container_log.write_text(result.logs)
    report = OptimizeReport.read(partial.report)
    if result.exit_code != 0 or report is None or not partial.model.is_dir():
        _refuse_failed_run(state, result, partial)
    try:
        gate(m, report, partial)
    except OptimizeError as e:
        failed = _keep_failed(state, partial)
        raise OptimizeError(e.message, hint=e.hint,
                            details=[d.replace(str(partial.dir), str(failed.dir)) for d in e.details]) from None
    write_json_atomic(partial.stamp, {"key": key, "model_digest": images.tree_digest(partial.model)})
    replace_dir(partial.dir, state.workspace.optimize.dir)


def optimize(state: BuildState) -> Done:
    """The optimizer in the builder container, reused when the output's stamp matches. Value: Optimized."""
    m = state.manifest
    spec = containers.spec_document(m)
    write_json_atomic(state.workspace.spec, spec)
    calib, parity = containers.samples(m)
    source_digest = images.tree_digest(m.model.path)
    key = images.combine("optimize", source_digest, spec, state.builder.id, _digest_or_none(calib),
                         _digest_or_none(parity))
    out = state.workspace.optimize
    # The stamp lives with the output (not only in build.json), so a build that
    # fails later (bake, smoke) does not cost the next run a new engine build.
    if _reusable(out, key):
        status = "reused"
    else:
        _run_optimizer(state, key)
        status = "ran"
    report = OptimizeReport.read(out.report)
    done = Optimized(key, out, state.workspace.spec, report, source_digest, images.tree_digest(out.model))
    engines = "?" if report is None or report.engines is None else report.engines
    return Done(status, f"{(report.optimization if report else None) or '?'}, engines {engines}", done)


def check_gate(state: BuildState) -> Done:
    """Always re-checked, reused or not: the report must prove the output."""
    gate(state.manifest, state.optimized.report, state.optimized.output)
    return Done("ran", "passed")


# ---- reference, bake, smoke -------------------------------------------------------------------


def reference(state: BuildState) -> Done:
    """The native model's answer to the smoke request, computed in the builder. Value: the reference."""
    m, ws = state.manifest, state.workspace
    _, parity = containers.samples(m)
    key = images.combine("reference", state.optimized.source_digest, m.model.signature, state.builder.id,
                         _digest_or_none(parity))
    doc = read_json(ws.reference)
    if doc and doc.get("key") == key and "reference" in doc:
        return Done("reused", str(ws.reference), doc["reference"])
    with tempfile.TemporaryDirectory(prefix="kit-reference-", dir=ws.work) as tmp:
        result = state.engine.run_to_completion(
            state.builder.tag, containers.reference_command(m), on_line=state.reporter.line,
            timeout=REFERENCE_TIMEOUT, uploads=containers.reference_uploads(m),
            downloads=containers.reference_downloads(tmp),
            runtime=containers.container_runtime(m), user=containers.container_user(m),
            # One inference: don't let TF reserve the Jetson's shared memory up front.
            env={"TF_FORCE_GPU_ALLOW_GROWTH": "true", "TF_CPP_MIN_LOG_LEVEL": "1"},
            name=f"kit-reference-{m.name}-{uuid.uuid4().hex[:6]}")
        ref = read_json(Path(tmp) / "reference.json")
        if result.exit_code != 0 or ref is None:
            raise KitError(f"computing the native model's reference output failed (exit {result.exit_code})",
                           details=[ln for ln in result.logs.splitlines() if ln.strip()][-15:])
    write_json_atomic(ws.reference, {"key": key, "reference": ref})
    return Done("ran", str(ws.reference), ref)


def bake(state: BuildState) -> Done:
    """The runtime image, model as the last layer, under a temporary tag (reused when the key matches). Value: Baked."""
    m, engine, opt = state.manifest, state.engine, state.optimized
    created = opt.report.finished_at or utc_timestamp()
    labels = images.labels_for(m, opt.report, opt.model_digest, m.base_image, created)
    args = dict(images.serve_build_args(m), BASE_IMAGE=m.base_image)
    wheels = server_wheels(m)
    samples = m.serve.warmup_samples
    key = images.combine("bake", opt.model_digest, state.base.id, state.builder.code_hash,
                         images.file_digest(images.dockerfile("runtime")), labels, args, [w.name for w in wheels],
                         images.file_digest(samples) if samples else None)
    final = m.image_ref
    prev = state.previous_step("bake")
    if prev and prev.get("key") == key and engine.image_exists(final) \
            and engine.image_inspect(final).id == prev.get("image_id"):
        return Done("reused", f"{final} {prev['image_id'][7:19]}", Baked(key, prev["image_id"], labels, final, None))
    temp = f"{m.image.repository}:kit-tmp-{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="kit-bake-", dir=state.workspace.work) as ctx:
        images.assemble_context(Path(ctx), "runtime", opt.output.model, labels, kit_snapshot=state.kit_snapshot,
                                wheels=wheels, warmup_samples=samples)
        image_id = images.build_image(engine, Path(ctx), temp, args, on_line=state.reporter.line)
    return Done("ran", f"{temp} {image_id[7:19]}", Baked(key, image_id, labels, final, temp))


def _smoke_failure(state: BuildState, e: KitError, cid: str | None) -> KitError:
    """The error a failed smoke test raises: what failed, and the container's last log lines."""
    logs = []
    if cid:
        try:
            logs = state.engine.logs(cid, tail=40).splitlines()
        except DockerError:
            pass
    baked = state.baked
    # wait_healthy's details are the log's tail: shown once, below, in full.
    details = [] if (logs and isinstance(e, DockerError)) else list(e.details)
    return KitError(f"smoke test of {baked.ref} failed: {e.message}",
                    hint="read the container's log above; " + (
                        f"the image was not tagged {baked.final_ref}" if baked.temp_ref else
                        f"{baked.final_ref} was tagged by an earlier build run with --no-smoke"),
                    details=details + ["container log (last lines):"] + ["  " + ln for ln in logs])


def smoke(state: BuildState) -> Done:
    """Run the image, wait healthy, one prediction vs the reference. Value: the smoke record."""
    if not state.smoke_enabled:
        return Done("skipped", "--no-smoke", {"passed": None, "skipped": "--no-smoke"})
    prev = state.previous_step("smoke")
    if prev and prev.get("passed") and prev.get("image_id") == state.baked.image_id:
        return Done("skipped", "this image passed before", prev)
    from kit.build.smoke import predict_and_compare
    from kit.net import free_port

    m, engine = state.manifest, state.engine
    port = free_port()
    name = f"kit-smoke-{m.name}-{uuid.uuid4().hex[:6]}"
    address, bind = containers.smoke_address(engine.host)
    cid = None
    try:
        # Host networking: both ports must be free (8500 may be another server's gRPC). They are
        # picked free here; on a remote device a taken port makes the server exit, and its log says so.
        env = {"KIT_PORT": str(port), "KIT_GRPC_PORT": str(free_port()), "KIT_HOST": bind}
        cid = engine.run(state.baked.ref, name=name, env=env,
                         runtime=containers.container_runtime(m), labels={lb.SMOKE_CONTAINER: m.name})
        state.reporter.line(f"started {name} on {address}:{port}; waiting for healthy")
        start = time.monotonic()
        engine.wait_healthy(cid, timeout=health_timeout(m), interval=1.0)
        ready = time.monotonic() - start
        result = predict_and_compare(port, m.model_name, m.model.signature, state.reference,
                                     m.optimize.parity.max_abs_error, host=address)
    except KitError as e:
        raise _smoke_failure(state, e, cid) from None
    finally:
        if cid:
            try:
                engine.remove_container(cid, force=True)
            except DockerError:
                pass
    record = {"passed": True, "image_id": state.baked.image_id, "port": port, "ready_seconds": round(ready, 2),
              **result}
    return Done("ran", f"healthy in {ready:.1f}s, max abs error {result['max_abs_error']:.2g}", record)
