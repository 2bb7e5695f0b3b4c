"""What the service shows the outside (Home Assistant, the probe): read-only value types.

Kept apart from ``service.py`` so that the Home Assistant publisher can read the status without
importing the service that runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from venus_prio.model import Actuator, Decision, Reason
from venus_prio.writes import WriteCounters


@dataclass(frozen=True)
class WriteRecord:
    """A write that went out (``sent``) or would have in dry-run."""

    value_w: float
    why: str
    reason: Reason
    forced: bool
    sent: bool  # False: dry-run, counted as "would write"
    at: float  # on the service clock
    actuator: Actuator = Actuator.SETTING  # where it went: the setting or the hub4 override


@dataclass(frozen=True)
class DailyBenefit:
    """Today's battery cycling: measured, and as stock ESS would have done it on the same day.

    ``day_started`` is when today's figures started counting, as ISO 8601 local time with its UTC
    offset: local midnight, or the service's start when it started later today. Home Assistant
    reads it as the ``last_reset`` of the one figure that may go down within a day.
    """

    day_started: str
    throughput_kwh: float  # measured charge + discharge energy through the battery
    stock_throughput_kwh: Optional[float]  # the stock-ESS shadow's; None while it cannot run
    stock_micro_cycles: Optional[int]

    @property
    def avoided_kwh(self) -> Optional[float]:
        """Return the cycling avoided: the stock estimate less the measured throughput."""
        if self.stock_throughput_kwh is None:
            return None
        return self.stock_throughput_kwh - self.throughput_kwh


@dataclass(frozen=True)
class ServiceStatus:
    """What the service shows the outside (Home Assistant): read-only."""

    decision: Optional[Decision]
    last_write: Optional[WriteRecord]
    counters: WriteCounters
    baseline_w: Optional[float]
    mode: str  # "auto" | "dry-run" | "off"
    enabled: bool  # steering allowed (config and mode)
    dry_run: bool  # nothing is sent
    connected: bool
    written_w: Optional[float] = None  # the last value venus-prio sent to the setting
    battery_power_w: Optional[float] = None
    data_age_s: Optional[float] = None  # since the GX last proved it is alive
    transport: str = ""
    # Where the cap goes (control.md section 8): "override" | "setting" | "none", and why when it
    # is not the override (fell back, absent, ...); "" while nothing needs saying.
    actuator: str = "none"
    actuator_why: str = ""
    # ``counters`` counts flash writes (the setting); the override's RAM writes count apart.
    override_counters: Optional[WriteCounters] = None
    override_w: Optional[float] = None  # the value venus-prio holds on the override; None: none
    benefit: Optional[DailyBenefit] = None  # None: not measured (no day under way yet)
