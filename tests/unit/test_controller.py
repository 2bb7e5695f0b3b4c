"""The decision table of control.md section 3, row by row and boundary by boundary."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from venus_prio.config import ControlConfig, TrimConfig
from venus_prio.controller import (
    ControllerState,
    decide,
    filtered_pv,
    floor_to_step,
    update_pv_history,
)
from venus_prio.model import Band, Decision, Phase, Reason, Snapshot, TargetClass

# The numbers of control.md's table (not the tuned defaults), so the rows read as in the spec.
CFG = ControlConfig(
    max_inverter_power_w=3000.0, pv_factor=0.8, pv_offset_w=20.0, half_power_fraction=0.5
)
BASELINE = -1.0
FLOOR = 10.0


def snap(soc: Optional[float] = 12.0, pv: Optional[float] = 1000.0, **kw: Any) -> Snapshot:
    """Return a healthy snapshot with the floor at 10 % (ActiveSocLimit)."""
    fields: Dict[str, Any] = {
        "soc": soc,
        "pv_dc_w": pv,
        "active_soc_limit": FLOOR,
        "min_soc_setting": FLOOR,
        "ac_input_source": 1,
        "hub4_mode": 1,
        "battery_life_state": 1,
        "dynamic_ess_mode": 0,
        "max_discharge_w": -1.0,
        "alive_at": 0.0,
        "connected": True,
    }
    fields.update(kw)
    return Snapshot(**fields)


def once(
    s: Snapshot,
    state: Optional[ControllerState] = None,
    cfg: ControlConfig = CFG,
    now: float = 0.0,
    *,
    enabled: bool = True,
    override_in_use: bool = False,
) -> Tuple[Decision, ControllerState]:
    """Decide once; the snapshot's alive_at counts relative to ``now``."""
    if s.alive_at is not None:
        s = dataclasses.replace(s, alive_at=now + s.alive_at)
    return decide(
        s,
        state or ControllerState(),
        cfg,
        baseline_w=BASELINE,
        now=now,
        enabled=enabled,
        override_in_use=override_in_use,
    )


# PV 1000 W: share = floor_to_step(0.8 * 1000 - 20, 50) = 750.
@pytest.mark.parametrize(
    ("soc", "phase", "target", "reason", "band"),
    [
        (9.9, None, 0.0, Reason.BELOW_FLOOR, Band.BELOW_FLOOR),  # d < 0
        (10.0, None, 750.0, Reason.PV_PRIORITY, Band.PRIORITY),  # d = 0 is inside the band
        (15.0, None, 750.0, Reason.PV_PRIORITY, Band.PRIORITY),  # d = prio_band is inside
        (15.1, Phase.CHARGING, 750.0, Reason.RECOVERING, Band.RECOVERY),
        (15.1, Phase.DISCHARGING, 1500.0, Reason.LIMITED_DISCHARGE, Band.RECOVERY),
        (19.9, Phase.CHARGING, 750.0, Reason.RECOVERING, Band.RECOVERY),
        (19.9, Phase.DISCHARGING, 1500.0, Reason.LIMITED_DISCHARGE, Band.RECOVERY),
        (20.0, None, BASELINE, Reason.NORMAL, Band.NORMAL),  # d = recover_band, nothing of ours
        (100.0, None, BASELINE, Reason.NORMAL, Band.NORMAL),
    ],
)
def test_decision_table_rows(
    soc: float, phase: Optional[Phase], target: float, reason: Reason, band: Band
) -> None:
    decision, _ = once(snap(soc=soc), ControllerState(phase=phase))
    assert (decision.target_w, decision.reason, decision.band) == (target, reason, band)
    assert decision.d == pytest.approx(soc - FLOOR)


def test_limited_discharge_takes_pv_share_when_larger() -> None:
    decision, _ = once(snap(soc=17.0, pv=2500.0), ControllerState(phase=Phase.DISCHARGING))
    assert decision.reason is Reason.LIMITED_DISCHARGE
    assert decision.target_w == floor_to_step(0.8 * 2500 - 20, 50) == 1950.0


def test_pv_share_clamped_to_max_inverter_power() -> None:
    decision, _ = once(snap(soc=12.0, pv=10_000.0))
    assert decision.target_w == 3000.0


@pytest.mark.parametrize(
    ("pv", "dc_loads", "subtract", "target"),
    [
        (1000.0, 200.0, True, 600.0),  # 0.8 * 800 - 20 = 620 -> 600
        (1000.0, 200.0, False, 750.0),
        (1000.0, None, True, 750.0),  # DC loads not measured: nothing to subtract
        (None, None, True, 0.0),  # no solar charger: PV counts as 0 W
    ],
)
def test_dc_loads_and_missing_pv(
    pv: Optional[float], dc_loads: Optional[float], subtract: bool, target: float
) -> None:
    cfg = dataclasses.replace(CFG, subtract_dc_loads=subtract)
    decision, _ = once(snap(soc=12.0, pv=pv, dc_system_w=dc_loads), cfg=cfg)
    assert decision.target_w == target


def test_pv_too_low_holds_and_hysteresis_keeps_sharing_down_to_90w() -> None:
    decision, state = once(snap(soc=12.0, pv=95.0))
    assert (decision.reason, decision.target_w) == (Reason.PV_TOO_LOW, 0.0)
    # From above 100 W, sharing continues down to 90 W (the share itself may round to 0 W).
    _, state = once(snap(soc=12.0, pv=300.0), now=0.0)
    decision, state = once(snap(soc=12.0, pv=95.0), state, now=100.0)
    assert decision.reason is Reason.PV_PRIORITY
    decision, state = once(snap(soc=12.0, pv=89.0), state, now=200.0)
    assert decision.reason is Reason.PV_TOO_LOW
    decision, _ = once(snap(soc=12.0, pv=95.0), state, now=300.0)
    assert decision.reason is Reason.PV_TOO_LOW


def test_hold_w_is_used_for_every_hold() -> None:
    cfg = dataclasses.replace(CFG, hold_w=1.0)
    below, _ = once(snap(soc=5.0), cfg=cfg)
    too_low, _ = once(snap(soc=12.0, pv=10.0), cfg=cfg)
    assert below.target_w == too_low.target_w == 1.0
    assert below.target_class is too_low.target_class is TargetClass.HOLD


def test_phase_hysteresis_down_and_up() -> None:
    state = ControllerState()
    reasons: List[Reason] = []
    for t, soc in enumerate([21.0, 18.0, 15.5, 15.0, 16.0, 19.5, 20.0]):
        decision, state = once(snap(soc=soc), state, now=float(t))
        reasons.append(decision.reason)
    assert reasons == [
        Reason.NORMAL,  # start-up above recover_band: DISCHARGING, stock
        Reason.LIMITED_DISCHARGE,  # coming down: half power
        Reason.LIMITED_DISCHARGE,
        Reason.PV_PRIORITY,  # d = prio_band: CHARGING from here
        Reason.RECOVERING,  # going up again: PV share until recover_band
        Reason.RECOVERING,
        Reason.RAMPING,  # recovered: ramp from the last target
    ]


def test_start_up_phase_between_bands_is_charging() -> None:
    decision, state = once(snap(soc=17.0))
    assert (decision.reason, state.phase) == (Reason.RECOVERING, Phase.CHARGING)


def test_ramp_rises_by_rate_then_hands_back_to_baseline() -> None:
    state = ControllerState(phase=Phase.CHARGING)
    decision, state = once(snap(soc=19.0, pv=1000.0), state, now=0.0)
    assert decision.target_w == 750.0
    decision, state = once(snap(soc=20.0, pv=0.0), state, now=60.0)
    assert (decision.reason, decision.target_w) == (Reason.RAMPING, 950.0)  # +200 W/min
    decision, state = once(snap(soc=20.0, pv=0.0), state, now=90.0)
    assert decision.target_w == 1050.0
    decision, state = once(snap(soc=20.0, pv=0.0), state, now=90.0 + 60 * 9.74)
    assert (decision.reason, decision.target_w) == (Reason.RAMPING, 2950.0)
    decision, state = once(snap(soc=20.0, pv=0.0), state, now=90.0 + 60 * 9.76)
    assert (decision.reason, decision.target_w) == (Reason.NORMAL, BASELINE)
    assert decision.target_class is TargetClass.BASELINE
    decision, _ = once(snap(soc=25.0, pv=0.0), state, now=2000.0)
    assert decision.reason is Reason.NORMAL  # stays handed back


def test_ramp_never_below_pv_share() -> None:
    state = ControllerState(phase=Phase.CHARGING)
    _, state = once(snap(soc=19.0, pv=150.0), state, now=0.0)
    decision, _ = once(snap(soc=20.0, pv=2000.0), state, now=1.0)
    assert decision.reason is Reason.RAMPING
    # The filter still averages the rise: pv_f = (150 * 1 + 2000 * 0) / 1 = 150 at t = 1.
    assert decision.target_w >= decision.pv_share_w


OFF = {"enabled": False}
FOREIGN = {"override_in_use": True}


@pytest.mark.parametrize(
    ("overrides", "outside", "reason"),
    [
        ({}, OFF, Reason.STAND_ASIDE_DISABLED),
        ({"connected": False}, {}, Reason.STAND_ASIDE_DISCONNECTED),
        ({"alive_at": None}, {}, Reason.STAND_ASIDE_STALE),
        ({"alive_at": -30.5}, {}, Reason.STAND_ASIDE_STALE),
        ({"soc": None}, {}, Reason.STAND_ASIDE_MISSING_INPUT),
        ({"soc": math.nan}, {}, Reason.STAND_ASIDE_MISSING_INPUT),
        ({"ac_input_source": 240}, {}, Reason.STAND_ASIDE_GRID_LOST),
        ({"ac_input_source": 2}, {}, Reason.STAND_ASIDE_GENERATOR),
        ({"hub4_mode": 3}, {}, Reason.STAND_ASIDE_EXTERNAL_CONTROL),
        ({"battery_life_state": 9}, {}, Reason.STAND_ASIDE_KEEP_CHARGED),
        ({"dynamic_ess_mode": 1}, {}, Reason.STAND_ASIDE_DYNAMIC_ESS),
        ({}, FOREIGN, Reason.STAND_ASIDE_OVERRIDE_IN_USE),
        # Dynamic ESS is the more specific cause when it is the one holding the override.
        ({"dynamic_ess_mode": 1}, FOREIGN, Reason.STAND_ASIDE_DYNAMIC_ESS),
        ({"soc": 5.0}, FOREIGN, Reason.STAND_ASIDE_OVERRIDE_IN_USE),  # even below the floor
        ({"active_soc_limit": None, "min_soc_setting": None}, {}, Reason.STAND_ASIDE_MISSING_INPUT),
        (
            {"active_soc_limit": None, "min_soc_setting": None},
            FOREIGN,
            Reason.STAND_ASIDE_OVERRIDE_IN_USE,
        ),
    ],
)
def test_stand_aside_writes_baseline(
    overrides: Any, outside: Dict[str, bool], reason: Reason
) -> None:
    decision, state = once(
        snap(**{"soc": 12.0, **overrides}),
        enabled=outside.get("enabled", True),
        override_in_use=outside.get("override_in_use", False),
    )
    assert (decision.reason, decision.target_w) == (reason, BASELINE)
    assert decision.target_class is TargetClass.BASELINE
    assert reason.stands_aside
    assert state.level_w is None


def test_alive_exactly_stale_after_is_not_stale() -> None:
    decision, _ = once(snap(soc=12.0, alive_at=-30.0))
    assert decision.reason is Reason.PV_PRIORITY


def test_absent_optional_inputs_do_not_stand_aside() -> None:
    s = snap(
        soc=12.0,
        dc_system_w=None,
        ac_input_source=None,
        hub4_mode=None,
        battery_life_state=None,
        dynamic_ess_mode=None,
        active_soc_limit=None,  # old firmware: fall back to the Minimum SOC setting
    )
    decision, _ = once(s)
    assert decision.reason is Reason.PV_PRIORITY
    assert decision.floor == FLOOR


@pytest.mark.parametrize(
    ("missing", "names", "expected"),
    [
        ({"soc": None}, {}, "SOC unknown (the battery SOC is invalid or absent)"),
        ({"soc": None}, {"soc_name": "/Dc/Battery/Soc"}, "(/Dc/Battery/Soc is invalid"),
        (
            {"active_soc_limit": None, "min_soc_setting": None},
            {"floor_names": "/Control/ActiveSocLimit and MinimumSocLimit"},
            "SOC floor unknown (/Control/ActiveSocLimit and MinimumSocLimit invalid or absent)",
        ),
    ],
)
def test_missing_input_text_names_what_the_source_calls_it(
    missing: Dict[str, Any], names: Dict[str, Any], expected: str
) -> None:
    # The controller knows no path table: the names come with the snapshot.
    decision, _ = once(snap(**missing, **names))
    assert decision.reason is Reason.STAND_ASIDE_MISSING_INPUT
    assert expected in decision.text


def test_configured_min_soc_wins_over_the_gx() -> None:
    cfg = dataclasses.replace(CFG, min_soc=20.0)
    decision, _ = once(snap(soc=21.0), cfg=cfg)
    assert (decision.floor, decision.reason) == (20.0, Reason.PV_PRIORITY)


def test_resuming_after_stand_aside_does_not_ramp_from_stale_level() -> None:
    state = ControllerState(phase=Phase.CHARGING, level_w=500.0)
    _, state = once(snap(soc=21.0, connected=False), state, now=0.0)
    decision, _ = once(snap(soc=21.0), state, now=1.0)
    assert decision.reason is Reason.NORMAL


# --- the PV filter: drops at once, rises smoothed ---------------------------------------------


def _feed(samples: List[Tuple[float, float]], window: float = 15.0) -> List[float]:
    history: Tuple[Tuple[float, float], ...] = ()
    out = []
    for t, pv in samples:
        history = update_pv_history(history, t, pv, window)
        out.append(filtered_pv(history, t, window))
    return out


def test_pv_filter_follows_a_drop_at_once() -> None:
    out = _feed([(0.0, 1000.0), (10.0, 1000.0), (20.0, 200.0)])
    assert out[-1] == 200.0


def test_pv_filter_smooths_a_rise_time_weighted() -> None:
    # 200 W for 15 s, then 1000 W: after 5 s the mean over 15 s is (10*200 + 5*1000)/15.
    out = _feed([(0.0, 200.0), (15.0, 200.0), (20.0, 1000.0), (25.0, 1000.0), (40.0, 1000.0)])
    assert out[2] == 200.0  # the new value has held for no time yet
    assert out[3] == pytest.approx((10 * 200 + 5 * 1000) / 15)
    assert out[4] == 1000.0  # the window now holds only the new value


def test_pv_filter_values_hold_until_the_next_one() -> None:
    # Only two messages: 0 W at t=0 and 600 W at t=0.5; at t=8 the window is 8 s long.
    history: Tuple[Tuple[float, float], ...] = ()
    history = update_pv_history(history, 0.0, 0.0, 15.0)
    history = update_pv_history(history, 0.5, 600.0, 15.0)
    assert filtered_pv(history, 8.0, 15.0) == pytest.approx(600.0 * 7.5 / 8.0)


def test_pv_history_stays_bounded() -> None:
    history: Tuple[Tuple[float, float], ...] = ()
    for t in range(1000):
        history = update_pv_history(history, float(t), float(t % 7), 15.0)
    assert len(history) <= 17


def test_trim_moves_factor_towards_target_charge_within_bounds() -> None:
    trim = TrimConfig(enabled=True, target_charge_w=30.0, gain_per_w_s=0.001)
    cfg = dataclasses.replace(CFG, trim=trim)
    state = ControllerState()
    for t in range(200):  # the battery discharges: the factor must come down to its minimum
        _, state = once(snap(soc=12.0, battery_power_w=-200.0), state, cfg=cfg, now=float(t))
    assert state.pv_factor == pytest.approx(0.6)
    for t in range(200, 400):  # charging hard: up to the maximum
        _, state = once(snap(soc=12.0, battery_power_w=800.0), state, cfg=cfg, now=float(t))
    assert state.pv_factor == pytest.approx(0.95)


# --- properties --------------------------------------------------------------------------------

maybe_number = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-5000, max_value=20000),
)
maybe_code = st.one_of(st.none(), st.integers(min_value=-5, max_value=300))


@st.composite
def snapshots(draw: Any) -> Snapshot:
    return Snapshot(
        soc=draw(st.one_of(maybe_number, st.floats(min_value=-10, max_value=150))),
        active_soc_limit=draw(maybe_number),
        min_soc_setting=draw(maybe_number),
        pv_dc_w=draw(maybe_number),
        dc_system_w=draw(maybe_number),
        battery_power_w=draw(maybe_number),
        ac_input_source=draw(maybe_code),
        hub4_mode=draw(maybe_code),
        battery_life_state=draw(maybe_code),
        dynamic_ess_mode=draw(maybe_code),
        alive_at=draw(st.one_of(st.none(), st.floats(min_value=-100, max_value=0))),
        connected=draw(st.booleans()),
    )


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(st.tuples(snapshots(), st.floats(min_value=0, max_value=120)), max_size=30),
    baseline=st.sampled_from([-1.0, 0.0, 2500.0, 3000.0, 50_000.0]),
    hold_w=st.sampled_from([0.0, 1.0]),
    trim=st.booleans(),
)
def test_target_is_hold_within_max_or_baseline(
    steps: List[Tuple[Snapshot, float]], baseline: float, hold_w: float, trim: bool
) -> None:
    cfg = dataclasses.replace(CFG, hold_w=hold_w, trim=TrimConfig(enabled=trim))
    state = ControllerState()
    now = 0.0
    for drawn, dt in steps:
        now += dt
        alive_at = None if drawn.alive_at is None else now + drawn.alive_at
        s = dataclasses.replace(drawn, alive_at=alive_at)
        decision, state = decide(s, state, cfg, baseline_w=baseline, now=now)
        target = decision.target_w
        assert target in (hold_w, baseline) or (
            0.0 <= target <= cfg.max_inverter_power_w and math.isfinite(target)
        ), decision
        if decision.target_class is TargetClass.BASELINE:
            assert target == baseline
