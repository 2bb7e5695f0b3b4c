"""Where the discharge cap goes and why (control.md section 8): pure decisions, like ``writes.py``.

How it works: two places on the GX cap the discharge. The hub4 override (RAM, expires by
itself, no flash wear) is preferred; the persisted setting is the fallback, rationed by
``writes.plan_write``. Everything here is pure (``now`` is an argument); ``service.py`` calls it
and does the I/O.

1. Which actuator (``observe`` keeps an ``ActuatorState``; ``choose`` reads it)::

       actuator.kind  condition                                        actuator  for how long
       setting        -                                                SETTING   always
       override       the GX has the path (or has not said yet)        OVERRIDE  -
       override       no hub4 override on this GX                      NONE      not steering
       auto           the override had no effect (2. below)            SETTING   until restart
       auto           the GX reset our value (2. below)                SETTING   retry_after_s
       auto           no hub4 override on this GX / not reported yet   SETTING   (no warning)
       auto           otherwise                                        OVERRIDE  -

2. Verification of our own value (``auto``), on every snapshot:

   - *ours*: after a write the GX must show our value and keep it. Our value replaced by -1/null
     within ``verify_s`` of our last write (or never shown within ``verify_s`` of taking the
     override), with nobody else in sight (no Dynamic ESS, no external control), means the GX
     resets it (Venus before v3.60): fall back, try again after ``retry_after_s``. Replaced later
     than that: it expired (we could not refresh it, e.g. while disconnected); take it again.
   - *effective*: while our override L is in force in PV_PRIORITY or RECOVERING, a discharge
     ``-battery_power`` above ``max(0, L - net DC PV) + effect_tolerance_w`` continuously for
     ``effect_window_s`` means the GX ignores it: fall back, no retry until restart.

3. Someone else's override (every ``actuator.kind``): a value on the path that is not -1/null
   and not ours (our held value, or one we wrote within the last ``OWN_ECHO_S``: a late echo) means
   Dynamic ESS, scheduled charging, load shedding or another tool owns it. ``override_in_use``
   is then True (the controller stands aside with ``STAND_ASIDE_OVERRIDE_IN_USE``), we hold
   nothing there, so nothing is ever written to it; it clears after ``foreign_clear_s`` of -1/null.

4. Ours until our release is confirmed (every ``actuator.kind``): a write has no
   acknowledgement, and what the GX shows can come out of order, so no value seen proves that
   nothing of ours stands there. A reset or an expiry can overtake our refresh on the wire
   (the GX shows -1, then our refresh lands: issue 18), and after a transport switch the other
   door can show a -1 from before our write (fault campaign seed 8 round 41). So a value we
   wrote is ours until our own release (-1) is confirmed by the read-back after it (writes
   through one connection land in order), until another tool's value replaces it, or until
   hub4 leaves the GX (its RAM goes with it). Seen gone (reset, expired) makes ``in_doubt``
   True: we hold nothing to steer with, but ``may_hold`` stays True, so falling back and
   stopping both release it (-1 written whatever the GX shows, confirmed by read-back) and
   ``plan_override`` releases it when the target is the baseline. A value of ours showing
   while another tool's override episode is on (ours landed after theirs) is in doubt too;
   their next value replacing it settles it. It costs one RAM write per reset or expiry.

5. Never two caps in force: ``hand_back_first`` names the actuator still holding a venus-prio
   value that must be handed back (override: -1 confirmed; setting: the baseline confirmed)
   before the chosen one may steer.

6. Steering through the override (``plan_override``): targets are rounded down to
   ``override.step_w``; a write goes out when the value moves by ``override.deadband_w`` or more
   (up or down alike: no rate limit, no budget, since RAM wears nothing), when it moves between
   the classes hold / positive / released, and at least every ``override.refresh_s`` so it never
   expires while venus-prio steers. Handing back (the baseline class) is ``RELEASE_W``.
   ``control_for`` gives the controller the PV share that fits the actuator.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from venus_prio.config import ActuatorConfig, Config, ControlConfig, OverrideConfig
from venus_prio.controller import HUB4_MODE_EXTERNAL_CONTROL, net_pv_w
from venus_prio.model import NO_OVERRIDE_W, Actuator, Reason, Snapshot, TargetClass, same_value

RELEASE_W = NO_OVERRIDE_W  # writing it releases the override


# Reasons under which the override caps the inverter at the PV: the effect check runs only here.
_EFFECT_REASONS = frozenset({Reason.PV_PRIORITY, Reason.RECOVERING})


@dataclass(frozen=True)
class ActuatorState:
    """What the verification remembers between two snapshots (see the module docstring)."""

    kind: str = "auto"  # actuator.kind
    # Our use of the override.
    held_w: Optional[float] = None  # the value venus-prio holds on the override; None: none
    inherited: bool = False  # the journal says a previous run held it: what shows first is ours
    taken_at: Optional[float] = None  # when we took it (first write after holding none)
    last_write_t: Optional[float] = None  # our last write of the override (any value)
    # (time, value) of our writes within max(verify_s, OWN_ECHO_S): an echo may show any of them.
    recent: Tuple[Tuple[float, float], ...] = ()
    shown: bool = False  # the GX has shown held_w since we took it
    # Our value seen gone but our release not confirmed, or our value seen over another tool's:
    # a value of ours may stand on the override although held_w is None (4. in the docstring).
    in_doubt: bool = False
    # Verification (auto).
    retry_at: Optional[float] = None  # the GX reset our value: the setting until then
    ineffective: bool = False  # the override had no effect: the setting until restart
    excess_since: Optional[float] = None  # discharge above what our cap allows since
    # Someone else's override.
    foreign_w: Optional[float] = None  # someone else's value (the last one seen)
    clear_since: Optional[float] = None  # -1/null shown since, while foreign_w is set

    @property
    def override_in_use(self) -> bool:
        """Return True while someone else holds the override: stand aside, never write it."""
        return self.foreign_w is not None

    @property
    def may_hold(self) -> bool:
        """Return True while a value of venus-prio's may stand on the override: release it
        (confirmed) before another actuator steers and when stopping."""
        return self.held_w is not None or self.inherited or self.in_doubt

    def ours(self, value: float) -> bool:
        """Return whether ``value`` on the override is venus-prio's own."""
        return same_value(value, self.held_w) or any(same_value(value, v) for _, v in self.recent)


@dataclass(frozen=True)
class Choice:
    """The actuator to steer through now, why (for Home Assistant; "" when nothing needs
    saying) and whether that is a fallback after a failed check (worth a warning)."""

    actuator: Actuator
    why: str
    fell_back: bool = False


def start(config: ActuatorConfig, *, override_held: bool = False) -> ActuatorState:
    """Return the state at start-up; ``override_held``: the journal says a previous run (which
    did not hand back) may still hold the override."""
    return ActuatorState(kind=config.kind, inherited=override_held)


def wrote(
    state: ActuatorState, value_w: float, *, cfg: OverrideConfig, now: float
) -> ActuatorState:
    """Return the state after venus-prio wrote ``value_w`` to the override (``RELEASE_W``)."""
    recent = (*_recent(state.recent, cfg, now), (now, value_w))
    if value_w < 0:
        # Recorded once the release is confirmed by read-back: nothing of ours is left.
        return dataclasses.replace(
            state,
            held_w=None,
            inherited=False,
            taken_at=None,
            last_write_t=now,
            recent=recent,
            shown=False,
            in_doubt=False,
        )
    taking = state.held_w is None
    return dataclasses.replace(
        state,
        held_w=value_w,
        inherited=False,
        taken_at=now if taking else state.taken_at,
        last_write_t=now,
        recent=recent,
        shown=state.shown and not taking and same_value(value_w, state.held_w),
        in_doubt=False,  # superseded: whatever lands last is this write
    )


# How long a value venus-prio wrote may still show up late: after a transport switch or a
# reconnect, a full publish can carry a value from before our last write (fault campaign, seed 1
# round 6 of the short form: our own 1630 W, 3 s old, was taken for another tool's override, so
# the stop released nothing and our 2050 W outlived venus-prio until it expired).
OWN_ECHO_S = 60.0


def _recent(
    recent: Tuple[Tuple[float, float], ...], cfg: OverrideConfig, now: float
) -> Tuple[Tuple[float, float], ...]:
    """Return the writes still within the echo window (the same tuple when none expired).

    Oldest first (``wrote`` appends, on the service's monotonic clock), so the expired ones
    lead: drop them from the front. Every evaluation calls this, and a minute of writes at a
    write a second is 60 of them: copying them all each time was most of ``observe``'s cost.
    """
    keep_s = max(cfg.verify_s, OWN_ECHO_S)
    first = 0
    while first < len(recent) and now - recent[first][0] > keep_s:
        first += 1
    return recent[first:] if first else recent


def observe(
    state: ActuatorState,
    snap: Snapshot,
    *,
    reason: Optional[Reason],
    config: Config,
    now: float,
) -> ActuatorState:
    """Return the state after seeing ``snap``; ``reason``: the decision now in force."""
    cfg = config.actuator.override
    recent = _recent(state.recent, cfg, now)
    if recent is not state.recent:
        state = dataclasses.replace(state, recent=recent)
    if not snap.connected:
        return state  # nothing shown can be judged; expiry is judged on reconnect
    shown = snap.override_w if snap.override_present else None
    released = shown is None or shown < 0
    if state.inherited and snap.override_present is not None:
        # A previous run held it and did not let go: what stands there now is ours, unless it
        # is a value venus-prio never writes (another tool took it meanwhile: stand aside).
        ours = not released and could_be_ours(shown, config)
        state = dataclasses.replace(
            state,
            inherited=False,
            held_w=shown if ours else None,
            taken_at=now if ours else None,
            shown=ours,
        )
    if released:
        state = _released(state, snap, cfg, now)
    else:
        assert shown is not None
        state = _holding(state, shown, now)
    return _effect(state, snap, reason=reason, config=config, now=now)


def could_be_ours(value: Optional[float], config: Config) -> bool:
    """Return whether venus-prio could have written ``value`` to the override: a step of
    ``override.step_w`` in ``[0, max_inverter_power_w]`` (Dynamic ESS's 1 W, say, is not)."""
    if value is None or not 0 <= value <= config.control.max_inverter_power_w:
        return False
    steps = value / config.actuator.override.step_w
    return math.isclose(steps, round(steps), abs_tol=1e-6)


def _released(
    state: ActuatorState, snap: Snapshot, cfg: OverrideConfig, now: float
) -> ActuatorState:
    """-1/null (or absent) on the override: ours gone (reset, expired), someone else's clearing."""
    if snap.override_present is False and state.in_doubt:
        state = dataclasses.replace(state, in_doubt=False)  # hub4 left: its RAM went with it
    if state.foreign_w is not None:
        # -1/null after what we saw last: a stray value of ours seen over theirs is gone too.
        state = dataclasses.replace(state, in_doubt=False) if state.in_doubt else state
        since = now if state.clear_since is None else state.clear_since
        if now - since >= cfg.foreign_clear_s:
            return dataclasses.replace(state, foreign_w=None, clear_since=None)
        return dataclasses.replace(state, clear_since=since)
    if state.held_w is None:
        return state
    if state.shown:
        if state.last_write_t is None or now - state.last_write_t > cfg.verify_s:
            # Not refreshed in time (disconnected, stalled): it expired, as designed.
            return _gone(state, snap)
    elif state.taken_at is not None and now - state.taken_at <= cfg.verify_s:
        return state  # our write's echo is still on its way
    somebody_else = (snap.dynamic_ess_mode or 0) > 0 or snap.hub4_mode == HUB4_MODE_EXTERNAL_CONTROL
    gone = dataclasses.replace(_gone(state, snap), excess_since=None)
    if somebody_else or state.kind != "auto":
        return gone
    return dataclasses.replace(gone, retry_at=now + cfg.retry_after_s)


def _gone(state: ActuatorState, snap: Snapshot) -> ActuatorState:
    """Our value seen gone: in doubt until our release is confirmed (4. in the module
    docstring), unless hub4 left the GX: its RAM went with it."""
    return dataclasses.replace(
        state,
        held_w=None,
        taken_at=None,
        shown=False,
        in_doubt=snap.override_present is not False,
    )


def _holding(state: ActuatorState, shown: float, now: float) -> ActuatorState:
    """A value on the override: ours (echo) or someone else's."""
    if state.ours(shown):
        if state.foreign_w is not None:
            # Ours landed after another tool's value: theirs still owns the override (stand
            # aside, write nothing), but ours stands there until their next value replaces it.
            return state if state.in_doubt else dataclasses.replace(state, in_doubt=True)
        if same_value(shown, state.held_w):
            return state if state.shown else dataclasses.replace(state, shown=True)
        if state.held_w is None and not state.in_doubt:
            # A write of ours landing late, after we saw our value gone: ours until released.
            return dataclasses.replace(state, in_doubt=True)
        return state  # an older write of ours, its echo lagging behind
    # Someone else's: we hold nothing there any more and never write it.
    return dataclasses.replace(
        state,
        held_w=None,
        taken_at=None,
        shown=False,
        excess_since=None,
        in_doubt=False,
        foreign_w=shown,
        clear_since=None,
    )


def _effect(
    state: ActuatorState, snap: Snapshot, *, reason: Optional[Reason], config: Config, now: float
) -> ActuatorState:
    """The effect check: does the battery discharge beyond what our cap allows?"""
    cfg = config.actuator.override
    cap = state.held_w
    battery = snap.battery_power_w
    checking = (
        state.kind == "auto"
        and cap is not None
        and state.shown
        and same_value(snap.override_w, cap)
        and reason in _EFFECT_REASONS
        and battery is not None
        and math.isfinite(battery)
    )
    if not checking:
        return _no_excess(state)
    assert cap is not None and battery is not None
    allowed = max(0.0, cap - net_pv_w(snap, config.control)) + cfg.effect_tolerance_w
    if -battery <= allowed:
        return _no_excess(state)
    since = now if state.excess_since is None else state.excess_since
    return dataclasses.replace(
        state, excess_since=since, ineffective=now - since >= cfg.effect_window_s
    )


def _no_excess(state: ActuatorState) -> ActuatorState:
    # Runs on every snapshot: no copy when there is nothing to forget.
    return state if state.excess_since is None else dataclasses.replace(state, excess_since=None)


def choose(state: ActuatorState, snap: Snapshot, *, cfg: OverrideConfig, now: float) -> Choice:
    """Return the actuator to steer through now (the table in the module docstring)."""
    present = snap.override_present
    if state.kind == "setting":
        return Choice(Actuator.SETTING, "actuator.kind is setting")
    if state.kind == "override":
        if present is False:
            return Choice(
                Actuator.NONE,
                "actuator.kind is override, but this GX has no hub4 override "
                "(older firmware or no ESS): not steering",
            )
        return Choice(Actuator.OVERRIDE, "")
    if state.ineffective:
        return Choice(
            Actuator.SETTING,
            f"the hub4 override had no effect on this GX (the battery discharged beyond the cap "
            f"for {cfg.effect_window_s:g} s): using the setting until venus-prio restarts",
            fell_back=True,
        )
    if state.retry_at is not None and now < state.retry_at:
        return Choice(
            Actuator.SETTING,
            "the GX resets the hub4 override within seconds (Venus OS before v3.60?): using the "
            f"setting, trying the override again in {_duration(state.retry_at - now)}",
            fell_back=True,
        )
    if present is None:
        return Choice(Actuator.SETTING, "the GX has not shown the hub4 override (yet)")
    if not present:
        return Choice(Actuator.SETTING, "this GX has no hub4 override (older firmware or no ESS)")
    return Choice(Actuator.OVERRIDE, "")


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def hand_back_first(
    active: Actuator, *, setting_held: bool, override_held: bool
) -> Optional[Actuator]:
    """Return the actuator whose venus-prio value must be handed back (confirmed) before
    ``active`` may steer, or None: never two caps in force."""
    if override_held and active is not Actuator.OVERRIDE:
        return Actuator.OVERRIDE
    if setting_held and active is not Actuator.SETTING:
        return Actuator.SETTING
    return None


@dataclass(frozen=True)
class OverrideWrite:
    """A value to send to the hub4 override (``RELEASE_W`` hands back)."""

    value_w: float
    why: str


def control_for(config: Config, actuator: Actuator) -> ControlConfig:
    """Return the controller's settings for the actuator in use.

    The override caps the DC side (the inverter's losses come out of that DC power, not out of
    the battery), so its PV share is ``override.pv_factor`` x net DC PV in ``override.step_w``
    steps; the setting is an AC-side cap and keeps ``control.pv_factor``.
    """
    if actuator is not Actuator.OVERRIDE:
        return config.control
    override = config.actuator.override
    return dataclasses.replace(
        config.control,
        pv_factor=override.pv_factor,
        pv_offset_w=override.pv_offset_w,
        step_w=override.step_w,
    )


def override_value(
    target_w: float, target_class: TargetClass, *, cfg: OverrideConfig, max_w: float
) -> float:
    """Return the override value for a controller target: stepped down, in [0, max_w]."""
    if target_class is TargetClass.BASELINE:
        return RELEASE_W
    value = min(max(target_w, 0.0), max_w)
    return math.floor(value / cfg.step_w) * cfg.step_w


def plan_override(
    *,
    target_w: float,
    target_class: TargetClass,
    current_w: Optional[float],
    last_write_t: Optional[float],
    cfg: OverrideConfig,
    max_w: float,
    now: float,
    in_doubt: bool = False,
) -> Optional[OverrideWrite]:
    """Return the override write this target warrants now, or None (see the module docstring).

    ``current_w`` is the value venus-prio holds on the override (None or negative: none),
    ``last_write_t`` when it last wrote it; ``in_doubt``: a value of ours may stand there
    although we hold none (``ActuatorState.in_doubt``): the baseline releases it.
    """
    value = override_value(target_w, target_class, cfg=cfg, max_w=max_w)
    held = current_w is not None and current_w >= 0
    if value < 0:
        return OverrideWrite(RELEASE_W, "release the override") if held or in_doubt else None
    if not held:
        return OverrideWrite(value, "take the override")
    assert current_w is not None
    if (value == 0) != (current_w == 0):
        return OverrideWrite(value, f"{'hold' if value == 0 else 'open'} from {current_w:g} W")
    if abs(value - current_w) >= cfg.deadband_w:
        direction = "raise" if value > current_w else "lower"
        return OverrideWrite(value, f"{direction} from {current_w:g} W")
    if last_write_t is None or now - last_write_t >= cfg.refresh_s:
        return OverrideWrite(current_w, "refresh")
    return None
