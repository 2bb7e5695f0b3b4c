"""Today's battery cycling, measured and as stock ESS would have done it: the live benefit.

How it works. The service hands every evaluation's snapshot to ``DayLedger.observe`` with the
wall clock (epoch seconds) and whether the snapshot is current (connected, not stale:
``recording.is_current``, the same test the recording applies). The ledger keeps two figures
for the local day:

- the measured battery throughput: ``|/Dc/Battery/Power|`` integrated over time, each value
  held until the next one (the left-hand rule), for at most ``MAX_HOLD_S``;
- the stock-ESS estimate: ``sim.shadow.StockShadow``, the simulator's own stock policy and plant
  (one model), fed with the same moments' measured DC PV, AC loads and AC PV, started from the
  measured SOC, on the simulator's fair terms (stock's Minimum SOC at the reserve the user keeps:
  the floor plus ``control.prio_band``). The capacity is the GX's where it publishes one, else
  ``sim.battery_kwh``.

Both hold an input for the same ``MAX_HOLD_S`` and count nothing over a longer gap (service down,
GX unreachable, data stale, loads not published), so a gap weighs the same in both figures.
At the first current snapshot of a new local date both start again from 0, the shadow from the
measured SOC; ``day_started`` is that date's local midnight (or the moment counting started,
when the service started later that day or the clock jumped to it), the ``last_reset`` Home
Assistant needs for the one figure that may go down within a day (``DailyBenefit.avoided_kwh``).

Pure apart from the local time zone (``local_day``, injectable): no I/O, no clock of its own.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Optional

from venus_prio.config import Config
from venus_prio.model import Snapshot
from venus_prio.recorder import LocalDayFn
from venus_prio.recording import LocalDay
from venus_prio.sim.shadow import MAX_HOLD_S, StockShadow
from venus_prio.status import DailyBenefit

_WS_PER_KWH = 3_600_000.0


def iso_local(epoch: float) -> str:
    """Return ``epoch`` as ISO 8601 local time with its UTC offset, to the second."""
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def _day_after(day: str) -> str:
    """Return the date after ``day`` (``YYYY-MM-DD``)."""
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


class DayLedger:
    """Today's measured battery throughput beside the stock-ESS shadow's (module docstring)."""

    def __init__(self, config: Config, *, local_day: LocalDayFn) -> None:
        self._config = config
        self._local_day = local_day
        self._date: Optional[str] = None
        self._day_started = ""
        self._throughput_ws = 0.0
        self._held_w: Optional[float] = None  # |battery power| at _held_at
        self._held_at = 0.0
        self._shadow: Optional[StockShadow] = None

    def observe(
        self, now: float, snapshot: Snapshot, *, current: bool, floor: Optional[float]
    ) -> None:
        """Account for the time since the last call and take this snapshot's values.

        ``now`` is the wall clock (epoch seconds); ``floor`` the SOC floor the controller uses
        (None: not known yet, the shadow cannot start).
        """
        self._integrate(now)
        if not current:
            self._held_w = None
            return
        day = self._local_day(now)
        if day.date != self._date:
            self._start_day(now, day, snapshot, floor)
        battery_w = snapshot.battery_power_w
        self._held_w = None if battery_w is None else abs(battery_w)
        self._held_at = now
        self._feed_shadow(now, snapshot, floor)

    @property
    def benefit(self) -> Optional[DailyBenefit]:
        """Return today's figures; None before the first current snapshot."""
        if self._date is None:
            return None
        shadow = self._shadow
        return DailyBenefit(
            day_started=self._day_started,
            throughput_kwh=self._throughput_ws / _WS_PER_KWH,
            stock_throughput_kwh=None if shadow is None else shadow.throughput_kwh,
            stock_micro_cycles=None if shadow is None else shadow.micro_cycles,
        )

    def _integrate(self, now: float) -> None:
        held = self._held_w
        if held is None:
            return
        elapsed = min(now - self._held_at, MAX_HOLD_S)
        if elapsed > 0:  # a clock that went back adds nothing
            self._throughput_ws += held * elapsed
        self._held_at = now

    def _start_day(
        self, now: float, day: LocalDay, snapshot: Snapshot, floor: Optional[float]
    ) -> None:
        # A service started during the day counts from its start, not from a midnight it missed;
        # so does a day reached by a clock that jumped (NTP setting a GX's clock after boot,
        # from 1970 or the last shutdown; or back): only a day that follows the one counted
        # so far started at its midnight.
        follows = self._date is not None and _day_after(self._date) == day.date
        self._date = day.date
        self._day_started = iso_local(now - day.time_s if follows else now)
        self._throughput_ws = 0.0
        self._held_w = None
        self._shadow = None
        self._start_shadow(now, snapshot, floor)

    def _start_shadow(self, now: float, snapshot: Snapshot, floor: Optional[float]) -> None:
        if snapshot.soc is None or floor is None:
            return
        self._shadow = StockShadow(
            self._config,
            battery_kwh=snapshot.battery_kwh or self._config.sim.battery_kwh,
            reserve_soc=floor + self._config.control.prio_band,
            start_soc=snapshot.soc,
            now=now,
        )

    def _feed_shadow(self, now: float, snapshot: Snapshot, floor: Optional[float]) -> None:
        if self._shadow is None:
            # SOC or floor unknown when the day started: start as soon as both are.
            self._start_shadow(now, snapshot, floor)
            if self._shadow is None:
                return
        if snapshot.ac_load_w is None:
            self._shadow.advance(now)  # loads unknown: hold the last ones, then count nothing
            return
        self._shadow.update(
            now,
            pv_dc_w=snapshot.pv_dc_w or 0.0,  # control.md 2: DC PV invalid or absent is 0 W
            load_w=snapshot.ac_load_w,
            pv_ac_w=snapshot.pv_ac_w or 0.0,
        )
