"""The day recording's rows: columns, empty cells for what is not known, the longest row."""

from __future__ import annotations

import csv
import dataclasses
import io
from typing import Dict

from tests.recording_tools import service_status
from venus_prio.model import Reason, Snapshot
from venus_prio.recorder import MAX_ROW_BYTES
from venus_prio.recording import COLUMNS, HEADER, RecordRow, format_row, row_from
from venus_prio.sim.scenarios import REQUIRED_COLUMNS
from venus_prio.status import ServiceStatus

SNAP = Snapshot(
    soc=21.34,
    pv_dc_w=812.6,
    ac_load_w=455.0,
    grid_w=-3.2,
    pv_ac_w=None,
    dc_system_w=12.0,
    battery_power_w=250.4,
    max_discharge_w=3000.0,
    override_w=720.0,
    battery_kwh=None,
)


def status(reason: Reason, *, connected: bool = True) -> ServiceStatus:
    return service_status(reason=reason, connected=connected)


def cells(row: RecordRow) -> Dict[str, str]:
    return next(csv.DictReader(io.StringIO(HEADER + format_row(row))))


def test_the_first_columns_are_the_simulators_profile() -> None:
    assert COLUMNS[:3] == REQUIRED_COLUMNS
    assert COLUMNS[3] == "pv_ac_w"  # the profile's optional fourth


def test_a_row_holds_what_the_gx_showed_and_what_venus_prio_did() -> None:
    got = cells(row_from(snapshot=SNAP, status=status(Reason.PV_PRIORITY), time_s=3600.04))
    assert got == {
        "time_s": "3600.0",
        "pv_dc_w": "813",
        "load_w": "455",
        "pv_ac_w": "",  # not published: empty, not 0
        "soc": "21.3",
        "battery_w": "250",
        "grid_w": "-3",
        "dc_system_w": "12",
        "floor": "20.0",
        "setting_w": "3000",
        "override_w": "720",
        "target_w": "720",
        "actuator": "override",
        "reason": "PV_PRIORITY",
        "mode": "auto",
        "flash_writes": "2",
        "override_writes": "41",
        "capacity_kwh": "",
    }


def test_a_dry_run_from_the_flag_or_config_is_recorded_as_dry_run() -> None:
    # ``run --dry-run`` and ``writes.dry_run`` leave the mode "auto" but steer nothing: the GX
    # runs stock ESS, and the replay must compare with that (replay.Measured.policy).
    flagged = dataclasses.replace(status(Reason.PV_PRIORITY), dry_run=True)
    assert row_from(snapshot=SNAP, status=flagged, time_s=1.0).mode == "dry-run"
    off = dataclasses.replace(service_status(mode="off"), dry_run=True)
    assert row_from(snapshot=SNAP, status=off, time_s=1.0).mode == "off"


def test_disconnected_or_stale_rows_keep_no_measured_value() -> None:
    for reason, connected in (
        (Reason.STAND_ASIDE_STALE, True),
        (Reason.STAND_ASIDE_DISCONNECTED, False),
        (Reason.PV_PRIORITY, False),
    ):
        row = row_from(snapshot=SNAP, status=status(reason, connected=connected), time_s=5.0)
        assert (row.pv_dc_w, row.load_w, row.soc, row.battery_w, row.grid_w) == (None,) * 5
        assert (row.setting_w, row.override_w) == (None, None)
        assert row.reason == reason.value and row.floor == 20.0  # the gap says why


def test_garbage_numbers_become_empty_cells() -> None:
    snap = Snapshot(soc=float("nan"), pv_dc_w=1e12, ac_load_w=-0.2, battery_power_w=float("inf"))
    got = cells(row_from(snapshot=snap, status=status(Reason.NORMAL), time_s=1.0))
    assert (got["soc"], got["pv_dc_w"], got["load_w"], got["battery_w"]) == ("", "", "0", "")


def test_the_longest_row_fits_max_row_bytes() -> None:
    longest_reason = max((r.value for r in Reason), key=len)
    worst = RecordRow(
        time_s=90000.0,
        **{name: -9999999.4 for name in COLUMNS[1:12]},
        actuator="override",
        reason=longest_reason,
        mode="dry-run",
        flash_writes=10**12,  # a counter is never garbage-checked: all its digits
        override_writes=10**12,
        capacity_kwh=-9999999.4,
    )
    assert len(format_row(worst).encode()) <= MAX_ROW_BYTES
