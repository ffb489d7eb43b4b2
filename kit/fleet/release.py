"""One resolved image on its way to one fleet: what every rollout (compose or swarm) reads first.

The image's labels give the fingerprint the gate checks; its env gives the model name and gRPC
port the smoke checks use; the fleet gives where records go and how long health may take.
"""

from __future__ import annotations

from kit.fleet import state as st
from kit.labels import Fingerprint
from kit.manifest.load import FleetManifest


def quiet(device: str, phase: str, message: str) -> None:
    """The progress callback when nobody listens."""


class Release:
    def __init__(self, fleet: FleetManifest, resolved, progress=None):
        self.fleet = fleet
        self.resolved = resolved  # kit.fleet.registry.ResolvedImage
        self.digest_ref = resolved.digest_ref
        self.fp = Fingerprint.from_labels(resolved.labels, resolved.architecture)
        self.progress = progress or quiet
        self.root = st.fleet_dir(fleet.file, fleet.name)
        self.timeout = float(fleet.rollout.health_timeout)
        self.model = resolved.env.get("KIT_MODEL_NAME") or "model"
        grpc_port = resolved.env.get("KIT_GRPC_PORT")
        self.grpc_port = int(grpc_port) if grpc_port and grpc_port.isdigit() else None
