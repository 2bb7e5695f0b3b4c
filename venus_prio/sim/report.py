"""The ``simulate`` command: run the comparison, print a table or JSON, optionally plot.

Above each scenario's table goes one sentence a user can act on (``headline``), computed from
the metrics: venus-prio with the override against stock ESS (battery throughput, adjusted grid
import) and its flash writes against the original add-on's.

JSON output (``--json``) is one document on stdout::

    {"scenarios": {<scenario>: {<policy>: <metrics>}},
     "headlines": {<scenario>: <sentence>},
     "physical_limits": {<scenario>: {"surplus_kwh", "throughput_kwh", "start_soc",
                                      "policies": {<policy>: {"end_soc", "limit_kwh",
                                                              "above_limit_kwh"}}}},
     "override_variant": <sim.override>, "wall_time_s": <float>}

A recording (``venus_prio.recording``, replayed by ``sim/replay.py``) adds a **measured**
column to its table, a second sentence saying how far the simulation of the policy in force was
from the measured day (the model error), a measured SOC / battery / cap line in the plot, and
to the JSON ``"measured": {<scenario>: <figures>}`` and ``"model_error_percent": {<scenario>:
<float or null>}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from venus_prio.config import Config
from venus_prio.sim.limit import DayLimit, day_limit
from venus_prio.sim.metrics import Metrics
from venus_prio.sim.plant import PlantParams
from venus_prio.sim.policies import (
    POLICY_NAMES,
    OriginalPolicy,
    StockPolicy,
    VenusPrioOverridePolicy,
)
from venus_prio.sim.replay import (
    MIN_ERROR_KWH,
    Measured,
    Recording,
    load_recording,
    model_error_percent,
    replay_config,
)
from venus_prio.sim.runner import Trace, compare_with_traces, min_soc_for, start_soc_for
from venus_prio.sim.scenarios import SCENARIOS, Profile, builtin, load_profile_csv

EXIT_OK = 0
EXIT_NO_MATPLOTLIB = 2

Results = Dict[str, Tuple[Dict[str, Metrics], Dict[str, Trace]]]
MEASURED = "measured"

# Table rows: (label, how to show one policy's metrics).
_ROWS: List[Tuple[str, Callable[[Metrics], str]]] = [
    ("battery charged kWh", lambda m: f"{m.battery_charged_kwh:.2f}"),
    ("battery discharged kWh", lambda m: f"{m.battery_discharged_kwh:.2f}"),
    ("throughput kWh", lambda m: f"{m.throughput_kwh:.2f}"),
    ("equivalent full cycles", lambda m: f"{m.equivalent_full_cycles:.3f}"),
    ("micro-cycles (>= 0.5 %)", lambda m: f"{m.micro_cycles}"),
    ("grid import kWh", lambda m: f"{m.grid_import_kwh:.2f}"),
    ("grid import adjusted kWh", lambda m: f"{m.grid_import_adjusted_kwh:.2f}"),
    ("grid export kWh", lambda m: f"{m.grid_export_kwh:.2f}"),
    ("conversion losses kWh", lambda m: f"{m.conversion_losses_kwh:.2f}"),
    ("curtailed PV kWh", lambda m: f"{m.curtailed_kwh:.2f}"),
    ("flash writes (setting)", lambda m: f"{m.flash_writes_total}"),
    ("flash writes max per hour", lambda m: f"{m.flash_writes_max_per_hour}"),
    ("override writes (RAM)", lambda m: f"{m.override_writes_total}"),
    ("override writes max per hour", lambda m: f"{m.override_writes_max_per_hour}"),
    ("min SOC %", lambda m: f"{m.min_soc:.1f}"),
    ("max SOC %", lambda m: f"{m.max_soc:.1f}"),
    ("end SOC %", lambda m: f"{m.end_soc:.1f}"),
]


def _profiles(config: Config, scenario: str, profile: Optional[Path]) -> List[Profile]:
    if profile is not None:
        return [load_profile_csv(profile)]
    names = list(SCENARIOS) if scenario == "all" else [scenario]
    return [builtin(name, config.sim.seed) for name in names]


def _compared(value: float, reference: float, *, unit_decimals: int) -> Optional[str]:
    """Return "N % less" / "N % more" than the reference, or None when equal once rounded.

    With a reference of 0 a percentage means nothing: the difference is given in kWh instead.
    """
    if reference <= 0:
        diff = round(value - reference, 2)
        if diff == 0:
            return None
        return f"{abs(diff):.2f} kWh {'less' if diff < 0 else 'more'}"
    percent = round((value / reference - 1.0) * 100.0, unit_decimals)
    if percent == 0:
        return None
    return f"{abs(percent):.{unit_decimals}f} % {'less' if percent < 0 else 'more'}"


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count:,} times"


def headline(name: str, metrics: Dict[str, Metrics]) -> str:
    """Return the one sentence above a scenario's table: what venus-prio (override) gives.

    Battery cycling is the throughput, grid import the adjusted one (so ending the day fuller
    earns nothing); both against stock ESS. Flash writes against the original add-on's.
    """
    ours = metrics[VenusPrioOverridePolicy.name]
    stock = metrics[StockPolicy.name]
    original = metrics[OriginalPolicy.name]
    cycled = _compared(ours.throughput_kwh, stock.throughput_kwh, unit_decimals=0)
    imported = _compared(
        ours.grid_import_adjusted_kwh, stock.grid_import_adjusted_kwh, unit_decimals=1
    )
    return (
        f"{name}: venus-prio (override) cycled the battery "
        f"{f'{cycled} than' if cycled else 'as much as'} stock ESS, "
        f"imported {imported or 'as much'} from the grid, "
        f"and wrote {_times(ours.flash_writes_total)} to flash "
        f"(the original add-on: {original.flash_writes_total:,})"
    )


def measured_headline(name: str, metrics: Dict[str, Metrics], measured: Measured) -> str:
    """Return the sentence under a recording's headline: what was measured, the model error."""
    gaps = (
        f", {measured.gaps} gap(s) of {measured.gap_h:.1f} h not recorded" if measured.gaps else ""
    )
    recorded = f"{name}: {measured.recorded_h:.1f} h recorded{gaps}, {measured.policy} in force"
    error = model_error_percent(metrics, measured)
    if measured.throughput_kwh is None:
        return f"{recorded}; no battery power recorded: no model error"
    if error is None:
        return (
            f"{recorded}: the battery moved {measured.throughput_kwh:.2f} kWh, too little for a "
            f"model error (it needs {MIN_ERROR_KWH:g} kWh)"
        )
    simulated = metrics[measured.policy].throughput_kwh
    return (
        f"{recorded}: the battery moved {measured.throughput_kwh:.2f} kWh, the simulation of "
        f"{measured.policy} {simulated:.2f} kWh on the same sun and loads: model error "
        f"{error:.1f} %"
    )


def _measured_cell(show: Callable[[Metrics], str], measured: Measured) -> str:
    # The measured figures share the metrics' names; what a recording cannot show (losses,
    # curtailment ...) is missing or None there and shown as "-".
    try:
        return show(measured)  # type: ignore[arg-type]
    except (AttributeError, TypeError):
        return "-"


def format_table(
    name: str, metrics: Dict[str, Metrics], config: Config, measured: Optional[Measured] = None
) -> str:
    """Return the comparison table of one scenario (rows = metrics, columns = policies), with
    the measured column of a recording."""
    extra = (MEASURED,) if measured is not None else ()
    rows: List[Tuple[str, ...]] = [("", *POLICY_NAMES, *extra)]
    floor = (
        () if measured is None else (f"{measured.floor:g}" if measured.floor is not None else "-",)
    )
    rows.append(("Venus MinSOC %", *(f"{min_soc_for(config, p):g}" for p in POLICY_NAMES), *floor))
    rows.extend(
        (
            label,
            *(show(metrics[p]) for p in POLICY_NAMES),
            *(() if measured is None else (_measured_cell(show, measured),)),
        )
        for label, show in _ROWS
    )
    seconds = [m.reason_seconds for m in metrics.values()]
    seconds += [measured.reason_seconds] if measured is not None else []
    reasons = sorted({r for s in seconds for r in s})
    for reason in reasons:
        rows.append(
            (
                f"h in {reason}",
                *(f"{metrics[p].reason_seconds.get(reason, 0.0) / 3600:.2f}" for p in POLICY_NAMES),
                *(f"{s.get(reason, 0.0) / 3600:.2f}" for s in seconds[len(metrics) :]),
            )
        )
    title = (
        f"== {name}: reserve {config.sim.reserve_soc:g} %, start SOC {start_soc_for(config):g} %, "
        f"battery {config.sim.battery_kwh:g} kWh, GX override {config.sim.override} =="
    )
    return "\n".join([title, *_aligned(rows)])


def _aligned(rows: List[Tuple[str, ...]]) -> List[str]:
    """Return the rows as lines: labels left-aligned, values right-aligned in their columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])])
        for row in rows
    ]


def limit_of(profile: Profile, metrics: Dict[str, Metrics], config: Config) -> DayLimit:
    """Return the day's physical limit (``limit.py``) and each policy's, at its end SOC."""
    return day_limit(
        profile,
        # Venus's MinSOC plays no part in the limit.
        PlantParams.from_sim_config(config.sim, min_soc=config.sim.reserve_soc),
        start_soc=start_soc_for(config),
        end_socs={name: m.end_soc for name, m in metrics.items()},
    )


def format_limit(limit: DayLimit, metrics: Dict[str, Metrics]) -> str:
    """Return the physical-limit lines printed under a scenario's table."""
    day = limit.day
    rows: List[Tuple[str, ...]] = [
        ("", *limit.policies),
        ("limit at its end SOC kWh", *(f"{p.throughput_kwh:.2f}" for p in limit.policies.values())),
        (
            "throughput above the limit kWh",
            *(
                f"{metrics[name].throughput_kwh - p.throughput_kwh:.2f}"
                for name, p in limit.policies.items()
            ),
        ),
    ]
    title = (
        f"physical limit: {day.throughput_kwh:.2f} kWh battery throughput on this day "
        f"({day.surplus_kwh:.2f} kWh PV the loads cannot take, stored before export, "
        f"and cycled out to end at the start SOC {day.start_soc:g} %)"
    )
    return "\n".join([title, *_aligned(rows)])


def limit_json(limit: DayLimit, metrics: Dict[str, Metrics]) -> Dict[str, Any]:
    """Return the physical limit of one scenario for ``--json``."""
    day = limit.day
    return {
        "surplus_kwh": day.surplus_kwh,
        "throughput_kwh": day.throughput_kwh,
        "start_soc": day.start_soc,
        "policies": {
            name: {
                "end_soc": p.end_soc,
                "limit_kwh": p.throughput_kwh,
                "above_limit_kwh": metrics[name].throughput_kwh - p.throughput_kwh,
            }
            for name, p in limit.policies.items()
        },
    }


def to_json(
    results: Results,
    config: Config,
    wall_time_s: float,
    recordings: Optional[Dict[str, Recording]] = None,
    limits: Optional[Dict[str, DayLimit]] = None,
) -> str:
    """Return the JSON document of ``--json``."""
    doc: Dict[str, Any] = {
        "scenarios": {
            name: {policy: m.to_dict() for policy, m in metrics.items()}
            for name, (metrics, _traces) in results.items()
        },
        "headlines": {name: headline(name, metrics) for name, (metrics, _t) in results.items()},
        "override_variant": config.sim.override,
        "wall_time_s": round(wall_time_s, 3),
    }
    if recordings:
        doc["measured"] = {name: r.measured.to_dict() for name, r in recordings.items()}
        doc["model_error_percent"] = {
            name: model_error_percent(results[name][0], r.measured)
            for name, r in recordings.items()
        }
    if limits is not None:
        doc["physical_limits"] = {
            name: limit_json(limits[name], metrics) for name, (metrics, _t) in results.items()
        }
    return json.dumps(doc, indent=2)


def _plot_measured(axes: Any, measured: Measured) -> None:
    """Draw the recorded SOC, battery power and cap in force (black) on the plot's axes."""
    soc_ax, _power_ax, limit_ax, batt_ax = axes
    hours = [t / 3600 for t, *_ in measured.series]
    nan = float("nan")  # an empty cell: a break in the line, not a value
    for ax, index, draw in ((soc_ax, 1, "plot"), (batt_ax, 2, "plot"), (limit_ax, 3, "step")):
        values = [nan if row[index] is None else row[index] for row in measured.series]
        getattr(ax, draw)(hours, values, label=MEASURED, color="black", linewidth=0.8)


def plot_results(
    results: Results, path: Path, recordings: Optional[Dict[str, Recording]] = None
) -> bool:
    """Draw SOC, PV/load, limit and battery power per scenario; return False without matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415  (optional dependency, imported only for --plot)

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    columns = len(results)
    fig, axes = plt.subplots(4, columns, figsize=(7 * columns, 12), sharex=True, squeeze=False)
    for col, (name, (metrics, traces)) in enumerate(results.items()):
        soc_ax, power_ax, limit_ax, batt_ax = (axes[row][col] for row in range(4))
        first = traces[POLICY_NAMES[0]]
        hours = [t / 3600 for t in first.t]
        power_ax.plot(hours, first.pv_dc, label="DC PV", color="orange", linewidth=0.8)
        power_ax.plot(hours, first.load, label="AC load", color="grey", linewidth=0.8)
        for policy in POLICY_NAMES:
            trace = traces[policy]
            m = metrics[policy]
            h = [t / 3600 for t in trace.t]
            soc_ax.plot(h, trace.soc, label=policy, linewidth=1)
            # The cap each policy steers: the override (dashed) when it wrote one, else the
            # setting; the label keeps flash and override writes apart.
            uses_override = m.override_writes_total > 0
            limit_ax.step(
                h,
                trace.override if uses_override else trace.limit,
                where="post",
                linestyle="--" if uses_override else "-",
                label=f"{policy}: {m.flash_writes_total:,} flash / "
                f"{m.override_writes_total:,} override writes",
                linewidth=1,
            )
            batt_ax.plot(h, trace.battery_w, label=policy, linewidth=0.7)
        if recordings and name in recordings:
            _plot_measured((soc_ax, power_ax, limit_ax, batt_ax), recordings[name].measured)
        soc_ax.set_title(name)
        soc_ax.set_ylabel("SOC %")
        power_ax.set_ylabel("W")
        limit_ax.set_ylabel("cap W: setting, override dashed (-1 = none)")
        batt_ax.set_ylabel("battery W (+ charging)")
        batt_ax.set_xlabel("hour of day")
        for ax in (soc_ax, power_ax, limit_ax, batt_ax):
            ax.grid(True, alpha=0.3)
            ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
    return True


def simulate_command(
    config: Config,
    *,
    scenario: str,
    profile: Optional[Path],
    as_json: bool,
    plot: Optional[Path],
) -> int:
    """Run the comparison for one scenario, ``all``, or a CSV profile; print; optionally plot."""
    started = time.perf_counter()
    results: Results = {}
    recordings: Dict[str, Recording] = {}
    configs: Dict[str, Config] = {}
    limits: Dict[str, DayLimit] = {}
    recording = load_recording(profile) if profile is not None else None
    if recording is not None:
        name = recording.profile.name
        recordings[name] = recording
        configs[name] = replay_config(config, recording)
        results[name] = compare_with_traces(recording.profile, configs[name])
        limits[name] = limit_of(recording.profile, results[name][0], configs[name])
    else:
        for prof in _profiles(config, scenario, profile):
            results[prof.name] = compare_with_traces(prof, config)
            limits[prof.name] = limit_of(prof, results[prof.name][0], config)
    wall = time.perf_counter() - started
    if plot is not None and not plot_results(results, plot, recordings):
        sys.stderr.write("venus-prio: --plot needs matplotlib: pip install 'venus-prio[plot]'\n")
        return EXIT_NO_MATPLOTLIB
    if as_json:
        sys.stdout.write(to_json(results, config, wall, recordings, limits) + "\n")
        return EXIT_OK
    for name, (metrics, _traces) in results.items():
        sys.stdout.write(headline(name, metrics) + "\n")
        measured = recordings[name].measured if name in recordings else None
        if measured is not None:
            sys.stdout.write(measured_headline(name, metrics, measured) + "\n")
        table = format_table(name, metrics, configs.get(name, config), measured)
        sys.stdout.write(table + "\n")
        sys.stdout.write(format_limit(limits[name], metrics) + "\n\n")
    sys.stdout.write(f"simulated {len(results)} scenario(s) x {len(POLICY_NAMES)} policies ")
    sys.stdout.write(f"in {wall:.2f} s wall time (dt = {config.sim.dt_s:g} s)\n")
    if plot is not None:
        sys.stdout.write(f"plot written to {plot}\n")
    return EXIT_OK
