"""`kit rollout`: one image, pinned to its digest, onto every device of a fleet.

  resolve   the image's registry digest, ONCE, and its config (labels, health
            probe, env). Registry down: fail here, before any device is touched.
  plan      per device, read-only: connect, read facts, gate on the image's
            fingerprint, render its compose file. Refused and unreachable
            devices are never touched; devices already running the digest,
            healthy, with the same compose file are "unchanged".
  canary    the first `rollout.canary` devices to update, then waves of
            `rollout.max_parallel` devices in parallel (threads). A wave starts
            only when every device of the one before is done.
  device    pull by digest (the old model keeps serving meanwhile), keep the
            running compose file as last-good, `compose up -d` with DOCKER_HOST
            set to the device, wait healthy (rollout.health_timeout), send one
            smoke prediction, record last-good = the new file.
  failure   on_failure=rollback: every device this rollout touched gets its
            last-good file back (or `compose down` if nothing ran before) and the
            rollout stops; halt: stop, touch nothing else.

The record (.kit/fleet/<fleet>/rollout.json) is rewritten atomically after
every step, so a rollout killed at any point says where it stopped.

Modules: plan (ComposePlanner), device_steps (what every device step shares), device_update
(one device's update), smoke (the checks); this one runs the waves, rollback and interruption."""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kit.errors import KitError, UsageError
from kit.fleet import compose
from kit.fleet import state as st
from kit.fleet.device_steps import DeviceSteps, Interrupted
from kit.fleet.device_update import DeviceUpdate
from kit.fleet.facts import connected
from kit.fleet.plan import (REFUSED, START_FIRST, STOP_FIRST, UNCHANGED, UNREACHABLE, UPDATE, DevicePlan,
                            choose_strategy, record_plans, service_spec)
from kit.fleet.smoke import grpc_smoke, smoke, zero_example
from kit.fleet.status import deployment, device_address
from kit.net import DEFAULT_PORT
from kit.units import utc_timestamp

# The names the swarm rollout, the CLI and the tests take from here (defined in the modules above).
__all__ = ["ComposeRollout", "DEFAULT_PORT", "DevicePlan", "Interrupted", "REFUSED", "RolloutResult", "START_FIRST",
           "STOP_FIRST", "UNCHANGED", "UNREACHABLE", "UPDATE", "choose_strategy", "device_address", "fleet_lock",
           "grpc_smoke", "plan_waves", "record_plans", "rollout", "service_spec", "smoke", "zero_example"]

# progress(device, phase, message): called from worker threads, one call per step.
Progress = Callable[[str, str, str], None]


def _quiet(device: str, phase: str, message: str) -> None:
    pass


@dataclass
class RolloutResult:
    fleet: str
    image: str
    digest_ref: str
    dry_run: bool
    status: str  # planned (dry run) | done | partial | rolled-back | halted | failed
    reason: str
    plans: list
    record: st.RolloutRecord | None = None
    record_path: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("done", "planned")

    def to_dict(self) -> dict:
        d = {"fleet": self.fleet, "image": self.image, "digest_ref": self.digest_ref, "dry_run": self.dry_run,
             "status": self.status, "reason": self.reason, "record_path": self.record_path,
             "plan": [p.to_dict() for p in self.plans]}
        if self.record is not None:
            d["record"] = self.record.to_dict()
        return d


# ---- the rollout -----------------------------------------------------------------------


@contextlib.contextmanager
def fleet_lock(root: Path):
    """One rollout per fleet at a time (on this machine)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another `kit rollout` of this fleet is running (lock {root / 'lock'})",
                             hint="wait for it to finish") from None
        yield


class ComposeRollout(DeviceSteps):
    """A compose rollout: plan (ComposePlanner), the devices in waves (run), each one's update
    (DeviceUpdate), rollback of those it touched, and how a signal stops it (interrupt)."""

    def update_device(self, plan: DevicePlan, wave: int, canary: bool = True) -> bool:
        return DeviceUpdate(self, plan, wave, canary).execute()

    def rollback_device(self, plan: DevicePlan, why: str) -> None:
        name, host = plan.device.name, plan.device.host
        files = st.DeviceFiles(self.root, name)
        text = self.rollback_to[name]
        rec = self.store.record.devices[name]
        reason = rec.reason if rec.result == st.FAILED else why
        self.step(name, "rollback", "restoring last-good" if text else "nothing ran before: compose down")
        try:
            with connected(plan.device, timeout=60) as engine:
                now = deployment(engine, self.fleet.name)
                running = {o.slot for o in [now, *now.others] if o.exists}
                if text is None:
                    for slot in sorted(running):
                        self.down(slot, files, host)
                    after = None
                else:
                    slot = compose.slot_of(text)
                    # beside what runs when both share the port (start-first back), else stop it first
                    beside = "KIT_REUSE_PORT" in text and now.reuse_port and plan.strategy == START_FIRST
                    if not beside:
                        for other in sorted(running - {slot}):
                            self.down(other, files, host)
                    files.write_current(text)
                    after = compose.image_of(text)
                    compose.run_compose(compose.up_argv(self.fleet.name, files.current, slot=slot), host)
                    self.wait_healthy(engine, after, device_address(host), plan.port, slot=slot,
                                      shared=beside and slot != now.slot)
                    for other in sorted(running - {slot}) if beside else ():
                        self.down(other, files, host)
        except KitError as e:
            self.close_step(name)
            self.store.device(name, result=st.FAILED, reason=f"{reason}; rollback failed: {e.message}",
                              finished_at=utc_timestamp())
            self.progress(name, "failed", f"rollback failed: {e.message}")
            return
        self.close_step(name)
        self.store.device(name, result=st.ROLLED_BACK, reason=reason, after=after, finished_at=utc_timestamp())
        self.progress(name, "rolled-back", f"runs {after or 'nothing (as before)'}")

    # -- interrupt --

    def interrupt(self, signal_name: str) -> None:
        """SIGINT/SIGTERM: start no device, stop those not yet switched where it is safe, let
        those already switching finish; the record says so at once."""
        if self.stopping.is_set() and self.signal_name:
            self.progress("*", "interrupt", f"{signal_name} again: still finishing the devices in progress")
            return
        self.signal_name = signal_name
        self.stopping.set()
        record = self.store.record
        at = {r.name: r.phase for r in record.devices.values() if r.result == st.RUNNING}
        self.progress("*", "interrupt", f"{signal_name}: starting no other device; finishing "
                      + (", ".join(f"{n} ({p})" for n, p in at.items()) or "nothing") + " first")
        # Written by a thread: the signal handler may run while this thread holds the store's lock.
        threading.Thread(target=self.store.update, kwargs={"status": st.INTERRUPTED, "interrupted": {
            "signal": signal_name, "at": utc_timestamp(), "devices": at}}, daemon=True).start()

    # -- waves --

    def run(self, plans: list[DevicePlan], image: str, durations: dict | None = None) -> st.RolloutRecord:
        record = st.RolloutRecord(fleet=self.fleet.name, image=image, digest_ref=self.digest_ref,
                                  on_failure=self.fleet.rollout.on_failure, durations=dict(durations or {}))
        record_plans(record, plans)
        self.store = st.RecordStore(self.root / "rollout.json", record)
        self.store.save()
        started = time.monotonic()

        todo = [p for p in plans if p.action == UPDATE]
        canary = min(max(0, int(self.fleet.rollout.canary)), len(todo))
        width = max(1, int(self.fleet.rollout.max_parallel))
        wave_of = {p.device.name: number for number, wave in enumerate(plan_waves(todo, canary, width)) for p in wave}
        canary_names = {p.device.name for p in todo[:canary]}
        left = [len(canary_names)]
        if not canary_names:
            self.canary_passed.set()

        def work(p: DevicePlan) -> bool:
            name = p.device.name
            if self.stopping.is_set():
                return True  # never started: pending, marked below
            ok = self.update_device(p, wave_of[name], canary=name in canary_names)
            if not ok:
                self.stopping.set()
            elif name in canary_names:
                with self.lock:
                    left[0] -= 1
                    if left[0] == 0:
                        self.canary_passed.set()
            return ok

        # At most max_parallel devices at once, canary devices first. Past the canary a device
        # may pull and, start-first, start and prove its new container beside the old one while
        # the canary is checked; it switches (or, stop-first, stops the old) only after it.
        with ThreadPoolExecutor(max_workers=min(width, max(1, len(todo)))) as pool:
            ok = list(pool.map(work, todo))
        failed = [p.device.name for p, good in zip(todo, ok) if not good]
        record.durations["update"] = round(time.monotonic() - started, 3)

        if self.signal_name and not failed:
            for r in record.devices.values():
                if r.result == st.PENDING:
                    r.result, r.reason = st.UNTOUCHED, f"{self.signal_name} came before the rollout reached it"
            done = sum(r.result == st.DONE for r in record.devices.values())
            where = "; ".join(f"{n} at {p}" for n, p in (record.interrupted or {}).get("devices", {}).items())
            self.store.finish(st.INTERRUPTED, f"{self.signal_name} while {where or 'no device was in progress'}; "
                              f"{done} device(s) done, the others kept what they ran: run `kit rollout` "
                              "again to resume")
            return record

        if not failed:
            partial = [r for r in record.devices.values() if r.result in (st.REFUSED, st.UNTOUCHED)]
            status = "partial" if partial else "done"
            reason = (f"{len(partial)} device(s) not updated: " + ", ".join(f"{r.name} ({r.result})" for r in partial)
                      if partial else "")
            self.store.finish(status, reason)
            return record

        first = failed[0]
        cause = f"{'canary ' if first in canary_names else ''}{first} failed " \
                f"({record.devices[first].reason})"
        for r in record.devices.values():
            if r.result == st.PENDING:
                r.result, r.reason = st.UNTOUCHED, f"rollout stopped: {first} failed"
        self.store.save()
        if self.fleet.rollout.on_failure == "rollback":
            touched = [p for p in todo if p.device.name in self.rollback_to]
            with ThreadPoolExecutor(max_workers=max(1, min(width, len(touched) or 1))) as pool:
                list(pool.map(lambda p: self.rollback_device(p, f"rolled back: {cause}"), touched))
            bad = [r.name for r in record.devices.values() if r.result == st.FAILED and r.name in self.rollback_to
                   and "rollback failed" in r.reason]
            status = "failed" if bad else "rolled-back"
            self.store.finish(status, cause + (f"; rollback failed on {', '.join(bad)}" if bad else ""))
        else:
            self.store.finish("halted", cause)
        return record


def plan_waves(items: list, canary: int, width: int) -> list[list]:
    """Canary devices first (in groups of at most `width`), then the rest in waves of `width`."""
    n = min(max(0, canary), len(items))
    head, tail = items[:n], items[n:]
    return [head[i:i + width] for i in range(0, len(head), width)] + \
        [tail[i:i + width] for i in range(0, len(tail), width)]


def rollout(fleet_path: str | Path, image: str | None = None, dry_run: bool = False,
            progress: Progress | None = None) -> RolloutResult:
    from kit.manifest.load import load_fleet
    from kit.fleet.registry import resolve

    fleet = load_fleet(Path(fleet_path))
    ref = image or fleet.image
    if not ref:
        raise UsageError("no image to roll out", hint="set `image:` in the fleet manifest or pass --image")
    if fleet.swarm is not None:
        from kit.fleet.swarm_rollout import rollout_swarm

        return rollout_swarm(fleet, ref, dry_run, progress)
    # Resolve ONCE, before any device: a registry that is down stops everything here.
    t0 = time.monotonic()
    (progress or _quiet)("*", "resolve", f"resolving {ref} to a digest")
    resolved = resolve(ref)
    (progress or _quiet)("*", "resolve", f"{ref} is {resolved.digest_ref}")
    run = ComposeRollout(fleet, resolved, progress)
    if dry_run:
        plans = run.plan(dry_run=True)
        return RolloutResult(fleet.name, ref, resolved.digest_ref, True, "planned", "", plans)
    with fleet_lock(run.root):
        t1 = time.monotonic()
        try:
            plans = run.plan(dry_run=False)
            durations = {"resolve": round(t1 - t0, 3), "plan": round(time.monotonic() - t1, 3)}
            with _signals_stop(run):
                record = run.run(plans, ref, durations)
        finally:
            run.close_kept()
    return RolloutResult(fleet.name, ref, resolved.digest_ref, False, record.status, record.reason, plans,
                         record, str(run.root / "rollout.json"))


@contextlib.contextmanager
def _signals_stop(run: ComposeRollout):
    """While devices are updated, SIGINT (Ctrl-C) and SIGTERM stop the rollout between safe
    points instead of killing it mid-step (see ComposeRollout.interrupt). Main thread only."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}
    before = {sig: signal.signal(sig, lambda signum, _frame: run.interrupt(names[signum])) for sig in names}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
