"""The write policy of control.md section 4: whether a target becomes a write to the GX's flash.

How it works: every write of MaxDischargePower rewrites settings.xml on the GX, so a target is
only written when it matters. ``plan_write`` applies these rules in order:

    1. clamp: steering targets to [0, max_inverter_power_w], then everything to the setting's
       live min/max
    2. equal to what the GX reports          -> nothing (a repeat costs a write and changes nothing)
    3. baseline (stand aside, NORMAL, restore) -> write now, outside rate limit and budget
    4. same class and within deadband_w       -> nothing
    5. an increase sooner than min_increase_interval_s after the last one -> nothing yet
    6. hourly budget spent                     -> nothing
    7. otherwise                               -> write (decreases at once)

The budget is a sliding one-hour window rather than a refilling token bucket: a bucket of N
tokens refilled at N per hour lets 2N writes through in one hour, the window never more than N.
Baseline writes count in the window too, but are never refused by it. ``record_write`` updates
the counters once a write went out. Pure: ``now`` is an argument.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from venus_prio.config import ControlConfig, WritesConfig
from venus_prio.model import Snapshot, TargetClass, Write

HOUR_S = 3600.0
DAY_S = 86400.0


@dataclass(frozen=True)
class WriteState:
    """Write history: the times of writes in the last day, and totals."""

    recent: Tuple[float, ...] = ()  # write times within the last DAY_S, oldest first
    total: int = 0
    last_increase_t: Optional[float] = None

    def writes_in(self, now: float, window_s: float) -> int:
        """Return how many writes went out in the last ``window_s`` seconds."""
        # Oldest first, so the writes inside the window are the newest ones: find where they
        # start by bisection (the budget check runs on every planned write and the day's list
        # can hold thousands), then settle the edge with the exact test ``now - t < window_s``.
        recent = self.recent
        first = bisect.bisect_right(recent, now - window_s)
        while first > 0 and now - recent[first - 1] < window_s:
            first -= 1
        while first < len(recent) and now - recent[first] >= window_s:
            first += 1
        return len(recent) - first


@dataclass(frozen=True)
class WriteCounters:
    hour: int
    day: int
    total: int


def counters(state: WriteState, now: float) -> WriteCounters:
    """Return the writes of the last hour, the last day and since start."""
    return WriteCounters(
        hour=state.writes_in(now, HOUR_S), day=state.writes_in(now, DAY_S), total=state.total
    )


def _as_cap(value: float) -> float:
    """Return the value as an inverter cap: -1 (or any negative) means no cap at all."""
    return math.inf if value < 0 else value


def could_be_steering(value: float, control: ControlConfig) -> bool:
    """Return whether venus-prio's controller could have written ``value`` to the setting.

    Its steering targets are ``hold_w``, ``max_inverter_power_w`` or multiples of ``step_w``
    in between. After a crash the journal does not know the last value written (it is not saved
    for every write, issue 10.3): a value on the GX that venus-prio could not have written was
    set by the user while venus-prio was down, and is theirs.
    """
    if value in (control.hold_w, control.max_inverter_power_w):
        return True
    if not 0 <= value <= control.max_inverter_power_w:
        return False
    steps = value / control.step_w
    return abs(steps - round(steps)) < 1e-9


def classify_value(value: float, *, baseline_w: float, hold_w: float) -> TargetClass:
    """Return the class of a value found on the GX."""
    if value == baseline_w:
        return TargetClass.BASELINE
    return TargetClass.HOLD if 0 <= value <= hold_w else TargetClass.POSITIVE


def clamp_target(
    target_w: float,
    target_class: TargetClass,
    *,
    max_w: float,
    setting_min: Optional[float],
    setting_max: Optional[float],
) -> float:
    """Return the value that may be written: within [0, max_w] unless baseline, and the bounds."""
    value = target_w
    if target_class is not TargetClass.BASELINE:
        value = min(max(value, 0.0), max_w)
    return _within(value, setting_min, setting_max)


def baseline_to_write(baseline_w: float, snap: Snapshot) -> float:
    """Return the user's own value as it may be written back: only the setting's bounds apply
    (the user's value is never clipped to venus-prio's own range)."""
    return _within(baseline_w, snap.max_discharge_min, snap.max_discharge_max)


def _within(value: float, setting_min: Optional[float], setting_max: Optional[float]) -> float:
    """Return ``value`` within the bounds the GX publishes for the setting (when it does)."""
    if setting_min is not None and math.isfinite(setting_min):
        value = max(value, setting_min)
    if setting_max is not None and math.isfinite(setting_max):
        value = min(value, setting_max)
    return value


def plan_write(
    *,
    target_w: float,
    target_class: TargetClass,
    current_w: Optional[float],
    baseline_w: float,
    hold_w: float,
    max_w: float,
    setting_min: Optional[float],
    setting_max: Optional[float],
    state: WriteState,
    cfg: WritesConfig,
    now: float,
) -> Optional[Write]:
    """Return the write this target warrants now, or None (see the module docstring)."""
    value = clamp_target(
        target_w, target_class, max_w=max_w, setting_min=setting_min, setting_max=setting_max
    )
    if current_w is not None and value == current_w:
        return None
    if target_class is TargetClass.BASELINE:
        return Write(value_w=value, forced=True, why="hand back the user's own value")
    if current_w is None:
        changed_class = True
        increase = False
    else:
        current_class = classify_value(current_w, baseline_w=baseline_w, hold_w=hold_w)
        changed_class = current_class is not target_class
        if not changed_class and abs(value - current_w) < cfg.deadband_w:
            return None
        increase = value > _as_cap(current_w)
    if (
        increase
        and state.last_increase_t is not None
        and now - state.last_increase_t < cfg.min_increase_interval_s
    ):
        return None
    if state.writes_in(now, HOUR_S) >= cfg.max_writes_per_hour:
        return None
    if current_w is None:
        why = "value on the GX unknown"
    elif increase:
        why = f"raise from {current_w:g} W"
    else:
        why = f"lower from {current_w:g} W"
    return Write(value_w=value, forced=False, why=why)


def record_write(
    state: WriteState, write: Write, *, previous_w: Optional[float], now: float
) -> WriteState:
    """Return the state after ``write`` went out at ``now``."""
    # Oldest first: the writes older than a day lead (copying the whole day, thousands of
    # override writes on a cloudy day, for every write made the history quadratic).
    old, first = state.recent, 0
    while first < len(old) and now - old[first] >= DAY_S:
        first += 1
    recent = (*old[first:], now)
    increase = previous_w is not None and write.value_w > _as_cap(previous_w)
    return WriteState(
        recent=recent,
        total=state.total + 1,
        last_increase_t=now if increase else state.last_increase_t,
    )
