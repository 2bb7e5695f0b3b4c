"""actuator.plan_override and control_for: the override's step, deadband, refresh and release."""

from __future__ import annotations

import functools
from typing import Optional

import pytest

from venus_prio.actuator import RELEASE_W, control_for, plan_override
from venus_prio.config import ActuatorConfig, Config, ControlConfig, OverrideConfig
from venus_prio.model import Actuator, TargetClass

CFG = OverrideConfig(step_w=10.0, deadband_w=20.0, refresh_s=5.0)  # control.md section 8
HOLD, POS, BASE = TargetClass.HOLD, TargetClass.POSITIVE, TargetClass.BASELINE


@pytest.mark.parametrize(
    ("target", "klass", "current", "last_t", "expected"),
    [
        (1234.0, POS, None, None, 1230.0),  # take it, stepped down
        (5000.0, POS, None, None, 3000.0),  # never above max_w
        (0.0, HOLD, None, None, 0.0),
        (2500.0, BASE, 500.0, 9.0, RELEASE_W),  # hand back: release
        (2500.0, BASE, None, None, None),  # nothing of ours: nothing to release
        (2500.0, BASE, -1.0, 9.0, None),
        (10.0, POS, 0.0, 9.0, 10.0),  # hold -> positive, within the deadband
        (0.0, HOLD, 10.0, 9.0, 0.0),  # positive -> hold
        (515.0, POS, 500.0, 9.0, None),  # within the deadband, refreshed 1 s ago
        (480.0, POS, 500.0, 9.0, 480.0),  # decreases and increases alike at 20 W
        (520.0, POS, 500.0, 9.0, 520.0),
        (505.0, POS, 500.0, 5.0, 500.0),  # refresh after refresh_s: the value held
        (505.0, POS, 500.0, 5.1, None),
    ],
)
def test_plan_override(
    target: float,
    klass: TargetClass,
    current: Optional[float],
    last_t: Optional[float],
    expected: Optional[float],
) -> None:
    plan = functools.partial(plan_override, cfg=CFG, max_w=3000.0, now=10.0)
    write = plan(target_w=target, target_class=klass, current_w=current, last_write_t=last_t)
    assert (None if write is None else write.value_w) == expected


def test_control_for_gives_the_override_its_dc_side_share() -> None:
    config = Config(
        control=ControlConfig(max_inverter_power_w=3000.0, pv_factor=0.8, step_w=50.0),
        actuator=ActuatorConfig(
            override=OverrideConfig(pv_factor=1.05, pv_offset_w=-5.0, step_w=10.0)
        ),
    )
    override = control_for(config, Actuator.OVERRIDE)
    assert (override.pv_factor, override.pv_offset_w, override.step_w) == (1.05, -5.0, 10.0)
    assert control_for(config, Actuator.SETTING) is config.control
    assert control_for(config, Actuator.NONE) is config.control
