"""The simulated plant: energy balance, ESS #1 blocking, grid recharge, the cap, full battery."""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from venus_prio.config import SimConfig
from venus_prio.sim.plant import GRID_RECHARGE_W, OverrideRegister, Plant, PlantParams, PlantStep

PARAMS = PlantParams(
    battery_kwh=10.0,
    inverter_w=3000.0,
    charge_efficiency=0.96,
    discharge_efficiency=0.96,
    inverter_efficiency=0.93,
    idle_w=20.0,
    min_soc=10.0,
)
CAPACITY_WS = 10.0 * 1000 * 3600


def soc_energy_w(before: float, after: float, dt: float) -> float:
    """Return the stored power implied by a SOC change (chemistry side)."""
    return (after - before) / 100.0 * CAPACITY_WS / dt


Case = Tuple[float, float, float, float, float, float]


def balanced_step(case: Case) -> PlantStep:
    """Run one step of ``case`` from its start SOC, check the energy balance, return the step."""
    start, dt, pv_dc, load, pv_ac, cap = case
    plant = Plant(PARAMS, start_soc=start)
    step = plant.step(dt, pv_dc_w=pv_dc, load_w=load, pv_ac_w=pv_ac, max_discharge_w=cap)
    stored = soc_energy_w(start, step.soc, dt)
    energy_in = pv_dc - step.curtailed_w + pv_ac + step.grid_w
    assert energy_in == pytest.approx(load + stored + step.loss_w, abs=1e-6)
    return step


# (start soc, dt, pv_dc, load, pv_ac, max_discharge)
BALANCE_CASES: List[Case] = [
    (50.0, 1.0, 0.0, 930.0, 0.0, -1.0),  # night, inverting from the battery
    (50.0, 1.0, 2000.0, 300.0, 0.0, -1.0),  # PV surplus charges
    (50.0, 1.0, 500.0, 2000.0, 0.0, 400.0),  # capped
    (50.0, 1.0, 500.0, 2000.0, 0.0, 0.0),  # cap 0: no inverting
    (50.0, 1.0, 100.0, 250.0, 0.0, -1.0),  # low-power efficiency
    (9.0, 1.0, 800.0, 300.0, 0.0, -1.0),  # blocked: all PV to the battery
    (4.0, 1.0, 200.0, 300.0, 0.0, -1.0),  # grid recharge
    (100.0, 1.0, 3000.0, 300.0, 0.0, -1.0),  # full: feed-in
    (100.0, 1.0, 3000.0, 300.0, 0.0, 0.0),  # full, cap 0: curtailed
    (100.0, 1.0, 5000.0, 300.0, 0.0, -1.0),  # full, beyond the inverter: part curtailed
    (99.999, 10.0, 3000.0, 300.0, 0.0, -1.0),  # fills up within the step
    (50.0, 1.0, 0.0, 300.0, 1200.0, -1.0),  # AC PV surplus charges through the charger
    (100.0, 1.0, 0.0, 300.0, 1200.0, -1.0),  # ... and is exported when full
    (50.0, 60.0, 1000.0, 1500.0, 700.0, 250.0),  # AC PV, DC PV and a cap together
]


@pytest.mark.parametrize("case", BALANCE_CASES)
def test_energy_balance(case: Case) -> None:
    step = balanced_step(case)
    assert step.loss_w >= PARAMS.idle_w - 1e-9
    assert step.curtailed_w >= 0
    assert step.soc <= 100.0 + 1e-9


def test_inverting_from_the_battery_at_night() -> None:
    plant = Plant(PARAMS, start_soc=50.0)
    step = plant.step(1.0, pv_dc_w=0.0, load_w=930.0, pv_ac_w=0.0, max_discharge_w=-1.0)
    assert step.inverter_ac_w == pytest.approx(930.0)
    assert step.grid_w == pytest.approx(0.0)
    assert step.battery_w == pytest.approx(-(930.0 / 0.93 + 20.0))  # idle from the DC bus
    assert step.soc == pytest.approx(50.0 - 1020.0 / 0.96 / CAPACITY_WS * 100)
    assert step.loss_w == pytest.approx(70.0 + 20.0 + 1020.0 / 0.96 - 1020.0)


def test_surplus_dc_pv_charges_the_battery() -> None:
    plant = Plant(PARAMS, start_soc=50.0)
    step = plant.step(1.0, pv_dc_w=2000.0, load_w=930.0, pv_ac_w=0.0, max_discharge_w=-1.0)
    assert step.inverter_ac_w == pytest.approx(930.0)
    assert step.battery_w == pytest.approx(2000.0 - 1000.0 - 20.0)
    assert step.grid_w == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("cap", "inverter_ac", "grid"),
    [
        (-1.0, 2000.0, 0.0),  # no cap
        (-5.0, 2000.0, 0.0),  # any negative means no cap
        (500.0, 500.0, 1500.0),
        (1.0, 1.0, 1999.0),
        (5000.0, 2000.0, 0.0),  # above the load
        (0.0, -20.0, 2020.0),  # no inverting; idle paid from the grid
    ],
)
def test_cap_respected(cap: float, inverter_ac: float, grid: float) -> None:
    plant = Plant(PARAMS, start_soc=50.0)
    step = plant.step(1.0, pv_dc_w=300.0, load_w=2000.0, pv_ac_w=0.0, max_discharge_w=cap)
    assert step.inverter_ac_w == pytest.approx(inverter_ac)
    assert step.grid_w == pytest.approx(grid)


def test_inverter_maximum_respected() -> None:
    plant = Plant(PARAMS, start_soc=50.0)
    step = plant.step(1.0, pv_dc_w=0.0, load_w=5000.0, pv_ac_w=0.0, max_discharge_w=-1.0)
    assert step.inverter_ac_w == pytest.approx(3000.0)
    assert step.grid_w == pytest.approx(2000.0)


def test_cap_zero_sends_all_dc_pv_to_the_battery() -> None:
    plant = Plant(PARAMS, start_soc=50.0)
    step = plant.step(1.0, pv_dc_w=400.0, load_w=300.0, pv_ac_w=0.0, max_discharge_w=0.0)
    assert step.battery_w == pytest.approx(400.0)
    assert step.grid_w == pytest.approx(320.0)


@pytest.mark.parametrize(
    ("setting", "override", "dc_draw"),
    [
        (-1.0, -1.0, 2000.0 / 0.93 + 20.0),  # no cap at all
        (-1.0, 500.0, 500.0),  # the override caps the DC draw, idle included
        (-1.0, 320.0, 320.0),  # 300 W of DC into the inverter, 20 W idle
        (-1.0, 10.0, 0.0),  # below the idle draw: nothing to invert with
        (-1.0, 0.0, 0.0),  # 0: no inverting
        (400.0, 1000.0, 400.0 / 0.93 + 20.0),  # both caps: the lower one wins (the setting)
        (1500.0, 600.0, 600.0),  # ... here the override
    ],
)
def test_override_caps_the_dc_draw(setting: float, override: float, dc_draw: float) -> None:
    plant = Plant(PARAMS, start_soc=50.0)
    step = plant.step(
        1.0,
        pv_dc_w=300.0,
        load_w=2000.0,
        pv_ac_w=0.0,
        max_discharge_w=setting,
        override_w=override,
    )
    # What the inverter takes from the DC bus = PV minus what goes into the battery.
    assert 300.0 - step.battery_w == pytest.approx(dc_draw)
    stored = soc_energy_w(50.0, step.soc, 1.0)
    assert 300.0 + step.grid_w == pytest.approx(2000.0 + stored + step.loss_w)


# (variant, writes as (t, value), then (t, shown, in force) to check)
REGISTER_CASES = [
    ("honoured", [(0.0, 500.0)], [(0.0, 500.0, 500.0), (59.0, 500.0, 500.0), (60.0, -1.0, -1.0)]),
    ("honoured", [(0.0, 500.0), (50.0, 400.0)], [(100.0, 400.0, 400.0), (110.0, -1.0, -1.0)]),
    ("honoured", [(0.0, 500.0), (1.0, -1.0)], [(2.0, -1.0, -1.0)]),  # released
    ("honoured", [(0.0, 500.0), (1.0, None)], [(2.0, -1.0, -1.0)]),  # null releases too
    ("absent", [(0.0, 500.0)], [(0.0, None, -1.0)]),  # dropped; the path does not exist
    ("ignored", [(0.0, 500.0)], [(1.0, 500.0, -1.0), (60.0, -1.0, -1.0)]),  # shown, no effect
    # Reset every 5 s of the GX's clock, half a period off ours: 2.5, 7.5, ...
    ("reset_every_5s", [(0.0, 500.0)], [(2.0, 500.0, 500.0), (3.0, -1.0, -1.0)]),
    ("reset_every_5s", [(3.0, 500.0)], [(7.0, 500.0, 500.0), (8.0, -1.0, -1.0)]),
]


@pytest.mark.parametrize(("variant", "writes", "checks"), REGISTER_CASES)
def test_override_register(
    variant: str,
    writes: List[Tuple[float, Optional[float]]],
    checks: List[Tuple[float, Optional[float], float]],
) -> None:
    register = OverrideRegister(variant=variant, expiry_s=60.0, reset_phase_s=2.5)
    for t, value in writes:
        assert register.write(value, t) is (variant != "absent")
    assert [(t, register.shown(t), register.in_force(t)) for t, _s, _f in checks] == checks
    assert register.present is (variant != "absent")


@pytest.mark.parametrize(("written", "change"), [(0.0, 2.5), (3.0, 7.5), (2.5, 7.5)])
def test_the_next_reset_follows_the_gx_timer_phase(written: float, change: float) -> None:
    # The fakes wake at next_change to publish the -1: it must be the tick that shown() uses.
    register = OverrideRegister(variant="reset_every_5s", expiry_s=60.0, reset_phase_s=2.5)
    register.write(500.0, written)
    assert register.next_change(written) == change
    assert register.shown(change - 1e-6) == 500.0 and register.shown(change) == -1.0


def test_override_register_rejects_an_unknown_variant() -> None:
    with pytest.raises(ValueError, match="sometimes"):
        OverrideRegister(variant="sometimes")


@pytest.mark.parametrize(
    ("ac_w", "eta"),
    [(0.0, 0.83), (150.0, 0.88), (300.0, 0.93), (2000.0, 0.93)],
)
def test_low_power_efficiency(ac_w: float, eta: float) -> None:
    plant = Plant(PARAMS, start_soc=50.0)
    assert plant.inverter_dc_w(ac_w) == pytest.approx(ac_w / eta)


def run(plant: Plant, steps: int, *, dt: float, pv: float, load: float) -> List[PlantStep]:
    return [
        plant.step(dt, pv_dc_w=pv, load_w=load, pv_ac_w=0.0, max_discharge_w=-1.0)
        for _ in range(steps)
    ]


def test_discharge_blocked_at_min_soc_until_plus_three() -> None:
    plant = Plant(PARAMS, start_soc=10.5)
    # Discharge at night until the floor: blocked at SOC <= 10.
    steps = run(plant, 120, dt=60.0, pv=0.0, load=600.0)
    first_blocked = next(i for i, s in enumerate(steps) if s.blocked)
    assert steps[first_blocked - 1].soc <= 10.0  # the step starts from a SOC at/below the floor
    assert all(s.inverter_ac_w == pytest.approx(-20.0) for s in steps[first_blocked:])
    floor_soc = steps[-1].soc
    assert 9.9 < floor_soc <= 10.0
    # While blocked, PV below the load still all goes to the battery.
    steps = run(plant, 400, dt=10.0, pv=500.0, load=600.0)
    released = [i for i, s in enumerate(steps) if not s.blocked]
    assert released, "the block must clear at MinSOC + 3"
    first = released[0]
    assert all(s.battery_w == pytest.approx(500.0) for s in steps[:first])
    assert steps[first - 1].soc >= 13.0
    assert steps[first - 2].soc < 13.0
    # Released: the inverter covers the load again and the battery discharges.
    assert steps[first].inverter_ac_w == pytest.approx(600.0)
    assert steps[first].battery_w < 0


def test_block_holds_between_min_and_plus_three() -> None:
    plant = Plant(PARAMS, start_soc=10.0)
    assert plant.blocked
    step = plant.step(1.0, pv_dc_w=0.0, load_w=500.0, pv_ac_w=0.0, max_discharge_w=-1.0)
    assert step.blocked and step.inverter_ac_w == pytest.approx(-20.0)
    plant.soc = 12.9  # recharged by PV, but not to +3 yet
    step = plant.step(1.0, pv_dc_w=0.0, load_w=500.0, pv_ac_w=0.0, max_discharge_w=-1.0)
    assert step.blocked and step.grid_w == pytest.approx(520.0)
    plant.soc = 13.0
    step = plant.step(1.0, pv_dc_w=0.0, load_w=500.0, pv_ac_w=0.0, max_discharge_w=-1.0)
    assert not step.blocked and step.inverter_ac_w == pytest.approx(500.0)


def test_grid_recharge_below_min_minus_five() -> None:
    plant = Plant(PARAMS, start_soc=5.5)
    step = plant.step(1.0, pv_dc_w=0.0, load_w=300.0, pv_ac_w=0.0, max_discharge_w=-1.0)
    assert not step.grid_charging and step.battery_w == pytest.approx(0.0)
    plant.soc = 5.0
    step = plant.step(1.0, pv_dc_w=0.0, load_w=300.0, pv_ac_w=0.0, max_discharge_w=-1.0)
    assert step.grid_charging
    assert step.battery_w == pytest.approx(GRID_RECHARGE_W * 0.93)
    assert step.grid_w == pytest.approx(300.0 + GRID_RECHARGE_W + 20.0)
    # Keeps charging above MinSOC - 5 and stops at MinSOC.
    steps = run(plant, 200, dt=60.0, pv=0.0, load=300.0)
    stop = next(i for i, s in enumerate(steps) if not s.grid_charging)
    assert steps[stop - 1].soc >= 10.0
    assert steps[stop - 2].soc < 10.0
    assert steps[stop].battery_w == pytest.approx(0.0)
    assert steps[stop].blocked  # still below MinSOC + 3


def test_full_battery_feeds_in_surplus_dc_pv() -> None:
    plant = Plant(PARAMS, start_soc=100.0)
    step = plant.step(1.0, pv_dc_w=2020.0, load_w=300.0, pv_ac_w=0.0, max_discharge_w=-1.0)
    assert step.battery_w == pytest.approx(0.0)
    assert step.curtailed_w == pytest.approx(0.0)
    fed_dc = 2020.0 - 300.0 / 0.93 - 20.0
    assert step.grid_w == pytest.approx(-fed_dc * 0.93)
    assert step.soc == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("cap", "curtailed"),
    [
        (0.0, 2000.0),  # DC->AC path closed
        (-1.0, 0.0),
        (1.0, 0.0),  # 1 W still lets feed-in through
    ],
)
def test_full_battery_curtails_when_the_path_is_closed(cap: float, curtailed: float) -> None:
    plant = Plant(PARAMS, start_soc=100.0)
    step = plant.step(1.0, pv_dc_w=2000.0, load_w=300.0, pv_ac_w=0.0, max_discharge_w=cap)
    assert step.curtailed_w == pytest.approx(curtailed)


def test_from_sim_config() -> None:
    # PARAMS is the plant of the default sim: section with MinSOC 10 %.
    assert PlantParams.from_sim_config(SimConfig(), min_soc=10.0) == PARAMS
    params = PlantParams.from_sim_config(SimConfig(battery_kwh=5.0, idle_w=10.0), min_soc=12.0)
    assert params == dataclasses.replace(PARAMS, battery_kwh=5.0, idle_w=10.0, min_soc=12.0)


@settings(max_examples=300, deadline=None)
@given(
    case=st.tuples(
        st.floats(min_value=0.0, max_value=100.0),  # start SOC
        st.sampled_from([0.5, 1.0, 5.0, 60.0]),  # dt
        st.floats(min_value=0.0, max_value=6000.0),  # DC PV
        st.floats(min_value=0.0, max_value=6000.0),  # load
        st.floats(min_value=0.0, max_value=3000.0),  # AC PV
        st.floats(min_value=-1.0, max_value=4000.0),  # MaxDischargePower
    )
)
def test_energy_balance_property(case: Case) -> None:
    step = balanced_step(case)
    _, _, pv_dc, _, _, cap = case
    assert 0.0 <= step.curtailed_w <= pv_dc + 1e-9
    assert step.soc <= 100.0 + 1e-9
    assert step.inverter_ac_w <= PARAMS.inverter_w + 1e-9
    if cap >= 0 and step.inverter_ac_w > cap + 1e-9:
        assert step.soc == pytest.approx(100.0)  # only feed-in of surplus at full goes past it
