"""Day profiles for the simulator: seeded built-in 24 h scenarios and CSV profiles.

A ``Profile`` is a step function: each row's values hold from its ``time_s`` until the next row;
the last row holds for as long as the interval before it (1 s when there is only one row). The
built-in scenarios have one row per second and are generated with ``random.Random`` from the
seed only, so the same seed always gives the same profile.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

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

    @property
    def start_s(self) -> float:
        """Return when the profile starts."""
        return self.time_s[0]

    @property
    def end_s(self) -> float:
        """Return when the profile ends: the last row holds for the interval before it."""
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

REQUIRED_COLUMNS = ("time_s", "pv_dc_w", "load_w")
OPTIONAL_COLUMNS = ("pv_ac_w",)


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


def _parse_rows(path: Path, rows: Sequence[Tuple[int, List[str]]]) -> Profile:
    if not rows:
        raise InputError(f"{path}: empty file, expected a header {','.join(REQUIRED_COLUMNS)}")
    header_line, header = rows[0]
    names = [h.strip() for h in header]
    for name in names:
        if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            raise InputError(
                f"{path}:{header_line}: unknown column {name!r}; expected "
                f"{','.join(REQUIRED_COLUMNS)}[,{','.join(OPTIONAL_COLUMNS)}]"
            )
    for name in REQUIRED_COLUMNS:
        if name not in names:
            raise InputError(f"{path}:{header_line}: missing column {name!r} in the header")
    if len(set(names)) != len(names):
        raise InputError(f"{path}:{header_line}: a column appears twice in the header")
    col = {name: i for i, name in enumerate(names)}
    times: List[float] = []
    pv_dc: List[float] = []
    load: List[float] = []
    pv_ac: List[float] = []
    for line, row in rows[1:]:
        where = f"{path}:{line}"
        if len(row) != len(names):
            raise InputError(f"{where}: expected {len(names)} columns, got {len(row)}")
        t = _number(row[col["time_s"]], column="time_s", where=where, allow_negative=True)
        if times and t <= times[-1]:
            raise InputError(
                f"{where}: time_s must increase, got {t:g} after {times[-1]:g} "
                f"(step {t - times[-1]:g} s)"
            )
        times.append(t)
        pv_dc.append(
            _number(row[col["pv_dc_w"]], column="pv_dc_w", where=where, allow_negative=False)
        )
        load.append(_number(row[col["load_w"]], column="load_w", where=where, allow_negative=False))
        if "pv_ac_w" in col:
            pv_ac.append(
                _number(row[col["pv_ac_w"]], column="pv_ac_w", where=where, allow_negative=False)
            )
        else:
            pv_ac.append(0.0)
    if not times:
        raise InputError(f"{path}:{header_line}: no data rows after the header")
    return Profile(
        name=path.stem,
        time_s=tuple(times),
        pv_dc_w=tuple(pv_dc),
        load_w=tuple(load),
        pv_ac_w=tuple(pv_ac),
    )


def load_profile_csv(path: Path) -> Profile:
    """Read a ``time_s,pv_dc_w,load_w[,pv_ac_w]`` CSV; raise InputError naming file and line."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            rows = [
                (reader.line_num, row)
                for row in reader
                if row and any(cell.strip() for cell in row)
            ]
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV file: {exc}") from exc
    return _parse_rows(path, rows)
