"""The Venus D-Bus items venus-prio reads and writes, listed once for every transport.

Each item names its D-Bus service type (``system`` -> ``com.victronenergy.system``, topic
``N/<id>/system/0/...``), its path, the ``Snapshot`` field it fills and how its value is read.
See venus-ess.md for what each one means.
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
    field: str  # the Snapshot attribute it fills
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
)
