"""Replay a day recording (``venus_prio.recording``): its profile, the configuration it ran
with, and the **measured** column: what the battery really did that day.

How the replay starts: every policy at the first recorded SOC; the reserve the user keeps is
the recorded floor + ``control.prio_band`` (the fair configuration of ``runner.py``, as the
service's stock-ESS shadow uses it); the battery's capacity is the recorded ``capacity_kwh``
where the GX published one, else ``sim.battery_kwh``. Gaps: ``scenarios.py`` (``HOLD_S``).

The measured figures integrate each recorded value over the time it holds, as the profile does:
until the next row, or for one usual step when that is more than ``hold_s`` away (a gap: nothing
is counted over it) and for the last row. Cap writes are the increases of the cumulative
counters within the file (a counter that falls is a restart: its new value counts).
Micro-cycles: the simulator's zigzag counter over the recorded SOC.

Model error: ``|simulated - measured| / measured`` of the battery throughput, in percent (none
below ``MIN_ERROR_KWH`` measured), for the simulated policy that was in force that day
(``Measured.policy``: venus-prio on the actuator it steered with when mode was auto, else stock
ESS, since dry-run and off leave the GX to stock ESS). Throughput is the figure venus-prio
claims to reduce, so its error bounds every claim.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from venus_prio.config import Config
from venus_prio.errors import InputError
from venus_prio.sim.metrics import Metrics, MicroCycleCounter
from venus_prio.sim.policies import StockPolicy, VenusPrioOverridePolicy, VenusPrioPolicy
from venus_prio.sim.scenarios import (
    Profile,
    Rows,
    header_columns,
    hold_s,
    measured_cell,
    profile_from_rows,
    read_rows,
    row_times,
    usual_step,
)

RECORDINGS_DIR = "recordings"
_WS_PER_KWH = 3_600_000.0
_MAX_RESERVE = 95.0  # sim.reserve_soc's bound
# Below this measured throughput a percentage says nothing: the replay starts at the recorded
# SOC, rounded to 0.1 % (10 Wh of a 10 kWh battery), and a few minutes' recording moves less
# (a first trial showed "model error 167 %" on 0.004 kWh).
MIN_ERROR_KWH = 0.1
_POLICY_OF_ACTUATOR = {"override": VenusPrioOverridePolicy.name, "setting": VenusPrioPolicy.name}


@dataclass(frozen=True)
class Measured:
    """The recorded day's own figures; ``None`` where the recording has no such values."""

    policy: str  # the simulated policy that was in force: the model error compares with it
    recorded_h: float  # time covered by rows with PV and loads measured
    gaps: int
    gap_h: float
    battery_charged_kwh: Optional[float]
    battery_discharged_kwh: Optional[float]
    throughput_kwh: Optional[float]
    micro_cycles: Optional[int]
    grid_import_kwh: Optional[float]
    grid_export_kwh: Optional[float]
    flash_writes_total: Optional[int]
    override_writes_total: Optional[int]
    min_soc: Optional[float]
    max_soc: Optional[float]
    end_soc: Optional[float]
    floor: Optional[float]
    reason_seconds: Dict[str, float]
    # For the plot: (time_s, SOC, battery W, the cap in force W) of each row; None = empty cell.
    series: Tuple[Tuple[float, Optional[float], Optional[float], Optional[float]], ...]

    def to_dict(self) -> Dict[str, Any]:
        """Return the figures as a JSON-ready dict (without the plot's series)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del out["series"]
        out["reason_seconds"] = dict(sorted(self.reason_seconds.items()))
        return out


@dataclass(frozen=True)
class Recording:
    """A recorded day: the profile to simulate, the measured figures, and how it started."""

    profile: Profile
    measured: Measured
    start_soc: Optional[float]
    floor: Optional[float]
    battery_kwh: Optional[float]


def _split(energy: List[float]) -> Tuple[float, float]:
    """Return (positive, negative) energy in kWh of ``[ws+, ws-]``."""
    return energy[0] / _WS_PER_KWH, energy[1] / _WS_PER_KWH


def _increase(values: List[int]) -> Optional[int]:
    if not values:
        return None
    total = 0
    for before, after in zip(values, values[1:]):
        total += after - before if after >= before else after  # fell: the service restarted
    return total


def _measure(path: Path, rows: Rows, profile: Profile) -> Tuple[Measured, Dict[str, Any]]:
    col = header_columns(path, rows)
    times = row_times(path, rows, col)
    step = usual_step(times)
    hold = hold_s(step)
    seen: Dict[str, bool] = {}
    battery = [0.0, 0.0]
    grid = [0.0, 0.0]
    socs: List[float] = []
    floors: List[float] = []
    capacities: List[float] = []
    writes: Dict[str, List[int]] = {"flash_writes": [], "override_writes": []}
    reasons: Dict[str, float] = {}
    in_force: Dict[str, float] = {}
    series = []
    cycles = MicroCycleCounter()

    def cell(row: List[str], name: str, where: str, *, signed: bool = True) -> Optional[float]:
        if name not in col:
            return None
        value = measured_cell(row[col[name]], column=name, where=where, allow_negative=signed)
        if value is not None:
            seen[name] = True
        return value

    for i, (t, (line, row)) in enumerate(zip(times, rows[1:])):
        where = f"{path}:{line}"
        to_next = times[i + 1] - t if i + 1 < len(times) else step
        held = to_next if to_next <= hold else step  # over a gap: one step, as the profile
        soc = cell(row, "soc", where, signed=False)
        battery_w = cell(row, "battery_w", where)
        grid_w = cell(row, "grid_w", where)
        for name, values in writes.items():
            count = cell(row, name, where, signed=False)
            if count is not None:
                values.append(int(count))
        for name, values_f in (("floor", floors), ("capacity_kwh", capacities)):
            value = cell(row, name, where, signed=False)
            if value is not None:
                values_f.append(value)
        if soc is not None:
            socs.append(soc)
            cycles.add(soc)
        if battery_w is not None:
            battery[0 if battery_w >= 0 else 1] += abs(battery_w) * held
        if grid_w is not None:
            grid[0 if grid_w >= 0 else 1] += abs(grid_w) * held
        reason = row[col["reason"]].strip() if "reason" in col else ""
        if reason:
            reasons[reason] = reasons.get(reason, 0.0) + held
        mode = row[col["mode"]].strip() if "mode" in col else ""
        actuator = row[col["actuator"]].strip() if "actuator" in col else ""
        policy = _POLICY_OF_ACTUATOR.get(actuator, "") if mode == "auto" else ""
        policy = policy or StockPolicy.name
        in_force[policy] = in_force.get(policy, 0.0) + held
        setting_w = cell(row, "setting_w", where)
        override_w = cell(row, "override_w", where)
        cap = override_w if override_w is not None and override_w >= 0 else setting_w
        series.append((t, soc, battery_w, cap))
    charged, discharged = _split(battery)
    grid_in, grid_out = _split(grid)
    has_battery = seen.get("battery_w", False)
    has_grid = seen.get("grid_w", False)
    gap_s = sum(b - a for a, b in profile.gaps)
    measured = Measured(
        policy=max(in_force, key=lambda p: in_force[p]),
        recorded_h=(profile.end_s - profile.start_s - gap_s) / 3600.0,
        gaps=len(profile.gaps),
        gap_h=gap_s / 3600.0,
        battery_charged_kwh=charged if has_battery else None,
        battery_discharged_kwh=discharged if has_battery else None,
        throughput_kwh=charged + discharged if has_battery else None,
        micro_cycles=cycles.cycles if socs else None,
        grid_import_kwh=grid_in if has_grid else None,
        grid_export_kwh=grid_out if has_grid else None,
        flash_writes_total=_increase(writes["flash_writes"]),
        override_writes_total=_increase(writes["override_writes"]),
        min_soc=min(socs) if socs else None,
        max_soc=max(socs) if socs else None,
        end_soc=socs[-1] if socs else None,
        floor=floors[0] if floors else None,
        reason_seconds=reasons,
        series=tuple(series),
    )
    start = {
        "start_soc": socs[0] if socs else None,
        "floor": floors[0] if floors else None,
        "battery_kwh": capacities[0] if capacities else None,
    }
    return measured, start


def load_recording(path: Path) -> Optional[Recording]:
    """Return the recording at ``path``, or None when it is a plain profile (no ``soc`` column);
    raise InputError naming the file and line of anything unreadable."""
    path = Path(path)
    rows = read_rows(path)
    if "soc" not in header_columns(path, rows):
        return None
    profile = profile_from_rows(path, rows)
    measured, start = _measure(path, rows, profile)
    return Recording(profile=profile, measured=measured, **start)


def replay_config(config: Config, recording: Recording) -> Config:
    """Return the config to simulate the recorded day with (see the module docstring)."""
    sim = config.sim
    changes: Dict[str, Any] = {}
    if recording.start_soc is not None:
        changes["start_soc"] = min(100.0, recording.start_soc)
    if recording.floor is not None:
        reserve = recording.floor + config.control.prio_band
        changes["reserve_soc"] = max(0.0, min(_MAX_RESERVE, reserve))
    if recording.battery_kwh is not None and recording.battery_kwh > 0:
        changes["battery_kwh"] = recording.battery_kwh
    return dataclasses.replace(config, sim=dataclasses.replace(sim, **changes))


def model_error_percent(metrics: Dict[str, Metrics], measured: Measured) -> Optional[float]:
    """Return |simulated - measured| / measured throughput in %; None without a measured one,
    or one below ``MIN_ERROR_KWH``."""
    if measured.throughput_kwh is None or measured.throughput_kwh < MIN_ERROR_KWH:
        return None
    simulated = metrics[measured.policy].throughput_kwh
    return abs(simulated - measured.throughput_kwh) / measured.throughput_kwh * 100.0


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def recorded_path(state_dir: Path, when: str, *, today: date) -> Path:
    """Return the recording of ``when`` (``today``, ``yesterday`` or ``YYYY-MM-DD``) under
    ``<state_dir>/recordings``; raise InputError listing the days there are."""
    if when == "today":
        day = today.isoformat()
    elif when == "yesterday":
        day = (today - timedelta(days=1)).isoformat()
    elif _DATE.match(when):
        day = when
    else:
        raise InputError(f"--recorded: expected today, yesterday or YYYY-MM-DD, got {when!r}")
    directory = Path(state_dir) / RECORDINGS_DIR
    for name in (f"{day}.csv.gz", f"{day}.csv"):  # a closed day first: it is complete
        if (directory / name).is_file():
            return directory / name
    try:
        days = sorted({p.name.split(".")[0] for p in directory.glob("????-??-??.csv*")})
    except OSError:
        days = []
    have = f"recorded days: {', '.join(days)}" if days else "no recordings there"
    raise InputError(f"{directory}: no recording of {day} ({have})")
