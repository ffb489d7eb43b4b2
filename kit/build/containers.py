"""What kit build runs in containers: commands, mounts, user, runtime.

The optimize and reference runs see the same container paths; the spec names
them and the mounts provide them. `kit build --dry-run` prints these very
values, so the plan and the run cannot drift apart.
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


def _sample_mounts(manifest, calibration: bool = True) -> list:
    from kit.docker_api import Mount

    calib, parity = samples(manifest)
    mounts = []
    if calib and calibration:
        mounts.append(Mount(str(calib), container_sample(calib, IN_CALIBRATION), True))
    if parity:
        mounts.append(Mount(str(parity), container_sample(parity, IN_PARITY), True))
    return mounts


def optimize_mounts(manifest, spec_path: Path, out_dir: Path) -> list:
    from kit.docker_api import Mount

    return [Mount(str(manifest.model.path), IN_MODEL, True), Mount(str(spec_path), IN_SPEC, True),
            Mount(str(out_dir), OUT_DIR, False)] + _sample_mounts(manifest)


def optimize_command() -> list[str]:
    return ["python3", "-m", "kit.runtime.optimize", "--spec", IN_SPEC]


def reference_mounts(manifest, out_dir: str) -> list:
    from kit.docker_api import Mount

    return [Mount(str(manifest.model.path), IN_MODEL, True), Mount(str(out_dir), OUT_DIR, False)] \
        + _sample_mounts(manifest, calibration=False)


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
