"""InputStore: the AC loads, grid and AC PV of the snapshot, summed over the phases; the snapshot
kept until something in it changes."""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from venus_prio.venus import paths
from venus_prio.venus.paths import PhaseSum, VenusItem
from venus_prio.venus.source import InputStore, phase_total

L1, L2, L3 = paths.GRID.items
LOAD1, LOAD2, LOAD3 = paths.AC_LOAD.items
OUT1, OUT2, OUT3, ON_GRID1, ON_GRID2, ON_GRID3 = paths.PV_AC.items


def store_with(values: Sequence[Tuple[VenusItem, Optional[float]]]) -> InputStore:
    store = InputStore()
    for item, value in values:
        store.set(item, value)
    return store


def test_a_fresh_store_knows_no_sum() -> None:
    snap = InputStore().snapshot()
    assert (snap.ac_load_w, snap.grid_w, snap.pv_ac_w, snap.battery_kwh) == (None,) * 4


def test_three_phases_are_summed() -> None:
    snap = store_with([(L1, 1200.0), (L2, -300.0), (L3, 50.5)]).snapshot()
    assert snap.grid_w == pytest.approx(950.5)


def test_pv_on_output_and_on_grid_are_both_ac_pv() -> None:
    snap = store_with([(OUT1, 800.0), (ON_GRID3, 450.0)]).snapshot()
    assert snap.pv_ac_w == 1250.0


def test_a_single_phase_system_sums_its_one_phase() -> None:
    # L2 and L3 invalid (null: systemcalc has nothing there) count as 0.
    snap = store_with([(LOAD1, 640.0), (LOAD2, None), (LOAD3, None)]).snapshot()
    assert snap.ac_load_w == 640.0


def test_an_absent_phase_counts_as_zero() -> None:
    # Never published at all (absent) is the same as invalid for the sum.
    assert store_with([(L2, -120.0)]).snapshot().grid_w == -120.0


def test_all_phases_invalid_is_unknown_not_zero() -> None:
    store = store_with([(L1, 500.0), (L2, 20.0)])
    store.set(L1, None)
    store.set(L2, None)
    snap = store.snapshot()
    assert snap.grid_w is None
    # No PV inverter at all (every AC PV phase null): unknown, never an invented 0 W.
    assert store_with([(item, None) for item in paths.PV_AC.items]).snapshot().pv_ac_w is None


def test_a_measured_zero_is_zero() -> None:
    assert store_with([(OUT1, 0.0)]).snapshot().pv_ac_w == 0.0


def test_the_sum_follows_each_change() -> None:
    store = store_with([(L1, 100.0), (L2, 200.0)])
    store.set(L2, 250.0)
    assert store.snapshot().grid_w == 350.0
    store.set(L1, None)  # the phase became invalid: its old value is not kept
    assert store.snapshot().grid_w == 250.0


def test_consumption_is_clipped_at_zero_the_grid_is_not() -> None:
    snap = store_with([(LOAD1, 40.0), (LOAD2, -90.0), (L1, -2000.0)]).snapshot()
    assert snap.ac_load_w == 0.0
    assert snap.grid_w == -2000.0  # export


def test_a_phase_change_does_not_wake_the_service() -> None:
    store = InputStore()
    for item in (*paths.AC_LOAD.items, *paths.GRID.items, *paths.PV_AC.items):
        store.set(item, 123.0)
    assert not store.changed.is_set()
    store.set(paths.SOC, 50.0)
    assert store.changed.is_set()  # the store does wake for what the controller reads


def test_forgotten_values_forget_the_sums() -> None:
    # A reconnect: the last connection's values are not current, nor are their sums.
    store = store_with([(LOAD1, 300.0), (L1, 100.0), (OUT1, 50.0)])
    store.forget_values()
    snap = store.snapshot()
    assert (snap.ac_load_w, snap.grid_w, snap.pv_ac_w) == (None, None, None)


def reference_total(values: Sequence[Optional[float]], non_negative: bool) -> Optional[float]:
    known = [v for v in values if v is not None]
    if not known:
        return None
    total = sum(known)
    return max(total, 0.0) if non_negative else total


@given(
    st.lists(st.none() | st.floats(-1e5, 1e5, allow_nan=False), min_size=0, max_size=6),
    st.booleans(),
)
def test_phase_total_matches_the_rule(
    values: Sequence[Optional[float]], non_negative: bool
) -> None:
    expected = reference_total(values, non_negative)
    got = phase_total(values, non_negative=non_negative)
    assert (got is None) == (expected is None)
    if expected is not None:
        assert got == pytest.approx(expected, abs=1e-6)


def test_every_sum_is_in_the_snapshot() -> None:
    # A new PhaseSum must reach the Snapshot: each sum names a Snapshot field that the store
    # fills from its phases.
    store = InputStore()
    for phase_sum in paths.PHASE_SUMS:
        assert isinstance(phase_sum, PhaseSum)
        for item in phase_sum.items:
            store.set(item, 10.0)
    snap = store.snapshot()
    for phase_sum in paths.PHASE_SUMS:
        assert getattr(snap, phase_sum.field) == 10.0 * len(phase_sum.items)


def test_the_snapshot_is_kept_until_something_in_it_changes() -> None:
    store = store_with([(paths.SOC, 50.0), (paths.PV_DC, 800.0)])
    first = store.snapshot()
    assert store.snapshot() is first
    store.set(paths.SOC, 50.0)  # the same value: nothing changed
    assert store.snapshot() is first
    store.set(paths.SOC, 51.0)
    assert store.snapshot().soc == 51.0
    store.set(LOAD1, 300.0)  # a phase: the sum changes too
    assert store.snapshot().ac_load_w == 300.0
    store.mark_alive(7.0)
    assert store.snapshot().alive_at == 7.0
    store.set_connected(True)
    assert store.snapshot().connected is True
    store.set_override_present(False)
    assert store.snapshot().override_present is False
    store.set_bounds(-1.0, 5000.0)
    assert (store.snapshot().max_discharge_min, store.snapshot().max_discharge_max) == (
        -1.0,
        5000.0,
    )
    # The attributes are public: assigning one directly must not leave a stale snapshot.
    store.alive_at = 9.0
    assert store.snapshot().alive_at == 9.0
    store.forget_values()
    snap = store.snapshot()
    assert (snap.soc, snap.ac_load_w, snap.max_discharge_max) == (None, None, None)
