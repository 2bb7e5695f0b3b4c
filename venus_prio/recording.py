"""The day recording's format: one CSV row per ``record.interval_s`` of what the GX showed and
what venus-prio did (pure: no I/O, no clock; ``recorder.py`` writes the files).

A recording is a simulator profile: its first three columns are the profile format
(``time_s,pv_dc_w,load_w``) and the fourth is the profile's optional ``pv_ac_w``, so
``venus-prio simulate --profile <day>.csv`` replays it. The columns, in order:

==================  =====================================================================
``time_s``          seconds since local midnight, elapsed (a 25 h DST day runs to 90000)
``pv_dc_w``         DC PV as the MPPTs measure it (W; after any curtailment)
``load_w``          AC loads (W)
``pv_ac_w``         AC-coupled PV (W); empty on systems without a PV inverter
``soc``             battery SOC (%)
``battery_w``       battery power (W, + charging)
``grid_w``          grid power (W, + import)
``dc_system_w``     DC loads (W), where the GX measures them
``floor``           the SOC floor venus-prio steered to (%)
``setting_w``       /Settings/CGwacs/MaxDischargePower as the GX showed it (W)
``override_w``      the hub4 override as the GX showed it (W; -1 or empty: none)
``target_w``        the controller's target (W)
``actuator``        where venus-prio's cap goes: override | setting | none
``reason``          the controller's reason (``PV_PRIORITY``, ``STAND_ASIDE_STALE`` ...)
``mode``            auto | dry-run | off (in force: ``--dry-run`` records dry-run)
``flash_writes``    setting writes since the service started (cumulative)
``override_writes`` override writes since the service started (cumulative)
``capacity_kwh``    the battery's capacity as the GX publishes it; empty where it does not
==================  =====================================================================

No invented values: a value the GX marked invalid (or does not publish) is an empty cell, and
while the GX is disconnected or its data stale every measured cell of the row is empty (the
reason says which). Over downtime (service stopped, recording paused) rows are simply absent.
How the replay bridges such gaps: ``venus_prio.sim.scenarios`` (``HOLD_S``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import astuple, dataclass
from typing import Optional, Tuple, Union

from venus_prio.model import Decision, Reason, Snapshot
from venus_prio.status import ServiceStatus

COLUMNS: Tuple[str, ...] = (
    "time_s",
    "pv_dc_w",
    "load_w",
    "pv_ac_w",
    "soc",
    "battery_w",
    "grid_w",
    "dc_system_w",
    "floor",
    "setting_w",
    "override_w",
    "target_w",
    "actuator",
    "reason",
    "mode",
    "flash_writes",
    "override_writes",
    "capacity_kwh",
)
HEADER = ",".join(COLUMNS) + "\n"
# A number this large is garbage, not a measurement: an empty cell (and rows stay short, which
# bounds a day file's size: see recorder.py).
_IMPLAUSIBLE = 1e7
# Reasons under which the snapshot's values are not current: nothing measured is recorded.
_NOT_CURRENT = frozenset({Reason.STAND_ASIDE_DISCONNECTED, Reason.STAND_ASIDE_STALE})


@dataclass(frozen=True)
class LocalDay:
    """A moment in local time: the date (``YYYY-MM-DD``) and the seconds since its midnight."""

    date: str
    time_s: float


@dataclass(frozen=True)
class RecordRow:
    """One row of a recording; the fields are ``COLUMNS`` in order, ``None`` = empty cell."""

    time_s: float
    pv_dc_w: Optional[float] = None
    load_w: Optional[float] = None
    pv_ac_w: Optional[float] = None
    soc: Optional[float] = None
    battery_w: Optional[float] = None
    grid_w: Optional[float] = None
    dc_system_w: Optional[float] = None
    floor: Optional[float] = None
    setting_w: Optional[float] = None
    override_w: Optional[float] = None
    target_w: Optional[float] = None
    actuator: str = ""
    reason: str = ""
    mode: str = ""
    flash_writes: Optional[int] = None
    override_writes: Optional[int] = None
    capacity_kwh: Optional[float] = None


# Decimals per numeric column: W to the watt, SOC to a tenth, time to a tenth of a second.
_DECIMALS = {"time_s": 1, "soc": 1, "floor": 1, "capacity_kwh": 2}


def _cell(value: Optional[Union[float, int, str]], decimals: int) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    number = float(value)
    if not math.isfinite(number) or abs(number) >= _IMPLAUSIBLE:
        return ""
    text = f"{number:.{decimals}f}"
    return "0" if text in ("-0", "-0.0") else text


_ROW_DECIMALS = tuple(_DECIMALS.get(name, 0) for name in COLUMNS)


def format_row(row: RecordRow) -> str:
    """Return the row as one CSV line (with its newline); no cell holds a comma or a quote."""
    return ",".join(_cell(v, d) for v, d in zip(astuple(row), _ROW_DECIMALS)) + "\n"


# The measured columns and the Snapshot field each is read from: empty while not current.
MEASURED_COLUMNS: Tuple[Tuple[str, str], ...] = (
    ("pv_dc_w", "pv_dc_w"),
    ("load_w", "ac_load_w"),
    ("pv_ac_w", "pv_ac_w"),
    ("soc", "soc"),
    ("battery_w", "battery_power_w"),
    ("grid_w", "grid_w"),
    ("dc_system_w", "dc_system_w"),
    ("setting_w", "max_discharge_w"),
    ("override_w", "override_w"),
    ("capacity_kwh", "battery_kwh"),
)


def is_current(snapshot: Snapshot, decision: Optional[Decision], *, connected: bool) -> bool:
    """Return True when the snapshot's measurements are of now: connected and not stale.

    Otherwise the snapshot still holds the last values seen, which nothing may count as new:
    the recording leaves their cells empty, the day's ledger (``benefit.py``) counts no time.
    """
    return (
        snapshot.connected
        and connected
        and (decision is None or decision.reason not in _NOT_CURRENT)
    )


def row_from(*, snapshot: Snapshot, status: ServiceStatus, time_s: float) -> RecordRow:
    """Return the row of one evaluation: the GX's values, the decision and the cap in force.

    ``time_s`` is ``LocalDay.time_s`` of the moment (the recorder's). While the GX is
    disconnected or its data stale, the measured cells stay empty: the snapshot then holds old
    values, and a recording never shows an old value as a new one.
    """
    decision = status.decision
    current = is_current(snapshot, decision, connected=status.connected)
    # The state the controller acts on, not a measurement: the floor and the target stay
    # recorded while the GX is away (the reason says why the target is what it is).
    state = RecordRow(
        time_s=time_s,
        floor=decision.floor if decision is not None else None,
        target_w=decision.target_w if decision is not None else None,
        actuator=status.actuator,
        reason=decision.reason.value if decision is not None else "",
        # The mode in force: ``--dry-run`` and ``writes.dry_run`` make "auto" a dry run, and
        # the replay then compares what was measured with stock ESS, which ran the GX.
        mode="dry-run" if status.dry_run and status.mode == "auto" else status.mode,
        flash_writes=status.counters.total,
        override_writes=(
            status.override_counters.total if status.override_counters is not None else None
        ),
    )
    if not current:
        return state
    return dataclasses.replace(
        state, **{column: getattr(snapshot, field) for column, field in MEASURED_COLUMNS}
    )
