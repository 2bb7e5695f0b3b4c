"""Metrics of one simulated day per policy (control.md section 7, "Metrics").

Definitions (energies in kWh, summed over steps of power x dt):

- ``battery_charged_kwh`` / ``battery_discharged_kwh``: DC energy into / out of the battery
  terminals. ``throughput_kwh`` is their sum; ``equivalent_full_cycles`` = throughput /
  (2 x capacity).
- ``micro_cycles``: SOC swings found by a zigzag filter with a threshold of ``MICRO_CYCLE_SOC``
  (0.5 SOC points). The filter follows the SOC; a turning point is confirmed once the SOC has
  moved at least the threshold back from the last extreme. A micro-cycle is a confirmed *peak*:
  a rise of >= 0.5 points followed by a fall of >= 0.5 points. Smaller wiggles never count, and
  a long rise with one long fall (a sunny day) counts once. ``soc_reversals`` counts every
  confirmed turning point (peaks and troughs).
- ``grid_import_kwh`` / ``grid_export_kwh``: positive / negative grid power.
- ``conversion_losses_kwh``: inverter/charger losses, idle draw and battery losses.
- ``flash_writes_total`` / ``flash_writes_max_per_hour``: writes of the persisted setting
  (each rewrites ``settings.xml`` on the GX's flash), per clock hour of the virtual day.
  ``override_writes_total`` / ``override_writes_max_per_hour``: writes of the volatile hub4
  override (RAM only), counted apart because they wear nothing.
- ``reason_seconds``: seconds spent with each decision reason.
- ``grid_import_adjusted_kwh``: grid import minus the energy the battery holds above the
  reference end SOC (stock's, in a comparison), plus what it lacks below it, valued as it would
  reach the AC loads: x discharge efficiency x inverter efficiency. So ending the day fuller or
  emptier than stock neither helps nor hurts a policy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Optional

MICRO_CYCLE_SOC = 0.5
HOUR_S = 3600.0
_WS_PER_KWH = 3_600_000.0


class MicroCycleCounter:
    """Count SOC micro-cycles online with a zigzag filter (see the module docstring)."""

    def __init__(self, threshold: float = MICRO_CYCLE_SOC) -> None:
        self.threshold = threshold
        self.cycles = 0
        self.reversals = 0
        self._direction = 0  # +1 rising, -1 falling, 0 not yet known
        self._extreme = math.nan  # highest (rising) or lowest (falling) SOC since the last turn
        self._low = math.inf
        self._high = -math.inf

    def add(self, soc: float) -> None:
        """Feed the next SOC value."""
        h = self.threshold
        direction = self._direction
        if direction > 0:
            if soc > self._extreme:
                self._extreme = soc
            elif self._extreme - soc >= h:
                self.cycles += 1  # a confirmed peak: rise then fall
                self.reversals += 1
                self._direction = -1
                self._extreme = soc
        elif direction < 0:
            if soc < self._extreme:
                self._extreme = soc
            elif soc - self._extreme >= h:
                self.reversals += 1
                self._direction = 1
                self._extreme = soc
        else:
            self._low = min(self._low, soc)
            self._high = max(self._high, soc)
            if soc - self._low >= h:
                self._direction = 1
                self._extreme = soc
            elif self._high - soc >= h:
                self._direction = -1
                self._extreme = soc


def count_micro_cycles(series: Iterable[float], threshold: float = MICRO_CYCLE_SOC) -> int:
    """Return the number of rises of >= threshold followed by falls of >= threshold."""
    counter = MicroCycleCounter(threshold)
    for soc in series:
        counter.add(soc)
    return counter.cycles


@dataclass(frozen=True)
class Metrics:
    """The day's numbers for one policy."""

    policy: str
    battery_charged_kwh: float
    battery_discharged_kwh: float
    throughput_kwh: float
    equivalent_full_cycles: float
    micro_cycles: int
    soc_reversals: int
    grid_import_kwh: float
    grid_export_kwh: float
    grid_import_adjusted_kwh: float
    conversion_losses_kwh: float
    curtailed_kwh: float
    flash_writes_total: int
    flash_writes_max_per_hour: int
    override_writes_total: int
    override_writes_max_per_hour: int
    min_soc: float
    max_soc: float
    end_soc: float
    reason_seconds: Dict[str, float]

    def to_dict(self) -> Dict[str, Any]:
        """Return the metrics as a JSON-ready dict."""
        out = dataclasses.asdict(self)
        out["reason_seconds"] = dict(sorted(self.reason_seconds.items()))
        return out


def adjusted_import_kwh(
    *,
    grid_import_kwh: float,
    end_soc: float,
    reference_end_soc: float,
    battery_kwh: float,
    discharge_efficiency: float,
    inverter_efficiency: float,
) -> float:
    """Return grid import corrected for ending the day above or below the reference SOC."""
    held_kwh = (end_soc - reference_end_soc) / 100.0 * battery_kwh
    return grid_import_kwh - held_kwh * discharge_efficiency * inverter_efficiency


class WriteCounter:
    """Count writes in total and per clock hour of the virtual day."""

    def __init__(self) -> None:
        self.total = 0
        self.per_hour: Dict[int, int] = {}

    def add(self, t: float) -> None:
        """Count one write at ``t``."""
        self.total += 1
        hour = int(t // HOUR_S)
        self.per_hour[hour] = self.per_hour.get(hour, 0) + 1

    @property
    def max_per_hour(self) -> int:
        """Return the most writes in any clock hour."""
        return max(self.per_hour.values(), default=0)


class MetricsAccumulator:
    """Sum one run's steps into a ``Metrics`` (mutable, owned by the runner)."""

    def __init__(self, *, policy: str, battery_kwh: float, start_soc: float) -> None:
        self.policy = policy
        self.battery_kwh = battery_kwh
        self.charged_ws = 0.0
        self.discharged_ws = 0.0
        self.import_ws = 0.0
        self.export_ws = 0.0
        self.loss_ws = 0.0
        self.curtailed_ws = 0.0
        self.flash_writes = WriteCounter()
        self.override_writes = WriteCounter()
        self.min_soc = start_soc
        self.max_soc = start_soc
        self.end_soc = start_soc
        self.reason_seconds: Dict[str, float] = {}
        self.cycles = MicroCycleCounter()
        self.cycles.add(start_soc)

    def add(
        self,
        *,
        t: float,
        dt: float,
        soc: float,
        battery_w: float,
        grid_w: float,
        loss_w: float,
        curtailed_w: float,
        flash_write: bool,
        reason: str,
        override_write: bool = False,
    ) -> None:
        """Account for one step that started at ``t``."""
        if battery_w >= 0:
            self.charged_ws += battery_w * dt
        else:
            self.discharged_ws -= battery_w * dt
        if grid_w >= 0:
            self.import_ws += grid_w * dt
        else:
            self.export_ws -= grid_w * dt
        self.loss_ws += loss_w * dt
        self.curtailed_ws += curtailed_w * dt
        if flash_write:
            self.flash_writes.add(t)
        if override_write:
            self.override_writes.add(t)
        if soc < self.min_soc:
            self.min_soc = soc
        elif soc > self.max_soc:
            self.max_soc = soc
        self.end_soc = soc
        self.reason_seconds[reason] = self.reason_seconds.get(reason, 0.0) + dt
        self.cycles.add(soc)

    def result(
        self,
        *,
        reference_end_soc: Optional[float] = None,
        discharge_efficiency: float = 1.0,
        inverter_efficiency: float = 1.0,
    ) -> Metrics:
        """Return the frozen metrics; the adjusted import is relative to ``reference_end_soc``."""
        charged = self.charged_ws / _WS_PER_KWH
        discharged = self.discharged_ws / _WS_PER_KWH
        grid_import = self.import_ws / _WS_PER_KWH
        reference = self.end_soc if reference_end_soc is None else reference_end_soc
        return Metrics(
            policy=self.policy,
            battery_charged_kwh=charged,
            battery_discharged_kwh=discharged,
            throughput_kwh=charged + discharged,
            equivalent_full_cycles=(charged + discharged) / (2.0 * self.battery_kwh),
            micro_cycles=self.cycles.cycles,
            soc_reversals=self.cycles.reversals,
            grid_import_kwh=grid_import,
            grid_export_kwh=self.export_ws / _WS_PER_KWH,
            grid_import_adjusted_kwh=adjusted_import_kwh(
                grid_import_kwh=grid_import,
                end_soc=self.end_soc,
                reference_end_soc=reference,
                battery_kwh=self.battery_kwh,
                discharge_efficiency=discharge_efficiency,
                inverter_efficiency=inverter_efficiency,
            ),
            conversion_losses_kwh=self.loss_ws / _WS_PER_KWH,
            curtailed_kwh=self.curtailed_ws / _WS_PER_KWH,
            flash_writes_total=self.flash_writes.total,
            flash_writes_max_per_hour=self.flash_writes.max_per_hour,
            override_writes_total=self.override_writes.total,
            override_writes_max_per_hour=self.override_writes.max_per_hour,
            min_soc=self.min_soc,
            max_soc=self.max_soc,
            end_soc=self.end_soc,
            reason_seconds=dict(self.reason_seconds),
        )
