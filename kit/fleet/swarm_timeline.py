"""Where a swarm update's time goes on one node, from the swarm's own task timestamps.

A task carries CreatedAt and, for its current state only, Status.Timestamp (the
moment it entered that state). kit reads the tasks every poll while it converges,
so it sees the new task in `starting` (the container runs, its first health probe
has not passed yet: the swarm reports `running` only once the container is healthy)
and then in `running`, and the old task once it is shut down. From those moments:

    schedule   deploy returned -> the swarm created the node's new task
    prepare    new task created -> `ready` (assigned, accepted, its container created)
    stop-old   stop-first: the new task ready -> the old task stopped (the swarm stops
               the old one only now, and starts the new one only once it has stopped)
    start      the new task may start -> it is `starting` (its container started)
    health     `starting` -> `running`: the image's first passing probe, which Docker
               runs one healthcheck interval after the container started
    observe    `running` -> kit saw it (kit's polling)
    smoke      kit's own smoke prediction (timed by kit)
    drain-old  start-first: the new task running -> the old one stopped

The swarm's timestamps are the manager's clock and kit's are this machine's: on one
host they agree; across hosts a skew shows up in `schedule` and `observe` (never
below 0 here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from kit.fleet.swarm import task_image

STOPPED = ("shutdown", "complete", "failed", "rejected", "orphaned", "remove")


def parse_time(text: str | None) -> float | None:
    """A Docker timestamp (RFC 3339, nanoseconds, Z) as POSIX seconds; None when absent."""
    if not text or text.startswith("0001-"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None
    digits = "".join(ch for ch in frac if ch.isdigit())[:9]
    return base + (int(digits) / 10 ** len(digits) if digits else 0.0)


@dataclass
class NodeTimeline:
    """What kit saw of one node's update (POSIX seconds; None: not seen)."""

    created: float | None = None  # the new task's CreatedAt
    states: dict = field(default_factory=dict)  # the new task's state -> when it entered it, as seen
    old_stopped: float | None = None  # the old task's shutdown, as the swarm stamped it
    seen: float | None = None  # kit saw the new task running
    smoke: float = 0.0  # seconds kit's smoke took

    def observe(self, tasks: list[dict], node: str, image: str, now: float) -> None:
        """Fold one read of the service's tasks into the timeline of `node`."""
        mine = [t for t in tasks if t.get("NodeID") == node]
        new = [t for t in mine if task_image(t) == image and t.get("DesiredState") in ("ready", "running")]
        old = [t for t in mine if task_image(t) != image]
        if new:
            task = max(new, key=lambda t: t.get("CreatedAt") or "")
            status = task.get("Status") or {}
            self.created = parse_time(task.get("CreatedAt"))
            state = status.get("State")
            if state and state not in self.states:
                self.states[state] = parse_time(status.get("Timestamp"))
                if state == "running":
                    self.seen = now
        stopped = [parse_time((t.get("Status") or {}).get("Timestamp")) for t in old
                   if (t.get("Status") or {}).get("State") in STOPPED]
        if old and len(stopped) == len(old) and self.old_stopped is None and all(stopped):
            self.old_stopped = max(stopped)

    def durations(self, deployed: float, start_first: bool) -> dict:
        """Phase -> seconds (rounded to ms), the phases that could be measured."""
        out: dict = {}

        def span(name, a, b):
            if a is not None and b is not None:
                out[name] = round(max(0.0, b - a), 3)

        starting, running = self.states.get("starting"), self.states.get("running")
        ready = self.states.get("ready") or starting  # a short `ready` can pass between two reads
        span("schedule", deployed, self.created)
        span("prepare", self.created, ready)
        if start_first:
            span("start", ready, starting)
            span("drain-old", running, self.old_stopped)
        else:
            span("stop-old", ready, self.old_stopped)
            may_start = [t for t in (ready, self.old_stopped) if t is not None]
            span("start", max(may_start) if may_start else None, starting)
        span("health", starting, running)
        span("observe", running, self.seen)
        if self.smoke:
            out["smoke"] = round(self.smoke, 3)
        return out
