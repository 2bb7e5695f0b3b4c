"""Write ``december.csv``: a grey December day near the floor, one row every 10 s.

A profile shaped like a measured winter day rather than the built-in scenarios: a low sun
(08:20-16:10, clear-sky peak 1.1 kW DC from a south array at 15 degrees of elevation), a
mostly overcast sky whose brightness wanders slowly with short sunny breaks, and a household
of 250-400 W with a heat-pump circulation pump, kettle, cooking and an evening peak. Seeded, so
running it again gives the same file: ``python tests/data/make_december.py``.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import List

STEP_S = 10
DAY_S = 86400
SUNRISE_H = 8.33
SUNSET_H = 16.17
CLEAR_PEAK_W = 1100.0


def sky(rng: random.Random) -> List[float]:
    """Return a transmission per row: a slow random walk under cloud, sunny breaks of minutes."""
    out: List[float] = []
    level = 0.25
    sunny_left = 0
    for _ in range(DAY_S // STEP_S):
        level = min(0.45, max(0.08, level + rng.gauss(0.0, 0.02)))
        if sunny_left == 0 and rng.random() < 0.004:
            sunny_left = rng.randint(3, 30)  # 30 s to 5 min of sun through a gap
        if sunny_left > 0:
            sunny_left -= 1
            value = rng.uniform(0.7, 1.0)
        else:
            value = level
        out.append(value * (1.0 + rng.uniform(-0.04, 0.04)))
    return out


def loads(rng: random.Random) -> List[float]:
    rows = DAY_S // STEP_S
    load = [280.0 + rng.uniform(-20.0, 20.0) for _ in range(rows)]

    def add(start_h: float, minutes: float, watts: float) -> None:
        first = int(start_h * 3600 / STEP_S)
        for i in range(first, min(rows, first + int(minutes * 60 / STEP_S))):
            load[i] += watts

    t = rng.uniform(0.0, 0.5)
    while t < 24.0:  # fridge
        add(t, rng.uniform(10, 16), 90.0)
        t += rng.uniform(0.7, 1.0)
    add(6.0, 17 * 60, 60.0)  # circulation pump of the heating, 06:00-23:00
    for hour in (7.1, 10.2, 12.9, 15.4, 20.6):  # kettle
        add(hour + rng.uniform(-0.2, 0.2), rng.uniform(2, 4), 2000.0)
    add(7.3, 20, 150.0)  # breakfast: toaster, coffee
    add(12.3 + rng.uniform(-0.2, 0.2), 35, 1200.0)  # lunch on the hob
    start = 11.0 + rng.uniform(-0.5, 0.5)  # washing machine: heating, then the motor
    add(start, 18, 2000.0)
    add(start + 0.3, 60, 200.0)
    start = 17.6 + rng.uniform(-0.3, 0.3)  # oven, thermostat cycling
    for cycle in range(14):
        add(start + cycle * 0.05, 2, 2200.0)
    add(17.0, 5 * 60, 250.0)  # evening: lights, television, computer
    return load


def main() -> None:
    rng = random.Random(20231215)
    transmission = sky(rng)
    household = loads(rng)
    lines = ["time_s,pv_dc_w,load_w"]
    for i in range(DAY_S // STEP_S):
        t = i * STEP_S
        x = (t / 3600.0 - SUNRISE_H) / (SUNSET_H - SUNRISE_H)
        envelope = math.sin(math.pi * x) ** 1.5 if 0.0 < x < 1.0 else 0.0
        pv = CLEAR_PEAK_W * envelope * transmission[i]
        lines.append(f"{t},{pv:.1f},{household[i]:.1f}")
    path = Path(__file__).with_name("december.csv")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
