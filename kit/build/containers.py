"""What kit build runs in containers: commands, files copied in and out, user, runtime.

The optimize and reference runs see the same container paths; the spec names
them and the uploads provide them. Nothing is bind-mounted from this host:
the engine may be a device reached over ssh:// or tcp:// that does not see
this machine's files, so the model, spec and samples are copied into the
container before it starts and its /out is copied back after it exited
(kit/archive.py). `kit build --dry-run` prints these very values, so the
plan and the run cannot drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path

from kit.build import images
from kit.build.workspace import OptimizeOutput

IN_MODEL = "/in/saved_model"
IN_SPEC = "/in/spec.json"
IN_CALIBRATION = "/in/calibration"
IN_PARITY = "/in/parity"
OUT_DIR = "/out"

# The optimizer's output as the container sees it (the workspace's optimize layout, under /out).
CONTAINER_OUTPUT = OptimizeOutput.in_dir(Path(OUT_DIR))


def samples(manifest) -> tuple[Path | None, Path | None]:
    """(calibration samples, parity samples) on this host, None where the manifest has none."""
    calib = manifest.optimize.calibration_samples
    parity = manifest.optimize.parity.samples
    return (Path(calib) if calib else None), (Path(parity) if parity else None)


def container_sample(path: Path | None, base: str) -> str | None:
    """Where a sample file is mounted: base plus the file's suffix (the runtime reads .npy/.npz by it)."""
    return f"{base}{path.suffix}" if path else None


def spec_document(manifest) -> dict:
    """The optimizer's spec for this manifest, with container paths (kit/build/optimizer.py writes specs)."""
    from kit.build import optimizer

    calib, parity = samples(manifest)
    return optimizer.spec_for(
        manifest, model_dir=IN_MODEL, output_dir=str(CONTAINER_OUTPUT.model), report_path=str(CONTAINER_OUTPUT.report),
        log_path=str(CONTAINER_OUTPUT.log), calibration_samples=container_sample(calib, IN_CALIBRATION),
        parity_samples=container_sample(parity, IN_PARITY))


def _sample_uploads(manifest, calibration: bool = True) -> list:
    from kit.docker_api import Upload

    calib, parity = samples(manifest)
    uploads = []
    if calib and calibration:
        uploads.append(Upload(str(calib), container_sample(calib, IN_CALIBRATION)))
    if parity:
        uploads.append(Upload(str(parity), container_sample(parity, IN_PARITY)))
    return uploads


def optimize_uploads(manifest, spec_path: Path) -> list:
    """What the optimizer container gets copied in: the SavedModel, the spec, the samples, an empty /out."""
    from kit.docker_api import Upload

    return [Upload(str(manifest.model.path), IN_MODEL), Upload(str(spec_path), IN_SPEC), Upload(None, OUT_DIR)] \
        + _sample_uploads(manifest)


def optimize_downloads(out_dir: Path) -> list:
    """The optimizer's /out, copied back into the workspace's optimize.partial/."""
    from kit.docker_api import Download

    return [Download(OUT_DIR, str(out_dir))]


def optimize_command() -> list[str]:
    return ["python3", "-m", "kit.runtime.optimize", "--spec", IN_SPEC]


def reference_uploads(manifest) -> list:
    from kit.docker_api import Upload

    return [Upload(str(manifest.model.path), IN_MODEL), Upload(None, OUT_DIR)] \
        + _sample_uploads(manifest, calibration=False)


def reference_downloads(out_dir) -> list:
    from kit.docker_api import Download

    return [Download(OUT_DIR, str(out_dir))]


def reference_command(manifest) -> list[str]:
    """The native model's answer to the smoke request, written to /out/reference.json."""
    from kit.build.smoke import REFERENCE_SCRIPT

    _, parity = samples(manifest)
    sample = container_sample(parity, IN_PARITY) or "-"
    return ["python3", "-c", REFERENCE_SCRIPT, IN_MODEL, manifest.model.signature, sample, f"{OUT_DIR}/reference.json"]


def container_user(manifest) -> str:
    """Run builder containers as the invoking user, so their output stays the user's.
    On a Jetson the group is video (44): the GPU device nodes are root:video 0660
    and a container process gets no supplementary groups from the host."""
    group = images.VIDEO_GID if manifest.profile.tensorrt else os.getgid()
    return f"{os.getuid()}:{group}"


def container_runtime(manifest) -> str | None:
    """The nvidia runtime on Jetson profiles (GPU and TensorRT libraries), the default elsewhere."""
    return "nvidia" if manifest.profile.tensorrt else None


def smoke_address(engine_host: str) -> tuple[str, str]:
    """(where this host calls the smoke container, the address the server binds) for an engine.

    A unix:// engine runs here: 127.0.0.1 both ways. A tcp:// or ssh:// engine is a device:
    its host name from the endpoint, and the server listens on all of the device's addresses
    for the few seconds of the smoke test (host networking: the same address the rollout uses)."""
    from kit.net import device_address

    address = device_address(engine_host)
    local = engine_host.startswith(("unix://", "npipe://"))
    return address, "127.0.0.1" if local else "0.0.0.0"
