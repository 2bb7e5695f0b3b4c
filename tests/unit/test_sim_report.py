"""The ``simulate`` command through ``venus_prio.cli.main``: JSON, table, CSV profiles, plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from venus_prio.cli import main

POLICIES = ["stock", "original", "venus_prio"]


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


def test_simulate_cloudy_floor_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--scenario", "cloudy-floor", "--json"]) == 0
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
    assert metrics["stock"]["writes_total"] == 0
    assert metrics["original"]["writes_total"] > 0
    assert doc["wall_time_s"] > 0


def test_simulate_csv_profile_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--profile", str(small_profile(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "== two-hours:" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("stock"))
    assert header.split() == POLICIES
    writes = next(line for line in out.splitlines() if line.startswith("writes total"))
    stock, original, _ours = (int(v) for v in writes.split()[-3:])
    assert stock == 0 and original > 0
    assert "wall time" in out


def test_simulate_csv_profile_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--profile", str(small_profile(tmp_path)), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    metrics = doc["scenarios"]["two-hours"]
    assert sum(metrics["venus_prio"]["reason_seconds"].values()) == pytest.approx(7200.0)


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
