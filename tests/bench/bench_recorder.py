"""Measure the recorder: disk use of a generated day and the cost of a row, a flush, a close.

    python -m tests.bench.bench_recorder [--interval-s 10]

The day: the built-in cloudy-floor day's PV and loads (1 s data, sampled every interval) with
stock ESS's simulated SOC and battery power; every row goes through ``row_from`` and the
``Recorder`` on a fake clock, as in the service. Prints bytes per row, the day's ``.csv`` and
``.csv.gz`` sizes, and the wall time of ``add``, of a one-minute ``flush`` and of the midnight
close (the gzip).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import List

from tests.recording_tools import JUNE_1, service_status, utc_day
from venus_prio.config import default_config
from venus_prio.model import Snapshot
from venus_prio.recorder import Recorder
from venus_prio.sim.runner import run_scenario
from venus_prio.sim.scenarios import builtin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interval-s", type=float, default=10.0)
    interval = parser.parse_args().interval_s
    config = default_config()
    day = builtin("cloudy-floor", 1)
    _metrics, trace = run_scenario(day, config, "stock")
    status = service_status(floor=10.0, target_w=850.0, flash_writes=3, override_writes=1234)
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(directory=Path(tmp), interval_s=interval, keep_days=14, local_day=utc_day)
        adds: List[float] = []
        flushes: List[float] = []
        t = 0.0
        while t < 86400:
            minute = min(int(t // 60), len(trace.t) - 1)
            second = int(t)
            pv, load = day.pv_dc_w[second], day.load_w[second]
            battery = trace.battery_w[minute] + (pv - trace.pv_dc[minute])
            snapshot = Snapshot(
                soc=trace.soc[minute],
                pv_dc_w=pv,
                ac_load_w=load,
                grid_w=max(0.0, load - pv - 3000.0),
                dc_system_w=12.0,
                battery_power_w=battery,
                max_discharge_w=trace.limit[minute],
                override_w=trace.override[minute],
            )
            now = JUNE_1 + t
            started = time.perf_counter()
            rec.add(now, snapshot=snapshot, status=status)
            adds.append(time.perf_counter() - started)
            if rec.flush_due(now):
                started = time.perf_counter()
                rec.flush(now)
                flushes.append(time.perf_counter() - started)
            t += interval
        rec.flush(JUNE_1 + 86399)
        raw = (Path(tmp) / "2025-06-01.csv").stat().st_size
        started = time.perf_counter()
        rec.flush(JUNE_1 + 86400 + 1)
        close = time.perf_counter() - started
        packed = (Path(tmp) / "2025-06-01.csv.gz").stat().st_size
    rows = rec.rows_written
    print(f"interval {interval:g} s: {rows} rows, {raw / rows:.1f} bytes per row")
    print(f"day file: {raw / 1e6:.3f} MB .csv, {packed / 1e6:.3f} MB .csv.gz (x{raw / packed:.1f})")
    print(f"add: median {statistics.median(adds) * 1e6:.1f} us, max {max(adds) * 1e6:.0f} us")
    print(
        f"flush (a minute of rows): median {statistics.median(flushes) * 1e6:.0f} us, "
        f"max {max(flushes) * 1e3:.2f} ms over {len(flushes)} flushes"
    )
    print(f"midnight close (gzip of the day): {close * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
