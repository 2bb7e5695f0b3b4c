"""The write policy of control.md section 4: deadband, classes, rate limit, budget, clamping."""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from venus_prio.config import WritesConfig
from venus_prio.model import Snapshot, TargetClass, Write
from venus_prio.writes import (
    DAY_S,
    HOUR_S,
    WriteState,
    baseline_to_write,
    classify_value,
    counters,
    plan_write,
    record_write,
)

CFG = WritesConfig(deadband_w=100.0, min_increase_interval_s=60.0)  # control.md section 4
MAX_W = 3000.0
BASELINE = -1.0


def planned(  # noqa: PLR0917  (positional arguments keep the tables short)
    target: float,
    klass: TargetClass,
    current: Optional[float],
    state: Optional[WriteState] = None,
    now: float = 10_000.0,
    cfg: WritesConfig = CFG,
    bounds: Tuple[Optional[float], Optional[float]] = (-1.0, 1_000_000.0),
) -> Optional[Write]:
    """Return ``plan_write``'s write on a GX whose setting is ``current`` (baseline -1)."""
    return plan_write(
        target_w=target,
        target_class=klass,
        current_w=current,
        baseline_w=BASELINE,
        hold_w=0.0,
        max_w=MAX_W,
        setting_min=bounds[0],
        setting_max=bounds[1],
        state=state or WriteState(),
        cfg=cfg,
        now=now,
    )


def plan(*args: Any, **kwargs: Any) -> Optional[float]:
    """Return the value ``planned(*args, **kwargs)`` would write, None for no write."""
    write = planned(*args, **kwargs)
    return None if write is None else write.value_w


P, H, B = TargetClass.POSITIVE, TargetClass.HOLD, TargetClass.BASELINE


@pytest.mark.parametrize(
    ("target", "klass", "current", "expected"),
    [
        (500.0, P, 500.0, None),  # the GX already has it
        (550.0, P, 500.0, None),  # within the deadband
        (599.0, P, 500.0, None),
        (600.0, P, 500.0, 600.0),  # exactly the deadband: written
        (450.0, P, 500.0, None),
        (400.0, P, 500.0, 400.0),  # decreases by the deadband go out at once
        (0.0, H, 50.0, 0.0),  # positive -> hold: class change beats the deadband
        (50.0, P, 0.0, 50.0),  # hold -> positive
        (BASELINE, B, 50.0, BASELINE),  # handing back always goes out
        (50.0, P, BASELINE, 50.0),  # first cap below "no limit" is a decrease
        (500.0, P, None, 500.0),  # GX value unknown: write
        (5000.0, P, 500.0, MAX_W),  # clamped to max_inverter_power_w
        (-200.0, P, 500.0, 0.0),  # and to 0
    ],
)
def test_deadband_and_classes(
    target: float, klass: TargetClass, current: Optional[float], expected: Optional[float]
) -> None:
    assert plan(target, klass, current) == expected


def test_clamped_to_the_settings_live_bounds() -> None:
    assert plan(2500.0, P, 500.0, bounds=(-1.0, 2000.0)) == 2000.0
    assert plan(50_000.0, B, 500.0, bounds=(-1.0, 10_000.0)) == 10_000.0


def test_increases_wait_for_the_interval_decreases_do_not() -> None:
    state = record_write(WriteState(), _w(800.0), previous_w=500.0, now=1000.0)
    assert state.last_increase_t == 1000.0
    assert plan(1000.0, P, 800.0, state, now=1059.0) is None
    assert plan(1000.0, P, 800.0, state, now=1060.0) == 1000.0
    assert plan(500.0, P, 800.0, state, now=1001.0) == 500.0


def test_budget_exhaustion_blocks_steering_but_not_baseline() -> None:
    cfg = WritesConfig(max_writes_per_hour=3)
    state = WriteState()
    for i in range(3):
        state = record_write(state, _w(1000.0 - i * 200), previous_w=None, now=float(i))
    assert plan(100.0, P, 600.0, state, now=10.0, cfg=cfg) is None  # budget spent
    assert plan(BASELINE, B, 600.0, state, now=10.0, cfg=cfg) == BASELINE  # hand-back goes out
    assert plan(100.0, P, 600.0, state, now=3600.0, cfg=cfg) == 100.0  # oldest left the hour


def test_counters_hour_day_total() -> None:
    state = WriteState()
    for t in (0.0, 100.0, 4000.0, 90_000.0):
        state = record_write(state, _w(100.0), previous_w=200.0, now=t)
    c = counters(state, 90_000.0)
    assert (c.hour, c.day, c.total) == (1, 2, 4)


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(
        st.one_of(st.just(0.0), st.just(3600.0), st.floats(min_value=0, max_value=40_000)),
        max_size=60,
    ),
    window=st.sampled_from([HOUR_S, DAY_S, 0.1, 1e-9]),
    since_last=st.one_of(st.just(0.0), st.just(3600.0), st.floats(min_value=0, max_value=1e5)),
)
def test_the_history_counts_and_forgets_exactly_as_defined(
    gaps: List[float], window: float, since_last: float
) -> None:
    # writes_in bisects and record_write drops from the front (the history is oldest first):
    # both must agree with the plain definitions, edges included (gaps of exactly an hour).
    state = WriteState()
    times: List[float] = []
    now = 1_000.1
    for gap in gaps:
        now += gap
        state = record_write(state, _w(100.0), previous_w=None, now=now)
        times = [t for t in times if now - t < DAY_S] + [now]
        assert state.recent == tuple(times)
    now += since_last
    assert state.writes_in(now, window) == sum(1 for t in times if now - t < window)


@pytest.mark.parametrize(
    ("value", "klass"),
    [(BASELINE, B), (0.0, H), (1.0, P), (2500.0, P), (-5.0, P)],
)
def test_classify_value(value: float, klass: TargetClass) -> None:
    assert classify_value(value, baseline_w=BASELINE, hold_w=0.0) is klass


def _w(value: float) -> Write:
    return Write(value_w=value, forced=False, why="test")


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=300),  # seconds since the previous step
            st.one_of(
                st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
                st.just(BASELINE),
            ),
            st.sampled_from([P, H, B]),
        ),
        max_size=200,
    ),
    budget=st.integers(min_value=1, max_value=40),
)
def test_steering_writes_never_exceed_the_hourly_budget(
    steps: List[Tuple[float, float, TargetClass]], budget: int
) -> None:
    cfg = WritesConfig(max_writes_per_hour=budget)
    state = WriteState()
    current: Optional[float] = BASELINE
    now = 0.0
    steering: List[float] = []
    for dt, drawn_target, klass in steps:
        now += dt
        target = BASELINE if klass is B else drawn_target
        write = planned(target, klass, current, state, now, cfg)
        if write is None:
            continue
        assert write.value_w == BASELINE or 0.0 <= write.value_w <= MAX_W
        assert write.forced == (klass is B)
        if not write.forced:
            steering.append(now)
            assert sum(1 for t in steering if now - t < 3600.0) <= budget
        state = record_write(state, write, previous_w=current, now=now)
        current = write.value_w


@pytest.mark.parametrize(
    ("baseline", "bounds", "written"),
    [
        (4500.0, (-1.0, 1_000_000.0), 4500.0),  # above max_inverter_power_w: still the user's
        (-1.0, (-1.0, 1_000_000.0), -1.0),  # no limit: -1 goes back as -1
        (4500.0, (-1.0, 4000.0), 4000.0),  # the GX's own bounds are the only ones
        (4500.0, (None, None), 4500.0),  # bounds not published
    ],
)
def test_the_users_value_goes_back_within_the_settings_bounds_only(
    baseline: float, bounds: Tuple[Optional[float], Optional[float]], written: float
) -> None:
    snap = Snapshot(max_discharge_min=bounds[0], max_discharge_max=bounds[1])
    assert baseline_to_write(baseline, snap) == written
