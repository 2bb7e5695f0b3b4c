"""The live stock-ESS shadow (``sim.shadow``): the simulator's stock run, fed step by step."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Tuple

import pytest

from tests.recording_tools import stretch
from venus_prio.config import Config, default_config
from venus_prio.sim.runner import run_scenario, start_soc_for
from venus_prio.sim.scenarios import Profile, builtin, load_profile_csv
from venus_prio.sim.shadow import MAX_HOLD_S, StockShadow

ROOT = Path(__file__).resolve().parents[2]
REAL_DAY = ROOT / "tests" / "data" / "real-days" / "real-midc-nwtc-2018-10-14.csv"
HOUR = 3600


def shadow_for(config: Config, profile: Profile) -> StockShadow:
    """Return a shadow on the simulator's terms, started where the simulator starts."""
    return StockShadow(
        config,
        battery_kwh=config.sim.battery_kwh,
        reserve_soc=config.sim.reserve_soc,
        start_soc=start_soc_for(config),
        now=profile.start_s,
    )


def rows(profile: Profile) -> Iterator[Tuple[float, float, float, float]]:
    yield from zip(profile.time_s, profile.pv_dc_w, profile.load_w, profile.pv_ac_w)


@pytest.mark.parametrize(
    ("day", "start_h", "end_h", "repeat_every_s"),
    [
        # Cloudy-floor 9-12 h: clouds every few seconds, the washing machine, stock's sawtooth
        # (one row per second, each update a new row).
        ("cloudy-floor", 9.0, 12.0, None),
        # A measured day, 8-16 h: rows every 60 s, and between them the same values again every
        # 7 s, as a service re-reads unchanged inputs at irregular times.
        ("real", 8.0, 16.0, 7.0),
    ],
)
def test_shadow_equals_the_simulators_stock_run(
    day: str, start_h: float, end_h: float, repeat_every_s: float
) -> None:
    config = default_config()
    whole = builtin(day, config.sim.seed) if day != "real" else load_profile_csv(REAL_DAY)
    profile = stretch(whole, start_h * HOUR, end_h * HOUR)
    simulated, _trace = run_scenario(profile, config, "stock")
    assert simulated.throughput_kwh > 0.5 and simulated.micro_cycles >= 1  # a stretch with work

    shadow = shadow_for(config, profile)
    ends = (*profile.time_s[1:], profile.end_s)
    for (t, pv_dc, load, pv_ac), end in zip(rows(profile), ends):
        shadow.update(t, pv_dc_w=pv_dc, load_w=load, pv_ac_w=pv_ac)
        if repeat_every_s is not None:
            again = t + repeat_every_s
            while again < end:
                shadow.update(again, pv_dc_w=pv_dc, load_w=load, pv_ac_w=pv_ac)
                again += repeat_every_s
    shadow.advance(profile.end_s)
    # The same code on the same floats in the same order: equal, not merely close.
    assert shadow.throughput_kwh == simulated.throughput_kwh
    assert shadow.charged_kwh == simulated.battery_charged_kwh
    assert shadow.discharged_kwh == simulated.battery_discharged_kwh
    assert shadow.micro_cycles == simulated.micro_cycles
    assert shadow.soc == simulated.end_soc
    assert shadow.skipped_s == 0.0


def charging_shadow(now: float = 0.0) -> StockShadow:
    """Return a half-full shadow: 1 kW of DC PV and no loads charge it at 1 kW."""
    shadow = StockShadow(
        default_config(), battery_kwh=10.0, reserve_soc=15.0, start_soc=50.0, now=now
    )
    shadow.update(now, pv_dc_w=1000.0, load_w=0.0)
    return shadow


def test_a_gap_holds_the_inputs_for_max_hold_s_then_skips() -> None:
    shadow = charging_shadow()
    shadow.update(600.0, pv_dc_w=0.0, load_w=0.0)  # ten minutes without news
    assert shadow.charged_kwh == pytest.approx(1000.0 * MAX_HOLD_S / 3.6e6)
    assert shadow.skipped_s == pytest.approx(600.0 - MAX_HOLD_S)
    # A day-long gap costs no more steps than max_hold_s: the same energy, the rest skipped.
    shadow = charging_shadow()
    shadow.advance(86400.0)
    assert shadow.charged_kwh == pytest.approx(1000.0 * MAX_HOLD_S / 3.6e6)
    assert shadow.skipped_s == pytest.approx(86400.0 - MAX_HOLD_S)


def test_nothing_runs_before_the_first_inputs() -> None:
    shadow = StockShadow(
        default_config(), battery_kwh=10.0, reserve_soc=15.0, start_soc=50.0, now=0.0
    )
    shadow.advance(30.0)
    assert (shadow.throughput_kwh, shadow.skipped_s, shadow.soc) == (0.0, 30.0, 50.0)


def test_a_clock_going_back_runs_nothing_and_carries_on() -> None:
    shadow = charging_shadow(now=1000.0)
    shadow.update(1010.0, pv_dc_w=1000.0, load_w=0.0)
    charged = shadow.charged_kwh
    assert charged == pytest.approx(1000.0 * 10 / 3.6e6)
    shadow.update(400.0, pv_dc_w=1000.0, load_w=0.0)  # NTP set the clock back by ten minutes
    assert shadow.charged_kwh == charged
    shadow.update(420.0, pv_dc_w=1000.0, load_w=0.0)
    assert shadow.charged_kwh == pytest.approx(charged + 1000.0 * 20 / 3.6e6)
    assert shadow.skipped_s == 0.0


def test_reset_starts_a_new_day_from_the_measured_soc() -> None:
    shadow = charging_shadow()
    shadow.update(30.0, pv_dc_w=0.0, load_w=500.0)
    shadow.update(60.0, pv_dc_w=0.0, load_w=500.0)
    assert shadow.charged_kwh > 0 and shadow.discharged_kwh > 0
    shadow.reset(start_soc=42.0, now=86400.0)
    assert (shadow.throughput_kwh, shadow.micro_cycles, shadow.soc) == (0.0, 0, 42.0)
    shadow.update(86400.0, pv_dc_w=0.0, load_w=500.0)
    shadow.advance(86410.0)
    assert shadow.charged_kwh == 0.0 and shadow.discharged_kwh > 0


def test_stock_minimum_soc_is_the_reserve() -> None:
    # At the reserve stock ESS blocks the discharge (ESS #1): loads come from the grid.
    shadow = StockShadow(
        default_config(), battery_kwh=10.0, reserve_soc=20.0, start_soc=20.0, now=0.0
    )
    shadow.update(0.0, pv_dc_w=0.0, load_w=500.0)
    shadow.advance(30.0)
    assert shadow.discharged_kwh == 0.0
    above = StockShadow(
        default_config(), battery_kwh=10.0, reserve_soc=10.0, start_soc=20.0, now=0.0
    )
    above.update(0.0, pv_dc_w=0.0, load_w=500.0)
    above.advance(30.0)
    assert above.discharged_kwh > 0.0


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="battery_kwh must be > 0, got 0"):
        StockShadow(default_config(), battery_kwh=0.0, reserve_soc=15.0, start_soc=50.0, now=0.0)
