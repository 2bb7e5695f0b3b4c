"""The ``simulate`` command through ``venus_prio.cli.main``: JSON, table, CSV profiles, plot."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, NamedTuple

import pytest

from venus_prio.cli import main
from venus_prio.config import OVERRIDE_VARIANTS
from venus_prio.sim.metrics import Metrics, MetricsAccumulator
from venus_prio.sim.report import headline

POLICIES = ["stock", "original", "venus_prio[override]", "venus_prio[setting]"]


def small_profile(tmp_path: Path) -> Path:
    """Write a two-hour CSV profile around the floor: PV in steps, a kettle."""
    rows = ["time_s,pv_dc_w,load_w"]
    for minute in range(120):
        pv = 200.0 + 300.0 * (minute % 7)
        load = 2300.0 if minute % 30 == 0 else 300.0
        rows.append(f"{minute * 60},{pv},{load}")
    path = tmp_path / "two-hours.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def coarse_config(tmp_path: Path) -> Path:
    """Write a config that steps the simulator every 10 s: a whole day in a tenth of the time.

    What the report says does not depend on the step; the shipped step (``sim.dt_s``) is the
    one ``test_sim_goals`` judges the goals with."""
    path = tmp_path / "coarse.yaml"
    path.write_text("control:\n  max_inverter_power_w: 3000\nsim:\n  dt_s: 10\n", encoding="utf-8")
    return path


def test_simulate_cloudy_floor_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "--scenario", "cloudy-floor", "--json", "--config"]
    assert main([*args, str(coarse_config(tmp_path))]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert list(doc["scenarios"]) == ["cloudy-floor"]
    metrics = doc["scenarios"]["cloudy-floor"]
    assert list(metrics) == POLICIES
    for policy in POLICIES:
        m = metrics[policy]
        assert m["policy"] == policy
        assert sum(m["reason_seconds"].values()) == pytest.approx(86400.0)
        assert m["throughput_kwh"] == pytest.approx(
            m["battery_charged_kwh"] + m["battery_discharged_kwh"]
        )
    writes = {p: (m["flash_writes_total"], m["override_writes_total"]) for p, m in metrics.items()}
    assert writes["stock"] == (0, 0)
    assert writes["original"][0] > 0 and writes["original"][1] == 0
    assert writes["venus_prio[override]"][0] == 0 and writes["venus_prio[override]"][1] > 0
    assert writes["venus_prio[setting]"][0] > 0 and writes["venus_prio[setting]"][1] == 0
    assert doc["headlines"]["cloudy-floor"].startswith("cloudy-floor: venus-prio (override)")
    assert f"(the original add-on: {writes['original'][0]:,})" in doc["headlines"]["cloudy-floor"]
    assert doc["override_variant"] == "honoured"
    assert doc["wall_time_s"] > 0
    limit = doc["physical_limits"]["cloudy-floor"]
    assert limit["start_soc"] == 16.0
    assert 0 < limit["surplus_kwh"] < limit["throughput_kwh"]
    for policy in POLICIES:
        mine = limit["policies"][policy]
        assert mine["end_soc"] == metrics[policy]["end_soc"]
        assert mine["above_limit_kwh"] == pytest.approx(
            metrics[policy]["throughput_kwh"] - mine["limit_kwh"]
        )
        assert mine["above_limit_kwh"] > 0


def test_simulate_csv_profile_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--profile", str(small_profile(tmp_path))]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("two-hours: venus-prio (override) cycled the battery")
    assert lines[1].startswith("== two-hours:")  # the headline sits right above its table
    header = next(line for line in lines if line.strip().startswith("stock"))
    assert header.split() == POLICIES

    def row(label: str) -> List[int]:
        line = next(line for line in lines if line.startswith(label))
        return [int(v) for v in line[len(label) :].split()]

    # Columns: stock, original, venus_prio[override], venus_prio[setting].
    assert [n > 0 for n in row("flash writes (setting)")] == [False, True, False, True]
    assert [n > 0 for n in row("override writes (RAM)")] == [False, False, True, False]
    # The physical limit under the table: the day's line, then one figure per policy.
    assert next(line for line in lines if line.startswith("physical limit: ")).endswith(
        "to end at the start SOC 16 %)"
    )
    label = "throughput above the limit kWh"
    above = next(line for line in lines if line.startswith(label))
    assert [float(v) >= 0 for v in above[len(label) :].split()] == [True] * 4
    assert "wall time" in out


def test_simulate_csv_profile_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--profile", str(small_profile(tmp_path)), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    metrics = doc["scenarios"]["two-hours"]
    for policy in POLICIES[2:]:
        assert sum(metrics[policy]["reason_seconds"].values()) == pytest.approx(7200.0)


def test_simulate_override_variants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--override sets how the simulated GX treats the override: only venus_prio[override] cares."""
    profile = str(small_profile(tmp_path))
    runs: Dict[str, Dict[str, Any]] = {}
    for variant in OVERRIDE_VARIANTS:
        assert main(["simulate", "--profile", profile, "--override", variant, "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["override_variant"] == variant
        runs[variant] = doc["scenarios"]["two-hours"]
    energy = ("throughput_kwh", "grid_import_kwh", "end_soc")

    def battery(variant: str, policy: str) -> List[float]:
        return [runs[variant][policy][key] for key in energy]

    for policy in ("stock", "original", "venus_prio[setting]"):
        assert {tuple(battery(v, policy)) for v in OVERRIDE_VARIANTS} == {
            tuple(battery("honoured", policy))
        }
    ours = "venus_prio[override]"
    # Dropped (absent) or stored without effect (ignored): no cap in force, the same day.
    assert battery("absent", ours) == battery("ignored", ours)
    assert battery("honoured", ours) != battery("ignored", ours)
    assert battery("reset_every_5s", ours) != battery("honoured", ours)
    assert {runs[v][ours]["flash_writes_total"] for v in OVERRIDE_VARIANTS} == {0}


def test_simulate_unknown_override_variant(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--override", "sometimes"])
    assert exc.value.code == 2
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err


def test_simulate_bad_csv_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("time_s,pv_dc_w,load_w\n0,100,300\n60,lots,300\n", encoding="utf-8")
    assert main(["simulate", "--profile", str(path)]) == 2
    captured = capsys.readouterr()
    assert f"{path}:3: pv_dc_w must be a number" in captured.err
    assert captured.out == ""


def test_simulate_unknown_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--scenario", "rainy"]) == 2
    err = capsys.readouterr().err
    assert "unknown scenario 'rainy'" in err
    assert "cloudy-floor, sunny, winter, all" in err


def test_simulate_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "day.png"  # matplotlib is in the dev extra: a missing one fails here
    assert main(["simulate", "--profile", str(small_profile(tmp_path)), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"plot written to {png}" in capsys.readouterr().out


def test_simulate_plot_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes the import fail
    png = tmp_path / "day.png"
    assert main(["simulate", "--profile", str(small_profile(tmp_path)), "--plot", str(png)]) == 2
    assert "needs matplotlib" in capsys.readouterr().err
    assert not png.exists()


def day(policy: str, *, throughput: float, imported: float, flash: int) -> Metrics:
    """Return a day's metrics with only what the headline reads set to something meaningful
    (the rest: an empty day's, all zero)."""
    empty = MetricsAccumulator(policy=policy, battery_kwh=10.0, start_soc=15.0).result()
    return dataclasses.replace(
        empty,
        battery_charged_kwh=throughput / 2,
        battery_discharged_kwh=throughput / 2,
        throughput_kwh=throughput,
        equivalent_full_cycles=throughput / 20,
        grid_import_kwh=imported + 0.5,  # the raw import: the headline must not read it
        grid_import_adjusted_kwh=imported,
        flash_writes_total=flash,
        override_writes_total=9999,  # the override's writes: the headline must not read them
    )


class Case(NamedTuple):
    """Throughput and adjusted import of stock and ours, flash writes, the expected sentence."""

    stock_tp: float
    stock_imp: float
    ours_tp: float
    ours_imp: float
    ours_flash: int
    original_flash: int
    text: str  # what follows "<name>: venus-prio (override) "


HEADLINES = [
    Case(
        3.48, 8.91, 1.81, 8.85, 0, 1779,
        "cycled the battery 48 % less than stock ESS, imported 0.7 % less from the grid, "
        "and wrote 0 times to flash (the original add-on: 1,779)",
    ),
    Case(
        11.71, 2.51, 11.71, 2.51, 0, 1471,
        "cycled the battery as much as stock ESS, imported as much from the grid, "
        "and wrote 0 times to flash (the original add-on: 1,471)",
    ),
    Case(  # 15 % more cycling; 0.04 % more import rounds to "as much"
        2.0, 10.0, 2.3, 10.004, 1, 12,
        "cycled the battery 15 % more than stock ESS, imported as much from the grid, "
        "and wrote once to flash (the original add-on: 12)",
    ),
    Case(  # 0.4 % more cycling rounds to "as much"
        10.0, 10.0, 10.04, 10.06, 80, 0,
        "cycled the battery as much as stock ESS, imported 0.6 % more from the grid, "
        "and wrote 80 times to flash (the original add-on: 0)",
    ),
    Case(  # stock did not cycle the battery at all: no percentage of 0, the difference in kWh
        0.0, 0.0, 0.25, 0.0, 0, 12345,
        "cycled the battery 0.25 kWh more than stock ESS, imported as much from the grid, "
        "and wrote 0 times to flash (the original add-on: 12,345)",
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", HEADLINES)
def test_headline(case: Case) -> None:
    ours = "venus_prio[override]"
    metrics = {
        "stock": day("stock", throughput=case.stock_tp, imported=case.stock_imp, flash=0),
        "original": day("original", throughput=1.0, imported=1.0, flash=case.original_flash),
        ours: day(ours, throughput=case.ours_tp, imported=case.ours_imp, flash=case.ours_flash),
        # The setting actuator is not the headline's: wild values must not leak into it.
        "venus_prio[setting]": day("venus_prio[setting]", throughput=99.0, imported=99.0, flash=7),
    }
    assert headline("dayx", metrics) == f"dayx: venus-prio (override) {case.text}"
