"""The Venus D-Bus items venus-prio reads and writes, listed once for every transport.

Each item names its D-Bus service type (``system`` -> ``com.victronenergy.system``, topic
``N/<id>/system/0/...``), its path, the ``Snapshot`` field it fills and how its value is read.
Quantities systemcalc publishes per phase only are a ``PhaseSum`` of their phase items; the
source adds them up. See venus-ess.md for what each one means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

SYSTEM = "system"
SETTINGS = "settings"
HUB4 = "hub4"


@dataclass(frozen=True)
class VenusItem:
    """One D-Bus item: ``com.victronenergy.<service>`` at ``path``."""

    service: str
    path: str
    field: str  # the Snapshot attribute it fills (a phase: its key in the source's store)
    integer: bool = False  # an enum-like value (codes), compared as int
    # Whether a change re-evaluates the controller at once. Values it only reports (or reads
    # for the optional trim) wait for the next tick: the battery power changes every second.
    wakes: bool = True

    @property
    def bus_name(self) -> str:
        return f"com.victronenergy.{self.service}"

    def topic_suffix(self) -> str:
        """Return ``<service>/0/<path without leading slash>`` as dbus-flashmq names it."""
        return f"{self.service}/0{self.path}"


SOC = VenusItem(SYSTEM, "/Dc/Battery/Soc", "soc")
ACTIVE_SOC_LIMIT = VenusItem(SYSTEM, "/Control/ActiveSocLimit", "active_soc_limit")
PV_DC = VenusItem(SYSTEM, "/Dc/Pv/Power", "pv_dc_w")
DC_SYSTEM = VenusItem(SYSTEM, "/Dc/System/Power", "dc_system_w")
BATTERY_POWER = VenusItem(SYSTEM, "/Dc/Battery/Power", "battery_power_w", wakes=False)
AC_INPUT_SOURCE = VenusItem(SYSTEM, "/Ac/ActiveIn/Source", "ac_input_source", integer=True)
SERIAL = VenusItem(SYSTEM, "/Serial", "")

MIN_SOC_SETTING = VenusItem(
    SETTINGS, "/Settings/CGwacs/BatteryLife/MinimumSocLimit", "min_soc_setting"
)
BATTERY_LIFE_STATE = VenusItem(
    SETTINGS, "/Settings/CGwacs/BatteryLife/State", "battery_life_state", integer=True
)
HUB4_MODE = VenusItem(SETTINGS, "/Settings/CGwacs/Hub4Mode", "hub4_mode", integer=True)
DYNAMIC_ESS_MODE = VenusItem(
    SETTINGS, "/Settings/DynamicEss/Mode", "dynamic_ess_mode", integer=True
)
MAX_DISCHARGE_POWER = VenusItem(SETTINGS, "/Settings/CGwacs/MaxDischargePower", "max_discharge_w")
# The volatile cap in hub4control's RAM (control.md section 8): -1/null = no override.
OVERRIDE_MAX_DISCHARGE = VenusItem(HUB4, "/Overrides/MaxDischargePower", "override_w")


@dataclass(frozen=True)
class PhaseSum:
    """A Snapshot field that is the sum of per-phase items (systemcalc has no total path).

    Summed like Victron's own code (dbus-systemcalc-py's dynamicess delegate): a phase that is
    invalid or absent counts as 0, but when every phase is, the sum is unknown (None), never an
    invented 0. ``non_negative`` clips the sum at 0 as Victron does for the consumption.
    """

    field: str  # the Snapshot attribute it fills
    items: Tuple[VenusItem, ...]
    non_negative: bool = False


def _phases(quantity: str, name: str) -> Tuple[VenusItem, ...]:
    """Return ``/Ac/<quantity>/L1..L3/Power`` of system, reported only (they never wake)."""
    return tuple(
        VenusItem(SYSTEM, f"/Ac/{quantity}/L{n}/Power", f"{name}_l{n}_w", wakes=False)
        for n in (1, 2, 3)
    )


# AC loads, grid (+ import) and AC-coupled PV (on the output and on the input), for the day
# recording and the stock-ESS shadow. They change every second or so on a busy GX: reporting
# them must cost no evaluation (tests/bench/bench_mqtt.py measures the CPU per message).
AC_LOAD = PhaseSum("ac_load_w", _phases("Consumption", "ac_load"), non_negative=True)
GRID = PhaseSum("grid_w", _phases("Grid", "grid"))
PV_AC = PhaseSum(
    "pv_ac_w", _phases("PvOnOutput", "pv_on_output") + _phases("PvOnGrid", "pv_on_grid")
)
PHASE_SUMS: Tuple[PhaseSum, ...] = (AC_LOAD, GRID, PV_AC)

# Everything a Snapshot is built from, in one list (the transports subscribe to exactly these).
INPUTS: Tuple[VenusItem, ...] = (
    SOC,
    ACTIVE_SOC_LIMIT,
    PV_DC,
    DC_SYSTEM,
    BATTERY_POWER,
    AC_INPUT_SOURCE,
    MIN_SOC_SETTING,
    BATTERY_LIFE_STATE,
    HUB4_MODE,
    DYNAMIC_ESS_MODE,
    MAX_DISCHARGE_POWER,
    *(item for phase_sum in PHASE_SUMS for item in phase_sum.items),
)
