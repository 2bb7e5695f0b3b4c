"""The physical limit of a day: the battery throughput that no policy can avoid.

With grid setpoint 0, ESS stores DC PV before it exports any: whatever DC PV the inverter cannot
pass to the AC loads goes into the battery until it is full, and what went in comes out again
later unless the day ends fuller. No discharge cap changes that, so it is the floor under every
policy's throughput. How it is computed, with the plant's own efficiencies and capacity
(``PlantParams``, ``Plant.inverter_dc_w``), over the profile's rows (each holds for its
duration, as the simulator steps through them):

1. Surplus, per row: the AC loads the inverter could serve are ``net = load - AC PV`` up to
   ``inverter_w``; serving them takes ``inverter_dc_w(net) + idle_w`` from the DC bus (the idle
   draw is paid from DC while inverting). DC PV above that is the surplus. AC PV above the loads
   is taken up by the charger (up to ``inverter_w``, at the inverter's nominal efficiency) and
   counts as surplus too.
2. Forced charge ``C_f``: the surplus the battery stores, step by step from ``start_soc``, at
   ``charge_efficiency``, while there is room; once it is full the rest is fed in or curtailed.
   (Without discharging there is least room to fill, and discharging earlier to make room would
   only add throughput.) So ``C_f = min(total surplus, room at the start / charge_efficiency)``.
3. The day's end: the stored energy must change by ``dE = (end_soc - start_soc) % x capacity``.
   The least charge that does both is ``C = max(C_f, dE / charge_efficiency)``, and what must
   come out is ``D = discharge_efficiency x (C x charge_efficiency - dE)``.
4. The limit is ``C + D`` (charge and discharge energy at the battery terminals, as a policy's
   throughput is counted). ``end_soc`` defaults to ``start_soc``: a day that ends where it
   began. For one policy, pass its own end SOC: then no run of the simulator's plant can cycle
   less (its battery obeys the same balance, ``stored = charged x eta_c - discharged / eta_d``,
   and takes all of the surplus while it has room).

Not counted: anything a policy's own choices add (discharging into the loads while PV is short,
ESS #1 sending all DC PV to the battery, grid recharge). The one case the bound can miss is AC
PV above the loads during grid recharge (SOC 5 points below Venus's MinSOC), when the plant's
charger draws a flat ``GRID_RECHARGE_W`` instead of the surplus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional

from venus_prio.sim.plant import Plant, PlantParams
from venus_prio.sim.scenarios import Profile

_WS_PER_KWH = 3_600_000.0


@dataclass(frozen=True)
class PhysicalLimit:
    """A day's unavoidable battery cycling (kWh at the battery terminals; see the module)."""

    surplus_kwh: float  # DC PV (and AC PV) the loads could not take, before the capacity clip
    charge_kwh: float  # what the battery must take in
    discharge_kwh: float  # what must come out again to end the day at end_soc
    start_soc: float
    end_soc: float

    @property
    def throughput_kwh(self) -> float:
        """Return charge + discharge: the least throughput of any policy on this day."""
        return self.charge_kwh + self.discharge_kwh


def surplus_kwh(profile: Profile, params: PlantParams) -> float:
    """Return the energy (kWh, DC) the AC loads cannot take: steps 1 of the module docstring."""
    plant = Plant(params, start_soc=100.0)  # only its inverter curve is used
    times = profile.time_s
    ends = (*times[1:], profile.end_s)
    total_ws = 0.0
    for start, end, pv_dc, load, pv_ac in zip(
        times, ends, profile.pv_dc_w, profile.load_w, profile.pv_ac_w
    ):
        net = load - pv_ac
        if net > 0:
            to_loads = plant.inverter_dc_w(min(net, params.inverter_w)) + params.idle_w
            surplus_w = max(pv_dc - to_loads, 0.0)
        else:
            surplus_w = pv_dc + min(-net, params.inverter_w) * params.inverter_efficiency
        total_ws += surplus_w * (end - start)
    return total_ws / _WS_PER_KWH


def physical_limit(
    profile: Profile,
    params: PlantParams,
    *,
    start_soc: float,
    end_soc: Optional[float] = None,
) -> PhysicalLimit:
    """Return the day's physical limit from ``start_soc`` to ``end_soc`` (default: the same)."""
    return _limit(
        surplus_kwh(profile, params),
        params,
        start_soc=start_soc,
        end_soc=start_soc if end_soc is None else end_soc,
    )


def _limit(
    surplus: float, params: PlantParams, *, start_soc: float, end_soc: float
) -> PhysicalLimit:
    """Return the limit for a day with this surplus: steps 2 to 4 of the module docstring."""
    capacity_kwh = params.battery_kwh
    eta_c, eta_d = params.charge_efficiency, params.discharge_efficiency
    room_kwh = max(100.0 - start_soc, 0.0) / 100.0 * capacity_kwh
    forced = min(surplus, room_kwh / eta_c)
    stored_change = (end_soc - start_soc) / 100.0 * capacity_kwh
    charge = max(forced, stored_change / eta_c)
    discharge = eta_d * max(charge * eta_c - stored_change, 0.0)
    return PhysicalLimit(
        surplus_kwh=surplus,
        charge_kwh=charge,
        discharge_kwh=discharge,
        start_soc=start_soc,
        end_soc=end_soc,
    )


@dataclass(frozen=True)
class DayLimit:
    """A day's limit ending at its start SOC, and each policy's at that policy's end SOC."""

    day: PhysicalLimit
    policies: Dict[str, PhysicalLimit]


def day_limit(
    profile: Profile, params: PlantParams, *, start_soc: float, end_socs: Mapping[str, float]
) -> DayLimit:
    """Return the day's limit and the limit for each end SOC of ``end_socs`` (by policy)."""
    surplus = surplus_kwh(profile, params)  # the day's alone: policies differ in the end SOC
    return DayLimit(
        day=_limit(surplus, params, start_soc=start_soc, end_soc=start_soc),
        policies={
            name: _limit(surplus, params, start_soc=start_soc, end_soc=end_soc)
            for name, end_soc in end_socs.items()
        },
    )
