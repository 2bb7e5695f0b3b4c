"""The control policy of control.md section 3: ``decide(snapshot, state, config, baseline, now)``.

How it works:

1. Stand-aside conditions are checked first, in the order of ``_STAND_ASIDE_RULES`` (disabled,
   disconnected, stale, missing SOC, grid lost, generator, external control, keep charged,
   Dynamic ESS, someone else's hub4 override, missing floor). Any of them gives the user's
   ``baseline`` and stops steering. Whether someone else holds the override is judged by
   ``actuator.py`` (it needs the history of venus-prio's own writes) and passed in.
2. Otherwise ``d = soc - floor`` picks a band, the phase hysteresis is updated, and the band and
   phase pick a row of the decision table::

       band         phase        target                                    reason
       BELOW_FLOOR  any          hold_w                                    BELOW_FLOOR
       PRIORITY     any          pv_share                                  PV_PRIORITY / PV_TOO_LOW
       RECOVERY     CHARGING     pv_share                                  RECOVERING
       RECOVERY     DISCHARGING  max(half_power_fraction * max_w, pv_share) LIMITED_DISCHARGE
       NORMAL       any          ramp from the previous target to max_w    RAMPING
       NORMAL       (ramp done)  baseline                                  NORMAL

3. The PV input is filtered so that drops are followed at once and rises are smoothed:
   ``pv_f = min(time-weighted mean over pv_window_s, latest)``. Values arrive only when they
   change, so each sample holds until the next one.

Pure: no clock, no I/O. ``now`` is any monotonic time in seconds supplied by the caller.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from venus_prio.config import ControlConfig
from venus_prio.model import Band, Decision, Phase, Reason, Snapshot, TargetClass

AC_SOURCE_GENERATOR = 2
AC_SOURCE_NOT_CONNECTED = 240  # inverting, no AC input: grid lost
HUB4_MODE_EXTERNAL_CONTROL = 3
BATTERY_LIFE_KEEP_CHARGED = 9


@dataclass(frozen=True)
class ControllerState:
    """What the controller remembers between two decisions."""

    phase: Optional[Phase] = None
    # PV samples (time, watts) covering the filter window; the oldest may start before it.
    pv_history: Tuple[Tuple[float, float], ...] = ()
    sharing: bool = False  # above pv_min_w (with hysteresis): the PV is shared with the loads
    level_w: Optional[float] = None  # last steering target, unquantised; None = baseline in force
    last_t: Optional[float] = None
    pv_factor: Optional[float] = None  # trimmed factor; None = the configured pv_factor


def _valid(value: Optional[float]) -> Optional[float]:
    """Return the value if it is a finite number, else None (NaN and inf are invalid)."""
    if type(value) is float:  # the usual case, checked first: it runs six times per decision
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def floor_to_step(value: float, step: float) -> float:
    """Round down to a multiple of ``step`` (targets derived from PV err on the safe side)."""
    return math.floor(value / step) * step


def resolve_floor(snap: Snapshot, cfg: ControlConfig) -> Optional[float]:
    """Return the SOC floor: the configured number, else ActiveSocLimit, else MinimumSocLimit."""
    if cfg.min_soc is not None:
        return cfg.min_soc
    active = _valid(snap.active_soc_limit)
    return active if active is not None else _valid(snap.min_soc_setting)


def net_pv_w(snap: Snapshot, cfg: ControlConfig) -> float:
    """Return DC PV minus DC loads (when measured); invalid or absent PV counts as 0 W."""
    pv = _valid(snap.pv_dc_w) or 0.0
    dc_loads = _valid(snap.dc_system_w)
    if cfg.subtract_dc_loads and dc_loads is not None:
        pv -= dc_loads
    return pv


def update_pv_history(
    history: Tuple[Tuple[float, float], ...], now: float, pv: float, window_s: float
) -> Tuple[Tuple[float, float], ...]:
    """Append a sample when the value changed and drop samples that ended before the window."""
    if not history or history[-1][1] != pv:
        history = (*history, (now, pv))
    start = now - window_s
    first = 0
    while first + 1 < len(history) and history[first + 1][0] <= start:
        first += 1
    return history[first:]


def filtered_pv(history: Tuple[Tuple[float, float], ...], now: float, window_s: float) -> float:
    """Return ``min(time-weighted mean over the window, latest)``: drops at once, rises smoothed."""
    if not history:
        return 0.0
    latest = history[-1][1]
    start = max(now - window_s, history[0][0])
    span = now - start
    if span <= 0:
        return latest
    area = 0.0
    # Each sample holds until the next one starts, the latest until now. (The simulator calls
    # this every step: a running pair and comparisons instead of indexing and max().)
    t, value = history[0]
    for seg_end, next_value in history[1:]:
        seg_start = t if t > start else start
        if seg_end > seg_start:
            area += value * (seg_end - seg_start)
        t, value = seg_end, next_value
    seg_start = t if t > start else start
    if now > seg_start:
        area += value * (now - seg_start)
    return min(area / span, latest)


def _band(d: float, cfg: ControlConfig) -> Band:
    if d < 0:
        return Band.BELOW_FLOOR
    if d <= cfg.prio_band:
        return Band.PRIORITY
    if d < cfg.recover_band:
        return Band.RECOVERY
    return Band.NORMAL


def _next_phase(previous: Optional[Phase], d: float, cfg: ControlConfig) -> Phase:
    if d <= cfg.prio_band:
        return Phase.CHARGING
    if d >= cfg.recover_band:
        return Phase.DISCHARGING
    # In between the phase is kept; at start-up (no phase yet) we assume the battery is recovering.
    return previous if previous is not None else Phase.CHARGING


@dataclass(frozen=True)
class Outside:
    """Stand-aside inputs that are not in the snapshot: the user's switch, the override's owner."""

    enabled: bool = True
    override_in_use: bool = False  # someone else holds the hub4 override (actuator.py decides)


# The four possible ``Outside`` values, built once (frozen: safe to share between decisions).
_OUTSIDE = {
    (enabled, in_use): Outside(enabled=enabled, override_in_use=in_use)
    for enabled in (True, False)
    for in_use in (True, False)
}

# Stand-aside rules in order of precedence: (reason, test, human text). A text may name the
# missing input as {soc} or {floor}: the snapshot says how its source calls them.
_StandAsideTest = Callable[[Snapshot, ControlConfig, float, Outside], bool]


def _gx_reports(field: str, state: int) -> _StandAsideTest:
    """Return a rule that holds while the GX reports ``state`` in the snapshot's ``field``."""
    read = operator.attrgetter(field)  # C-level: the rules run at every decision
    return lambda s, c, now, o: read(s) == state


# GX states in which ESS, not venus-prio, must decide the discharge (codes in venus-ess.md).
_GRID_LOST = _gx_reports("ac_input_source", AC_SOURCE_NOT_CONNECTED)
_ON_GENERATOR = _gx_reports("ac_input_source", AC_SOURCE_GENERATOR)
_EXTERNAL_CONTROL = _gx_reports("hub4_mode", HUB4_MODE_EXTERNAL_CONTROL)
_KEEP_CHARGED = _gx_reports("battery_life_state", BATTERY_LIFE_KEEP_CHARGED)

_STAND_ASIDE_RULES: Tuple[Tuple[Reason, _StandAsideTest, str], ...] = (
    (Reason.STAND_ASIDE_DISABLED, lambda s, c, now, o: not o.enabled, "disabled by the user"),
    (Reason.STAND_ASIDE_DISCONNECTED, lambda s, c, now, o: not s.connected, "GX not reachable"),
    (
        Reason.STAND_ASIDE_STALE,
        lambda s, c, now, o: s.alive_at is None or now - s.alive_at > c.stale_after_s,
        "inputs stale: the GX has not proved it is alive",
    ),
    (
        Reason.STAND_ASIDE_MISSING_INPUT,
        lambda s, c, now, o: _valid(s.soc) is None,
        "SOC unknown ({soc} is invalid or absent)",
    ),
    (Reason.STAND_ASIDE_GRID_LOST, _GRID_LOST, "grid lost: no AC input"),
    (Reason.STAND_ASIDE_GENERATOR, _ON_GENERATOR, "running on a generator"),
    (Reason.STAND_ASIDE_EXTERNAL_CONTROL, _EXTERNAL_CONTROL, "ESS mode is external control"),
    (Reason.STAND_ASIDE_KEEP_CHARGED, _KEEP_CHARGED, "ESS is set to keep batteries charged"),
    (
        Reason.STAND_ASIDE_DYNAMIC_ESS,
        lambda s, c, now, o: (s.dynamic_ess_mode or 0) > 0,
        "Dynamic ESS is active",
    ),
    (
        Reason.STAND_ASIDE_OVERRIDE_IN_USE,
        lambda s, c, now, o: o.override_in_use,
        "someone else holds the hub4 override (Dynamic ESS, scheduled charging, another tool)",
    ),
    (
        Reason.STAND_ASIDE_MISSING_INPUT,
        lambda s, c, now, o: resolve_floor(s, c) is None,
        "SOC floor unknown ({floor} invalid or absent)",
    ),
)


def _trimmed_factor(state: ControllerState, snap: Snapshot, cfg: ControlConfig, dt: float) -> float:
    """Nudge the PV factor so the battery charges by about target_charge_w (optional trim)."""
    factor = state.pv_factor if state.pv_factor is not None else cfg.pv_factor
    battery_w = _valid(snap.battery_power_w)
    if not cfg.trim.enabled or battery_w is None:
        return factor
    factor += cfg.trim.gain_per_w_s * (battery_w - cfg.trim.target_charge_w) * dt
    return min(max(factor, cfg.trim.min_factor), cfg.trim.max_factor)


def _classify(target: float, cfg: ControlConfig) -> TargetClass:
    return TargetClass.HOLD if target <= cfg.hold_w else TargetClass.POSITIVE


def decide(
    snap: Snapshot,
    state: ControllerState,
    cfg: ControlConfig,
    *,
    baseline_w: float,
    now: float,
    enabled: bool = True,
    override_in_use: bool = False,
) -> Tuple[Decision, ControllerState]:
    """Return the decision for this moment and the controller's next state.

    ``enabled``: the user's switch (config and mode); ``override_in_use``: someone else holds the
    hub4 override (stand aside, control.md section 8).
    """
    outside = _OUTSIDE[bool(enabled), bool(override_in_use)]
    dt = 0.0 if state.last_t is None else max(0.0, now - state.last_t)
    pv_history = update_pv_history(state.pv_history, now, net_pv_w(snap, cfg), cfg.pv_window_s)
    pv_f = filtered_pv(pv_history, now, cfg.pv_window_s)
    soc = _valid(snap.soc)
    floor = resolve_floor(snap, cfg)
    d = soc - floor if soc is not None and floor is not None else None
    phase = _next_phase(state.phase, d, cfg) if d is not None else state.phase
    band = _band(d, cfg) if d is not None else Band.UNKNOWN
    max_w = cfg.max_inverter_power_w

    def decision(target: float, klass: TargetClass, reason: Reason, text: str) -> Decision:
        return Decision(
            target_w=target,
            target_class=klass,
            reason=reason,
            phase=phase,
            band=band,
            d=d,
            soc=soc,
            floor=floor,
            pv_f=pv_f,
            pv_share_w=pv_share,
            text=text,
        )

    # PV sharing with hysteresis: start at pv_min_w, continue down to pv_min_w - hysteresis.
    threshold = cfg.pv_min_w - (cfg.pv_min_hysteresis_w if state.sharing else 0.0)
    sharing = pv_f >= threshold
    in_pv_band = band is Band.PRIORITY or (band is Band.RECOVERY and phase is Phase.CHARGING)
    if not cfg.trim.enabled:
        # Nothing to remember: the configured factor (it differs per actuator, so a remembered
        # one would leak from the override's settings into the setting's after a switch).
        factor = None
    elif in_pv_band and sharing:
        factor = _trimmed_factor(state, snap, cfg, dt)
    else:
        factor = state.pv_factor
    effective_factor = factor if factor is not None else cfg.pv_factor
    if sharing:
        raw_share = floor_to_step(effective_factor * pv_f - cfg.pv_offset_w, cfg.step_w)
        pv_share = min(max(raw_share, cfg.hold_w), max_w)
    else:
        pv_share = cfg.hold_w

    def after(level_w: Optional[float]) -> ControllerState:
        return ControllerState(
            phase=phase,
            pv_history=pv_history,
            sharing=sharing,
            level_w=level_w,
            last_t=now,
            pv_factor=factor,
        )

    for reason, test, text in _STAND_ASIDE_RULES:
        if test(snap, cfg, now, outside):
            # Handing back: the ramp restarts from scratch when steering resumes.
            return (
                decision(
                    baseline_w,
                    TargetClass.BASELINE,
                    reason,
                    "standing aside: " + text.format(soc=snap.soc_name, floor=snap.floor_names),
                ),
                after(None),
            )
    assert d is not None and soc is not None and floor is not None  # the rules above ensure it
    where = f"SOC {soc:.1f} % is {d:+.1f} points from the floor {floor:g} %"

    if band is Band.BELOW_FLOOR:
        target = cfg.hold_w
        result = decision(target, TargetClass.HOLD, Reason.BELOW_FLOOR, f"{where}: no discharge")
    elif band is Band.PRIORITY or (band is Band.RECOVERY and phase is Phase.CHARGING):
        target = pv_share
        if band is Band.RECOVERY:
            reason = Reason.RECOVERING
        else:
            reason = Reason.PV_PRIORITY if sharing else Reason.PV_TOO_LOW
        if sharing:
            text = f"{where}: inverter capped at {target:.0f} W of {pv_f:.0f} W PV"
        else:
            text = f"{where}: PV {pv_f:.0f} W too low to share, no discharge"
        result = decision(target, _classify(target, cfg), reason, text)
    elif band is Band.RECOVERY:
        target = max(floor_to_step(cfg.half_power_fraction * max_w, cfg.step_w), pv_share)
        result = decision(
            target,
            _classify(target, cfg),
            Reason.LIMITED_DISCHARGE,
            f"{where}: discharge limited to {target:.0f} W",
        )
    else:
        if state.level_w is None:
            # Nothing of ours in force (start-up, after standing aside or after NORMAL): stock.
            return (
                decision(baseline_w, TargetClass.BASELINE, Reason.NORMAL, f"{where}: stock ESS"),
                after(None),
            )
        ramp = max(state.level_w + cfg.ramp_w_per_min * dt / 60.0, pv_share)
        if ramp >= max_w:
            return (
                decision(
                    baseline_w,
                    TargetClass.BASELINE,
                    Reason.NORMAL,
                    f"{where}: recovered, handed back to stock ESS",
                ),
                after(None),
            )
        target = floor_to_step(ramp, cfg.step_w)
        result = decision(
            target, _classify(target, cfg), Reason.RAMPING, f"{where}: ramping up, {target:.0f} W"
        )
        return result, after(ramp)
    return result, after(result.target_w)
