"""Rollout state on disk: the rollout record and each device's compose files.

Layout, next to the fleet manifest:

    .kit/fleet/<fleet>/rollout.json            the last rollout's record
    .kit/fleet/<fleet>/<device>/compose.yml    the compose file last applied
    .kit/fleet/<fleet>/<device>/last-good.yml  the last file proven healthy there

Every write is atomic (temp file in the same directory, fsync, rename), so a
rollout killed at any point leaves either the old or the new file, never half
of one. The record is rewritten after every device step, so it always says
where a rollout stopped."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kit.atomic import write_json_atomic, write_text_atomic
from kit.units import utc_timestamp

# Device results (the record's vocabulary, also shown by `kit fleet status`).
DONE = "done"  # runs the new digest, healthy, smoke prediction answered
UNCHANGED = "unchanged"  # already ran the digest and was healthy: not touched
ROLLED_BACK = "rolled-back"  # was updated, then restored to its last-good file
REFUSED = "refused"  # facts do not match the image's fingerprint: never touched
FAILED = "failed"  # the update (or its rollback) failed on this device
UNTOUCHED = "untouched"  # the rollout stopped (or the device was unreachable) before it
PENDING = "pending"  # planned, not started yet
RUNNING = "running"  # being updated right now
INTERRUPTED = "interrupted"  # the rollout's status after SIGINT/SIGTERM (devices keep old or new)


def fleet_dir(fleet_file: Path, fleet_name: str) -> Path:
    return Path(fleet_file).resolve().parent / ".kit" / "fleet" / fleet_name


@dataclass
class DeviceRecord:
    name: str
    host: str
    result: str = PENDING
    reason: str = ""
    phase: str = ""  # the last step reached: facts, gate, pull, up, health, smoke, rollback
    before: str | None = None  # repository@sha256 running before the rollout (None: nothing)
    after: str | None = None  # repository@sha256 running when the rollout left the device
    wave: int | None = None  # 0 = canary
    started_at: str | None = None
    finished_at: str | None = None
    # start-first: the new container starts beside the old on the same port, the old one
    # drains once the new is healthy; stop-first: the old one stops, then the new starts.
    strategy: str = ""
    strategy_reason: str = ""
    durations: dict = field(default_factory=dict)  # step -> seconds spent in it


@dataclass
class RolloutRecord:
    fleet: str
    image: str  # as asked for (tag or digest)
    digest_ref: str  # repository@sha256:... every device runs
    on_failure: str
    orchestrator: str = "compose"  # compose (kit on each device) | swarm (the swarm's rolling update)
    status: str = RUNNING  # running | done | partial | rolled-back | halted | failed | interrupted
    reason: str = ""
    started_at: str = field(default_factory=utc_timestamp)
    finished_at: str | None = None
    # Set the moment SIGINT/SIGTERM arrives: {"signal", "at", "devices": {device: step}}.
    interrupted: dict | None = None
    durations: dict = field(default_factory=dict)  # resolve, plan, update: seconds
    devices: dict = field(default_factory=dict)  # name -> DeviceRecord

    def to_dict(self) -> dict:
        d = asdict(self)
        d["devices"] = [asdict(r) for r in self.devices.values()]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RolloutRecord":
        devices = {r["name"]: DeviceRecord(**r) for r in d.get("devices", [])}
        fields = {k: v for k, v in d.items() if k != "devices"}
        return cls(devices=devices, **fields)


class RecordStore:
    """Holds the record of a running rollout; every update is written through.

    Device workers run in threads, so updates go through one lock."""

    def __init__(self, path: Path, record: RolloutRecord):
        self.path = Path(path)
        self.record = record
        self._lock = threading.Lock()

    def save(self) -> None:
        with self._lock:
            write_json_atomic(self.path, self.record.to_dict())

    def device(self, name: str, **changes) -> DeviceRecord:
        with self._lock:
            rec = self.record.devices[name]
            for key, value in changes.items():
                setattr(rec, key, value)
            write_json_atomic(self.path, self.record.to_dict())
            return rec

    def update(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self.record, key, value)
            write_json_atomic(self.path, self.record.to_dict())

    def finish(self, status: str, reason: str = "") -> None:
        with self._lock:
            self.record.status = status
            self.record.reason = reason
            self.record.finished_at = utc_timestamp()
            write_json_atomic(self.path, self.record.to_dict())


def load_record(path: Path) -> RolloutRecord | None:
    """The last rollout's record, or None when there is none (or it is unreadable)."""
    try:
        return RolloutRecord.from_dict(json.loads(Path(path).read_text()))
    except (FileNotFoundError, ValueError, TypeError, KeyError):
        return None


class DeviceFiles:
    """A device's compose files under .kit/fleet/<fleet>/<device>/."""

    def __init__(self, root: Path, device: str):
        self.dir = Path(root) / device
        self.current = self.dir / "compose.yml"
        self.last_good = self.dir / "last-good.yml"

    def read(self, path: Path) -> str | None:
        try:
            return path.read_text()
        except FileNotFoundError:
            return None

    def write_current(self, text: str) -> None:
        write_text_atomic(self.current, text)

    def write_last_good(self, text: str) -> None:
        write_text_atomic(self.last_good, text)
