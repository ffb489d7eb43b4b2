"""One device's update in a compose rollout, step by step:

  pull       by digest (the old model keeps serving meanwhile)
  start      start-first only: the new container in the other slot, beside the old one on the
             same port; health and smoke answered by the new slot; the old one keeps serving
  wait       past the canary: until the canary devices are done
  take over  start-first: stop the old slot (it drains first); stop-first: `compose up` in
             place, wait healthy, smoke
A failure before the take-over removes the staged container; the old one never stopped."""

from __future__ import annotations

from kit.errors import KitError
from kit.fleet import compose
from kit.fleet import state as st
from kit.fleet.device_steps import DeviceSteps, Interrupted
from kit.fleet.plan import START_FIRST, DevicePlan
from kit.fleet.status import Deployment, deployment, device_address
from kit.units import utc_timestamp


class DeviceUpdate:
    """The update of `plan.device` within `run`; `phase` says where it is when it fails."""

    def __init__(self, run: DeviceSteps, plan: DevicePlan, wave: int, canary: bool):
        self.run, self.plan, self.wave, self.canary = run, plan, wave, canary
        self.name, self.host = plan.device.name, plan.device.host
        self.files = st.DeviceFiles(run.root, self.name)
        self.phase, self.staged, self.dep, self.old_text = "connect", False, Deployment(), None

    def execute(self) -> bool:
        """True when the device is done or stopped safely (interrupted), False when it failed."""
        run, plan, name = self.run, self.plan, self.name
        run.store.device(name, result=st.RUNNING, wave=self.wave, started_at=utc_timestamp(),
                         strategy=plan.strategy, strategy_reason=plan.strategy_reason)
        run.step(name, "connect", f"wave {self.wave}: connecting to {self.host} "
                 f"({plan.strategy}: {plan.strategy_reason})")
        try:
            with run.engine_for(plan.device, timeout=60) as engine:
                self.dep = deployment(engine, run.fleet.name)
                run.store.device(name, before=self.dep.image, after=self.dep.image)
                self.phase = "pull"
                self.pull(engine)
                rollback = self.prepare(engine)
                self.take_over(engine, rollback)
                self.files.write_last_good(plan.compose_text)
        except KitError as e:
            return self.failed(e)
        run.close_step(name)
        run.store.device(name, result=st.DONE, reason="", phase="done", finished_at=utc_timestamp())
        run.progress(name, "done", f"runs {run.digest_ref}, healthy, smoke prediction answered")
        return True

    def pull(self, engine) -> None:
        """By digest; skipped when the device has that digest already (content-addressed: a pull
        would fetch nothing, yet costs a registry round trip and a dockerd job)."""
        run = self.run
        run.step(self.name, "pull", f"pulling {run.digest_ref} (unless the device has it)")
        if not engine.image_exists(run.digest_ref):
            engine.pull(run.digest_ref)

    def prepare(self, engine) -> str | None:
        """Everything before what serves changes. Returns the compose file to roll back to."""
        run, plan = self.run, self.plan
        if plan.finish_switch:
            return None
        if plan.strategy == START_FIRST:
            rollback = run.rollback_text(engine, plan, self.files, self.dep)
            self.old_text = self.files.read(self.files.current)
            self.start_beside(engine)
            self.phase = "wait-canary"
            run.wait_for_canary(self.name, self.canary)
            return rollback
        self.phase = "wait-canary"
        run.wait_for_canary(self.name, self.canary)
        return run.rollback_text(engine, plan, self.files, self.dep)

    def start_beside(self, engine) -> None:
        """Start-first: the new container healthy and answering beside the old one."""
        run, plan, name = self.run, self.plan, self.name
        self.phase, self.staged = "start", True
        run.step(name, "start", f"starting the new container beside the old one (slot {plan.slot})")
        if any(o.slot == plan.slot for o in [self.dep, *self.dep.others] if o.exists and o is not self.dep):
            run.down(plan.slot, self.files, self.host)  # a leftover of an interrupted update
        self.files.write_current(plan.compose_text)
        compose.run_compose(compose.up_argv(run.fleet.name, self.files.current, slot=plan.slot), self.host)
        self.phase = "health"
        run.step(name, "health", f"waiting up to {run.timeout:g}s for the new container (slot {plan.slot})")
        run.wait_healthy(engine, run.digest_ref, device_address(self.host), plan.port, slot=plan.slot, shared=True)
        self.phase = "smoke"
        run.smoke_device(name, plan, slot=plan.slot)
        if run.signal_name:  # not switched yet: the safe place to stop
            raise Interrupted(f"{run.signal_name} before the switch")

    def take_over(self, engine, rollback: str | None) -> None:
        """What serves changes here: from now on a failure is rolled back, not unstaged."""
        run, plan, name = self.run, self.plan, self.name
        self.phase = "switch" if plan.strategy == START_FIRST or plan.finish_switch else "up"
        with run.lock:
            run.rollback_to[name] = rollback
        self.staged = False
        run.store.device(name, after=run.digest_ref)
        if self.phase == "switch":
            self.switch(engine)
        else:
            self.replace(engine)

    def switch(self, engine) -> None:
        """Start-first: the new slot serves; stop the old one (its server drains first)."""
        run, plan = self.run, self.plan
        old = [o for o in [self.dep, *self.dep.others] if o.exists and o.slot != plan.slot]
        run.step(self.name, "switch", "stopping the old container (it drains first): "
                 + ", ".join(f"slot {o.slot}" for o in old))
        for slot in sorted({o.slot for o in old}):
            run.stop_slot(engine, slot)
        if plan.finish_switch:
            self.files.write_current(plan.compose_text)

    def replace(self, engine) -> None:
        """Stop-first: `compose up` replaces the container in place, then health and smoke."""
        run, plan, name = self.run, self.plan, self.name
        run.step(name, "up", " ".join(plan.command))
        for o in self.dep.others:  # a copy left in the other slot would hold the port
            if o.slot != plan.slot:
                run.down(o.slot, self.files, self.host)
        self.files.write_current(plan.compose_text)
        compose.run_compose(compose.up_argv(run.fleet.name, self.files.current, plan.force_recreate,
                                            slot=plan.slot), self.host)
        self.phase = "health"
        run.step(name, "health", f"waiting up to {run.timeout:g}s for healthy")
        run.wait_healthy(engine, run.digest_ref, device_address(self.host), plan.port, slot=plan.slot)
        self.phase = "smoke"
        run.smoke_device(name, plan)

    def failed(self, e: KitError) -> bool:
        """Record why the device stopped; an interruption is a safe stop (True), else False."""
        run, name, phase = self.run, self.name, self.phase
        if self.staged:  # the new container never took over: remove it, the old one kept serving
            note = run.unstage(self.plan, self.files, self.old_text)
        else:
            note = "" if name in run.rollback_to else "; not touched"
        run.close_step(name)
        if isinstance(e, Interrupted):
            run.store.device(name, result=st.UNTOUCHED, reason=f"{phase}: {e.message}{note}",
                             after=self.dep.image if self.dep.exists else None, finished_at=utc_timestamp())
            run.progress(name, "stopped", f"{phase}: {e.message}{note}")
            return True
        run.store.device(name, result=st.FAILED, reason=f"{phase}: {e.message}{note}", finished_at=utc_timestamp(),
                         **({"after": self.dep.image} if self.staged or name not in run.rollback_to else {}))
        run.progress(name, "failed", f"{phase}: {e.message}{note}")
        return False
