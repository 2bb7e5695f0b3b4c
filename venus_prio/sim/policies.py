"""The policies the simulator compares, each stepped once per ``dt`` on a virtual clock.

- ``stock``: writes nothing; MaxDischargePower stays at its start value -1 (no cap).
- ``original``: a port of the original add-on's once-a-second loop as control.md section 7
  describes it (plain 15-sample PV mean, its bands, the ``prio`` flag, its rounding formulas,
  a write whenever its limit differs from the setting).
- ``venus_prio[override]``: the real ``controller.decide`` with the override's PV share
  (``actuator.control_for``) and ``actuator.plan_override``: writes the volatile hub4 override,
  never the setting (control.md section 8).
- ``venus_prio[setting]``: the real ``controller.decide`` and ``writes.plan_write``/
  ``record_write``: writes the persisted setting (flash), rationed.

Every policy sees what a controller on the GX would read before the step (SOC, measured DC PV,
battery power, the setting, the override the GX shows) and returns the setting in force for the
step, whether it wrote the setting, the override value it wrote (if any) and the reason for the
time-per-reason metric.
"""

from __future__ import annotations

import collections
from typing import Any, Deque, Dict, NamedTuple, Optional, Tuple

from venus_prio import actuator
from venus_prio.config import Config, ControlConfig
from venus_prio.controller import ControllerState, decide
from venus_prio.model import Actuator, Decision, Snapshot
from venus_prio.writes import WriteState, plan_write, record_write

START_SETTING_W = -1.0  # Victron's factory default: no cap; the baseline of every run
SETTING_MIN_W = -1.0
SETTING_MAX_W = 1_000_000.0

# Reasons of the policies that have no controller (time-per-reason rows).
STOCK = "STOCK"
ORIGINAL_HIGH = "ORIGINAL_HIGH"  # SOC >= min + 10: limit only rises with PV
ORIGINAL_PRIO = "ORIGINAL_PRIO"  # prio: limit = PV share
ORIGINAL_HALF = "ORIGINAL_HALF"  # not prio: limit = max(max / 2, PV share)
ORIGINAL_BELOW = "ORIGINAL_BELOW"  # SOC < min: limit = 0

ORIGINAL_SAMPLES = 15  # the original averaged the last 15 one-second PV samples


class PolicyStep(NamedTuple):
    """The setting in force after the policy ran, whether it wrote it, why, and the override.

    ``override_w`` is the value written to the hub4 override in this step (None: no write).
    """

    setting_w: float
    wrote: bool
    reason: str
    override_w: Optional[float] = None


class Reading(NamedTuple):
    """What a controller on the GX reads before a step; ``override_w`` None: path absent."""

    now: float
    soc: float
    pv_dc_w: float
    battery_w: float
    setting_w: float
    override_w: Optional[float] = -1.0


class Policy:
    """Interface of a simulated policy."""

    name = ""

    def step(
        self,
        *,
        now: float,
        soc: float,
        pv_dc_w: float,
        battery_w: float,
        setting_w: float,
        override_w: Optional[float] = -1.0,
    ) -> PolicyStep:
        """Return the next setting; ``override_w`` is what the GX shows (None: absent)."""
        return self.decide_step(Reading(now, soc, pv_dc_w, battery_w, setting_w, override_w))

    def decide_step(self, r: Reading) -> PolicyStep:
        """Return the next setting for what the GX showed before the step."""
        raise NotImplementedError


class StockPolicy(Policy):
    """Venus's own behaviour: nothing writes the setting."""

    name = "stock"

    def decide_step(self, r: Reading) -> PolicyStep:
        """Return the setting unchanged."""
        return PolicyStep(r.setting_w, False, STOCK)


def original_share(pv: float, *, limit: float) -> float:
    """Return the original add-on's PV share for the mean PV ``pv`` and its current ``limit``.

    Python's ``round`` (round half to even), as the add-on itself is a Python script.
    """
    if pv > 300:
        return float(round((0.8 * pv - 5) / 10) * 10)
    if pv > 100 or (pv > 90 and limit > 0):
        return float(round((0.7 * pv - 5) / 10) * 10 - 10)
    return 0.0


def original_limit(
    *, soc: float, min_soc: float, pv: float, limit: float, prio: bool, max_w: float
) -> Tuple[float, bool, str]:
    """Return the original add-on's next (limit, prio, reason) from its bands (pure)."""
    if soc >= min_soc + 10:
        if soc > 90:
            candidate = min(max_w, pv * 2)
        elif soc >= min_soc + 13:
            candidate = min(max_w, pv * 1.5)
        else:
            candidate = min(max_w, pv)
        return (candidate if candidate > limit else limit), False, ORIGINAL_HIGH
    if soc >= min_soc:
        if soc <= min_soc + 5:
            prio = True
        share = original_share(pv, limit=limit)
        if prio:
            return share, True, ORIGINAL_PRIO
        return max(max_w / 2, share), False, ORIGINAL_HALF
    return 0.0, True, ORIGINAL_BELOW


class OriginalPolicy(Policy):
    """The original add-on's loop (control.md section 7), run once per step."""

    name = "original"

    def __init__(self, *, min_soc: float, max_w: float, start_soc: float, dt: float) -> None:
        self.min_soc = min_soc
        self.max_w = max_w
        # It sampled once a second; at other dt the window keeps its 15 s length.
        self._samples: Deque[float] = collections.deque(maxlen=max(1, round(ORIGINAL_SAMPLES / dt)))
        self._sum = 0.0
        self.prio = not start_soc >= min_soc + 10
        self.limit = 0.0 if self.prio else max_w

    def decide_step(self, r: Reading) -> PolicyStep:
        """Update the PV mean, apply the bands and write when the limit differs."""
        samples = self._samples
        if len(samples) == samples.maxlen:
            self._sum -= samples[0]
        samples.append(r.pv_dc_w)
        self._sum += r.pv_dc_w
        pv = self._sum / len(samples)
        self.limit, self.prio, reason = original_limit(
            soc=r.soc,
            min_soc=self.min_soc,
            pv=pv,
            limit=self.limit,
            prio=self.prio,
            max_w=self.max_w,
        )
        value = min(self.limit, self.max_w)
        if value != r.setting_w:
            return PolicyStep(value, True, reason)
        return PolicyStep(r.setting_w, False, reason)


class _ControllerPolicy(Policy):
    """The real controller, fed a snapshot built from the plant; subclasses place its target."""

    def __init__(self, config: Config, control: ControlConfig, *, min_soc: float) -> None:
        self.config = config
        self.control = control
        self.min_soc = min_soc
        self.state = ControllerState()
        # The baseline is the setting's start value, the same for every policy of a comparison
        # (writes.baseline_w describes a real GX, not the simulated one).
        self.baseline_w = START_SETTING_W
        # What does not change during a run; each step adds the readings (``decide_step``).
        self._gx_fields: Dict[str, Any] = {
            "active_soc_limit": min_soc,
            "min_soc_setting": min_soc,
            "max_discharge_min": SETTING_MIN_W,
            "max_discharge_max": SETTING_MAX_W,
            "connected": True,
        }
        self.gx = Snapshot(**self._gx_fields)

    def decide_step(self, r: Reading) -> PolicyStep:
        """Decide; place the target with the actuator unless ``writes.dry_run`` (then: nothing)."""
        # Built anew rather than ``dataclasses.replace``d: a day is 86,400 steps, and replace
        # costs a third of the step.
        snap = Snapshot(
            **self._gx_fields,
            soc=r.soc,
            pv_dc_w=r.pv_dc_w,
            battery_power_w=r.battery_w,
            max_discharge_w=r.setting_w,
            alive_at=r.now,  # the GX answered this step: alive
        )
        decision, self.state = decide(
            snap, self.state, self.control, baseline_w=self.baseline_w, now=r.now
        )
        if self.config.writes.dry_run:
            return PolicyStep(r.setting_w, False, decision.reason.value)
        return self.place(decision, r)

    def place(self, decision: Decision, r: Reading) -> PolicyStep:
        """Turn the decision into a write of this policy's actuator, or none."""
        raise NotImplementedError


class VenusPrioPolicy(_ControllerPolicy):
    """venus-prio with the setting actuator: the controller and the (flash) write policy."""

    name = "venus_prio[setting]"

    def __init__(self, config: Config, *, min_soc: float) -> None:
        super().__init__(config, actuator.control_for(config, Actuator.SETTING), min_soc=min_soc)
        self.writes = WriteState()

    def place(self, decision: Decision, r: Reading) -> PolicyStep:
        """Plan the setting write (``writes.plan_write``) and apply it."""
        write = plan_write(
            target_w=decision.target_w,
            target_class=decision.target_class,
            current_w=r.setting_w,
            baseline_w=self.baseline_w,
            hold_w=self.control.hold_w,
            max_w=self.control.max_inverter_power_w,
            # The setting's range as the GX shows it, like the service does.
            setting_min=self.gx.max_discharge_min,
            setting_max=self.gx.max_discharge_max,
            state=self.writes,
            cfg=self.config.writes,
            now=r.now,
        )
        if write is None:
            return PolicyStep(r.setting_w, False, decision.reason.value)
        self.writes = record_write(self.writes, write, previous_w=r.setting_w, now=r.now)
        return PolicyStep(write.value_w, True, decision.reason.value)


class VenusPrioOverridePolicy(_ControllerPolicy):
    """venus-prio with the override actuator: the controller and ``actuator.plan_override``.

    The setting keeps the user's value (never written); the override follows the target in
    ``override.step_w`` steps beyond ``override.deadband_w``, is refreshed every
    ``override.refresh_s`` and released with -1 when the controller hands back. What it holds is
    its own record of what it wrote, as the service's: a GX that drops or resets the value is
    the plant's business (``sim.override``), and the verification that would then switch to the
    setting is the service's, not modelled here (this policy is ``actuator.kind: override``).
    """

    name = "venus_prio[override]"

    def __init__(self, config: Config, *, min_soc: float) -> None:
        super().__init__(config, actuator.control_for(config, Actuator.OVERRIDE), min_soc=min_soc)
        # What it holds and when it last wrote, kept by ``actuator.wrote`` as the service keeps it.
        self.held = actuator.start(config.actuator)

    def place(self, decision: Decision, r: Reading) -> PolicyStep:
        """Plan the override write (``actuator.plan_override``); the setting stays as it is."""
        cfg = self.config.actuator.override
        write = actuator.plan_override(
            target_w=decision.target_w,
            target_class=decision.target_class,
            current_w=self.held.held_w,
            last_write_t=self.held.last_write_t,
            cfg=cfg,
            max_w=self.control.max_inverter_power_w,
            now=r.now,
        )
        if write is None:
            return PolicyStep(r.setting_w, False, decision.reason.value)
        self.held = actuator.wrote(self.held, write.value_w, cfg=cfg, now=r.now)
        return PolicyStep(r.setting_w, False, decision.reason.value, write.value_w)


POLICY_NAMES = ("stock", "original", VenusPrioOverridePolicy.name, VenusPrioPolicy.name)
