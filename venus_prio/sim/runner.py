"""Run policies over a day profile with the fair configuration of control.md section 7.

Fair configuration for a wanted reserve R (``sim.reserve_soc``): ``stock`` runs with Venus's
MinSOC = R; ``original`` and ``venus_prio`` with MinSOC = R - ``control.prio_band`` (their users
set it that much lower, as the original add-on advised). All start at ``sim.start_soc``, default
R + 1. Each step the policy reads what a controller on the GX would read before the step (SOC,
DC PV as measured by the MPPTs, i.e. minus last step's curtailment, battery power, the setting,
the override the GX shows), then the plant runs the step with the setting and the override in
force. The override lives in an ``OverrideRegister`` of variant ``sim.override`` that expires
``sim.override_expiry_s`` after the last write; every policy's run has one, only
``venus_prio[override]`` writes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from venus_prio.config import Config
from venus_prio.errors import InputError
from venus_prio.sim.metrics import Metrics, MetricsAccumulator
from venus_prio.sim.plant import GX_RESET_PERIOD_S, OverrideRegister, Plant, PlantParams
from venus_prio.sim.policies import (
    POLICY_NAMES,
    START_SETTING_W,
    OriginalPolicy,
    Policy,
    Reading,
    StockPolicy,
    VenusPrioOverridePolicy,
    VenusPrioPolicy,
)
from venus_prio.sim.scenarios import Profile

TRACE_EVERY_S = 60.0


@dataclass(frozen=True)
class Trace:
    """One policy's day sampled every ``TRACE_EVERY_S`` for the plot."""

    t: Tuple[float, ...]
    soc: Tuple[float, ...]
    pv_dc: Tuple[float, ...]
    load: Tuple[float, ...]
    limit: Tuple[float, ...]  # the setting (AC-side cap)
    override: Tuple[float, ...]  # the override in force (DC-side cap)
    battery_w: Tuple[float, ...]


def min_soc_for(config: Config, policy_name: str) -> float:
    """Return Venus's MinSOC for this policy under the fair configuration."""
    reserve = config.sim.reserve_soc
    if policy_name == "stock":
        return reserve
    return max(0.0, reserve - config.control.prio_band)


def start_soc_for(config: Config) -> float:
    """Return the start SOC of every policy: ``sim.start_soc``, else reserve + 1."""
    sim = config.sim
    return sim.start_soc if sim.start_soc is not None else sim.reserve_soc + 1.0


def make_policy(
    config: Config, policy_name: str, *, min_soc: float, start_soc: Optional[float] = None
) -> Policy:
    """Return a fresh policy object by name (``start_soc``: by default ``start_soc_for``)."""
    if policy_name == "stock":
        return StockPolicy()
    if policy_name == "original":
        return OriginalPolicy(
            min_soc=min_soc,
            max_w=config.control.max_inverter_power_w,
            start_soc=start_soc_for(config) if start_soc is None else start_soc,
            dt=config.sim.dt_s,
        )
    if policy_name == VenusPrioPolicy.name:
        return VenusPrioPolicy(config, min_soc=min_soc)
    if policy_name == VenusPrioOverridePolicy.name:
        return VenusPrioOverridePolicy(config, min_soc=min_soc)
    raise InputError(f"unknown policy {policy_name!r}; valid: {', '.join(POLICY_NAMES)}")


class PolicyRun:
    """One policy on its own plant, stepped by the caller: one step of ``run_scenario``.

    The simulator's days and the live stock-ESS shadow (``shadow.py``) both step this, so they
    are one model. Each ``step`` runs the policy on what a controller on the GX reads before the
    step, then the plant for ``dt`` with the setting and the override in force, and adds the
    step to ``metrics``. Pure: ``t`` is an argument.
    """

    def __init__(self, config: Config, policy_name: str, *, start_soc: float) -> None:
        sim = config.sim
        min_soc = min_soc_for(config, policy_name)
        self.plant = Plant(PlantParams.from_sim_config(sim, min_soc=min_soc), start_soc=start_soc)
        self.register = OverrideRegister(
            variant=sim.override,
            expiry_s=sim.override_expiry_s,
            reset_phase_s=GX_RESET_PERIOD_S / 2,  # the GX's timer is not in step with ours
        )
        self.policy = make_policy(config, policy_name, min_soc=min_soc, start_soc=start_soc)
        self.metrics = MetricsAccumulator(
            policy=policy_name, battery_kwh=sim.battery_kwh, start_soc=start_soc
        )
        # What the last step left in force and measured (the next step's readings).
        self.setting_w = START_SETTING_W
        self.override_w = -1.0
        self.battery_w = 0.0
        self.curtailed_w = 0.0
        self._decide = self.policy.decide_step  # what ``policy.step`` calls, without keywords

    def step(self, t: float, dt: float, pv_dc_w: float, load_w: float, pv_ac_w: float) -> None:
        """Run the policy and the plant for the ``dt`` seconds from ``t`` with these inputs."""
        # The MPPTs measure what they deliver: DC PV minus last step's curtailment.
        curtailed_w = self.curtailed_w
        measured_pv = pv_dc_w - curtailed_w if pv_dc_w > curtailed_w else 0.0
        register = self.register
        plant = self.plant
        setting, wrote, reason, override_write = self._decide(
            Reading(t, plant.soc, measured_pv, self.battery_w, self.setting_w, register.shown(t))
        )
        if override_write is not None:
            register.write(override_write, t)
        override_w = register.in_force(t)
        result = plant.step(
            dt,
            pv_dc_w=pv_dc_w,
            load_w=load_w,
            pv_ac_w=pv_ac_w,
            max_discharge_w=setting,
            override_w=override_w,
        )
        self.setting_w = setting
        self.override_w = override_w
        self.battery_w = result.battery_w
        self.curtailed_w = result.curtailed_w
        self.metrics.add(
            t=t,
            dt=dt,
            soc=result.soc,
            battery_w=result.battery_w,
            grid_w=result.grid_w,
            loss_w=result.loss_w,
            curtailed_w=result.curtailed_w,
            flash_write=wrote,
            override_write=override_write is not None,
            reason=reason,
        )


def run_scenario(
    profile: Profile,
    config: Config,
    policy_name: str,
    *,
    reference_end_soc: Optional[float] = None,
) -> Tuple[Metrics, Trace]:
    """Run one policy over the profile; the adjusted import is relative to ``reference_end_soc``
    (stock's, in a comparison), by default to the run's own end SOC."""
    sim = config.sim
    dt = sim.dt_s
    run = PolicyRun(config, policy_name, start_soc=start_soc_for(config))
    plant = run.plant

    times, pv_dc, loads, pv_ac = profile.time_s, profile.pv_dc_w, profile.load_w, profile.pv_ac_w
    last_row = len(times) - 1
    start = profile.start_s
    steps = max(1, math.ceil((profile.end_s - start) / dt - 1e-9))
    trace_every = max(1, round(TRACE_EVERY_S / dt))
    samples: List[Tuple[float, ...]] = []  # one row of ``Trace``'s fields per sample

    row = 0
    step = run.step
    for k in range(steps):
        t = start + k * dt
        while row < last_row and times[row + 1] <= t:
            row += 1
        pv_w = pv_dc[row]
        if k % trace_every == 0:
            soc_before = plant.soc
            step(t, dt, pv_w, loads[row], pv_ac[row])
            samples.append(
                (t, soc_before, pv_w, loads[row], run.setting_w, run.override_w, run.battery_w)
            )
        else:
            step(t, dt, pv_w, loads[row], pv_ac[row])
    metrics = run.metrics.result(
        reference_end_soc=reference_end_soc,
        discharge_efficiency=sim.discharge_efficiency,
        inverter_efficiency=sim.inverter_efficiency,
    )
    return metrics, Trace(*zip(*samples))  # the first step is always sampled: never empty


def compare_with_traces(
    profile: Profile, config: Config
) -> Tuple[Dict[str, Metrics], Dict[str, Trace]]:
    """Run every policy; adjust grid imports to stock's end SOC; return metrics and traces."""
    runs = {"stock": run_scenario(profile, config, "stock")}
    stock_end_soc = runs["stock"][0].end_soc
    for name in POLICY_NAMES:
        if name not in runs:
            runs[name] = run_scenario(profile, config, name, reference_end_soc=stock_end_soc)
    return {n: runs[n][0] for n in POLICY_NAMES}, {n: runs[n][1] for n in POLICY_NAMES}


def compare(profile: Profile, config: Config) -> Dict[str, Metrics]:
    """Run every policy of ``POLICY_NAMES`` on the profile under the fair configuration."""
    return compare_with_traces(profile, config)[0]
