"""Write the day recordings (format: ``recording.py``) under ``<state_dir>/recordings/``.

How it works. The service owns the clocks: it passes ``now`` (wall clock, epoch seconds) to
every call; the recorder turns it into the local date and ``time_s`` with ``local_day``
(``system_local_day`` by default; tests give a fake one, the fake GX's faster clock too).

- ``due(now)`` / ``add(now, snapshot=, status=)`` run on the event loop: no I/O, a row is
  formatted and buffered, one per ``interval_s``.
- ``flush(now)`` does all the file I/O and never raises: it appends the buffered rows to
  ``<date>.csv`` (one ``write`` per file, no fsync: a crash loses at most the rows since the
  last flush), closes every earlier day (gzip to ``<date>.csv.gz``, then the ``.csv`` goes) and
  deletes days beyond ``keep_days``. Call it when ``flush_due(now)`` (about once a minute)
  and once on shutdown. The gzip of a closed day takes a while on a GX, so run ``flush`` off the
  event loop (``run_in_executor``); ``due``/``add`` and ``flush`` may run in different threads
  (a lock guards the buffer), but only one ``flush`` at a time.
- An OSError (unwritable directory, full disk) is one warning; the rows of that flush are
  dropped and recording pauses for ``RETRY_S``, then tries again (one info line when it works).

The clock, as a GX has it: before NTP it may read 1970 or the last shutdown's time, then jump.

- No row while the clock reads before ``PLAUSIBLE_FROM``, and no day closed or deleted either.
- A row goes to the file of its own local date; a row whose date is already closed (``.gz``)
  or whose ``time_s`` is not after that file's last row (the clock went back) is dropped:
  ``time_s`` only increases within a file, which the profile loader requires.
- Days are deleted only beyond ``keep_days`` days before today AND beyond the ``keep_days``
  newest files, so a clock that jumps to 2030 deletes nothing it would not delete anyway.
- Restart on the same day appends to the same ``.csv`` (its header is there already).

Disk use is bounded: a day file holds at most ``rows_per_day_max`` rows (a 25 h day at
``interval_s``) of at most ``MAX_ROW_BYTES`` each (checked, ``day_cap_bytes``); at most
``2 * keep_days + 1`` day files exist (``keep_days`` newest + the window before today).
Measured at the defaults: README, "See what it does on your system".
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
import shutil
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Optional, Tuple

from venus_prio.model import Snapshot
from venus_prio.recording import HEADER, LocalDay, format_row, row_from
from venus_prio.status import ServiceStatus

log = logging.getLogger(__name__)

FLUSH_S = 60.0  # a crash loses at most this much
RETRY_S = 300.0  # after a failed write, try again this much later
PLAUSIBLE_FROM = 1704067200.0  # 2024-01-01: a clock before this is not set yet
MAX_ROW_BYTES = 200  # the longest row format_row can produce (tests/unit/test_recording.py)
LONGEST_DAY_S = 25 * 3600  # the DST day that repeats an hour
BUFFER_ROWS_MAX = 4000  # rows kept when nobody flushes (1 s rows for over an hour)
_DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.csv(\.gz)?$")

LocalDayFn = Callable[[float], LocalDay]
Opener = Callable[[Path, str], IO[Any]]


# Local date -> (its text, its midnight): the service asks after every evaluation, several
# times a second, and the date changes once a day. Keyed on the time zone too (offset and
# name now, and the process's zone settings), so a zone changed by ``time.tzset`` is not
# answered from another zone's midnight.
_MidnightKey = Tuple[int, int, int, str, int, int, Tuple[str, str]]
_midnights: Dict[_MidnightKey, Tuple[str, float]] = {}


def system_local_day(now: float) -> LocalDay:
    """Return the local date of ``now`` and the seconds elapsed since its local midnight.

    Elapsed, not the wall clock's reading: on a DST day ``time_s`` still only increases (to
    82800 or 90000 s), so every row is at its real distance from the one before.
    """
    local = time.localtime(now)
    key = (
        local.tm_year,
        local.tm_yday,
        local.tm_gmtoff,
        local.tm_zone,
        time.timezone,
        time.altzone,
        time.tzname,
    )
    known = _midnights.get(key)
    if known is None:
        midnight = time.mktime(
            (local.tm_year, local.tm_mon, local.tm_mday, 0, 0, 0, 0, 0, -1)  # -1: DST as it was
        )
        known = (time.strftime("%Y-%m-%d", local), midnight)
        if len(_midnights) >= 16:  # a few days and zones: never grows without bound
            _midnights.clear()
        _midnights[key] = known
    date, midnight = known
    return LocalDay(date=date, time_s=now - midnight)


def open_file(path: Path, mode: str) -> IO[Any]:
    """Open a file as the recorder does (the seam tests replace to inject a full disk)."""
    if "b" in mode:
        return open(path, mode)
    return open(path, mode, encoding="utf-8", newline="")


def rows_per_day_max(interval_s: float) -> int:
    """Return how many rows a day file can hold at most: a 25 h day, one row per interval."""
    return math.ceil(LONGEST_DAY_S / interval_s) + 1


def day_cap_bytes(interval_s: float) -> int:
    """Return the most bytes a day's ``.csv`` may reach; rows beyond it are dropped."""
    return len(HEADER) + rows_per_day_max(interval_s) * MAX_ROW_BYTES


class Recorder:
    """Buffer one row per interval and write the day files; see the module docstring."""

    def __init__(
        self,
        *,
        directory: Path,
        interval_s: float,
        keep_days: int,
        local_day: LocalDayFn = system_local_day,
        opener: Opener = open_file,
    ) -> None:
        self.directory = Path(directory)
        self.interval_s = interval_s
        self.keep_days = keep_days
        self._local_day = local_day
        self._open = opener
        self._lock = threading.Lock()
        self._buffer: List[Tuple[str, float, str]] = []  # (date, time_s, line)
        self._last_row_at: Optional[float] = None
        self._last_flush_at: Optional[float] = None
        # Owned by flush:
        self._last_time_s: Dict[str, float] = {}  # per open day file: its last row's time_s
        self._size: Dict[str, int] = {}  # per open day file: its bytes
        self._capped: Dict[str, bool] = {}
        self._paused_until: Optional[float] = None
        self._warned = False
        self.rows_written = 0
        self.rows_dropped = 0  # clock went back, day closed or over its cap, paused, failed

    # -- on the event loop: no I/O -------------------------------------------------------

    def due(self, now: float) -> bool:
        """Return True when a row is due: ``interval_s`` after the last (or the clock went back)."""
        if now < PLAUSIBLE_FROM:
            return False
        last = self._last_row_at
        return last is None or now - last >= self.interval_s or now < last

    def add(self, now: float, *, snapshot: Snapshot, status: ServiceStatus) -> None:
        """Buffer the row of this moment (call it when ``due``)."""
        day = self._local_day(now)
        line = format_row(row_from(snapshot=snapshot, status=status, time_s=day.time_s))
        self._last_row_at = now
        with self._lock:
            if self._paused_until is not None and now < self._paused_until:
                self.rows_dropped += 1
                return
            self._buffer.append((day.date, day.time_s, line))
            if len(self._buffer) > BUFFER_ROWS_MAX:
                del self._buffer[0]
                self.rows_dropped += 1

    def flush_due(self, now: float) -> bool:
        """Return True when ``flush`` should run: about once a minute."""
        last = self._last_flush_at
        return last is None or now - last >= FLUSH_S or now < last

    # -- file I/O: off the event loop ----------------------------------------------------

    def flush(self, now: float) -> None:
        """Write the buffered rows, close the days before today, delete old ones; never raise."""
        self._last_flush_at = now
        with self._lock:
            batch, self._buffer = self._buffer, []
        if self._paused_until is not None:
            if now < self._paused_until:
                self.rows_dropped += len(batch)
                return
            self._paused_until = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._append(batch)
            if now >= PLAUSIBLE_FROM:
                today = self._local_day(now).date
                self._close_days_before(today)
                self._delete_old(today)
        except OSError as exc:
            self.rows_dropped += len(batch)
            # What we knew of the files may be wrong now: learn it again on the next flush.
            for state in (self._size, self._last_time_s, self._capped):
                state.clear()
            self._paused_until = now + RETRY_S
            if not self._warned:
                self._warned = True
                log.warning(
                    "recording paused: cannot write %s (%s); steering goes on, retrying every %g s",
                    self.directory,
                    exc.strerror or exc,
                    RETRY_S,
                )
            return
        if self._warned:
            self._warned = False
            log.info("recording resumed in %s", self.directory)

    def _path(self, day: str, suffix: str = ".csv") -> Path:
        return self.directory / f"{day}{suffix}"

    def _open_day(self, day: str) -> None:
        """Learn an open day file's size and last ``time_s`` (a restart on the same day)."""
        path = self._path(day)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        last = -math.inf
        if size > 0:
            with self._open(path, "rb") as handle:
                handle.seek(max(0, size - 4 * MAX_ROW_BYTES))
                tail = handle.read()
            torn = len(tail) - (tail.rfind(b"\n") + 1)
            if torn:
                # A crash in the middle of a write left half a row: cut it, or the next row
                # would be glued to it.
                size -= torn
                os.truncate(path, size)
            for text in reversed(tail[: len(tail) - torn].decode("utf-8", "replace").splitlines()):
                try:
                    last = float(text.split(",", 1)[0])
                    break
                except ValueError:
                    continue  # the header
        self._size[day] = size
        self._last_time_s[day] = last
        self._capped[day] = False

    def _append(self, batch: List[Tuple[str, float, str]]) -> None:
        by_day: Dict[str, List[str]] = {}
        for day, time_s, line in batch:
            if day not in self._size:
                if self._path(day, ".csv.gz").exists():
                    self.rows_dropped += 1  # that day is closed: the clock went back
                    continue
                self._open_day(day)
            if time_s <= self._last_time_s[day]:
                self.rows_dropped += 1  # not after the file's last row: the clock went back
                continue
            if self._size[day] + len(line) > day_cap_bytes(self.interval_s):
                if not self._capped[day]:
                    self._capped[day] = True
                    log.warning("recording of %s reached its size cap; rows dropped", day)
                self.rows_dropped += 1
                continue
            lines = by_day.get(day)
            if lines is None:
                lines = by_day[day] = [HEADER] if self._size[day] == 0 else []
                self._size[day] += len(lines[0]) if lines else 0
            lines.append(line)
            self._last_time_s[day] = time_s
            self._size[day] += len(line)
        for day, lines in by_day.items():
            with self._open(self._path(day), "a") as handle:
                handle.write("".join(lines))
            self.rows_written += len(lines) - (1 if lines[0] is HEADER else 0)

    def _close_days_before(self, today: str) -> None:
        for path in sorted(self.directory.glob("*.csv")):
            match = _DAY_FILE.match(path.name)
            if match is None or match.group(1) >= today:
                continue  # today's, or a later date's: a clock that went back returns there
            day = match.group(1)
            gz = self._path(day, ".csv.gz")
            partial = self._path(day, ".csv.gz.part")
            with path.open("rb") as source, self._open(partial, "wb") as raw, gzip.GzipFile(
                filename=path.name, mode="wb", fileobj=raw, mtime=0
            ) as packed:
                shutil.copyfileobj(source, packed)
            os.replace(partial, gz)
            path.unlink()
            for state in (self._size, self._last_time_s, self._capped):
                state.pop(day, None)

    def _delete_old(self, today: str) -> None:
        days = sorted({m.group(1) for m in map(_DAY_FILE.match, os.listdir(self.directory)) if m})
        newest = set(days[-self.keep_days :])
        oldest_kept = (date.fromisoformat(today) - timedelta(days=self.keep_days)).isoformat()
        for day in days:
            if day < oldest_kept and day not in newest:
                self._path(day, ".csv.gz").unlink(missing_ok=True)
