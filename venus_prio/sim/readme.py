"""Regenerate the README's simulator figures and picture: ``make readme`` (``python -m ...``).

Every figure between a ``<!-- BEGIN sim:<block> -->`` and its ``<!-- END sim:<block> -->``
marker in README.md is written here from a run of the simulator with ``config.yaml``'s own
values, never by hand, so the README cannot drift from the defaults it describes:

- ``sim:tables``: what ``venus-prio simulate --scenario all --plot .github/simulation.png``
  prints (headline and table per scenario, without the wall-time line) and the picture;
- ``sim:profile``: the same for ``--profile tests/data/december.csv``;
- ``sim:limits``: the physical limit (``limit.py``) of the built-in days, December and the two
  measured days in ``tests/data/real-days/``, against each policy's throughput;
- ``sim:seeds``: cloudy-floor for seeds 1 to 8, one line each;
- ``sim:override``: the override's defaults against the alternatives that were measured
  (``OVERRIDE_CANDIDATES``), summed over cloudy-floor seeds 1 to 8, winter and December.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from venus_prio.config import Config, load_config
from venus_prio.sim import goals
from venus_prio.sim.limit import DayLimit
from venus_prio.sim.metrics import Metrics
from venus_prio.sim.policies import POLICY_NAMES, VenusPrioOverridePolicy, VenusPrioPolicy
from venus_prio.sim.report import (
    Results,
    format_limit,
    format_table,
    headline,
    limit_of,
    plot_results,
)
from venus_prio.sim.runner import compare, compare_with_traces, run_scenario
from venus_prio.sim.scenarios import SCENARIOS, Profile, builtin, load_profile_csv

PLOT = Path(".github/simulation.png")
PROFILE = Path("tests/data/december.csv")
# Two measured days (1-min PV and household load; sources in tests/data/real-days/README.md).
REAL_DAYS = (
    Path("tests/data/real-days/real-midc-bms-2022-01-20.csv"),
    Path("tests/data/real-days/real-midc-nwtc-2018-10-14.csv"),
)
SEEDS = range(1, 9)
OURS = VenusPrioOverridePolicy.name
# (label, actuator.override keys, control.trim keys) on top of config.yaml's values.
Candidate = Tuple[str, Dict[str, Any], Dict[str, Any]]
OVERRIDE_CANDIDATES: Sequence[Candidate] = (
    ("control.md: pv_factor 1.0, deadband_w 20", {"pv_factor": 1.0, "deadband_w": 20.0}, {}),
    ("pv_factor 0.97", {"pv_factor": 0.97}, {}),
    ("pv_factor 1.0", {"pv_factor": 1.0}, {}),
    ("pv_factor 1.08", {"pv_factor": 1.08}, {}),
    ("deadband_w 50", {"deadband_w": 50.0}, {}),
    ("pv_offset_w 10", {"pv_offset_w": 10.0}, {}),
    (
        "trim on, target 0 W, factor 0.9-1.0",
        {},
        {"enabled": True, "target_charge_w": 0.0, "min_factor": 0.9, "max_factor": 1.0},
    ),
)


def _with(config: Config, override: Dict[str, Any], trim: Dict[str, Any]) -> Config:
    actuator = config.actuator
    control = config.control
    return dataclasses.replace(
        config,
        actuator=dataclasses.replace(
            actuator, override=dataclasses.replace(actuator.override, **override)
        ),
        control=dataclasses.replace(control, trim=dataclasses.replace(control.trim, **trim)),
    )


def tables(results: Results, config: Config, limits: Mapping[str, DayLimit]) -> str:
    """Return headline, table and physical limit per scenario, as ``simulate`` prints them."""
    return "\n\n".join(
        f"{headline(name, metrics)}\n{format_table(name, metrics, config)}\n"
        f"{format_limit(limits[name], metrics)}"
        for name, (metrics, _traces) in results.items()
    )


def limits_table(days: Sequence[Tuple[str, Dict[str, Metrics], DayLimit]]) -> str:
    """Return a Markdown table: each day's physical limit and each policy's throughput above it."""
    rows = [
        "| day | PV the loads cannot take kWh | physical limit kWh | "
        + " | ".join(f"{p} kWh (above its limit)" for p in POLICY_NAMES)
        + " |",
        "|---|---|---|" + "---|" * len(POLICY_NAMES),
    ]
    for name, metrics, limit in days:
        cells = (
            f"{metrics[p].throughput_kwh:.2f} "
            f"(+{metrics[p].throughput_kwh - limit.policies[p].throughput_kwh:.2f})"
            for p in POLICY_NAMES
        )
        rows.append(
            f"| {name} | {limit.day.surplus_kwh:.2f} | {limit.day.throughput_kwh:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(rows)


def seed_line(seed: int, m: Dict[str, Metrics]) -> str:
    """Return one cloudy-floor day: micro-cycles, throughput vs stock, import, flash writes."""
    stock = m["stock"].throughput_kwh
    names = POLICY_NAMES
    setting = m[VenusPrioPolicy.name]
    return (
        f"seed {seed} micro-cycles {'/'.join(str(m[p].micro_cycles) for p in names)} "
        f"throughput {m[OURS].throughput_kwh / stock:.0%}/"
        f"{setting.throughput_kwh / stock:.0%} of stock "
        f"adj import {'/'.join(f'{m[p].grid_import_adjusted_kwh:.2f}' for p in names)} "
        f"flash writes {m['original'].flash_writes_total}/{setting.flash_writes_total}"
    )


def candidates(config: Config, days: List[Tuple[str, Profile, Dict[str, Metrics]]]) -> str:
    """Return a Markdown table: each candidate's override run summed over the days."""
    rows = [
        "| override setting | throughput kWh | adj. import vs original Wh | "
        "max micro-cycles | goals missed | override writes a day |",
        "|---|---|---|---|---|---|",
    ]
    shipped = config.actuator.override
    default_label = (
        f"**shipped: pv_factor {shipped.pv_factor:g}, pv_offset_w {shipped.pv_offset_w:g}, "
        f"step_w {shipped.step_w:g}, deadband_w {shipped.deadband_w:g}, trim off**"
    )
    for label, override, trim in ((default_label, {}, {}), *OVERRIDE_CANDIDATES):
        variant = _with(config, override, trim)
        throughput = import_wh = 0.0
        cycles = missed = writes = 0
        for kind, profile, reference in days:
            m = dict(reference)
            stock_end_soc = m["stock"].end_soc
            m[OURS] = run_scenario(profile, variant, OURS, reference_end_soc=stock_end_soc)[0]
            ours = m[OURS]
            throughput += ours.throughput_kwh
            import_wh += (
                ours.grid_import_adjusted_kwh - m["original"].grid_import_adjusted_kwh
            ) * 1000.0
            cycles = max(cycles, ours.micro_cycles)
            writes += ours.override_writes_total
            missed += len(goals.missed(goals.override_goals(kind), m, OURS))
        rows.append(
            f"| {label} | {throughput:.2f} | {import_wh:+.0f} | {cycles} | {missed} | "
            f"{writes / len(days):,.0f} |"
        )
    return "\n".join(rows)


def replace_block(text: str, block: str, content: str) -> str:
    """Return ``text`` with the fenced block between the ``sim:<block>`` markers replaced."""
    pattern = re.compile(
        rf"(<!-- BEGIN sim:{block} -->\n)(.*?)(<!-- END sim:{block} -->)", re.DOTALL
    )
    if not pattern.search(text):
        raise ValueError(f"README has no <!-- BEGIN sim:{block} --> ... END marker pair")
    fence = "" if content.startswith("|") else "```text\n"
    end = "" if content.startswith("|") else "```\n"
    return pattern.sub(lambda m: f"{m.group(1)}{fence}{content}\n{end}{m.group(3)}", text)


def main(argv: Optional[List[str]] = None) -> int:
    """Regenerate the blocks of README.md (argument: the README) and the picture."""
    args = sys.argv[1:] if argv is None else argv
    readme = Path(args[0] if args else "README.md")
    config = load_config(readme.parent / "config.yaml")
    results: Results = {
        name: compare_with_traces(builtin(name, config.sim.seed), config) for name in SCENARIOS
    }
    if not plot_results(results, readme.parent / PLOT):
        sys.stderr.write("the picture needs matplotlib: pip install -e '.[dev]'\n")
        return 2
    december = load_profile_csv(readme.parent / PROFILE)
    profile_results: Results = {december.name: compare_with_traces(december, config)}
    limits = {
        name: limit_of(builtin(name, config.sim.seed), results[name][0], config)
        for name in SCENARIOS
    }
    limits[december.name] = limit_of(december, profile_results[december.name][0], config)
    real_days = [load_profile_csv(readme.parent / path) for path in REAL_DAYS]
    limit_days = [
        *((name, results[name][0], limits[name]) for name in SCENARIOS),
        (december.name, profile_results[december.name][0], limits[december.name]),
        *(
            (day.name, m, limit_of(day, m, config))
            for day, m in ((d, compare(d, config)) for d in real_days)
        ),
    ]
    seed_metrics = [
        results["cloudy-floor"][0]
        if seed == config.sim.seed
        else compare(builtin("cloudy-floor", seed), config)
        for seed in SEEDS
    ]
    days = [
        *(("cloudy-floor", builtin("cloudy-floor", s), m) for s, m in zip(SEEDS, seed_metrics)),
        ("winter", builtin("winter", config.sim.seed), results["winter"][0]),
        ("december", december, profile_results[december.name][0]),
    ]
    text = readme.read_text(encoding="utf-8")
    text = replace_block(text, "tables", tables(results, config, limits))
    text = replace_block(text, "profile", tables(profile_results, config, limits))
    text = replace_block(text, "limits", limits_table(limit_days))
    text = replace_block(
        text, "seeds", "\n".join(seed_line(s, m) for s, m in zip(SEEDS, seed_metrics))
    )
    text = replace_block(text, "override", candidates(config, days))
    readme.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
