"""Simulate the plant: battery, inverter/charger and Venus's stock ESS logic (control.md sec. 7).

How it works, once per step of ``dt`` seconds (pure: no I/O, no clock):

1. ESS flags from the SOC at the start of the step (venus-ess.md, "The minimum-SOC rule"):
   ``blocked`` (ESS #1) is set when SOC <= MinSOC and cleared when SOC >= MinSOC + 3;
   ``grid_charging`` is set when SOC <= MinSOC - 5 and cleared when SOC >= MinSOC.
2. Grid setpoint 0: the inverter covers the AC loads minus AC PV, up to
   ``min(inverter_w, MaxDischargePower)`` (-1 or any negative = no cap). It does not invert at
   all while blocked or when MaxDischargePower is 0. The hub4 override (control.md section 8) is
   a DC-side cap: the inverter's DC draw, idle included, stays at or below it (-1 = no cap, 0 =
   no inverting at all, as with the setting); ``OverrideRegister`` models how the GX keeps it.
3. DC bus: ``battery = pv_dc - inverter_dc_in - idle_dc + charger_dc_out``. So DC PV beyond what
   the inverter takes charges the battery, and while blocked all DC PV goes to the battery.
   The 20 W idle draw is paid from the DC bus while inverting, from the AC side (grid) otherwise.
4. Charging from AC: while ``grid_charging`` the charger draws ``GRID_RECHARGE_W`` from the grid;
   otherwise surplus AC PV (AC PV above the loads) is taken up by the charger, as grid setpoint 0
   makes it do. Charger efficiency = the inverter's nominal efficiency.
5. Full battery: the battery takes only what fits below 100 %. Surplus from the charger is exported
   instead; surplus DC PV is fed in through the inverter (nominal efficiency, up to the inverter's
   own maximum: Victron documents that a positive cap does not stop feed-in) unless the inverter
   may not invert (blocked, or MaxDischargePower = 0, which closes the DC->AC path); what cannot
   be fed in is curtailed by the MPPTs.
6. The battery stores ``charge_efficiency`` of what goes in and gives ``discharge_efficiency``
   of what it loses from its chemistry. SOC is not clamped: it can overshoot a limit by at most one
   step (as the real system, which acts on the next measurement).

Inverter efficiency: nominal at and above ``LOW_POWER_W``; below it falls linearly to
``nominal - LOW_POWER_DROP`` at 0 W, so small caps pay their real price. Conversion losses
(``loss_w``) = inverter/charger losses + idle + battery losses, so every step satisfies::

    pv_dc - curtailed + pv_ac + grid = load + stored + loss     (stored = d(SOC energy)/dt)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple, Optional

from venus_prio.config import OVERRIDE_VARIANTS, SimConfig

RELEASE_ABOVE_FLOOR = 3.0  # ESS #1 clears at MinSOC + 3
GRID_RECHARGE_BELOW_FLOOR = 5.0  # grid recharge starts at MinSOC - 5, stops at MinSOC
GRID_RECHARGE_W = 500.0  # AC power drawn for the slow grid recharge (SimConfig has no key)
LOW_POWER_W = 300.0  # below this the inverter is less efficient
LOW_POWER_DROP = 0.10  # efficiency lost at 0 W compared to nominal (linear in between)


@dataclass(frozen=True)
class PlantParams:
    """Physical parameters of one simulated system and Venus's MinSOC for this run."""

    battery_kwh: float
    inverter_w: float
    charge_efficiency: float
    discharge_efficiency: float
    inverter_efficiency: float
    idle_w: float
    min_soc: float

    @classmethod
    def from_sim_config(cls, sim: SimConfig, *, min_soc: float) -> PlantParams:
        """Return the parameters of the ``sim:`` config section with this MinSOC.

        Every parameter but ``min_soc`` (which depends on the policy) is the ``sim:`` key of
        the same name.
        """
        from_sim = {f.name: getattr(sim, f.name) for f in fields(cls) if f.name != "min_soc"}
        return cls(**from_sim, min_soc=min_soc)


class PlantStep(NamedTuple):
    """What happened during one step; powers in W, averaged over the step.

    A NamedTuple (immutable as a frozen dataclass) because the simulator builds one per step and
    policy: a frozen dataclass's ``__init__`` cost a tenth of a simulated day.
    """

    soc: float  # at the end of the step
    battery_w: float  # DC at the battery terminals, + = charging
    inverter_ac_w: float  # AC terminal of the inverter/charger, + = inverting, - = drawing
    grid_w: float  # + = import
    pv_dc_w: float  # available DC PV (before curtailment)
    pv_ac_w: float
    load_w: float
    curtailed_w: float  # DC PV the MPPTs had to throw away
    blocked: bool  # ESS #1: discharge blocked
    grid_charging: bool
    loss_w: float  # inverter/charger losses + idle + battery losses


class Plant:
    """A battery, an inverter/charger and the stock ESS rules, stepped by the caller."""

    def __init__(self, params: PlantParams, *, start_soc: float) -> None:
        self.params = params
        self.soc = float(start_soc)
        self.blocked = self.soc <= params.min_soc
        self.grid_charging = self.soc <= params.min_soc - GRID_RECHARGE_BELOW_FLOOR
        self._capacity_ws = params.battery_kwh * 1000.0 * 3600.0
        self._eta = params.inverter_efficiency

    def inverter_dc_w(self, ac_w: float) -> float:
        """Return the DC power the inverter draws to deliver ``ac_w`` (low-power penalty)."""
        eta = self._eta
        if ac_w < LOW_POWER_W:
            eta -= LOW_POWER_DROP * (1.0 - ac_w / LOW_POWER_W)
        return ac_w / eta

    def inverter_ac_for_dc(self, dc_w: float) -> float:
        """Return the most AC power the inverter delivers from ``dc_w`` (inverse of the above)."""
        if dc_w <= 0:
            return 0.0
        eta = self._eta
        low_eta = eta - LOW_POWER_DROP
        # Below LOW_POWER_W: dc = ac / (low_eta + DROP * ac / LOW_POWER_W), solved for ac.
        ac = dc_w * low_eta / (1.0 - dc_w * LOW_POWER_DROP / LOW_POWER_W)
        if 0 <= ac < LOW_POWER_W:
            return ac
        return dc_w * eta

    def _update_flags(self) -> None:
        p = self.params
        soc = self.soc
        if soc <= p.min_soc:
            self.blocked = True
        elif soc >= p.min_soc + RELEASE_ABOVE_FLOOR:
            self.blocked = False
        if soc <= p.min_soc - GRID_RECHARGE_BELOW_FLOOR:
            self.grid_charging = True
        elif soc >= p.min_soc:
            self.grid_charging = False

    def step(
        self,
        dt: float,
        *,
        pv_dc_w: float,
        load_w: float,
        pv_ac_w: float,
        max_discharge_w: float,
        override_w: float = -1.0,
    ) -> PlantStep:
        """Advance the plant by ``dt`` seconds and return what flowed where.

        ``max_discharge_w`` is the setting (AC-side cap), ``override_w`` the hub4 override in
        force (DC-side cap); negative values mean no cap.
        """
        p = self.params
        self._update_flags()
        eta = self._eta
        cap_w = p.inverter_w if max_discharge_w < 0 else min(p.inverter_w, max_discharge_w)
        if override_w >= 0:
            cap_w = min(cap_w, self.inverter_ac_for_dc(override_w - p.idle_w))
        may_invert = not self.blocked and cap_w > 0 and override_w != 0
        ac_need = load_w - pv_ac_w

        inv_ac = min(ac_need, cap_w) if may_invert and ac_need > 0 else 0.0
        if inv_ac > 0:
            inv_dc = self.inverter_dc_w(inv_ac)
            idle_dc, idle_ac = p.idle_w, 0.0
        else:
            inv_dc = 0.0
            idle_dc, idle_ac = 0.0, p.idle_w

        charger_ac = 0.0
        if self.grid_charging:
            charger_ac = min(GRID_RECHARGE_W, p.inverter_w)
        elif inv_ac == 0 and ac_need < 0:
            charger_ac = min(-ac_need, p.inverter_w)  # grid setpoint 0: AC PV surplus charges
        charger_dc = charger_ac * eta

        battery_w = pv_dc_w - inv_dc - idle_dc + charger_dc
        feed_ac = 0.0
        feed_dc = 0.0
        curtailed = 0.0
        room_w = (100.0 - self.soc) / 100.0 * self._capacity_ws / dt / p.charge_efficiency
        max_charge_w = max(room_w, 0.0)
        if battery_w > max_charge_w:
            excess = battery_w - max_charge_w
            battery_w = max_charge_w
            from_charger = min(excess, charger_dc)  # the charger simply takes less
            charger_dc -= from_charger
            charger_ac = charger_dc / eta
            excess -= from_charger
            if excess > 0:
                if may_invert:
                    feed_ac = min(excess * eta, max(p.inverter_w - inv_ac, 0.0))
                    feed_dc = feed_ac / eta
                curtailed = max(0.0, excess - feed_dc)  # float rounding must not make it negative

        if battery_w >= 0:
            stored_w = battery_w * p.charge_efficiency
        else:
            stored_w = battery_w / p.discharge_efficiency
        self.soc += stored_w * dt / self._capacity_ws * 100.0

        inverter_ac_w = inv_ac + feed_ac - charger_ac - idle_ac
        grid_w = load_w - inverter_ac_w - pv_ac_w
        loss_w = (
            (inv_dc - inv_ac)
            + (feed_dc - feed_ac)
            + (charger_ac - charger_dc)
            + p.idle_w
            + (battery_w - stored_w)
        )
        return PlantStep(
            soc=self.soc,
            battery_w=battery_w,
            inverter_ac_w=inverter_ac_w,
            grid_w=grid_w,
            pv_dc_w=pv_dc_w,
            pv_ac_w=pv_ac_w,
            load_w=load_w,
            curtailed_w=curtailed,
            blocked=self.blocked,
            grid_charging=self.grid_charging,
            loss_w=loss_w,
        )


# systemcalc before v3.60 rewrote the overrides every this many seconds (control.md section 8).
GX_RESET_PERIOD_S = 5.0


class OverrideRegister:
    """The hub4 override as a GX keeps it: expiry, and the ways a GX may not honour it.

    ``variant`` is one of ``OVERRIDE_VARIANTS``: ``honoured`` (held until ``expiry_s`` after the
    last write, then -1), ``absent`` (no such path: writes are dropped, ``shown`` is None),
    ``reset_every_5s`` (as honoured, but every ``GX_RESET_PERIOD_S`` of the clock, at
    ``reset_phase_s`` into the period, it is set back to -1) and ``ignored`` (stored and shown,
    never applied to the inverter). Pure: ``now`` is an argument.
    """

    def __init__(
        self, *, variant: str = "honoured", expiry_s: float = 60.0, reset_phase_s: float = 0.0
    ) -> None:
        if variant not in OVERRIDE_VARIANTS:
            raise ValueError(f"override variant must be one of {OVERRIDE_VARIANTS}: {variant!r}")
        self.variant = variant
        self.expiry_s = expiry_s
        # Where the GX's 5 s timer ticks within its period. A writer that refreshes every 5 s
        # on the same grid would win every reset in the same instant: on a real GX the two
        # clocks are not in step, so the simulator puts the resets half a period off.
        self.reset_phase_s = reset_phase_s
        self._value = -1.0
        self._written_at: Optional[float] = None

    @property
    def present(self) -> bool:
        """Return whether the GX publishes the override path at all."""
        return self.variant != "absent"

    def write(self, value_w: Optional[float], now: float) -> bool:
        """Apply a write (None = null = release); return False when the GX dropped it."""
        if not self.present:
            return False
        if value_w is None or value_w < 0:
            self._value, self._written_at = -1.0, None
        else:
            self._value, self._written_at = float(value_w), now
        return True

    def shown(self, now: float) -> Optional[float]:
        """Return the value the GX shows at ``now`` (-1 = none; None = the path is absent)."""
        if not self.present:
            return None
        written = self._written_at
        if written is not None:
            expired = now - written >= self.expiry_s
            phase = self.reset_phase_s
            reset = self.variant == "reset_every_5s" and math.floor(
                (now - phase) / GX_RESET_PERIOD_S
            ) > math.floor((written - phase) / GX_RESET_PERIOD_S)
            if expired or reset:
                self._value, self._written_at = -1.0, None
        return self._value

    def next_change(self, now: float) -> Optional[float]:
        """Return when the shown value falls back to -1 by itself (expiry or reset), if ever."""
        if self.shown(now) is None or self._written_at is None:
            return None
        written = self._written_at
        change = written + self.expiry_s
        if self.variant == "reset_every_5s":
            phase = self.reset_phase_s  # as in ``shown``: the next tick of the GX's timer
            reset = (math.floor((written - phase) / GX_RESET_PERIOD_S) + 1) * GX_RESET_PERIOD_S
            change = min(change, reset + phase)
        return change

    def in_force(self, now: float) -> float:
        """Return the cap the inverter obeys at ``now`` (-1 = none)."""
        shown = self.shown(now)
        if shown is None or self.variant == "ignored":
            return -1.0
        return shown
