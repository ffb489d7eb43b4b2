"""Fingerprint gating: may this image run on this device?

An image's kit.* labels say what its TF-TRT engines were built for; a device's
facts say what it is. Engines are specific to the GPU arch and to the TensorRT
the host's JetPack mounts into the container, so a mismatch would at best fall
back to native TF silently and at worst crash. A refused device is never
touched. The rules (also in the README):

  1. The image must carry kit's fingerprint labels.
  2. The image's CPU architecture must be the device's (arm64 Jetsons, amd64 cpu).
  3. cpu images (kit.device=cpu) go only to devices declared `cpu`.
  4. Jetson images go only to Jetson profiles; with TensorRT engines the
     profile's GPU arch must equal kit.gpu_arch and support kit.precision.
  5. Jetson devices must register the nvidia runtime and run the L4T release
     in kit.l4t; with engines, their TensorRT must equal kit.tensorrt.
"""

from __future__ import annotations

from dataclasses import dataclass

from kit import labels as lb
from kit.labels import Fingerprint
from kit.manifest.load import FleetDevice
from kit.profiles import PROFILES, STACKS


@dataclass(frozen=True)
class Decision:
    ok: bool
    reasons: tuple = ()  # every mismatch found, in plain words

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)


def check(fp: Fingerprint | None, device: FleetDevice, facts) -> Decision:
    """Judge one device (pure: facts already gathered). `facts` is a DeviceFacts."""
    if fp is None:
        return Decision(False, (f"the image carries no kit fingerprint labels ({', '.join(lb.REQUIRED)}): "
                                "build it with `kit build`",))
    reasons: list[str] = []
    profile = PROFILES.get(device.device)
    if profile is None:
        return Decision(False, (f"unknown device profile {device.device!r}",))

    if fp.architecture and facts.architecture and fp.architecture != facts.architecture:
        reasons.append(f"image is {fp.architecture}, device reports {facts.architecture}")
    if facts.architecture and facts.architecture != profile.architecture:
        reasons.append(f"device reports {facts.architecture}, profile {profile.name} is {profile.architecture}")

    if not fp.jetson:
        if fp.device != "cpu":
            reasons.append(f"image targets unknown profile {fp.device!r}")
        elif profile.name != "cpu":
            reasons.append(f"image is built for cpu, device is {profile.name}")
        return Decision(not reasons, tuple(reasons))

    image_profile = PROFILES[fp.device]
    if not profile.tensorrt:
        reasons.append(f"image is built for {fp.device}, device is {profile.name} (no TensorRT)")
        return Decision(False, tuple(reasons))
    engines = fp.optimization == "tensorrt"
    if engines:
        want_arch = fp.gpu_arch or image_profile.gpu_arch
        if profile.gpu_arch != want_arch:
            reasons.append(f"engines are built for {want_arch} ({fp.device}), device {profile.name} is {profile.gpu_arch}")
        if fp.precision and fp.precision not in profile.precisions:
            reasons.append(f"precision {fp.precision} is not supported on {profile.name}")
    if not facts.nvidia:
        reasons.append("the nvidia runtime is not registered with the device's Docker engine")
    if facts.l4t is None:
        reasons.append(f"the device's L4T release is unknown ({facts.l4t_detail or 'not read'})")
    elif fp.l4t and facts.l4t != fp.l4t:
        reasons.append(f"image is built for L4T {fp.l4t}, device runs L4T {facts.l4t}")
    if engines and fp.tensorrt:
        trt = facts.tensorrt or tensorrt_for_l4t(facts.l4t)
        if trt is None:
            reasons.append(f"the device's TensorRT version is unknown (L4T {facts.l4t} is not a pinned stack)")
        elif trt != fp.tensorrt:
            reasons.append(f"engines need TensorRT {fp.tensorrt}, device has {trt}")
    return Decision(not reasons, tuple(reasons))


def tensorrt_for_l4t(l4t: str | None) -> str | None:
    """The TensorRT a pinned JetPack stack puts on the host for this L4T release."""
    for stack in STACKS.values():
        if l4t and stack.l4t == l4t:
            return stack.tensorrt
    return None
