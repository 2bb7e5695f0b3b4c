"""The recorder's files: rows, flushes, midnight, old days, and every fault it must survive.

The clock is an argument: a fake local time (UTC as the local zone, or a real zone set with
TZ for the DST days) and ``now`` values chosen by the test; nothing waits.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import time
from pathlib import Path
from typing import IO, Any, Iterator, List

import pytest

from tests.recording_tools import JUNE_1, local_zone, utc_day
from venus_prio.model import Snapshot
from venus_prio.recorder import (
    FLUSH_S,
    RETRY_S,
    Recorder,
    open_file,
    system_local_day,
)
from venus_prio.recording import HEADER, LocalDay
from venus_prio.status import ServiceStatus
from venus_prio.writes import WriteCounters

DAY = 86400.0
STATUS = ServiceStatus(
    decision=None,
    last_write=None,
    counters=WriteCounters(hour=0, day=0, total=0),
    baseline_w=None,
    mode="dry-run",
    enabled=True,
    dry_run=True,
    connected=True,
)


def recorder(directory: Path, **kwargs: Any) -> Recorder:
    options: dict = {"interval_s": 10.0, "keep_days": 14, "local_day": utc_day, **kwargs}  # type: ignore[type-arg]
    return Recorder(directory=directory, **options)


def run(
    rec: Recorder, start: float, seconds: float, *, step: float = 1.0, stop: bool = True
) -> None:
    """Offer a row every ``step`` s and flush when due, as the service does; ``stop``: flush
    once more at the end, as the service does on shutdown."""
    t = start
    while t < start + seconds:
        if rec.due(t):
            rec.add(t, snapshot=Snapshot(soc=50.0, pv_dc_w=100.0, ac_load_w=300.0), status=STATUS)
        if rec.flush_due(t):
            rec.flush(t)
        t += step
    if stop:
        rec.flush(t)


def lines(path: Path) -> List[str]:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return handle.read().splitlines()
    return path.read_text(encoding="utf-8").splitlines()


def times(path: Path) -> List[float]:
    return [float(line.split(",", 1)[0]) for line in lines(path)[1:]]


def test_one_row_per_interval_written_about_once_a_minute(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    run(rec, JUNE_1 + 3600, 95, stop=False)  # 10 rows due; flushes at 0 s and 60 s
    path = tmp_path / "2025-06-01.csv"
    assert lines(path)[0] + "\n" == HEADER
    assert times(path) == [3600.0 + 10 * i for i in range(7)]  # the rest still buffered
    rec.flush(JUNE_1 + 3700)
    assert times(path) == [3600.0 + 10 * i for i in range(10)]
    assert rec.rows_written == 10 and rec.rows_dropped == 0


def test_restart_on_the_same_day_appends_without_a_second_header(tmp_path: Path) -> None:
    run(recorder(tmp_path), JUNE_1 + 100, 30)
    first = recorder(tmp_path)
    first.flush(JUNE_1 + 200)  # nothing buffered: the file is untouched
    run(recorder(tmp_path), JUNE_1 + 500, 30)
    path = tmp_path / "2025-06-01.csv"
    assert [line for line in lines(path) if line.startswith("time_s")] == [HEADER.strip()]
    assert times(path) == [100.0, 110.0, 120.0, 500.0, 510.0, 520.0]


def test_a_torn_last_line_does_not_hide_the_files_last_time(tmp_path: Path) -> None:
    run(recorder(tmp_path), JUNE_1 + 100, 30)
    path = tmp_path / "2025-06-01.csv"
    with path.open("a") as handle:
        handle.write("13")  # a crash in the middle of a write
    rec = recorder(tmp_path)
    run(rec, JUNE_1 + 115, 30)  # 115 s is not after the last whole row's 120 s
    assert rec.rows_dropped == 1 and rec.rows_written == 2
    assert times(path) == [100.0, 110.0, 120.0, 125.0, 135.0]  # the torn "13" is gone


def test_midnight_closes_and_compresses_the_day(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    run(rec, JUNE_1 + DAY - 30, 120)
    assert times(tmp_path / "2025-06-01.csv.gz") == [DAY - 30, DAY - 20, DAY - 10]
    assert not (tmp_path / "2025-06-01.csv").exists()
    assert times(tmp_path / "2025-06-02.csv")[0] == 0.0


def test_midnight_while_disconnected_still_closes_the_day(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    run(rec, JUNE_1 + DAY - 100, 30)
    rec.flush(JUNE_1 + DAY + 3 * 3600)  # no row since: the GX was away over midnight
    assert sorted(os.listdir(tmp_path)) == ["2025-06-01.csv.gz"]


def test_days_beyond_keep_days_are_deleted(tmp_path: Path) -> None:
    rec = recorder(tmp_path, keep_days=3)
    for day in range(6):
        run(rec, JUNE_1 + day * DAY + 600, 20)
    rec.flush(JUNE_1 + 6 * DAY)
    assert sorted(os.listdir(tmp_path)) == [f"2025-06-0{d}.csv.gz" for d in (4, 5, 6)]


def test_a_clock_jumping_to_2030_deletes_no_recent_day(tmp_path: Path) -> None:
    rec = recorder(tmp_path, keep_days=3)
    for day in range(3):
        run(rec, JUNE_1 + day * DAY + 600, 20)
    rec.flush(JUNE_1 + 5 * 365 * DAY)  # NTP gone wrong: 2030
    assert sorted(os.listdir(tmp_path)) == [f"2025-06-0{d}.csv.gz" for d in (1, 2, 3)]


def test_a_clock_before_2024_records_nothing_and_deletes_nothing(tmp_path: Path) -> None:
    rec = recorder(tmp_path, keep_days=1)
    for day in range(2):
        run(rec, JUNE_1 + day * DAY + 600, 20)
    run(rec, 3600.0, 120)  # a GX before NTP: 1970
    assert sorted(os.listdir(tmp_path)) == ["2025-06-01.csv.gz", "2025-06-02.csv"]
    assert rec.due(3600.0) is False


def test_a_clock_going_back_writes_no_row_into_the_wrong_place(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    run(rec, JUNE_1 + DAY - 20, 60)  # into June 2 (June 1 closed)
    written = rec.rows_written
    run(rec, JUNE_1 + DAY - 15, 10)  # back to June 1, 23:59:45: that day is closed
    run(rec, JUNE_1 + DAY + 5, 10)  # June 2 again, but not after its last row
    run(rec, JUNE_1 + DAY + 120, 10)  # past it: recorded again
    rec.flush(JUNE_1 + DAY + 200)
    assert times(tmp_path / "2025-06-01.csv.gz") == [DAY - 20, DAY - 10]
    assert times(tmp_path / "2025-06-02.csv") == [0.0, 10.0, 20.0, 30.0, 120.0]
    assert rec.rows_written == written + 1 and rec.rows_dropped == 2


@pytest.fixture
def berlin() -> Iterator[None]:
    with local_zone("Europe/Berlin"):
        yield


@pytest.mark.parametrize(
    ("midnight_utc", "length_h"),
    [(1743289200.0, 23), (1761429600.0, 25), (1748728800.0, 24)],  # 30 Mar, 26 Oct, 1 Jun 2025
)
def test_dst_days_count_elapsed_seconds_since_local_midnight(
    berlin: None, midnight_utc: float, length_h: int
) -> None:
    day = time.strftime("%Y-%m-%d", time.localtime(midnight_utc))
    assert system_local_day(midnight_utc) == LocalDay(day, 0.0)
    last = midnight_utc + length_h * 3600 - 1
    assert system_local_day(last) == LocalDay(day, length_h * 3600 - 1.0)
    assert system_local_day(last + 1).time_s == 0.0
    assert system_local_day(last + 1).date != day


def _plain_local_day(now: float) -> LocalDay:
    """``system_local_day`` by its definition, with nothing remembered between calls."""
    local = time.localtime(now)
    midnight = time.mktime((local.tm_year, local.tm_mon, local.tm_mday, 0, 0, 0, 0, 0, -1))
    return LocalDay(time.strftime("%Y-%m-%d", local), now - midnight)


def _set_zone(zone: str) -> None:
    os.environ["TZ"] = zone
    time.tzset()


def test_the_remembered_midnights_follow_the_day_and_the_zone(berlin: None) -> None:
    # system_local_day remembers each date's midnight: across days, DST changes and a zone
    # switched by tzset it must answer as the plain computation does.
    moments = [1743289200.0 + k * 1799.0 for k in range(-60, 120)]  # around 30 March 2025
    for zone in ("Europe/Berlin", "UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata"):
        _set_zone(zone)
        for now in moments:
            assert system_local_day(now) == _plain_local_day(now), (zone, now)


def test_a_25_hour_day_is_one_file_with_rising_times(berlin: None, tmp_path: Path) -> None:
    rec = Recorder(directory=tmp_path, interval_s=600.0, keep_days=14)
    run(rec, 1761429600.0, 25 * 3600 + 60, step=60.0)
    rec.flush(1761429600.0 + 26 * 3600)
    got = times(tmp_path / "2025-10-26.csv.gz")
    assert len(got) == 150 and got == sorted(got) and got[-1] == 89400.0


def test_an_unwritable_directory_is_one_warning_and_recording_pauses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")  # stops root too
    rec = recorder(blocker / "recordings")
    with caplog.at_level(logging.WARNING, logger="venus_prio.recorder"):
        run(rec, JUNE_1, 3 * FLUSH_S)  # three flushes, each would fail
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"recording paused: cannot write {blocker / 'recordings'} (Not a directory); "
        f"steering goes on, retrying every {RETRY_S:g} s"
    ]
    blocker.unlink()  # the user fixed it: recording resumes after RETRY_S
    run(rec, JUNE_1 + RETRY_S + 1, 100)
    assert times(blocker / "recordings" / "2025-06-01.csv")[0] == RETRY_S + 1


class FullDisk:
    """An opener whose files refuse every write with ENOSPC while ``full``."""

    def __init__(self) -> None:
        self.full = True

    def __call__(self, path: Path, mode: str) -> IO[Any]:
        handle = open_file(path, mode)
        if self.full and "r" not in mode:

            def refuse(data: Any) -> int:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            handle.write = refuse  # type: ignore[method-assign]
        return handle


def test_a_full_disk_is_one_warning_and_nothing_breaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FullDisk()
    rec = recorder(tmp_path, opener=disk)
    with caplog.at_level(logging.INFO, logger="venus_prio.recorder"):
        run(rec, JUNE_1, RETRY_S * 2.5)  # fails, pauses, fails again on retry
        disk.full = False
        run(rec, JUNE_1 + RETRY_S * 3, 200)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "No space left on device" in messages[0] and messages[1].startswith("recording resumed")
    assert times(tmp_path / "2025-06-01.csv")[0] == RETRY_S * 3
    assert rec.rows_dropped > 0


def test_a_full_disk_at_midnight_keeps_the_day_to_close_later(tmp_path: Path) -> None:
    disk = FullDisk()
    disk.full = False
    rec = recorder(tmp_path, opener=disk)
    run(rec, JUNE_1 + DAY - 100, 60)  # flushed at the end
    disk.full = True
    rec.flush(JUNE_1 + DAY + 10)  # the gzip cannot be written: June 1 stays a .csv
    assert (tmp_path / "2025-06-01.csv").exists()
    assert not (tmp_path / "2025-06-01.csv.gz").exists()
    disk.full = False
    rec.flush(JUNE_1 + DAY + 10 + RETRY_S)
    assert times(tmp_path / "2025-06-01.csv.gz") == [DAY - 100 + 10 * i for i in range(6)]
