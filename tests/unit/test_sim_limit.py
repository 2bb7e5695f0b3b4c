"""The physical limit of a day (``sim.limit``): hand-computed small profiles."""

from __future__ import annotations

from typing import Sequence

import pytest

from venus_prio.config import SimConfig
from venus_prio.sim.limit import day_limit, physical_limit, surplus_kwh
from venus_prio.sim.plant import PlantParams
from venus_prio.sim.scenarios import Profile

# 10 kWh, 3 kW inverter, eta_c = eta_d = 0.96, inverter 0.93, idle 20 W (config.yaml's values).
PARAMS = PlantParams.from_sim_config(SimConfig(), min_soc=15.0)
HOUR = 3600.0


def hours(pv_dc: Sequence[float], load: Sequence[float], pv_ac: Sequence[float] = ()) -> Profile:
    """Return a profile of one-hour rows (the last holds for an hour too: give two or more)."""
    n = len(pv_dc)
    return Profile(
        name="hand",
        time_s=tuple(i * HOUR for i in range(n)),
        pv_dc_w=tuple(pv_dc),
        load_w=tuple(load),
        pv_ac_w=tuple(pv_ac) if pv_ac else (0.0,) * n,
    )


def test_no_surplus_no_limit() -> None:
    # 1 kW of PV under 2 kW of loads: the inverter passes all of it on.
    limit = physical_limit(hours([1000.0, 500.0], [2000.0, 2000.0]), PARAMS, start_soc=50.0)
    assert (limit.surplus_kwh, limit.charge_kwh, limit.discharge_kwh) == (0.0, 0.0, 0.0)
    assert limit.throughput_kwh == 0.0


def test_all_surplus_goes_in_and_out_again() -> None:
    # No loads: 2 h of 1 kW DC PV all go into the battery (room: 5 kWh), and ending at the
    # start SOC it must come out again: 2 x 0.96 stored, x 0.96 at the terminals.
    limit = physical_limit(hours([1000.0, 1000.0], [0.0, 0.0]), PARAMS, start_soc=50.0)
    assert limit.surplus_kwh == pytest.approx(2.0)
    assert limit.charge_kwh == pytest.approx(2.0)
    assert limit.discharge_kwh == pytest.approx(2.0 * 0.96 * 0.96)
    assert limit.throughput_kwh == pytest.approx(3.8432)


def test_surplus_is_pv_beyond_the_inverters_draw_for_the_loads() -> None:
    # 300 W of loads take 300 / 0.93 W DC plus the 20 W idle draw; the rest is surplus.
    surplus_w = 1000.0 - (300.0 / 0.93 + 20.0)
    assert surplus_kwh(hours([1000.0] * 2, [300.0] * 2), PARAMS) == pytest.approx(surplus_w / 500)
    # Loads beyond the inverter's 3 kW: it passes at most 3 kW on (nominal efficiency).
    surplus_w = 4000.0 - (3000.0 / 0.93 + 20.0)
    assert surplus_kwh(hours([4000.0] * 2, [5000.0] * 2), PARAMS) == pytest.approx(surplus_w / 500)


def test_ac_pv_above_the_loads_charges_through_the_charger() -> None:
    # 1.5 kW AC PV, 0.5 kW loads: the charger takes 1 kW AC at 0.93, with all DC PV.
    profile = hours([200.0] * 2, [500.0] * 2, [1500.0] * 2)
    assert surplus_kwh(profile, PARAMS) == pytest.approx(2 * (0.2 + 0.93))


@pytest.mark.parametrize(
    ("start_soc", "charge", "discharge"),
    [
        (100.0, 0.0, 0.0),  # full: every watt of surplus is fed in or curtailed
        (99.0, 0.1 / 0.96, 0.1 * 0.96),  # 0.1 kWh of room, then full
    ],
)
def test_a_full_battery_takes_only_its_room(
    start_soc: float, charge: float, discharge: float
) -> None:
    limit = physical_limit(hours([1000.0, 1000.0], [0.0, 0.0]), PARAMS, start_soc=start_soc)
    assert limit.surplus_kwh == pytest.approx(2.0)
    assert limit.charge_kwh == pytest.approx(charge)
    assert limit.discharge_kwh == pytest.approx(discharge)


@pytest.mark.parametrize(
    ("end_soc", "charge", "discharge"),
    [
        (60.0, 2.0, 0.96 * (2.0 * 0.96 - 1.0)),  # 1 kWh of the 1.92 stored stays in
        (80.0, 3.0 / 0.96, 0.0),  # 3 kWh more stored than the surplus brings: charge it
        (40.0, 2.0, 0.96 * (2.0 * 0.96 + 1.0)),  # ending emptier: all of it and 1 kWh more out
    ],
)
def test_the_end_soc_corrects_what_must_come_out(
    end_soc: float, charge: float, discharge: float
) -> None:
    profile = hours([1000.0, 1000.0], [0.0, 0.0])
    limit = physical_limit(profile, PARAMS, start_soc=50.0, end_soc=end_soc)
    assert limit.charge_kwh == pytest.approx(charge)
    assert limit.discharge_kwh == pytest.approx(discharge)
    # day_limit gives the same per policy, and the day's own limit ends at the start SOC.
    both = day_limit(profile, PARAMS, start_soc=50.0, end_socs={"p": end_soc})
    assert both.policies["p"] == limit
    assert both.day == physical_limit(profile, PARAMS, start_soc=50.0)
