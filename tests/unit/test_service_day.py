"""Today's figures and the day's recording in the service: the stock-ESS estimate is the
simulator's stock run, and the service rides out midnight while disconnected, a clock that
jumps, DST days, an unwritable recordings directory and a full disk.

Against ``MemorySource`` with both clocks in the test's hand: the monotonic one the controller
steers by (``Clock``) and the wall clock of the ledger and the recording (``Wall``; UTC as the
local zone unless a test sets one). Recordings are flushed by the service's own shutdown
(``stop``) or, for the tests about a running service, by its recording task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import gzip
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Awaitable, Callable, List, Optional, TypeVar

import pytest

from tests.recording_tools import JUNE_1, local_zone, stretch, utc_day
from tests.unit.test_service_memory import BASELINE, Clock, gx_state, make_config
from venus_prio import service as service_module
from venus_prio.recorder import RETRY_S, LocalDayFn, system_local_day
from venus_prio.service import Service
from venus_prio.sim.runner import run_scenario
from venus_prio.sim.scenarios import load_profile_csv
from venus_prio.status import DailyBenefit
from venus_prio.venus import paths
from venus_prio.venus.source import MemorySource

ROOT = Path(__file__).resolve().parents[2]
REAL_DAY = ROOT / "tests" / "data" / "real-days" / "real-midc-nwtc-2018-10-14.csv"
DAY = 86400.0
NOON = JUNE_1 + 12 * 3600
WS_PER_KWH = 3_600_000.0
SOC = 50.0
FLOOR = 10.0  # gx_state's Minimum SOC: the floor (auto)
T = TypeVar("T")


class Wall:
    """The wall clock (epoch seconds) the test moves by hand, jumps included."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Rig:
    """A service over a ``MemorySource`` near its floor, both clocks in the test's hand."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        wall: float,
        local_day: LocalDayFn = utc_day,
        tick_s: float = 1.0,
        soc: float = SOC,
    ) -> None:
        self.clock = Clock()
        self.wall = Wall(wall)
        self.source = MemorySource(setting_w=BASELINE)
        gx_state(self.source, self.clock, soc=soc)
        self.config = make_config(tmp_path, tick_s=tick_s)
        self.recordings = tmp_path / "recordings"
        self._local_day = local_day
        self._service: Optional[Service] = None

    def play(self, scenario: Callable[[], Awaitable[T]]) -> T:
        """Run ``scenario`` in a fresh event loop with the service made inside it (on 3.8 its
        asyncio primitives belong to the loop that was running when they were made)."""

        async def main() -> T:
            self._service = Service(
                config=self.config,
                source=self.source,
                clock=self.clock,
                wall_clock=self.wall,
                local_day=self._local_day,
            )
            return await scenario()

        return asyncio.run(main())

    @property
    def service(self) -> Service:
        assert self._service is not None, "only while or after it plays"
        return self._service

    def set(self, *, pv_w: float = 1000.0, load_w: float = 400.0, battery_w: float = 500.0) -> None:
        store = self.source.store
        store.set(paths.PV_DC, pv_w)
        store.set(paths.AC_LOAD.items[0], load_w)
        store.set(paths.BATTERY_POWER, battery_w)

    async def step(
        self, seconds: float = 10.0, *, connected: bool = True, wall: Optional[float] = None
    ) -> None:
        """Let ``seconds`` pass on both clocks (the wall clock to ``wall`` when given: a jump)
        and evaluate once, with the GX connected and alive, or not."""
        self.clock.advance(seconds)
        self.wall.t = self.wall.t + seconds if wall is None else wall
        self.source.store.set_connected(connected)
        if connected:
            self.source.store.mark_alive(self.clock())
        await self.service.evaluate()

    async def steps(self, count: int, seconds: float = 10.0, *, connected: bool = True) -> None:
        for _ in range(count):
            await self.step(seconds, connected=connected)

    @property
    def benefit(self) -> DailyBenefit:
        benefit = self.service.status.benefit
        assert benefit is not None
        return benefit

    async def stop(self) -> int:
        """Run the service's shutdown (a last evaluation, the hand-back and the final flush of
        the recording) at the wall clock's time."""
        task = asyncio.ensure_future(self.service.run())
        self.service.request_stop()
        return await asyncio.wait_for(task, 5.0)

    def days(self) -> List[str]:
        return sorted(p.name for p in self.recordings.iterdir())


def kwh(watts: float, seconds: float) -> float:
    return watts * seconds / WS_PER_KWH


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def rows_of(path: Path) -> List[List[str]]:
    text = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return [line.split(",") for line in text.decode("utf-8").splitlines()[1:]]


# -- the stock-ESS estimate is the simulator's stock run ---------------------------------------


def test_the_services_stock_estimate_is_the_simulators_stock_run(tmp_path: Path) -> None:
    # Eight hours of a measured day (a row a minute), evaluated every 10 s as the service does
    # between the GX's changes; the estimate must be the simulator's stock run of those hours,
    # from the SOC the service saw at the start (just above stock's reserve: it saws there),
    # at the reserve floor + prio_band.
    profile = stretch(load_profile_csv(REAL_DAY), 8 * 3600, 16 * 3600)
    start_soc = 16.0
    rig = Rig(tmp_path, wall=JUNE_1 + profile.start_s, soc=start_soc)

    async def scenario() -> None:
        ends = (*profile.time_s[1:], profile.end_s)
        rows = zip(profile.time_s, profile.pv_dc_w, profile.load_w, ends)
        for start, pv_w, load_w, end in rows:
            rig.set(pv_w=pv_w, load_w=load_w)
            t = start
            while t < end:
                await rig.step(wall=JUNE_1 + t)
                t += 10.0
        await rig.step(wall=JUNE_1 + profile.end_s)  # the last row's inputs run to the end

    rig.play(scenario)
    decision = rig.service.status.decision
    assert decision is not None and decision.floor == FLOOR
    config = rig.config
    terms = dataclasses.replace(
        config,
        sim=dataclasses.replace(
            config.sim, reserve_soc=FLOOR + config.control.prio_band, start_soc=start_soc
        ),
    )
    direct, _trace = run_scenario(profile, terms, "stock")
    assert direct.throughput_kwh > 1.0 and direct.micro_cycles >= 1  # a stretch with work
    # One model on the same floats in the same order: equal, not merely close.
    assert rig.benefit.stock_throughput_kwh == direct.throughput_kwh
    assert rig.benefit.stock_micro_cycles == direct.micro_cycles


# -- midnight, clock jumps, DST ----------------------------------------------------------------


def test_midnight_while_disconnected_starts_the_new_day_on_the_first_current_snapshot(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path, wall=JUNE_1 + DAY - 300)  # 23:55

    async def scenario() -> None:
        rig.set(battery_w=500.0)
        await rig.steps(20)  # to 23:58:20
        await rig.step(connected=False)  # the GX goes away: its last value held until now
        before = rig.benefit
        await rig.steps(29, connected=False)  # over midnight, to 00:03:20
        # No current snapshot yet: still yesterday's figures, and nothing counted since.
        assert rig.benefit == before
        await rig.step()  # back at 00:03:30
        today = rig.benefit
        assert epoch(today.day_started) == JUNE_1 + DAY  # today's midnight: counted since
        assert (today.throughput_kwh, today.stock_throughput_kwh) == (0.0, 0.0)
        await rig.step()
        assert rig.benefit.throughput_kwh == pytest.approx(kwh(500, 10))
        assert await rig.stop() == 0

    rig.play(scenario)
    # The recording closed yesterday; today's file shows the gap: rows with only the reason.
    assert rig.days() == ["2025-06-01.csv.gz", "2025-06-02.csv"]
    today = rows_of(rig.recordings / "2025-06-02.csv")
    gap = [row for row in today if row[13] == "STAND_ASIDE_DISCONNECTED"]
    assert gap and all(row[1:8] == [""] * 7 for row in gap)  # pv, load ... dc_system: empty
    assert today[-1][4] == "50.0"  # measured again after the reconnect
    yesterday = rows_of(rig.recordings / "2025-06-01.csv.gz")
    assert float(yesterday[-1][0]) < DAY


@pytest.mark.parametrize(
    "jump_to",
    [pytest.param(NOON + 6 * 3600, id="forward-6h"), pytest.param(NOON - 3600, id="back-1h")],
)
def test_a_clock_jump_within_the_day_counts_no_time_it_did_not_see(
    tmp_path: Path, jump_to: float
) -> None:
    rig = Rig(tmp_path, wall=NOON)

    async def scenario() -> None:
        rig.set(battery_w=2000.0)
        await rig.steps(6)
        before = rig.benefit
        assert before.throughput_kwh == pytest.approx(kwh(2000, 50))  # from the first step on
        await rig.step(wall=jump_to)
        jumped = rig.benefit
        # Forward: at most the hold (MAX_HOLD_S) of the last value; back: nothing at all.
        gained = jumped.throughput_kwh - before.throughput_kwh
        assert 0.0 <= gained <= kwh(2000, 60)
        assert jumped.day_started == before.day_started  # the same day, not a new one
        stock = jumped.stock_throughput_kwh
        assert stock is not None and 0.0 <= stock <= kwh(3000, 60 + 60)
        await rig.steps(3)
        assert rig.benefit.throughput_kwh == pytest.approx(jumped.throughput_kwh + kwh(2000, 30))
        assert await rig.stop() == 0

    rig.play(scenario)
    times = [float(row[0]) for row in rows_of(rig.recordings / "2025-06-01.csv")]
    assert times == sorted(times)  # a row from before the jump back is never behind a later one


def test_ntp_after_boot_from_1970_records_from_the_real_date_and_deletes_no_recent_day(
    tmp_path: Path,
) -> None:
    # The days recorded before: within keep_days (14) of today, so each must stay.
    recent = [f"2025-05-{day:02d}.csv.gz" for day in range(20, 32)]
    rig = Rig(tmp_path, wall=1000.0)  # a GX's clock before NTP
    rig.recordings.mkdir()
    for name in recent:
        (rig.recordings / name).write_bytes(gzip.compress(b"time_s,pv_dc_w,load_w\n0,0,0\n"))

    async def scenario() -> None:
        rig.set(battery_w=1000.0)
        await rig.steps(6)
        assert rig.benefit.day_started.startswith("1970-01-01")
        await rig.step(wall=NOON)  # NTP
        jumped = rig.benefit
        assert epoch(jumped.day_started) == NOON  # counted from the jump, not from midnight
        assert (jumped.throughput_kwh, jumped.stock_throughput_kwh) == (0.0, 0.0)
        await rig.steps(6)
        assert rig.benefit.throughput_kwh == pytest.approx(kwh(1000, 60))
        stock = rig.benefit.stock_throughput_kwh
        assert stock is not None and 0.0 < stock <= kwh(3000, 60)
        # Then a jump to 2030 and back, as a bad NTP answer might.
        await rig.step(wall=NOON + 5 * 365 * DAY)
        await rig.step(wall=NOON + 70)
        assert await rig.stop() == 0

    rig.play(scenario)
    days = rig.days()
    assert set(recent) <= set(days)
    assert not [d for d in days if d.startswith("1970")]  # nothing recorded before NTP
    assert days == [*recent, "2025-06-01.csv", "2030-05-31.csv"]  # the bad answer's row too
    # Today's rows from the jump on, every 10 s: the one after the jump back too.
    today = [float(row[0]) for row in rows_of(rig.recordings / "2025-06-01.csv")]
    assert today == [NOON - JUNE_1 + 10.0 * i for i in range(8)]


@pytest.mark.parametrize(
    ("midnight_utc", "day", "length_h", "offsets"),
    [
        pytest.param(1743289200.0, "2025-03-30", 23, ("+01:00", "+02:00"), id="23h"),
        pytest.param(1761429600.0, "2025-10-26", 25, ("+02:00", "+01:00"), id="25h"),
    ],
)
def test_a_dst_day_starts_and_ends_at_local_midnight_with_its_offset(
    tmp_path: Path, midnight_utc: float, day: str, length_h: int, offsets: List[str]
) -> None:
    with local_zone("Europe/Berlin"):
        rig = Rig(tmp_path, wall=midnight_utc - 60, local_day=system_local_day)

        async def scenario() -> List[str]:
            started = []
            await rig.steps(7)  # over midnight into the DST day
            started.append(rig.benefit.day_started)
            await rig.step(wall=midnight_utc + length_h * 3600 - 10)  # its last seconds
            await rig.step(wall=midnight_utc + length_h * 3600 + 10)  # and over its end
            started.append(rig.benefit.day_started)
            assert await rig.stop() == 0
            return started

        started = rig.play(scenario)
    next_day = f"{day[:-2]}{int(day[-2:]) + 1:02d}"
    assert started == [f"{day}T00:00:00{offsets[0]}", f"{next_day}T00:00:00{offsets[1]}"]
    times = [float(row[0]) for row in rows_of(rig.recordings / f"{day}.csv.gz")]
    assert times[:2] == [0.0, 10.0]
    assert times[-1] == length_h * 3600 - 10.0  # elapsed seconds: 82790 or 89990


# -- the recordings directory fails while the service steers -----------------------------------


FLUSH_WAIT_S = 10.0  # a worker thread's write of a few rows, on a machine as busy as CI's


def unwritable(recordings: Path) -> None:
    recordings.write_text("a file where the directory should be")  # stops root too


def full_disk(recordings: Path) -> None:
    recordings.mkdir()
    # The kernel's own full device: every write to today's file fails with ENOSPC.
    os.symlink("/dev/full", recordings / "2025-06-01.csv")


async def flushed_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Wait until the recording task's flush, run in a worker thread, has warned.

    The flush is off the event loop by design, so its end is not a point the loop reaches by
    itself: a fixed sleep here is a race with the thread on a loaded machine (it failed once in
    a loaded ``make test``). The warning is the one thing the service shows of a failed flush.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FLUSH_WAIT_S
    while "recording paused" not in caplog.text:
        assert loop.time() < deadline, f"no warning of the failed flush in {FLUSH_WAIT_S} s"
        await asyncio.sleep(0.001)


@pytest.mark.parametrize(
    ("break_it", "why"),
    [
        pytest.param(unwritable, os.strerror(errno.EEXIST), id="unwritable"),
        pytest.param(full_disk, os.strerror(errno.ENOSPC), id="ENOSPC"),
    ],
)
def test_a_recording_that_cannot_be_written_is_one_warning_and_steering_goes_on(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    break_it: object,
    why: str,
) -> None:
    monkeypatch.setattr(service_module, "RECORD_POLL_S", 0.001)  # flush as soon as due
    rig = Rig(tmp_path, wall=NOON, tick_s=0.05, soc=12.0)  # near the floor: steering
    break_it(rig.recordings)  # type: ignore[operator]

    steps = int(2 * RETRY_S / 61) + 2

    async def scenario() -> None:
        task = asyncio.ensure_future(rig.service.run())
        try:
            # Twelve minutes of the wall clock in 61 s steps: a flush is due at each, the first
            # fails, the retry after RETRY_S fails again. The PV falls 150 W a step, so each
            # step's share (0.8 * PV - 20) falls beyond the deadband: a write every step.
            for i in range(steps):
                rig.set(pv_w=2000.0 - 150.0 * i)
                await rig.step(61.0)
                if i == 0:  # the first flush failed while the service runs: steering goes on
                    await flushed_with_warning(caplog)
        finally:
            rig.service.request_stop()
            assert await asyncio.wait_for(task, 5.0) == 0

    with caplog.at_level(logging.WARNING):
        rig.play(scenario)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("recording paused: cannot write")
    assert why in warnings[0]
    steered = rig.source.writes[:-1]  # the last is the hand-back on stop
    assert len(steered) == steps and steered == sorted(steered, reverse=True)
    assert rig.service.status.benefit is not None  # today's figures go on too
