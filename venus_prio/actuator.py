"""Where the discharge cap goes and why (control.md section 8): pure decisions, like ``writes.py``.

How it works: two places on the GX cap the discharge. The hub4 override (RAM, expires by
itself, no flash wear) is preferred; the persisted setting is the fallback, rationed by
``writes.plan_write``. This module decides, for the override:

    plan_override: whether a target becomes an override write (step, deadband, refresh)

The override follows the target every evaluation: targets are rounded down to
``override.step_w``; a write goes out when the value moves by ``override.deadband_w`` or more
(up or down alike: no rate limit, no budget, since RAM wears nothing), when it moves between the
classes hold / positive / released, and at least every ``override.refresh_s`` so it never
expires while venus-prio steers. Handing back (the baseline class) is ``RELEASE_W``. Pure:
``now`` is an argument.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from venus_prio.config import Config, ControlConfig, OverrideConfig
from venus_prio.model import Actuator, TargetClass

RELEASE_W = -1.0  # "no override": hub4control falls back to the setting and stock ESS


@dataclass(frozen=True)
class OverrideWrite:
    """A value to send to the hub4 override (``RELEASE_W`` hands back)."""

    value_w: float
    why: str


def control_for(config: Config, actuator: Actuator) -> ControlConfig:
    """Return the controller's settings for the actuator in use.

    The override caps the DC side (the inverter's losses come out of that DC power, not out of
    the battery), so its PV share is ``override.pv_factor`` x net DC PV in ``override.step_w``
    steps; the setting is an AC-side cap and keeps ``control.pv_factor``.
    """
    if actuator is not Actuator.OVERRIDE:
        return config.control
    override = config.actuator.override
    return dataclasses.replace(
        config.control,
        pv_factor=override.pv_factor,
        pv_offset_w=override.pv_offset_w,
        step_w=override.step_w,
    )


def override_value(
    target_w: float, target_class: TargetClass, *, cfg: OverrideConfig, max_w: float
) -> float:
    """Return the override value for a controller target: stepped down, in [0, max_w]."""
    if target_class is TargetClass.BASELINE:
        return RELEASE_W
    value = min(max(target_w, 0.0), max_w)
    return math.floor(value / cfg.step_w) * cfg.step_w


def plan_override(
    *,
    target_w: float,
    target_class: TargetClass,
    current_w: Optional[float],
    last_write_t: Optional[float],
    cfg: OverrideConfig,
    max_w: float,
    now: float,
) -> Optional[OverrideWrite]:
    """Return the override write this target warrants now, or None (see the module docstring).

    ``current_w`` is the value venus-prio holds on the override (None or negative: none),
    ``last_write_t`` when it last wrote it.
    """
    value = override_value(target_w, target_class, cfg=cfg, max_w=max_w)
    held = current_w is not None and current_w >= 0
    if value < 0:
        return OverrideWrite(RELEASE_W, "release the override") if held else None
    if not held:
        return OverrideWrite(value, "take the override")
    assert current_w is not None
    if (value == 0) != (current_w == 0):
        return OverrideWrite(value, f"{'hold' if value == 0 else 'open'} from {current_w:g} W")
    if abs(value - current_w) >= cfg.deadband_w:
        direction = "raise" if value > current_w else "lower"
        return OverrideWrite(value, f"{direction} from {current_w:g} W")
    if last_write_t is None or now - last_write_t >= cfg.refresh_s:
        return OverrideWrite(current_w, "refresh")
    return None
