"""A live shadow of stock ESS: what Venus alone would have done today with the measured inputs.

``StockShadow`` steps the simulator's own stock policy on the simulator's own plant
(``runner.PolicyRun``: one model, not a second one) with the DC PV, AC loads and AC PV that the
GX measures, from a measured SOC, on the simulator's fair terms: stock's Minimum SOC at the
reserve the user keeps (``floor + control.prio_band``), every other plant parameter from the
``sim:`` section, the battery's capacity an argument (the GX's where it publishes it).

How inputs become steps: each ``update(now, ...)`` is a row of a day profile. It first runs the
plant through every ``sim.dt_s`` step that starts before ``now`` with the inputs it held, then
holds the new ones, exactly as ``run_scenario`` steps through a profile's rows. So inputs that
arrive every 1 to 10 s, irregularly, or unchanged and repeated, give the simulator's figures for
the same rows; the shadow is at most one step behind the last ``now``.

Gaps: inputs that stop (the service was down, the GX unreachable) are held for at most
``max_hold_s``; the rest of the gap is skipped: no energy flows in the shadow for time it has no
inputs for (``skipped_s`` adds it up), and the step grid starts again at the next ``now``. So the
CPU of one update is bounded (``max_hold_s / dt_s`` steps), and a gap counts as little in the
estimate as it can in what the service measures. A clock that goes back (NTP setting a GX's
clock after boot) is a gap of length 0: nothing is run, the grid starts again at ``now``.

An input the GX does not give (invalid, disconnected): do not call ``update``; the held values
run out after ``max_hold_s`` as over any gap. Inputs are measured, so the DC PV is what the MPPTs
delivered: while the real battery is full and they curtail, the shadow sees less PV than the sun
offered (a profile's ``pv_dc_w`` is the PV available), and the estimate is low by what stock's
battery would then have taken.

Pure: no clock, no I/O; ``now`` is any time in seconds supplied by the caller. The caller resets
the shadow at local midnight (``reset``) from the measured SOC.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

from venus_prio.config import Config
from venus_prio.sim.metrics import MetricsAccumulator
from venus_prio.sim.policies import StockPolicy
from venus_prio.sim.runner import PolicyRun

# Inputs are held this long when no update comes: longer than any regular input interval
# (1-10 s on a GX) and than the controller's stale limit, short enough that a stopped service
# does not run stale sunshine into the battery for hours.
MAX_HOLD_S = 60.0
_WS_PER_KWH = 3_600_000.0


class StockShadow:
    """Stock ESS on today's measured inputs (see the module docstring).

    ``reserve_soc`` is stock's Minimum SOC (the floor plus ``control.prio_band``),
    ``battery_kwh`` the capacity, ``start_soc`` the measured SOC at ``now``.
    """

    def __init__(
        self,
        config: Config,
        *,
        battery_kwh: float,
        reserve_soc: float,
        start_soc: float,
        now: float,
        max_hold_s: float = MAX_HOLD_S,
    ) -> None:
        if battery_kwh <= 0:
            raise ValueError(f"battery_kwh must be > 0, got {battery_kwh:g}")
        # The simulator's fair terms: stock's MinSOC is sim.reserve_soc (runner.min_soc_for).
        sim = dataclasses.replace(config.sim, battery_kwh=battery_kwh, reserve_soc=reserve_soc)
        self._config = dataclasses.replace(config, sim=sim)
        self._dt = sim.dt_s
        self.max_hold_s = max_hold_s
        self.reset(start_soc=start_soc, now=now)

    def reset(self, *, start_soc: float, now: float) -> None:
        """Start a new day at ``now`` from the measured ``start_soc``: every figure back to 0."""
        self._run = PolicyRun(self._config, StockPolicy.name, start_soc=start_soc)
        self._restart(now)
        self._last_update = now
        self._inputs: Optional[Tuple[float, float, float]] = None  # none yet: nothing to run
        self.skipped_s = 0.0

    def _restart(self, now: float) -> None:
        # Steps start at origin + k * dt, as run_scenario's at start + k * dt: the same floats.
        self._origin = now
        self._k = 0
        self._next_t = now

    def update(self, now: float, *, pv_dc_w: float, load_w: float, pv_ac_w: float = 0.0) -> None:
        """Run the steps before ``now`` on the held inputs, then hold these from ``now`` on."""
        self.advance(now)
        self._inputs = (pv_dc_w, load_w, pv_ac_w)
        self._last_update = now

    def advance(self, now: float) -> None:
        """Run every step that starts before ``now`` on the held inputs (within the hold)."""
        if now < self._next_t:
            if now < self._last_update:  # the clock went back: start the grid again
                self._restart(now)
                self._last_update = now
            return
        inputs = self._inputs
        hold_until = self._last_update + self.max_hold_s
        if inputs is not None:
            step, dt, origin, k = self._run.step, self._dt, self._origin, self._k
            pv_dc_w, load_w, pv_ac_w = inputs
            t = self._next_t
            while t < now and t < hold_until:
                step(t, dt, pv_dc_w, load_w, pv_ac_w)
                k += 1
                t = origin + k * dt
            self._k, self._next_t = k, t
        if self._next_t < now:  # no inputs, or held for max_hold_s: skip the rest
            self.skipped_s += now - self._next_t
            self._restart(now)

    @property
    def soc(self) -> float:
        """Return stock's SOC (%) after the last step."""
        return self._run.plant.soc

    @property
    def charged_kwh(self) -> float:
        """Return today's DC energy into the battery (kWh)."""
        return self._metrics.charged_ws / _WS_PER_KWH

    @property
    def discharged_kwh(self) -> float:
        """Return today's DC energy out of the battery (kWh)."""
        return self._metrics.discharged_ws / _WS_PER_KWH

    @property
    def throughput_kwh(self) -> float:
        """Return today's battery throughput: charge + discharge (kWh), as the simulator's."""
        return (self._metrics.charged_ws + self._metrics.discharged_ws) / _WS_PER_KWH

    @property
    def micro_cycles(self) -> int:
        """Return today's SOC micro-cycles (``metrics.MICRO_CYCLE_SOC``), as the simulator's."""
        return self._metrics.cycles.cycles

    @property
    def _metrics(self) -> MetricsAccumulator:
        return self._run.metrics
