"""Benchmark script (not a test): how long the simulator takes for one day, per policy.

Run from the repository root::

    .venv-3.12/bin/python tests/bench/bench_sim.py [--scenario cloudy-floor] [--repeat 3]
        [--profile FILE.csv] [--cprofile]

For each policy it reports the wall time and the CPU time of this process (``process_time``:
what the simulation itself costs, less disturbed by other processes on a shared machine), the
best of ``--repeat`` runs, then the sum over the policies: what ``venus-prio simulate`` spends
on one day, without start-up and output. ``--cprofile`` runs every policy once under cProfile
and prints the top functions by own time instead.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path
from typing import List, Optional

from venus_prio.config import default_config
from venus_prio.sim.policies import POLICY_NAMES
from venus_prio.sim.runner import run_scenario
from venus_prio.sim.scenarios import builtin, load_profile_csv


def main(argv: Optional[List[str]] = None) -> int:
    """Time one day of every policy; print a line per policy and the total."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="cloudy-floor")
    parser.add_argument("--profile", type=Path, help="a profile CSV instead of a built-in day")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cprofile", action="store_true", help="profile instead of timing")
    args = parser.parse_args(argv)
    config = default_config()
    started = time.perf_counter()
    if args.profile is not None:
        profile = load_profile_csv(args.profile)
    else:
        profile = builtin(args.scenario, config.sim.seed)
    print(f"{profile.name}: profile ready in {time.perf_counter() - started:.2f} s")
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        for name in POLICY_NAMES:
            run_scenario(profile, config, name)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        return 0
    total_wall = total_cpu = 0.0
    for name in POLICY_NAMES:
        walls, cpus = [], []
        for _ in range(args.repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            run_scenario(profile, config, name)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        total_wall += min(walls)
        total_cpu += min(cpus)
        print(
            f"{name:22s} wall {min(walls):6.2f} s  cpu {min(cpus):6.2f} s  (best of {args.repeat})"
        )
    print(f"{'every policy':22s} wall {total_wall:6.2f} s  cpu {total_cpu:6.2f} s")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
