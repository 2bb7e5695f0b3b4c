"""The simulated policies: the original add-on's formulas band by band, stock, and venus_prio."""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple, Type, Union

import pytest

from venus_prio.config import ActuatorConfig, Config, ControlConfig, OverrideConfig, WritesConfig
from venus_prio.model import Snapshot
from venus_prio.sim.policies import (
    ORIGINAL_BELOW,
    ORIGINAL_HALF,
    ORIGINAL_HIGH,
    ORIGINAL_PRIO,
    OriginalPolicy,
    PolicyStep,
    StockPolicy,
    VenusPrioOverridePolicy,
    VenusPrioPolicy,
    original_limit,
    original_share,
    with_readings,
)


@pytest.mark.parametrize(
    ("pv", "limit", "share"),
    [
        (1000.0, 0.0, 800.0),  # round((800 - 5) / 10) = round(79.5) = 80 (half to even)
        (500.0, 0.0, 400.0),  # round(39.5) = 40
        (520.0, 0.0, 410.0),  # round(41.1) = 41
        (301.0, 0.0, 240.0),  # round(23.58) = 24: the 0.8 band starts above 300
        (300.0, 0.0, 190.0),  # 0.7 band: round(20.5) = 20 -> 200 - 10
        (150.0, 0.0, 90.0),  # round(10.0) = 10 -> 100 - 10
        (101.0, 0.0, 60.0),  # 0.7 x 101 - 5 = 65.7: round(6.57) = 7 -> 70 - 10
        (100.0, 0.0, 0.0),  # not above 100 with no limit in force
        (100.0, 50.0, 50.0),  # above 90 while a limit is in force: round(6.5) = 6 -> 50
        (95.0, 50.0, 50.0),  # round(6.15) = 6 -> 50
        (90.0, 50.0, 0.0),  # not above 90
        (0.0, 0.0, 0.0),
    ],
)
def test_original_share(pv: float, limit: float, share: float) -> None:
    assert original_share(pv, limit=limit) == share


MAX = 3000.0
MIN = 10.0


@pytest.mark.parametrize(
    ("soc", "pv", "limit", "prio", "expected"),
    [
        # SOC >= min + 10: prio off, the limit only rises.
        (95.0, 1000.0, 500.0, True, (2000.0, False, ORIGINAL_HIGH)),  # > 90: PV x 2
        (95.0, 2000.0, 500.0, False, (3000.0, False, ORIGINAL_HIGH)),  # clamped to max
        (95.0, 1000.0, 2500.0, False, (2500.0, False, ORIGINAL_HIGH)),  # never lowered
        (23.0, 1000.0, 0.0, False, (1500.0, False, ORIGINAL_HIGH)),  # >= min + 13: PV x 1.5
        (22.9, 1000.0, 0.0, False, (1000.0, False, ORIGINAL_HIGH)),  # below min + 13: PV
        (20.0, 400.0, 300.0, True, (400.0, False, ORIGINAL_HIGH)),  # exactly min + 10
        (20.0, 400.0, 700.0, True, (700.0, False, ORIGINAL_HIGH)),
        # min <= SOC < min + 10
        (15.0, 1000.0, 3000.0, False, (800.0, True, ORIGINAL_PRIO)),  # <= min + 5 sets prio
        (10.0, 500.0, 0.0, False, (400.0, True, ORIGINAL_PRIO)),  # exactly min
        (17.0, 1000.0, 0.0, True, (800.0, True, ORIGINAL_PRIO)),  # prio kept above min + 5
        (17.0, 1000.0, 0.0, False, (1500.0, False, ORIGINAL_HALF)),  # max(max / 2, share)
        (19.9, 0.0, 3000.0, False, (1500.0, False, ORIGINAL_HALF)),
        (17.0, 50.0, 800.0, True, (0.0, True, ORIGINAL_PRIO)),
        # SOC < min
        (9.9, 2000.0, 800.0, False, (0.0, True, ORIGINAL_BELOW)),
    ],
)
def test_original_bands(
    soc: float, pv: float, limit: float, prio: bool, expected: Tuple[float, bool, str]
) -> None:
    assert (
        original_limit(soc=soc, min_soc=MIN, pv=pv, limit=limit, prio=prio, max_w=MAX) == expected
    )


@pytest.mark.parametrize(
    ("start_soc", "prio", "limit"), [(20.0, False, MAX), (19.9, True, 0.0), (5.0, True, 0.0)]
)
def test_original_start_state(start_soc: float, prio: bool, limit: float) -> None:
    policy = OriginalPolicy(min_soc=MIN, max_w=MAX, start_soc=start_soc, dt=1.0)
    assert (policy.prio, policy.limit) == (prio, limit)


def test_original_uses_a_plain_15_sample_mean_and_writes_on_change() -> None:
    policy = OriginalPolicy(min_soc=MIN, max_w=MAX, start_soc=12.0, dt=1.0)
    setting = -1.0
    steps: List[PolicyStep] = []
    pvs = [1000.0] * 15 + [0.0] * 16
    for t, pv in enumerate(pvs):
        step = policy.step(now=float(t), soc=12.0, pv_dc_w=pv, battery_w=0.0, setting_w=setting)
        steps.append(step)
        setting = step.setting_w
    assert steps[0] == PolicyStep(800.0, True, ORIGINAL_PRIO)  # -1 -> 800 written at once
    assert [s.wrote for s in steps[1:15]] == [False] * 14  # unchanged: no write
    # One cloud second: mean of 14 x 1000 and one 0 = 933.3 -> round(74.17) = 74 -> 740.
    assert steps[15] == PolicyStep(740.0, True, ORIGINAL_PRIO)
    # The limit stays up for most of the window after the cloud (the weakness we fix):
    # 13 zeros and 2 x 1000 = 133.3 W -> 0.7 band: round(8.83) = 9 -> 80 W.
    assert steps[27].setting_w == 80.0
    assert steps[28] == PolicyStep(0.0, True, ORIGINAL_PRIO)  # mean 66.7 W: nothing shared
    assert [s.wrote for s in steps[29:]] == [False, False]


def test_original_window_keeps_15_seconds_at_other_dt() -> None:
    policy = OriginalPolicy(min_soc=MIN, max_w=MAX, start_soc=12.0, dt=5.0)
    for t in range(3):
        policy.step(now=t * 5.0, soc=12.0, pv_dc_w=1000.0, battery_w=0.0, setting_w=800.0)
    step = policy.step(now=15.0, soc=12.0, pv_dc_w=0.0, battery_w=0.0, setting_w=800.0)
    # Three samples (15 s): mean of 1000, 1000, 0 = 666.7 -> round(52.8) = 53 -> 530.
    assert step == PolicyStep(530.0, True, ORIGINAL_PRIO)


def test_stock_never_writes() -> None:
    step = StockPolicy().step(now=0.0, soc=50.0, pv_dc_w=1000.0, battery_w=0.0, setting_w=-1.0)
    assert step == PolicyStep(-1.0, False, "STOCK")


# The numbers of control.md's table (not the tuned defaults), as in test_controller, so the
# expected writes read as in the spec.
CONTROL = ControlConfig(
    max_inverter_power_w=3000.0, pv_factor=0.8, pv_offset_w=20.0, half_power_fraction=0.5
)


def run_venus_prio(
    config: Config,
    *,
    soc: Union[float, List[float]],
    pvs: List[float],
    setting: float = -1.0,
    policy_class: Type[Union[VenusPrioPolicy, VenusPrioOverridePolicy]] = VenusPrioPolicy,
) -> List[PolicyStep]:
    """Step a venus_prio policy once a second; ``soc`` is one value or one per step."""
    policy = policy_class(config, min_soc=10.0)
    socs = soc if isinstance(soc, list) else [soc] * len(pvs)
    steps = []
    for t, (pv, now_soc) in enumerate(zip(pvs, socs)):
        step = policy.step(now=float(t), soc=now_soc, pv_dc_w=pv, battery_w=0.0, setting_w=setting)
        steps.append(step)
        setting = step.setting_w
    return steps


def test_venus_prio_caps_at_the_pv_share_near_the_floor() -> None:
    steps = run_venus_prio(Config(control=CONTROL), soc=12.0, pvs=[1000.0] * 5)
    # floor_to_step(0.8 x 1000 - 20, 50) = 750, a new class: written at once.
    assert steps[0] == PolicyStep(750.0, True, "PV_PRIORITY")
    assert [s.wrote for s in steps[1:]] == [False] * 4
    assert {s.setting_w for s in steps} == {750.0}


def test_venus_prio_follows_a_cloud_down_at_once() -> None:
    steps = run_venus_prio(Config(control=CONTROL), soc=12.0, pvs=[1000.0] * 5 + [50.0])
    assert steps[-1] == PolicyStep(0.0, True, "PV_TOO_LOW")


def test_venus_prio_hands_back_the_baseline_when_recovered() -> None:
    steps = run_venus_prio(Config(control=CONTROL), soc=40.0, pvs=[0.0], setting=500.0)
    assert steps[0] == PolicyStep(-1.0, True, "NORMAL")


@pytest.mark.parametrize("policy_class", [VenusPrioPolicy, VenusPrioOverridePolicy])
def test_venus_prio_dry_run_writes_nothing(
    policy_class: Type[Union[VenusPrioPolicy, VenusPrioOverridePolicy]],
) -> None:
    config = Config(control=CONTROL, writes=WritesConfig(dry_run=True))
    steps = run_venus_prio(config, soc=12.0, pvs=[1000.0] * 3, policy_class=policy_class)
    assert steps == [PolicyStep(-1.0, False, "PV_PRIORITY")] * 3


# The override's keys as control.md section 8 starts them (the shipped pv_factor and deadband
# are tuned: config.yaml), so the expected writes below do not move with a retune.
OVERRIDE = OverrideConfig(
    pv_factor=1.0, pv_offset_w=0.0, step_w=10.0, deadband_w=20.0, refresh_s=5.0
)


def override_writes(
    soc: Union[float, List[float]], pvs: List[float]
) -> List[Tuple[int, Optional[float]]]:
    """Run the override policy (OVERRIDE's keys) and return (second, value) per write."""
    config = Config(control=CONTROL, actuator=ActuatorConfig(override=OVERRIDE))
    steps = run_venus_prio(config, soc=soc, pvs=pvs, policy_class=VenusPrioOverridePolicy)
    assert {(s.setting_w, s.wrote) for s in steps} == {(-1.0, False)}  # the setting: untouched
    return [(t, s.override_w) for t, s in enumerate(steps) if s.override_w is not None]


@pytest.mark.parametrize(
    ("soc", "pvs", "writes"),
    [
        # The override's share: 1.0 x PV, no offset, 10 W steps (not control.pv_factor 0.8),
        # refreshed every 5 s while steering.
        (12.0, [1000.0] * 11, [(0, 1000.0), (5, 1000.0), (10, 1000.0)]),
        (12.0, [1006.0] * 3, [(0, 1000.0)]),  # rounded down to the step
        # A cloud is followed down at once, from the 20 W deadband on (990 W: 10 W, no write).
        (12.0, [1000.0, 995.0, 990.0, 985.0], [(0, 1000.0), (3, 980.0)]),
        (12.0, [1000.0, 1000.0, 50.0], [(0, 1000.0), (2, 0.0)]),  # too little PV: hold 0
        # Rises are smoothed by the 15 s filter: 1000 -> 1100 at 16 s gives 1006, 1013, 1020 W.
        (
            12.0,
            [1000.0] * 16 + [1100.0] * 4,
            [(0, 1000.0), (5, 1000.0), (10, 1000.0), (15, 1000.0), (19, 1020.0)],
        ),
        # Recovered: handed back with -1 (release), then nothing more.
        ([12.0, 40.0, 40.0], [3000.0] * 3, [(0, 3000.0), (1, -1.0)]),
        (40.0, [0.0] * 3, []),  # never held: nothing to release
    ],
)
def test_override_policy_writes(
    soc: Union[float, List[float]],
    pvs: List[float],
    writes: List[Tuple[int, Optional[float]]],
) -> None:
    assert override_writes(soc, pvs) == writes


def test_with_readings_is_replace() -> None:
    """The simulator's fast copy of a snapshot equals ``dataclasses.replace`` and shares nothing."""
    gx = Snapshot(active_soc_limit=10.0, min_soc_setting=10.0, max_discharge_max=1e6)
    fast = with_readings(
        gx, soc=11.5, pv_dc_w=640.0, battery_power_w=-35.0, max_discharge_w=-1.0, alive_at=12.0
    )
    assert fast == dataclasses.replace(
        gx, soc=11.5, pv_dc_w=640.0, battery_power_w=-35.0, max_discharge_w=-1.0, alive_at=12.0
    )
    assert gx.soc is None  # the template is untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.soc = 1.0  # type: ignore[misc]
    # The copy is valid only while Snapshot has nothing to run after __init__.
    assert not hasattr(Snapshot, "__post_init__")
