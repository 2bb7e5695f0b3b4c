"""Value types that cross module boundaries: what the GX reports, what the controller decides.

Everything here is a frozen dataclass or an enum; nothing does I/O. Transports build a
``Snapshot`` from whatever they read, the controller turns it into a ``Decision``, the write
policy turns the decision into a ``Write`` (or nothing).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

# Values on the GX closer than this are the same value (localsettings converts int <-> float).
SAME_W = 0.5
# The hub4 override's "no override": hub4control falls back to the setting and stock ESS.
NO_OVERRIDE_W = -1.0


def same_value(a: Optional[float], b: Optional[float]) -> bool:
    """Return True when both values are known and equal as far as the GX is concerned."""
    return a is not None and b is not None and abs(a - b) <= SAME_W


class Phase(enum.Enum):
    """Hysteresis state between the priority band and the recovery band (control.md section 3)."""

    CHARGING = "charging"
    DISCHARGING = "discharging"


class Band(enum.Enum):
    """Where the SOC sits relative to the floor: ``d = soc - floor``."""

    BELOW_FLOOR = "below_floor"  # d < 0
    PRIORITY = "priority"  # 0 <= d <= prio_band
    RECOVERY = "recovery"  # prio_band < d < recover_band
    NORMAL = "normal"  # d >= recover_band
    UNKNOWN = "unknown"  # no SOC or no floor


class Reason(enum.Enum):
    """Why the controller chose its target. Stand-aside reasons all start with STAND_ASIDE_."""

    STAND_ASIDE_DISABLED = "STAND_ASIDE_DISABLED"
    STAND_ASIDE_DISCONNECTED = "STAND_ASIDE_DISCONNECTED"
    STAND_ASIDE_STALE = "STAND_ASIDE_STALE"
    STAND_ASIDE_MISSING_INPUT = "STAND_ASIDE_MISSING_INPUT"
    STAND_ASIDE_GRID_LOST = "STAND_ASIDE_GRID_LOST"
    STAND_ASIDE_GENERATOR = "STAND_ASIDE_GENERATOR"
    STAND_ASIDE_EXTERNAL_CONTROL = "STAND_ASIDE_EXTERNAL_CONTROL"
    STAND_ASIDE_KEEP_CHARGED = "STAND_ASIDE_KEEP_CHARGED"
    STAND_ASIDE_DYNAMIC_ESS = "STAND_ASIDE_DYNAMIC_ESS"
    # Somebody else (Dynamic ESS, scheduled charging, load shedding, another tool) holds the hub4
    # override: never overwrite it (control.md section 8).
    STAND_ASIDE_OVERRIDE_IN_USE = "STAND_ASIDE_OVERRIDE_IN_USE"
    BELOW_FLOOR = "BELOW_FLOOR"
    PV_PRIORITY = "PV_PRIORITY"
    PV_TOO_LOW = "PV_TOO_LOW"
    RECOVERING = "RECOVERING"
    LIMITED_DISCHARGE = "LIMITED_DISCHARGE"
    RAMPING = "RAMPING"
    NORMAL = "NORMAL"

    @property
    def stands_aside(self) -> bool:
        """Return True for reasons that hand the system back to stock behaviour."""
        return self.value.startswith("STAND_ASIDE_")

    @property
    def prioritises_ac_loads(self) -> bool:
        """Return True while the inverter is capped to what the PV supplies."""
        return self in _PRIORITY_REASONS


_PRIORITY_REASONS = frozenset(
    {Reason.BELOW_FLOOR, Reason.PV_PRIORITY, Reason.PV_TOO_LOW, Reason.RECOVERING}
)


class TargetClass(enum.Enum):
    """Coarse class of a MaxDischargePower value; moving between classes always warrants a write."""

    HOLD = "hold"  # no discharge (hold_w)
    POSITIVE = "positive"  # a cap the controller computed
    BASELINE = "baseline"  # the user's own value: stock behaviour


class Actuator(enum.Enum):
    """Where venus-prio's discharge cap goes (control.md section 8)."""

    OVERRIDE = "override"  # com.victronenergy.hub4 /Overrides/MaxDischargePower: RAM, expires
    SETTING = "setting"  # /Settings/CGwacs/MaxDischargePower: flash, never expires
    NONE = "none"  # neither yet (verifying, or nothing to steer with)


@dataclass(frozen=True)
class Snapshot:
    """What the GX reports at one moment, already parsed and validated by a transport.

    ``None`` means unknown: the source marked the value invalid (null) or does not publish the
    path at all. ``soc_name`` and ``floor_names`` are how the source names those inputs, so a
    stand-aside text can say what is missing without the controller knowing any path table.
    """

    soc: Optional[float] = None
    active_soc_limit: Optional[float] = None
    min_soc_setting: Optional[float] = None
    pv_dc_w: Optional[float] = None
    dc_system_w: Optional[float] = None
    battery_power_w: Optional[float] = None
    ac_input_source: Optional[int] = None
    hub4_mode: Optional[int] = None
    battery_life_state: Optional[int] = None
    dynamic_ess_mode: Optional[int] = None
    max_discharge_w: Optional[float] = None
    max_discharge_min: Optional[float] = None
    max_discharge_max: Optional[float] = None
    # The hub4 override: None when null (no override) or absent; -1 also means no override.
    override_w: Optional[float] = None
    # Reported only, for the day recording and the stock-ESS shadow (issue 15); the controller
    # never reads them. AC loads (clipped at 0), grid (+ import) and AC-coupled PV: each the sum
    # of the phases (/Ac/Consumption, /Ac/Grid, /Ac/PvOnOutput + /Ac/PvOnGrid /L1..L3/Power;
    # ``paths.PHASE_SUMS``), None when no phase is known.
    ac_load_w: Optional[float] = None
    grid_w: Optional[float] = None
    pv_ac_w: Optional[float] = None
    # The battery's capacity in kWh. No transport fills it: com.victronenergy.system publishes
    # no capacity, only the battery's own per-instance service does (/InstalledCapacity, in Ah,
    # and not on every BMS), so the capacity comes from the config (``sim.battery_kwh``).
    battery_kwh: Optional[float] = None
    # Whether the GX publishes the override path at all: None = not known yet (before the full
    # publish completed or the first D-Bus read), False = absent (older firmware, no ESS).
    override_present: Optional[bool] = None
    # Liveness, not message age: when the source last proved it is alive (heartbeat, read-back,
    # D-Bus GetValue), on the caller's monotonic clock. None = never.
    alive_at: Optional[float] = None
    connected: bool = True
    # The transport's names of the SOC and of the floor inputs (its paths), for the texts.
    soc_name: str = "the battery SOC"
    floor_names: str = "the SOC limits"


@dataclass(frozen=True)
class Decision:
    """One controller verdict: the target for MaxDischargePower and why."""

    target_w: float
    target_class: TargetClass
    reason: Reason
    phase: Optional[Phase]
    band: Band
    d: Optional[float]
    soc: Optional[float]
    floor: Optional[float]
    pv_f: float
    pv_share_w: float
    text: str


@dataclass(frozen=True)
class Write:
    """A value the write policy decided to send to the GX."""

    value_w: float
    forced: bool  # a stand-aside or restore write: bypasses rate limit and budget
    why: str
