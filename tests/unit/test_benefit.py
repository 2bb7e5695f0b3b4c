"""Today's ledger (``benefit.DayLedger``): the measured throughput, the stock-ESS shadow beside
it, and the local day they count. The clock is an argument (UTC as the local zone)."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

import pytest

from tests.recording_tools import JUNE_1, utc_day
from venus_prio.benefit import DayLedger
from venus_prio.config import default_config
from venus_prio.model import Snapshot
from venus_prio.sim.shadow import MAX_HOLD_S
from venus_prio.status import DailyBenefit

NOON = JUNE_1 + 12 * 3600
DAY = 86400.0
WS_PER_KWH = 3_600_000.0
FLOOR = 10.0


def snap(
    battery_w: Optional[float] = 1000.0,
    *,
    soc: Optional[float] = 50.0,
    pv_dc_w: float = 1500.0,
    load_w: Optional[float] = 500.0,
) -> Snapshot:
    return Snapshot(
        soc=soc, pv_dc_w=pv_dc_w, ac_load_w=load_w, battery_power_w=battery_w, connected=True
    )


def ledger() -> DayLedger:
    return DayLedger(default_config(), local_day=utc_day)


def benefit_of(book: DayLedger) -> DailyBenefit:
    benefit = book.benefit
    assert benefit is not None
    return benefit


def kwh(watts: float, seconds: float) -> float:
    return watts * seconds / WS_PER_KWH


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def test_battery_power_is_held_until_the_next_value_for_at_most_max_hold_s() -> None:
    book = ledger()
    book.observe(NOON, snap(1000.0), current=True, floor=FLOOR)
    book.observe(NOON + 10, snap(-500.0), current=True, floor=FLOOR)  # discharge counts too
    assert benefit_of(book).throughput_kwh == pytest.approx(kwh(1000, 10))
    book.observe(NOON + 30, snap(-500.0), current=True, floor=FLOOR)
    assert benefit_of(book).throughput_kwh == pytest.approx(kwh(1000, 10) + kwh(500, 20))
    # Ten minutes without an evaluation: the last value counts for MAX_HOLD_S only.
    book.observe(NOON + 630, snap(0.0), current=True, floor=FLOOR)
    expected = kwh(1000, 10) + kwh(500, 20) + kwh(500, MAX_HOLD_S)
    assert benefit_of(book).throughput_kwh == pytest.approx(expected)


def test_a_snapshot_that_is_not_current_counts_nothing() -> None:
    book = ledger()
    assert book.benefit is None  # nothing seen yet: nothing to publish
    book.observe(NOON, snap(1000.0), current=False, floor=FLOOR)
    assert book.benefit is None  # an old value is no measurement
    book.observe(NOON + 10, snap(1000.0), current=True, floor=FLOOR)
    book.observe(NOON + 20, snap(1000.0), current=False, floor=FLOOR)  # stale from here
    counted = benefit_of(book).throughput_kwh
    assert counted == pytest.approx(kwh(1000, 10))  # up to the moment it went stale
    book.observe(NOON + 50, snap(1000.0), current=False, floor=FLOOR)
    book.observe(NOON + 55, snap(1000.0), current=True, floor=FLOOR)  # back: counts from here
    assert benefit_of(book).throughput_kwh == counted
    book.observe(NOON + 60, snap(1000.0), current=True, floor=FLOOR)
    assert benefit_of(book).throughput_kwh == pytest.approx(counted + kwh(1000, 5))


def test_an_unknown_battery_power_counts_nothing() -> None:
    book = ledger()
    book.observe(NOON, snap(None), current=True, floor=FLOOR)
    book.observe(NOON + 30, snap(800.0), current=True, floor=FLOOR)
    assert benefit_of(book).throughput_kwh == 0.0


@pytest.mark.parametrize(("soc", "floor"), [(None, FLOOR), (50.0, None)])
def test_the_shadow_starts_once_the_soc_and_the_floor_are_known(
    soc: Optional[float], floor: Optional[float]
) -> None:
    book = ledger()
    book.observe(NOON, snap(soc=soc), current=True, floor=floor)
    book.observe(NOON + 30, snap(soc=soc), current=True, floor=floor)
    first = benefit_of(book)
    assert (first.stock_throughput_kwh, first.stock_micro_cycles, first.avoided_kwh) == (None,) * 3
    assert first.throughput_kwh > 0  # the measured figure does not wait for the shadow
    book.observe(NOON + 60, snap(), current=True, floor=FLOOR)
    assert benefit_of(book).stock_throughput_kwh == 0.0  # started, nothing run yet
    book.observe(NOON + 90, snap(), current=True, floor=FLOOR)
    # 1500 W of PV, 500 W of loads: stock ESS charges with the surplus, ~1 kW for 30 s.
    assert benefit_of(book).stock_throughput_kwh == pytest.approx(kwh(1000, 30), rel=0.1)


def test_the_shadow_holds_stock_at_the_reserve_the_user_keeps() -> None:
    # At floor + prio_band (10 + 5) stock ESS blocks the discharge: the loads come from the
    # grid, so the shadow moves nothing while the battery really discharges 500 W.
    book = ledger()
    night = snap(-500.0, soc=15.0, pv_dc_w=0.0, load_w=500.0)
    for t in range(0, 301, 10):
        book.observe(NOON + t, night, current=True, floor=FLOOR)
    benefit = benefit_of(book)
    assert benefit.stock_throughput_kwh == 0.0
    assert benefit.throughput_kwh == pytest.approx(kwh(500, 300))
    assert benefit.avoided_kwh == pytest.approx(-kwh(500, 300))  # may well be negative


def test_avoided_is_the_stock_estimate_less_the_measured_throughput() -> None:
    book = ledger()
    for t in range(0, 601, 10):
        book.observe(NOON + t, snap(200.0), current=True, floor=FLOOR)
    benefit = benefit_of(book)
    assert benefit.stock_throughput_kwh is not None and benefit.stock_throughput_kwh > 0
    assert benefit.avoided_kwh == benefit.stock_throughput_kwh - benefit.throughput_kwh


def test_a_new_local_day_starts_at_its_midnight_the_first_at_the_start() -> None:
    book = ledger()
    start = JUNE_1 + DAY - 600  # the service starts at 23:50
    for t in range(0, 591, 10):
        book.observe(start + t, snap(), current=True, floor=FLOOR)
    first = benefit_of(book)
    assert epoch(first.day_started) == start  # not a midnight it did not see
    assert first.throughput_kwh == pytest.approx(kwh(1000, 590))
    assert first.stock_throughput_kwh is not None and first.stock_throughput_kwh > 0
    book.observe(start + 610, snap(soc=48.0), current=True, floor=FLOOR)  # 00:00:10
    second = benefit_of(book)
    assert epoch(second.day_started) == JUNE_1 + DAY
    assert (second.throughput_kwh, second.stock_throughput_kwh) == (0.0, 0.0)
    book.observe(start + 620, snap(soc=48.0), current=True, floor=FLOOR)
    assert benefit_of(book).throughput_kwh == pytest.approx(kwh(1000, 10))


def test_a_new_day_after_a_clock_jump_counts_from_the_jump() -> None:
    # A GX's clock before NTP: 1970, then the real date. The day was not counted from its
    # midnight, so it does not claim to be.
    book = ledger()
    book.observe(1000.0, snap(), current=True, floor=FLOOR)
    assert benefit_of(book).day_started.startswith(datetime.fromtimestamp(1000.0).strftime("%Y"))
    book.observe(NOON, snap(), current=True, floor=FLOOR)
    benefit = benefit_of(book)
    assert epoch(benefit.day_started) == NOON
    assert (benefit.throughput_kwh, benefit.stock_throughput_kwh) == (0.0, 0.0)
