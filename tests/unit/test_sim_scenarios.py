"""Built-in day scenarios (seeded, deterministic) and CSV profiles (errors name file and line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from venus_prio.errors import InputError
from venus_prio.sim.scenarios import DAY_S, SCENARIOS, Profile, builtin, load_profile_csv


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_same_seed_same_profile(name: str) -> None:
    assert builtin(name, 7) == builtin(name, 7)
    assert builtin(name, 7).pv_dc_w != builtin(name, 8).pv_dc_w


@pytest.mark.parametrize(
    ("name", "peak_low", "peak_high"),
    [("cloudy-floor", 1200.0, 1700.0), ("sunny", 3800.0, 4200.0), ("winter", 450.0, 640.0)],
)
def test_scenario_shape(name: str, peak_low: float, peak_high: float) -> None:
    profile = builtin(name, 1)
    assert len(profile.time_s) == DAY_S
    assert profile.time_s[0] == 0.0 and profile.end_s == DAY_S
    assert peak_low <= max(profile.pv_dc_w) <= peak_high
    assert profile.pv_dc_w[0] == 0.0 and profile.pv_dc_w[DAY_S - 1] == 0.0  # night
    assert min(profile.load_w) >= 250.0
    assert max(profile.load_w) >= 2000.0  # kettle / oven spikes
    assert set(profile.pv_ac_w) == {0.0}


def test_cloudy_floor_is_mostly_below_the_loads() -> None:
    profile = builtin("cloudy-floor", 1)
    daylight = [i for i, pv in enumerate(profile.pv_dc_w) if pv > 0]
    below = sum(1 for i in daylight if profile.pv_dc_w[i] < profile.load_w[i])
    assert below / len(daylight) > 0.6


def test_unknown_scenario_names_the_valid_ones() -> None:
    with pytest.raises(InputError, match="cloudy-floor, sunny, winter"):
        builtin("rainy", 1)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "day.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_profile_holds_values_until_the_next_row(tmp_path: Path) -> None:
    path = write(tmp_path, "time_s,pv_dc_w,load_w\n0,100,300\n10,200,400\n\n30,0,500\n")
    profile = load_profile_csv(path)
    assert profile == Profile(
        name="day",
        time_s=(0.0, 10.0, 30.0),
        pv_dc_w=(100.0, 200.0, 0.0),
        load_w=(300.0, 400.0, 500.0),
        pv_ac_w=(0.0, 0.0, 0.0),
    )
    assert [profile.index_at(t) for t in (0, 9.5, 10, 29, 30, 45)] == [0, 0, 1, 1, 2, 2]
    assert profile.end_s == 50.0  # the last row holds for the interval before it


def test_csv_profile_with_ac_pv_in_any_column_order(tmp_path: Path) -> None:
    path = write(tmp_path, "load_w,time_s,pv_ac_w,pv_dc_w\n300,0,50,100\n")
    profile = load_profile_csv(path)
    assert profile.pv_ac_w == (50.0,) and profile.load_w == (300.0,)
    assert profile.end_s == 1.0


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("", "day.csv:", "empty file"),
        ("\n\n", "day.csv:", "empty file"),
        ("time_s,pv_dc_w\n0,100\n", "day.csv:1:", "missing column 'load_w'"),
        ("time_s,pv_dc_w,load_w,wind\n", "day.csv:1:", "unknown column 'wind'"),
        ("time_s,pv_dc_w,load_w\n", "day.csv:1:", "no data rows"),
        ("time_s,pv_dc_w,load_w\n0,100,300\n1,100\n", "day.csv:3:", "expected 3 columns"),
        ("time_s,pv_dc_w,load_w\n0,100,300\n1,abc,300\n", "day.csv:3:", "pv_dc_w must be a number"),
        ("time_s,pv_dc_w,load_w\n0,100,300\n1,100,nan\n", "day.csv:3:", "load_w must be a finite"),
        ("time_s,pv_dc_w,load_w\n0,100,300\n0,100,300\n", "day.csv:3:", "time_s must increase"),
        ("time_s,pv_dc_w,load_w\n5,100,300\n2,100,300\n", "day.csv:3:", "time_s must increase"),
        ("time_s,pv_dc_w,load_w\n0,-5,300\n", "day.csv:2:", "pv_dc_w must be >= 0"),
        ("time_s,pv_dc_w,load_w\n\n0,1,300\n\nx,1,2\n", "day.csv:5:", "time_s must be a number"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as info:
        load_profile_csv(path)
    message = str(info.value)
    assert where in message
    assert what in message


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        load_profile_csv(tmp_path / "nope.csv")
