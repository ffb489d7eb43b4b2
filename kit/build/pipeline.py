"""`kit build`: manifest -> optimized, proven, baked, smoke-tested image.

Steps (each reused when its inputs did not change, and said so):

  preflight  the host can do it (kit/build/preflight.py)
  base       the base image is present; its id keys everything below
  builder    base + kit/runtime                     key: base id + kit code + Dockerfile
  optimize   optimizer in the builder container     key: model digest + spec + builder id
                                                    (stamped in the output dir: survives a failed build)
  gate       report.json must show a proven result  (always re-checked)
  reference  native model's answer to the smoke request, in the builder
             (the host of a Jetson may have no TensorFlow)   key: model + samples + builder id
  bake       runtime image, model as the last layer key: optimized model digest + base id
                                                         + kit code + labels + serve settings
  smoke      run it, wait healthy, one prediction   skipped when the final image id is the
             vs the reference                       one the record says passed
  record     .kit/<name>/build.json (atomic)

The optimizer writes into .kit/<name>/optimize.partial/ (mounted at /out); it
becomes .kit/<name>/optimize/ once the gate passed, or .kit/<name>/optimize.failed/
(report and log kept, paths printed) when it did not. The runtime image is
built under a temporary tag and gets its final tag only after the smoke test
passed; a failure leaves no tag behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import kit
from kit.build import images
from kit.atomic import write_json_atomic
from kit.errors import DockerError, KitError, OptimizeError, PreflightError

RECORD_VERSION = 1

# Container paths of the optimize run (the spec names them; the mounts provide them).
IN_MODEL = "/in/saved_model"
IN_SPEC = "/in/spec.json"
IN_CALIBRATION = "/in/calibration"
IN_PARITY = "/in/parity"
OUT_DIR = "/out"

# How long the smoke test waits for the container to report healthy.
SMOKE_HEALTH_TIMEOUT = {"cpu": 180.0}
SMOKE_HEALTH_TIMEOUT_DEFAULT = 900.0  # a Nano loading TF and deserializing engines is slow
OPTIMIZE_TIMEOUT = 4 * 3600.0  # engine builds take ~30 min for ResNet-50 on a Nano


# ---- results -------------------------------------------------------------------------


@dataclass
class StepResult:
    name: str
    status: str  # ran | reused | skipped | failed
    seconds: float = 0.0
    detail: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3), "detail": self.detail}


@dataclass
class BuildPlan:
    """What `kit build` would do (--dry-run): images, mounts, commands, env."""

    manifest: str
    image: str
    work_dir: str
    steps: list = field(default_factory=list)  # of dict

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Reporter:
    """Progress sink. The default stays silent; the CLI passes a rich one."""

    def start(self, step: str, what: str) -> None:
        pass

    def line(self, text: str) -> None:
        pass

    def end(self, result: StepResult) -> None:
        pass


@dataclass(frozen=True)
class Paths:
    work: Path

    @classmethod
    def for_manifest(cls, manifest) -> "Paths":
        return cls(manifest.file.parent / ".kit" / manifest.name)

    @property
    def record(self) -> Path:
        return self.work / "build.json"

    @property
    def spec(self) -> Path:
        return self.work / "spec.json"

    @property
    def optimize(self) -> Path:
        return self.work / "optimize"

    @property
    def optimize_partial(self) -> Path:
        return self.work / "optimize.partial"

    @property
    def optimize_failed(self) -> Path:
        return self.work / "optimize.failed"

    @property
    def reference(self) -> Path:
        return self.work / "smoke-reference.json"


def optimized_model(out: Path) -> Path:
    return Path(out) / "model"


def report_path(out: Path) -> Path:
    return Path(out) / "report.json"


def log_path(out: Path) -> Path:
    return Path(out) / "optimize.log"


def stamp_path(out: Path) -> Path:
    """What the output was made from (reuse key) and its model digest."""
    return Path(out) / "kit-step.json"


# ---- small helpers ---------------------------------------------------------------------


def read_json(path: Path) -> dict | None:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _replace_dir(src: Path, dest: Path) -> None:
    """Move src to dest, replacing dest (a rename on the same filesystem)."""
    if dest.exists():
        old = dest.with_name(dest.name + f".old-{uuid.uuid4().hex[:6]}")
        os.rename(dest, old)
        os.rename(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dest)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _samples(manifest) -> tuple[Path | None, Path | None]:
    calib = manifest.optimize.calibration_samples
    parity = manifest.optimize.parity.samples
    return (Path(calib) if calib else None), (Path(parity) if parity else None)


def _container_sample(path: Path | None, base: str) -> str | None:
    return f"{base}{path.suffix}" if path else None


def _health_timeout(manifest) -> float:
    return SMOKE_HEALTH_TIMEOUT.get(manifest.profile.name, SMOKE_HEALTH_TIMEOUT_DEFAULT)


def with_base_image(manifest, base_image: str | None):
    """The manifest with target.base_image overridden (--base-image)."""
    if not base_image:
        return manifest
    return dataclasses.replace(manifest, target=dataclasses.replace(manifest.target, base_image=base_image))


# ---- the optimize step's spec and run ------------------------------------------------------


def spec_document(manifest) -> dict:
    """The optimizer's spec for this manifest, with container paths (kit/build/optimizer.py)."""
    from kit.build import optimizer

    calib, parity = _samples(manifest)
    return optimizer.spec_for(
        manifest, model_dir=IN_MODEL, output_dir=f"{OUT_DIR}/model", report_path=f"{OUT_DIR}/report.json",
        log_path=f"{OUT_DIR}/optimize.log", calibration_samples=_container_sample(calib, IN_CALIBRATION),
        parity_samples=_container_sample(parity, IN_PARITY))


def optimize_mounts(manifest, paths: Paths, out_dir: Path) -> list:
    from kit.docker_api import Mount

    calib, parity = _samples(manifest)
    mounts = [Mount(str(manifest.model.path), IN_MODEL, True), Mount(str(paths.spec), IN_SPEC, True),
              Mount(str(out_dir), OUT_DIR, False)]
    if calib:
        mounts.append(Mount(str(calib), _container_sample(calib, IN_CALIBRATION), True))
    if parity:
        mounts.append(Mount(str(parity), _container_sample(parity, IN_PARITY), True))
    return mounts


def optimize_command() -> list[str]:
    return ["python3", "-m", "kit.runtime.optimize", "--spec", IN_SPEC]


def reference_command(manifest) -> list[str]:
    _, parity = _samples(manifest)
    sample = _container_sample(parity, IN_PARITY) or "-"
    from kit.build.smoke import REFERENCE_SCRIPT

    return ["python3", "-c", REFERENCE_SCRIPT, IN_MODEL, manifest.model.signature, sample, f"{OUT_DIR}/reference.json"]


def _user(manifest) -> str:
    """Run builder containers as the invoking user, so their output stays the user's.
    On a Jetson the group is video (44): the GPU device nodes are root:video 0660
    and a container process gets no supplementary groups from the host."""
    group = images.VIDEO_GID if manifest.profile.tensorrt else os.getgid()
    return f"{os.getuid()}:{group}"


def _runtime(manifest) -> str | None:
    return "nvidia" if manifest.profile.tensorrt else None


def gate_problems(report: dict, manifest) -> list[str]:
    """Why this report does not prove a shippable result (empty: it does).

    kit/build/optimizer.py re-checks the report's own gate, engines and batch sizes;
    on top, any fallback in the log refuses a TensorRT result, whatever the
    report's gate says."""
    from kit.build import optimizer

    problems = list(optimizer.gate_problems(report, manifest))
    fallbacks = ((report or {}).get("findings") or {}).get("native_fallbacks") or []
    if fallbacks and (report or {}).get("optimization") == "tensorrt":
        problems.append(f"{len(fallbacks)} fallback(s) to native TensorFlow in the optimizer's log")
    return list(dict.fromkeys(problems))


def gate_hint(report: dict, manifest) -> str:
    from kit.build import optimizer

    return optimizer.gate_hint(report, manifest) or (
        "read the report's findings and the log: keep max_workspace_size < memory_limit < free memory, "
        "or set optimize.allow_native_fallback: true to ship native TensorFlow, labelled as such")


def gate(manifest, report: dict | None, out_dir: Path) -> dict:
    """The gate: the report must say the optimization was proven. OptimizeError
    (exit 5) otherwise, naming the kept report and log."""
    where = [f"report: {report_path(out_dir)}", f"log:    {log_path(out_dir)}"]
    if report is None:
        raise OptimizeError(f"the optimizer wrote no readable report ({report_path(out_dir)})", details=where,
                            hint="read the optimizer's output above and its log")
    problems = gate_problems(report, manifest)
    if problems:
        raise OptimizeError("the optimization is not proven; refusing to bake an image",
                            details=problems + where, hint=gate_hint(report, manifest))
    return report


# ---- the pipeline ----------------------------------------------------------------------------


class _Pipeline:
    def __init__(self, manifest, reporter: Reporter, smoke: bool, host: str | None):
        self.m = manifest
        self.r = reporter
        self.smoke_enabled = smoke
        self.host = host
        self.paths = Paths.for_manifest(manifest)
        self.previous = read_json(self.paths.record) or {}
        self.steps: list[StepResult] = []
        self.record: dict = {}
        self.engine = None

    # -- step bookkeeping --

    def _run_step(self, name: str, what: str, fn):
        self.r.start(name, what)
        start = time.monotonic()
        try:
            status, detail = fn()
        except BaseException as e:
            result = StepResult(name, "failed", time.monotonic() - start, getattr(e, "message", str(e))[:200])
            self.steps.append(result)
            self.r.end(result)
            raise
        result = StepResult(name, status, time.monotonic() - start, detail)
        self.steps.append(result)
        self.r.end(result)
        return result

    def _prev(self, *keys):
        d = self.previous
        for k in keys:
            if not isinstance(d, dict):
                return None
            d = d.get(k)
        return d

    # -- steps --

    def preflight(self):
        from kit.build import preflight
        from kit.docker_api import connect

        error = None
        try:
            self.engine = connect(self.host)
        except DockerError as e:
            error = e.message
        result = preflight.run(self.m, self.engine, error, self.paths.work.parent)
        self.record["preflight"] = result.as_dict()
        return "ran", "; ".join(f"{c.name} ok" for c in result.checks)

    def base(self):
        ref = self.m.base_image
        if not self.engine.image_exists(ref):
            from kit.profiles import CPU_STACK

            if ref == CPU_STACK.base_image:
                raise PreflightError(f"the CPU base image {ref} is not present",
                                     hint="assemble it once: kit base (a few minutes; offline after the wheels)")
            self.r.line(f"{ref} is not present: pulling it")
            try:
                self.engine.pull(ref, on_line=self.r.line)
            except DockerError as e:
                raise DockerError(f"the base image {ref} is not present and pulling it failed: {e.message}",
                                  hint="pull or `docker load` it on this host first (on a Jetson: docker pull "
                                       f"{ref}), or pass --base-image with an image this engine has") from None
        info = self.engine.image_inspect(ref)
        if self.m.profile.architecture and info.architecture and info.architecture != self.m.profile.architecture:
            raise PreflightError(f"the base image {ref} is {info.architecture}, but {self.m.profile.name} runs "
                                 f"{self.m.profile.architecture}",
                                 hint="build on the device itself, or pass --base-image for this architecture")
        self.base_id = info.id
        self.record["base"] = {"image": ref, "id": info.id, "size": info.size}
        return "reused", f"{ref} {info.id[7:19]}"

    def _server_wheels(self):
        """tornado for the image's Python and architecture (cached on the host)."""
        from kit.build.base import cache_dir
        from kit.build.wheels import server_wheels

        return server_wheels(self.m.stack.python, self.m.profile.architecture, cache_dir())

    def builder(self):
        self.kit_snapshot = images.snapshot_kit_code(Path(tempfile.mkdtemp(prefix=".kit-code-", dir=self.paths.work)))
        code = images.runtime_code_hash(self.kit_snapshot)
        key = images.combine("builder", self.base_id, code, images.file_digest(images.dockerfile("builder")),
                             [w.name for w in self._server_wheels()])
        tag = images.builder_tag(self.m.stack.name, key)
        self.code_hash = code
        status = "reused"
        if self.engine.image_exists(tag) and self.engine.image_inspect(tag).labels.get(images.LABEL_BUILDER_KEY) == key:
            image_id = self.engine.image_inspect(tag).id
        else:
            with tempfile.TemporaryDirectory(prefix="kit-builder-") as ctx:
                images.assemble_context(Path(ctx), "builder",
                                        labels={images.LABEL_BUILDER_KEY: key, "kit.version": kit.__version__},
                                        kit_snapshot=self.kit_snapshot, wheels=self._server_wheels())
                image_id = images.build_image(self.engine, Path(ctx), tag, {"BASE_IMAGE": self.m.base_image},
                                              on_line=self.r.line)
            status = "ran"
        self.builder_tag, self.builder_id = tag, image_id
        self.record["builder"] = {"image": tag, "id": image_id, "key": key, "kit_code": code}
        return status, f"{tag} {image_id[7:19]}"

    def optimize(self):
        spec = spec_document(self.m)
        write_json_atomic(self.paths.spec, spec)
        calib, parity = _samples(self.m)
        self.source_digest = images.tree_digest(self.m.model.path)
        key = images.combine("optimize", self.source_digest, spec, self.builder_id,
                             images.file_digest(calib) if calib else None,
                             images.file_digest(parity) if parity else None)
        out = self.paths.optimize
        # The stamp lives with the output (not only in build.json), so a build that
        # fails later (bake, smoke) does not cost the next run a new engine build.
        stamp = read_json(stamp_path(out)) or {}
        if (stamp.get("key") == key and report_path(out).is_file() and optimized_model(out).is_dir()
                and images.tree_digest(optimized_model(out)) == stamp.get("model_digest")):
            status = "reused"
        else:
            partial = self.paths.optimize_partial
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            result = self.engine.run_to_completion(
                self.builder_tag, optimize_command(), on_line=self.r.line, timeout=OPTIMIZE_TIMEOUT,
                mounts=optimize_mounts(self.m, self.paths, partial), runtime=_runtime(self.m), user=_user(self.m),
                name=f"kit-optimize-{self.m.name}-{uuid.uuid4().hex[:6]}",
            )
            (partial / "container.log").write_text(result.logs)
            report = read_json(report_path(partial))
            if result.exit_code != 0 or report is None or not optimized_model(partial).is_dir():
                from kit.build import optimizer

                _replace_dir(partial, self.paths.optimize_failed)
                failed = self.paths.optimize_failed
                where = [f"report: {report_path(failed)}", f"log:    {log_path(failed)}",
                         f"output: {failed / 'container.log'}"]
                if result.oom_killed:
                    raise OptimizeError("the optimizer was killed for lack of memory", details=where,
                                        hint="lower optimize.max_workspace_size and memory_limit, add swap, "
                                             "or stop other containers")
                optimizer.raise_for_exit(result.exit_code, report, report_path(failed), log_path(failed))
                raise OptimizeError("the optimizer exited 0 but wrote no report or no model", details=where)
            try:
                gate(self.m, report, partial)
            except OptimizeError as e:
                _replace_dir(partial, self.paths.optimize_failed)
                failed = self.paths.optimize_failed
                raise OptimizeError(e.message, hint=e.hint,
                                    details=[d.replace(str(partial), str(failed)) for d in e.details]) from None
            write_json_atomic(stamp_path(partial), {"key": key, "model_digest": images.tree_digest(optimized_model(partial))})
            _replace_dir(partial, out)
            status = "ran"
        self.report = read_json(report_path(out))
        self.model_digest = images.tree_digest(optimized_model(out))
        self.record["optimize"] = {
            "key": key, "dir": str(out), "model_dir": str(optimized_model(out)), "report": str(report_path(out)),
            "log": str(log_path(out)), "source_digest": self.source_digest, "model_digest": self.model_digest,
            "spec": str(self.paths.spec),
        }
        return status, f"{self.report.get('optimization', '?')}, engines {self.report.get('engines', '?')}"

    def gate(self):
        gate(self.m, self.report, self.paths.optimize)
        return "ran", "passed"

    def reference(self):
        _, parity = _samples(self.m)
        key = images.combine("reference", self.source_digest, self.m.model.signature, self.builder_id,
                             images.file_digest(parity) if parity else None)
        doc = read_json(self.paths.reference)
        if doc and doc.get("key") == key and "reference" in doc:
            self.reference_doc = doc["reference"]
            return "reused", str(self.paths.reference)
        with tempfile.TemporaryDirectory(prefix="kit-reference-", dir=self.paths.work) as tmp:
            from kit.docker_api import Mount

            mounts = [Mount(str(self.m.model.path), IN_MODEL, True), Mount(tmp, OUT_DIR, False)]
            if parity:
                mounts.append(Mount(str(parity), _container_sample(parity, IN_PARITY), True))
            result = self.engine.run_to_completion(
                self.builder_tag, reference_command(self.m), on_line=self.r.line, timeout=1800,
                mounts=mounts, runtime=_runtime(self.m), user=_user(self.m),
                # One inference: don't let TF reserve the Jetson's shared memory up front.
                env={"TF_FORCE_GPU_ALLOW_GROWTH": "true", "TF_CPP_MIN_LOG_LEVEL": "1"},
                name=f"kit-reference-{self.m.name}-{uuid.uuid4().hex[:6]}")
            ref = read_json(Path(tmp) / "reference.json")
            if result.exit_code != 0 or ref is None:
                raise KitError(f"computing the native model's reference output failed (exit {result.exit_code})",
                               details=[ln for ln in result.logs.splitlines() if ln.strip()][-15:])
        write_json_atomic(self.paths.reference, {"key": key, "reference": ref})
        self.reference_doc = ref
        return "ran", str(self.paths.reference)

    def bake(self):
        created = self.report.get("finished_at") or _now()
        labels = images.labels_for(self.m, self.report, self.model_digest, self.m.base_image, created)
        args = images.serve_build_args(self.m)
        args["BASE_IMAGE"] = self.m.base_image
        key = images.combine("bake", self.model_digest, self.base_id, self.code_hash,
                             images.file_digest(images.dockerfile("runtime")), labels, args,
                             [w.name for w in self._server_wheels()])
        self.labels, self.final_ref = labels, self.m.image_ref
        prev = self._prev("bake")
        if prev and prev.get("key") == key and self.engine.image_exists(self.final_ref) \
                and self.engine.image_inspect(self.final_ref).id == prev.get("image_id"):
            self.image_id, self.temp_ref = prev["image_id"], None
            self.record["bake"] = {"key": key, "image_id": self.image_id}
            return "reused", f"{self.final_ref} {self.image_id[7:19]}"
        self.temp_ref = f"{self.m.image.repository}:kit-tmp-{uuid.uuid4().hex[:10]}"
        with tempfile.TemporaryDirectory(prefix="kit-bake-", dir=self.paths.work) as ctx:
            images.assemble_context(Path(ctx), "runtime", optimized_model(self.paths.optimize), labels,
                                    kit_snapshot=self.kit_snapshot, wheels=self._server_wheels())
            self.image_id = images.build_image(self.engine, Path(ctx), self.temp_ref, args, on_line=self.r.line)
        self.record["bake"] = {"key": key, "image_id": self.image_id}
        return "ran", f"{self.temp_ref} {self.image_id[7:19]}"

    def smoke(self):
        prev = self._prev("smoke")
        if not self.smoke_enabled:
            self.record["smoke"] = {"passed": None, "skipped": "--no-smoke"}
            return "skipped", "--no-smoke"
        if prev and prev.get("passed") and prev.get("image_id") == self.image_id:
            self.record["smoke"] = prev
            return "skipped", "this image passed before"
        from kit.build.smoke import free_port, predict_and_compare

        ref = self.temp_ref or self.final_ref
        port = free_port()
        name = f"kit-smoke-{self.m.name}-{uuid.uuid4().hex[:6]}"
        cid = None
        try:
            cid = self.engine.run(ref, name=name, env={"KIT_PORT": str(port), "KIT_HOST": "127.0.0.1"},
                                  runtime=_runtime(self.m), labels={"kit.build.smoke": self.m.name})
            self.r.line(f"started {name} on 127.0.0.1:{port}; waiting for healthy")
            start = time.monotonic()
            self.engine.wait_healthy(cid, timeout=_health_timeout(self.m), interval=1.0)
            ready = time.monotonic() - start
            result = predict_and_compare(port, self.m.name, self.m.model.signature, self.reference_doc,
                                         self.m.optimize.parity.max_abs_error)
        except KitError as e:
            logs = []
            if cid:
                try:
                    logs = self.engine.logs(cid, tail=40).splitlines()
                except DockerError:
                    pass
            # wait_healthy's details are the log's tail: shown once, below, in full.
            details = [] if (logs and isinstance(e, DockerError)) else list(e.details)
            raise KitError(f"smoke test of {ref} failed: {e.message}",
                           hint="read the container's log above; " + (
                               f"the image was not tagged {self.final_ref}" if self.temp_ref else
                               f"{self.final_ref} was tagged by an earlier build run with --no-smoke"),
                           details=details + ["container log (last lines):"] + ["  " + ln for ln in logs]) from None
        finally:
            if cid:
                try:
                    self.engine.remove_container(cid, force=True)
                except DockerError:
                    pass
        self.record["smoke"] = {"passed": True, "image_id": self.image_id, "port": port,
                                "ready_seconds": round(ready, 2), **result}
        return "ran", f"healthy in {ready:.1f}s, max abs error {result['max_abs_error']:.2g}"

    def tag_final(self):
        if self.temp_ref:
            self.engine.tag(self.temp_ref, self.final_ref)
            self.engine.remove_image(self.temp_ref)
            self.temp_ref = None

    def cleanup_failure(self):
        """A failed build leaves no half-tagged image: drop the temporary tag."""
        if getattr(self, "temp_ref", None) and self.engine is not None:
            try:
                self.engine.remove_image(self.temp_ref, force=True)
            except DockerError:
                pass

    def write_record(self, started: float) -> dict:
        info = self.engine.image_inspect(self.final_ref)
        model_dir = optimized_model(self.paths.optimize)
        from kit.build.preflight import tree_size

        self.record.update({
            "record_version": RECORD_VERSION,
            "kit_version": kit.__version__,
            "manifest": str(self.m.file),
            "name": self.m.name,
            "device": self.m.profile.name,
            "image": self.final_ref,
            "image_id": info.id,
            "repo_digest": info.digest_for(self.m.image.repository),
            "size": info.size,
            "layers": list(info.layers),
            "model_layer": {"digest": info.layers[-1] if info.layers else None, "size": tree_size(model_dir)},
            "labels": self.labels,
            "optimization": self.labels.get("kit.optimization"),
            "engines": self.labels.get("kit.engines"),
            "built": _now(),
            "total_seconds": round(time.monotonic() - started, 3),
        })
        self.record["steps"] = [s.as_dict() for s in self.steps]
        write_json_atomic(self.paths.record, self.record)
        return self.record

    def _lock(self):
        """One build per manifest work dir at a time (they share .kit/<name>/)."""
        import fcntl

        f = open(self.paths.work / ".lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise KitError(f"another kit build is using {self.paths.work}",
                           hint="wait for it to finish (or stop it), then run kit build again") from None
        return f

    def run(self) -> dict:
        started = time.monotonic()
        self.paths.work.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        try:
            self._run_step("preflight", "checking the host", self.preflight)
            self._run_step("base", f"base image {self.m.base_image}", self.base)
            self._run_step("builder", "builder image (base + kit/runtime)", self.builder)
            self._run_step("optimize", f"optimizing in the builder ({self.m.optimize.precision})", self.optimize)
            self._run_step("gate", "checking the optimizer's report", self.gate)
            if self.smoke_enabled:
                self._run_step("reference", "native model's reference output", self.reference)
            self._run_step("bake", f"runtime image {self.m.image_ref}", self.bake)
            self._run_step("smoke", "smoke test: run, wait healthy, one prediction", self.smoke)
            self.tag_final()
            self._run_step("record", "build record", lambda: ("ran", str(self.paths.record)))
            return self.write_record(started)
        except BaseException:
            self.cleanup_failure()
            raise
        finally:
            if getattr(self, "kit_snapshot", None):
                shutil.rmtree(self.kit_snapshot, ignore_errors=True)
            if self.engine is not None:
                self.engine.close()
            lock.close()


# ---- plan ----------------------------------------------------------------------------------


def plan(manifest) -> BuildPlan:
    """What a build would do, without touching Docker or the disk."""
    paths = Paths.for_manifest(manifest)
    out = paths.optimize_partial
    spec = spec_document(manifest)
    mounts = [f"{m.source} -> {m.target}{' (ro)' if m.read_only else ''}"
              for m in optimize_mounts(manifest, paths, out)]
    runtime = _runtime(manifest)
    args = images.serve_build_args(manifest)
    p = BuildPlan(manifest=str(manifest.file), image=manifest.image_ref, work_dir=str(paths.work))
    p.steps = [
        {"step": "preflight", "checks": ["engine", "disk"] + (["l4t", "nvidia", "memory"] if runtime else [])},
        {"step": "base", "image": manifest.base_image},
        {"step": "builder", "image": f"{images.BUILDER_REPOSITORY}:{manifest.stack.name}-<key>",
         "dockerfile": str(images.dockerfile("builder")), "build_args": {"BASE_IMAGE": manifest.base_image},
         "context": [rel for rel, _ in images.kit_code_files()],
         "reuse_key": "base image id + kit/runtime code hash + Dockerfile"},
        {"step": "optimize", "image": "<builder>", "command": optimize_command(), "runtime": runtime or "runc",
         "network": "host", "user": _user(manifest), "mounts": mounts, "spec": str(paths.spec), "spec_document": spec,
         "output": str(paths.optimize), "reuse_key": "source model digest + spec + builder image id"},
        {"step": "gate", "report": str(report_path(paths.optimize)),
         "requires": "an engine for every batch size, no fallback, parity within bounds (or native as asked)"},
    ]
    p.steps.append({"step": "reference", "image": "<builder>",
                    "command": ["python3", "-c", "<kit.build.smoke.REFERENCE_SCRIPT>"] + reference_command(manifest)[3:],
                    "output": str(paths.reference)})
    p.steps += [
        {"step": "bake", "image": manifest.image_ref, "temporary_tag": f"{manifest.image.repository}:kit-tmp-<random>",
         "dockerfile": str(images.dockerfile("runtime")), "build_args": {"BASE_IMAGE": manifest.base_image, **args},
         "context": ["kit/...", f"model/ <- {optimized_model(paths.optimize)}"],
         "labels": "kit.* and org.opencontainers.image.* from the optimizer's report",
         "reuse_key": "optimized model digest + base id + kit code + labels + serve settings"},
        {"step": "smoke", "image": "<temporary tag>", "network": "host", "runtime": runtime or "runc",
         "env": {"KIT_PORT": "<free port>", "KIT_HOST": "127.0.0.1"},
         "request": f"POST /v1/models/{manifest.name}:predict (first parity sample, or zeros)",
         "health_timeout_seconds": _health_timeout(manifest)},
        {"step": "record", "path": str(paths.record)},
    ]
    return p


# ---- entry point -----------------------------------------------------------------------------


def load(manifest_path: str | Path, base_image: str | None = None):
    from kit.manifest.load import load_model

    return with_base_image(load_model(Path(manifest_path)), base_image)


def build(manifest_path: str | Path, base_image: str | None = None, smoke: bool = True,
          reporter: Reporter | None = None, host: str | None = None) -> dict:
    """Core of `kit build`: run the pipeline, return the build record."""
    manifest = load(manifest_path, base_image)
    return _Pipeline(manifest, reporter or Reporter(), smoke, host).run()


# ---- rendering (used by the CLI) ---------------------------------------------------------------

_MARKS = {"ran": "[green]✓[/]", "reused": "[cyan]↺[/]", "skipped": "[yellow]–[/]", "failed": "[red]✗[/]"}


class ConsoleReporter(Reporter):
    """Rich progress: a spinner per step, the step's log dimmed, one line per finished step."""

    def __init__(self, console):
        self.console = console
        self.status = None

    def start(self, step: str, what: str) -> None:
        self.status = self.console.status(f"[bold]{step}[/]: {what}")
        self.status.start()

    def line(self, text: str) -> None:
        if text.strip():
            self.console.print("  | " + text.rstrip(), style="dim", markup=False, highlight=False, soft_wrap=True)

    def end(self, result: StepResult) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None
        mark = _MARKS.get(result.status, " ")
        self.console.print(f"{mark} {result.name:<10} {result.status:<8} {result.seconds:7.1f}s  ",
                           highlight=False, end="")
        self.console.print(result.detail, markup=False, highlight=False, soft_wrap=True)


def render_summary(record: dict, console) -> None:
    from rich.table import Table

    from kit.units import format_size

    t = Table(title=f"kit build {record['name']}", show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    t.add_row("image", record["image"])
    t.add_row("image id", record["image_id"])
    if record.get("repo_digest"):
        t.add_row("digest", record["repo_digest"])
    t.add_row("size", format_size(record["size"]) + f"  (model layer {format_size(record['model_layer']['size'])})")
    t.add_row("optimization", str(record.get("optimization")))
    t.add_row("engines", str(record.get("engines")))
    t.add_row("record", str(Path(record["manifest"]).parent / ".kit" / record["name"] / "build.json"))
    console.print(t)
    steps = Table(box=None, pad_edge=False, show_edge=False)
    steps.add_column("step")
    steps.add_column("status")
    steps.add_column("time", justify="right")
    for s in record["steps"]:
        steps.add_row(s["name"], s["status"], f"{s['seconds']:.1f}s")
    steps.add_row("total", "", f"{record.get('total_seconds', 0):.1f}s", style="bold")
    console.print(steps)


def render_plan(p: BuildPlan, console) -> None:
    console.print(f"[bold]kit build --dry-run[/] {p.manifest}  (nothing runs)", highlight=False)
    console.print(f"image: {p.image}\nwork dir: {p.work_dir}", highlight=False, markup=False)
    for step in p.steps:
        console.print(f"\n[bold]{step['step']}[/]")
        for k, v in step.items():
            if k == "step" or v is None:
                continue
            if isinstance(v, dict) and k != "spec_document":
                console.print(f"  {k}:", markup=False)
                for kk, vv in v.items():
                    console.print(f"    {kk}={vv}", markup=False, highlight=False)
            elif isinstance(v, list):
                console.print(f"  {k}: " + (" ".join(map(str, v)) if k == "command" else ""), markup=False,
                              highlight=False)
                if k != "command":
                    for item in v:
                        console.print(f"    {item}", markup=False, highlight=False)
            elif k == "spec_document":
                console.print("  spec document: " + json.dumps(v, sort_keys=True), markup=False, highlight=False,
                              soft_wrap=True)
            else:
                console.print(f"  {k}: {v}", markup=False, highlight=False)
