"""Day profiles for the simulator: seeded built-in 24 h scenarios and CSV profiles.

A ``Profile`` is a step function: each row's values hold from its ``time_s`` until the next row;
the last row holds for as long as the interval before it (1 s when there is only one row), or
until ``end`` where a recording sets it. The
built-in scenarios have one row per second and are generated with ``random.Random`` from the
seed only, so the same seed always gives the same profile.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import random
import statistics
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from venus_prio import recording
from venus_prio.errors import InputError

DAY_S = 86400
BASE_LOAD_W = 300.0


@dataclass(frozen=True)
class Profile:
    """A day of inputs: per-row times (s) and the DC PV, AC load and AC PV holding from each."""

    name: str
    time_s: Tuple[float, ...]
    pv_dc_w: Tuple[float, ...]
    load_w: Tuple[float, ...]
    pv_ac_w: Tuple[float, ...]
    # A recording's: where it ends, and the stretches bridged with zero inputs (``HOLD_S``).
    end: Optional[float] = None
    gaps: Tuple[Tuple[float, float], ...] = ()

    @property
    def start_s(self) -> float:
        """Return when the profile starts."""
        return self.time_s[0]

    @property
    def end_s(self) -> float:
        """Return when the profile ends: the last row holds for the interval before it."""
        if self.end is not None:
            return self.end
        last = self.time_s[-1]
        tail = last - self.time_s[-2] if len(self.time_s) > 1 else 1.0
        return last + tail

    def index_at(self, t: float) -> int:
        """Return the row in force at time ``t``."""
        lo, hi = 0, len(self.time_s) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.time_s[mid] <= t:
                lo = mid
            else:
                hi = mid - 1
        return lo


# --- built-in scenarios ----------------------------------------------------------------------


def _envelope(t: float, *, sunrise_h: float, sunset_h: float) -> float:
    """Return the clear-sky shape of the day, 0 at night, 1 at solar noon."""
    x = (t / 3600.0 - sunrise_h) / (sunset_h - sunrise_h)
    if x <= 0.0 or x >= 1.0:
        return 0.0
    return float(math.sin(math.pi * x) ** 1.5)


@dataclass(frozen=True)
class Clouds:
    """A sky of overcast stretches broken by short bright gaps: the transmission of each and
    how long each lasts (s), drawn uniformly from these ranges."""

    overcast: Tuple[float, float]
    overcast_s: Tuple[int, int]
    gap: Tuple[float, float]
    gap_s: Tuple[int, int]

    def __call__(self, rng: random.Random) -> List[float]:
        """Return a per-second sky transmission."""
        out: List[float] = []
        level = rng.uniform(*self.overcast)
        bright = False
        while len(out) < DAY_S:
            bright = not bright if rng.random() < 0.85 else bright
            span = rng.randint(*self.gap_s) if bright else rng.randint(*self.overcast_s)
            target = rng.uniform(*self.gap) if bright else rng.uniform(*self.overcast)
            ramp = rng.randint(2, 8)  # cloud edges pass in seconds
            for i in range(span):
                frac = min(1.0, (i + 1) / ramp)
                value = level + (target - level) * frac
                out.append(max(0.0, value * (1.0 + rng.uniform(-0.03, 0.03))))
            level = target
        return out[:DAY_S]


def _clear(rng: random.Random) -> List[float]:
    """Return a per-second transmission of a clear sky (1 % haze noise)."""
    return [1.0 + rng.uniform(-0.01, 0.01) for _ in range(DAY_S)]


def _loads(rng: random.Random) -> List[float]:
    """Return a per-second AC load: 300 W base, fridge, kettle, washer, dishwasher, oven."""
    load = [BASE_LOAD_W + rng.uniform(-15.0, 15.0) for _ in range(DAY_S)]

    def add(start: int, duration: int, watts: float) -> None:
        for t in range(max(0, start), min(DAY_S, start + duration)):
            load[t] += watts

    t = rng.randint(0, 1800)
    while t < DAY_S:  # fridge compressor
        add(t, rng.randint(600, 1000), 90.0)
        t += rng.randint(2400, 3600)
    for hour in (7.0, 10.5, 13.0, 16.0, 21.0):  # kettle
        add(int(hour * 3600) + rng.randint(-1200, 1200), rng.randint(120, 240), 2000.0)
    start = int(18.0 * 3600) + rng.randint(-900, 900)
    for cycle in range(15):  # oven thermostat, 45 min
        add(start + cycle * 180, rng.randint(100, 140), 2200.0)
    add(int(12.5 * 3600) + rng.randint(-600, 600), 1800, 800.0)  # lunch: hob
    # Daytime appliance runs: a heating phase, then the motor. They are what makes stock ESS
    # discharge from MinSOC + 3 back to MinSOC in the middle of a cloudy day.
    start = int(9.5 * 3600) + rng.randint(-1800, 1800)  # washing machine
    add(start, 1200, 2000.0)
    add(start + 1200, 4200, 250.0)
    start = int(15.0 * 3600) + rng.randint(-1800, 1800)  # dishwasher
    add(start, 1200, 2000.0)
    add(start + 1200, 3600, 150.0)
    return load


@dataclass(frozen=True)
class Day:
    """A built-in day: DC PV at solar noon under a clear sky, sunrise and sunset (hours), and
    the sky's transmission per second, drawn from the seeded stream."""

    peak_w: float
    sunrise_h: float
    sunset_h: float
    sky: Callable[[random.Random], List[float]]

    def profile(self, name: str, seed: int) -> Profile:
        """Return the day's profile for this seed: the sky first, then the loads."""
        rng = random.Random(seed)
        transmission = self.sky(rng)
        shape = (
            _envelope(t, sunrise_h=self.sunrise_h, sunset_h=self.sunset_h) for t in range(DAY_S)
        )
        pv = tuple(round(self.peak_w * x * sky, 1) for x, sky in zip(shape, transmission))
        load = tuple(round(w, 1) for w in _loads(rng))
        return Profile(
            name=name,
            time_s=tuple(float(t) for t in range(DAY_S)),
            pv_dc_w=pv,
            load_w=load,
            pv_ac_w=(0.0,) * DAY_S,
        )


# The built-in days: Day(peak W, sunrise h, sunset h, sky), with
# Clouds(overcast, its length s, bright gap, its length s).
SCENARIOS: Dict[str, Day] = {
    # Mostly overcast: DC PV up to ~1.5 kW with fast random clouds.
    "cloudy-floor": Day(1500.0, 7.0, 19.0, Clouds((0.15, 0.45), (60, 900), (0.6, 1.0), (10, 120))),
    # Clear, 4 kW DC PV at noon.
    "sunny": Day(4000.0, 6.0, 20.5, _clear),
    # Short and grey, 600 W DC PV peak: the battery stays near the floor.
    "winter": Day(600.0, 8.5, 16.5, Clouds((0.3, 0.6), (120, 1200), (0.8, 1.0), (20, 300))),
}


def builtin(name: str, seed: int) -> Profile:
    """Return the built-in scenario ``name``; raise InputError naming the valid ones."""
    try:
        day = SCENARIOS[name]
    except KeyError:
        raise InputError(f"unknown scenario {name!r}; valid: {', '.join(SCENARIOS)}, all") from None
    # Each scenario gets its own stream, so adding one never changes the others.
    return day.profile(name, seed * 1000 + sorted(SCENARIOS).index(name))


# --- CSV profiles ----------------------------------------------------------------------------
#
# A day recording (``venus_prio.recording``) is a profile with more columns, where an empty cell
# means "not measured" (the GX disconnected, stale or not publishing it). The profile is built
# from the rows that have both ``pv_dc_w`` and ``load_w`` (an empty ``pv_ac_w`` is 0: no PV
# inverter). Gaps, how the replay bridges them: a row holds until the next measured row when
# that comes within ``HOLD_S`` (at least 1.5 times the file's usual row step); over a longer gap
# (service down, GX away) it holds for one usual step, then PV and loads are 0 until the next
# measured row, so nothing flows where nothing was measured (the measured column counts nothing
# there either). Each such gap is in ``Profile.gaps`` and the report says how long they were.

REQUIRED_COLUMNS = ("time_s", "pv_dc_w", "load_w")
OPTIONAL_COLUMNS = ("pv_ac_w",)
KNOWN_COLUMNS = recording.COLUMNS  # the profile columns first, then the recording's own
HOLD_S = 60.0

Rows = Sequence[Tuple[int, List[str]]]


def _number(text: str, *, column: str, where: str, allow_negative: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where}: {column} must be a number, got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {column} must be a finite number, got {text.strip()!r}")
    if value < 0 and not allow_negative:
        raise InputError(f"{where}: {column} must be >= 0, got {value:g}")
    return value


def measured_cell(
    text: str, *, column: str, where: str, allow_negative: bool = False
) -> Optional[float]:
    """Return the cell's number, or None for an empty cell (not measured)."""
    if not text.strip():
        return None
    return _number(text, column=column, where=where, allow_negative=allow_negative)


def header_columns(path: Path, rows: Rows) -> Dict[str, int]:
    """Return each column's index; raise InputError naming the file and line of a bad header."""
    if not rows:
        raise InputError(f"{path}: empty file, expected a header {','.join(REQUIRED_COLUMNS)}")
    header_line, header = rows[0]
    names = [h.strip() for h in header]
    for name in names:
        if name not in KNOWN_COLUMNS:
            raise InputError(
                f"{path}:{header_line}: unknown column {name!r}; expected "
                f"{','.join(REQUIRED_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}] "
                "or a venus-prio recording's columns"
            )
    for name in REQUIRED_COLUMNS:
        if name not in names:
            raise InputError(f"{path}:{header_line}: missing column {name!r} in the header")
    if len(set(names)) != len(names):
        raise InputError(f"{path}:{header_line}: a column appears twice in the header")
    return {name: i for i, name in enumerate(names)}


def row_times(path: Path, rows: Rows, col: Dict[str, int]) -> List[float]:
    """Return every data row's ``time_s``; raise InputError where a row is malformed."""
    times: List[float] = []
    for line, row in rows[1:]:
        where = f"{path}:{line}"
        if len(row) != len(col):
            raise InputError(f"{where}: expected {len(col)} columns, got {len(row)}")
        t = _number(row[col["time_s"]], column="time_s", where=where, allow_negative=True)
        if times and t <= times[-1]:
            raise InputError(
                f"{where}: time_s must increase, got {t:g} after {times[-1]:g} "
                f"(step {t - times[-1]:g} s)"
            )
        times.append(t)
    if not times:
        raise InputError(f"{path}:{rows[0][0]}: no data rows after the header")
    return times


def usual_step(times: Sequence[float]) -> float:
    """Return the file's usual row step: the median interval (1 s for a single row)."""
    if len(times) < 2:
        return 1.0
    return float(statistics.median(b - a for a, b in zip(times, times[1:])))


def hold_s(step: float) -> float:
    """Return the longest stretch a measured row holds without a gap being bridged."""
    return max(HOLD_S, 1.5 * step)


def profile_from_rows(path: Path, rows: Rows) -> Profile:
    col = header_columns(path, rows)
    times = row_times(path, rows, col)
    step = usual_step(times)
    out_t: List[float] = []
    pv_dc: List[float] = []
    load: List[float] = []
    pv_ac: List[float] = []
    gaps: List[Tuple[float, float]] = []
    ac = col.get("pv_ac_w")
    for t, (line, row) in zip(times, rows[1:]):
        where = f"{path}:{line}"
        pv = measured_cell(row[col["pv_dc_w"]], column="pv_dc_w", where=where)
        ld = measured_cell(row[col["load_w"]], column="load_w", where=where)
        pa = None if ac is None else measured_cell(row[ac], column="pv_ac_w", where=where)
        if pv is None or ld is None:
            continue
        if out_t and t - out_t[-1] > hold_s(step):
            bridge = out_t[-1] + step
            gaps.append((bridge, t))
            out_t.append(bridge)
            pv_dc.append(0.0)
            load.append(0.0)
            pv_ac.append(0.0)
        out_t.append(t)
        pv_dc.append(pv)
        load.append(ld)
        pv_ac.append(pa or 0.0)
    if not out_t:
        raise InputError(f"{path}: no row has both pv_dc_w and load_w measured")
    return Profile(
        name=Path(path.name[:-3] if path.name.endswith(".gz") else path.name).stem,
        time_s=tuple(out_t),
        pv_dc_w=tuple(pv_dc),
        load_w=tuple(load),
        pv_ac_w=tuple(pv_ac),
        end=out_t[-1] + step if gaps or len(out_t) < len(times) else None,
        gaps=tuple(gaps),
    )


def read_rows(path: Path) -> List[Tuple[int, List[str]]]:
    """Return the non-blank rows of a ``.csv`` or ``.csv.gz`` with their line numbers; raise
    InputError naming the file (and the line, for a truncated or corrupt ``.gz``)."""
    path = Path(path)
    rows: List[Tuple[int, List[str]]] = []
    line = 0
    try:
        with path.open("rb") as raw:
            packed = raw.read(2) == b"\x1f\x8b"  # gzip's magic, whatever the file's name
            raw.seek(0)
            binary = gzip.GzipFile(fileobj=raw, mode="rb") if packed else raw
            with io.TextIOWrapper(binary, encoding="utf-8", newline="") as handle:
                reader = csv.reader(handle)
                for row in reader:
                    line = reader.line_num
                    if row and any(cell.strip() for cell in row):
                        rows.append((line, row))
    except OSError as exc:
        if isinstance(exc, gzip.BadGzipFile) or not exc.strerror:
            raise InputError(f"{path}:{line + 1}: corrupt gzip data: {exc}") from exc
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    except (EOFError, zlib.error) as exc:
        raise InputError(
            f"{path}:{line + 1}: truncated or corrupt gzip data ({exc}); "
            f"the {len(rows) - 1 if rows else 0} rows before it are readable"
        ) from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}:{line + 1}: not a readable CSV file: {exc}") from exc
    return rows


def load_profile_csv(path: Path) -> Profile:
    """Read a ``time_s,pv_dc_w,load_w[,pv_ac_w]`` CSV or a recording (``.csv``/``.csv.gz``);
    raise InputError naming file and line."""
    path = Path(path)
    return profile_from_rows(path, read_rows(path))
