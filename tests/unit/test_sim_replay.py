"""Replaying a day recording: the round trip through the recorder, the measured column, gaps,
the model error, --recorded, and broken files (named with their line, exit 2)."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path
from typing import List

import pytest

from tests.recording_tools import JUNE_1, service_status, utc_day
from venus_prio.cli import main
from venus_prio.config import default_config
from venus_prio.errors import InputError
from venus_prio.model import Reason, Snapshot
from venus_prio.recorder import Recorder
from venus_prio.recording import HEADER
from venus_prio.sim.replay import load_recording, recorded_path
from venus_prio.sim.runner import run_scenario
from venus_prio.sim.scenarios import builtin, load_profile_csv

START_S = 10 * 3600
HOURS = 4


def minute_profile(tmp_path: Path) -> Path:
    """Write four hours of the built-in cloudy day at one row a minute (a plain profile)."""
    day = builtin("cloudy-floor", 1)
    rows = ["time_s,pv_dc_w,load_w"]
    for t in range(START_S, START_S + HOURS * 3600, 60):
        rows.append(f"{t},{day.pv_dc_w[t]},{day.load_w[t]}")
    path = tmp_path / "minutes.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def record_stock_day(tmp_path: Path) -> Path:
    """Simulate stock ESS on the minute profile and record it as the service would: every row
    through row_from and the Recorder, on a fake clock; return the closed ``.csv.gz``."""
    config = default_config()
    _metrics, trace = run_scenario(load_profile_csv(minute_profile(tmp_path)), config, "stock")
    floor = config.sim.reserve_soc - config.control.prio_band  # the user's Minimum SOC
    directory = tmp_path / "state" / "recordings"
    rec = Recorder(directory=directory, interval_s=60.0, keep_days=14, local_day=utc_day)
    for i, t in enumerate(trace.t):
        now = JUNE_1 + t
        snapshot = Snapshot(
            soc=trace.soc[i],
            pv_dc_w=trace.pv_dc[i],
            ac_load_w=trace.load[i],
            battery_power_w=trace.battery_w[i],
            max_discharge_w=trace.limit[i],
        )
        assert rec.due(now)
        rec.add(
            now,
            snapshot=snapshot,
            status=service_status(
                reason=Reason.STAND_ASIDE_DISABLED, floor=floor, mode="dry-run", actuator="none"
            ),
        )
        if rec.flush_due(now):
            rec.flush(now)
    rec.flush(JUNE_1 + 86400 + 1)  # the next day: June 1 is closed
    return directory / "2025-06-01.csv.gz"


def test_a_recorded_stock_day_replays_to_the_simulators_own_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = record_stock_day(tmp_path)
    config = default_config()
    direct, _trace = run_scenario(load_profile_csv(minute_profile(tmp_path)), config, "stock")
    assert main(["simulate", "--profile", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    measured = doc["measured"]["2025-06-01"]
    replayed = doc["scenarios"]["2025-06-01"]["stock"]
    assert measured["policy"] == "stock"  # dry-run all day: the GX ran stock ESS
    assert measured["recorded_h"] == pytest.approx(HOURS) and measured["gaps"] == 0
    # The same profile, start SOC and reserve: the replay is the direct run but for the
    # recording's rounding of PV and loads to the watt.
    assert replayed["throughput_kwh"] == pytest.approx(direct.throughput_kwh, rel=1e-3)
    # The measured column integrates the battery power of the first second of each minute over
    # the minute; within a minute of constant PV and load the power is constant but for the
    # inverter's reaction to SOC limits: 2 % covers it (the stretch's throughput is ~2 kWh).
    assert measured["throughput_kwh"] == pytest.approx(direct.throughput_kwh, rel=0.02)
    assert doc["model_error_percent"]["2025-06-01"] < 2.0
    assert measured["min_soc"] == pytest.approx(direct.min_soc, abs=0.3)
    assert measured["micro_cycles"] == direct.micro_cycles
    assert measured["flash_writes_total"] == 0


def test_the_table_and_headline_show_the_measured_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = record_stock_day(tmp_path)
    state_dir = tmp_path / "state"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"control:\n  max_inverter_power_w: 3000\nstate_dir: {state_dir}\n", encoding="utf-8"
    )
    assert path.exists()
    assert main(["simulate", "--recorded", "2025-06-01", "--config", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("2025-06-01: 4.0 h recorded, stock in force: the battery moved ")
    assert "model error" in out[1]
    header = out[2].split()
    assert "start SOC" in out[2] and header[-1] == "=="
    columns = out[3].split()
    assert columns[-1] == "measured"
    throughput = next(line for line in out if line.startswith("throughput kWh")).split()
    losses = next(line for line in out if line.startswith("conversion losses")).split()
    assert len(throughput) == 2 + 5 and losses[-1] == "-"  # not measurable: shown as "-"


def test_recorded_finds_the_day_and_lists_the_days_there_are(tmp_path: Path) -> None:
    directory = tmp_path / "recordings"
    directory.mkdir()
    (directory / "2025-06-01.csv.gz").write_bytes(b"")
    (directory / "2025-06-02.csv").write_text(HEADER)
    today = date(2025, 6, 2)
    assert recorded_path(tmp_path, "yesterday", today=today).name == "2025-06-01.csv.gz"
    assert recorded_path(tmp_path, "today", today=today).name == "2025-06-02.csv"
    with pytest.raises(InputError, match=r"no recording of 2025-05-30 \(recorded days: 2025-06-01"):
        recorded_path(tmp_path, "2025-05-30", today=today)
    with pytest.raises(InputError, match="expected today, yesterday or YYYY-MM-DD"):
        recorded_path(tmp_path, "last week", today=today)


def write_recording(path: Path, rows: List[str]) -> Path:
    path.write_text(HEADER + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def row(
    t: float,
    *,
    pv: str = "500",
    soc: str = "20.0",
    battery: str = "100",
    grid: str = "0",
    reason: str = "PV_PRIORITY",
    writes: str = "3",
    mode: str = "auto",
    actuator: str = "override",
    override: str = "400",
) -> str:
    cells = [f"{t:g}", pv, "300", "", soc, battery, grid, "5", "10.0", "3000", override, "400"]
    return ",".join([*cells, actuator, reason, mode, "2", writes, ""])


def test_a_few_minutes_recorded_give_no_model_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Five minutes at 100 W: 0.008 kWh, where the start SOC's rounding alone is 0.01 kWh.
    path = write_recording(tmp_path / "2025-06-05.csv", [row(t * 10) for t in range(30)])
    assert main(["simulate", "--profile", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_error_percent"] == {"2025-06-05": None}
    assert main(["simulate", "--profile", str(path)]) == 0
    headline = capsys.readouterr().out.splitlines()[1]
    assert headline.endswith(
        "the battery moved 0.01 kWh, too little for a model error (it needs 0.1 kWh)"
    )


def test_measured_figures_integrate_what_was_recorded(tmp_path: Path) -> None:
    rows = [
        row(0, battery="100", grid="50", writes="3"),
        row(10, battery="-200", grid="-20", writes="5"),
        row(20, pv="", soc="", battery="", grid="", reason="STAND_ASIDE_STALE", writes="5"),
        row(30, battery="100", writes="1"),  # the counter fell: a restart, 1 write since
        row(40, battery="100", writes="2"),
    ]
    rec = load_recording(write_recording(tmp_path / "2025-06-03.csv", rows))
    assert rec is not None
    m = rec.measured
    assert m.policy == "venus_prio[override]"
    assert m.battery_charged_kwh == pytest.approx(300 * 10 / 3.6e6)  # 3 rows of 100 W x 10 s
    assert m.battery_discharged_kwh == pytest.approx(200 * 10 / 3.6e6)
    assert m.grid_import_kwh == pytest.approx(50 * 10 / 3.6e6)
    assert m.override_writes_total == 2 + 1 + 1
    assert m.reason_seconds == {"PV_PRIORITY": 40.0, "STAND_ASIDE_STALE": 10.0}
    assert (m.min_soc, m.end_soc, m.floor) == (20.0, 20.0, 10.0)
    assert rec.start_soc == 20.0 and rec.battery_kwh is None
    # The stale row is not measured: the row before holds over it (10 s: no gap).
    assert rec.profile.time_s == (0.0, 10.0, 30.0, 40.0) and rec.profile.gaps == ()


def test_a_long_gap_is_bridged_with_zero_inputs_and_reported(tmp_path: Path) -> None:
    rows = [row(t) for t in (0, 10, 20)] + [row(t) for t in (3620, 3630, 3640)]
    rec = load_recording(write_recording(tmp_path / "2025-06-03.csv", rows))
    assert rec is not None
    p = rec.profile
    assert p.time_s == (0.0, 10.0, 20.0, 30.0, 3620.0, 3630.0, 3640.0)
    assert p.pv_dc_w[3] == 0.0 and p.load_w[3] == 0.0 and p.gaps == ((30.0, 3620.0),)
    assert p.end_s == 3650.0
    assert rec.measured.gaps == 1 and rec.measured.gap_h == pytest.approx(3590 / 3600)
    assert rec.measured.recorded_h == pytest.approx(60 / 3600)
    # Nothing is counted over the gap: 6 rows of 100 W for 10 s each.
    assert rec.measured.battery_charged_kwh == pytest.approx(6 * 100 * 10 / 3.6e6)


def gz_of(rows: int) -> bytes:
    return gzip.compress("".join([HEADER, *(row(t * 10) + "\n" for t in range(rows))]).encode())


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (lambda data: data[: len(data) // 2], "truncated or corrupt gzip data"),
        (lambda data: data[:40] + b"\xff" * 40 + data[80:], "gzip data"),
        (lambda data: b"\x1f\x8b\x08" + b"\x00" * 20, "gzip data"),
    ],
)
def test_a_damaged_gz_names_the_file_and_line_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: object, what: str
) -> None:
    path = tmp_path / "2025-06-03.csv.gz"
    path.write_bytes(damage(gz_of(2000)))  # type: ignore[operator]
    assert main(["simulate", "--profile", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"venus-prio: bad input: {path}:")
    line = int(err.split(f"{path}:", 1)[1].split(":", 1)[0])
    assert 1 <= line <= 2001 and what in err


def test_a_recording_replays_while_its_day_is_still_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [row(t * 10, battery="50") for t in range(200)]
    path = write_recording(tmp_path / "2025-06-04.csv", rows)
    with path.open("a") as handle:
        handle.write("2000,5")  # the recorder is in the middle of a write
    assert main(["simulate", "--profile", str(path)]) == 2
    assert f"{path}:202: expected 18 columns, got 2" in capsys.readouterr().err
    write_recording(path, rows)
    assert main(["simulate", "--profile", str(path)]) == 0
    assert "2025-06-04: 0.6 h recorded" in capsys.readouterr().out


def test_the_plot_draws_the_measured_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_recording(tmp_path / "2025-06-05.csv", [row(t * 60) for t in range(60)])
    png = tmp_path / "day.png"
    assert main(["simulate", "--profile", str(path), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
