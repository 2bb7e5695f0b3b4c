"""The asyncio shell: wires a ``Source``, the controller, the actuators and the journal.

How it works: ``Service.run`` runs the source and the steering loop side by side under one small
supervisor. The loop wakes when the source reports a change or after ``control.tick_s``, and
``Service.evaluate`` does one step:

    snapshot -> (learn the baseline / spot external changes) -> actuator.observe/choose
             -> decide -> hand back the other actuator if it holds ours -> steer the chosen one:
                override: actuator.plan_override -> write_override (release: -1 confirmed)
                setting:  writes.plan_write -> write_max_discharge

Everything that decides lives in ``controller.py``, ``actuator.py`` (where the cap goes and why)
and ``writes.py``; this module only keeps the state between steps, talks to the source and the
journal, and logs changes of state once.

The baseline (control.md section 6) comes from ``writes.baseline_w``, else from the journal of
this GX (after a crash the value on the GX may be venus-prio's own), else from the value the GX
shows when first seen. A setting value venus-prio did not write is adopted as the new baseline,
except a value it wrote itself within the last hour (a late publish after a reconnect or a
transport switch may show one): that is never the user's. On SIGTERM/SIGINT, on a fatal error
and on ``restore`` the override is released (-1, confirmed) and the baseline written back
(confirmed by read-back); the journal is then marked clean.

The journal is saved only when what a restart needs changes: the baseline, the setting turning
dirty (before the first steering write) or clean (after a confirmed hand-back), the override held
(before the first override write) or not (after a confirmed release), the mode.

Writes have no ack (venus-mqtt.md point 8): a write is "in flight" until the GX echoes it; until
then the old value on the GX is not mistaken for somebody else's change, nor for proof that
nothing of ours stands there: the restore, and the override's release, write even when the GX
already shows the value they want (``actuator.py`` point 4: ours until seen gone).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import (
    Awaitable,
    Callable,
    List,
    Optional,
    Sequence,
    Tuple,
)

from venus_prio import actuator
from venus_prio.config import Config
from venus_prio.controller import ControllerState, decide
from venus_prio.errors import SourceUnavailable
from venus_prio.journal import MODES, Journal, journal_path, load_journal, save_journal
from venus_prio.model import Actuator, Decision, Reason, Snapshot, Write, same_value
from venus_prio.status import ServiceStatus, WriteRecord
from venus_prio.tasks import cancel_and_wait, supervise
from venus_prio.venus.source import Readiness, Source, write_confirmed
from venus_prio.writes import (
    HOUR_S,
    WriteState,
    baseline_to_write,
    could_be_steering,
    counters,
    plan_write,
    record_write,
)

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1

# How long a write may stay unechoed before the old value on the GX counts as the truth again.
ECHO_TIMEOUT_S = 5.0
ECHO_READ_TIMEOUT_S = 1.0  # then a read-back settles it
# At start-up the source needs a moment to connect: only then is "unreachable" worth a warning.
STARTUP_GRACE_S = 5.0

_LOUD_REASONS = frozenset(
    {Reason.STAND_ASIDE_STALE, Reason.STAND_ASIDE_DISCONNECTED, Reason.STAND_ASIDE_MISSING_INPUT}
)


@dataclass(frozen=True)
class _InFlight:
    """A write the GX has not echoed yet."""

    value_w: float
    # What the GX showed before, and earlier writes not echoed yet: it may show these until
    # the echo arrives.
    before: Tuple[float, ...]
    deadline: float

    def after(self, value_w: float, *, gx_w: Optional[float], now: float) -> _InFlight:
        """Return the in-flight state after another write of ``value_w``."""
        before = self.before + (self.value_w,) + (() if gx_w is None else (gx_w,))
        return _InFlight(value_w, before, now + ECHO_TIMEOUT_S)


def _in_flight(
    previous: Optional[_InFlight], value_w: float, *, gx_w: Optional[float], now: float
) -> _InFlight:
    if previous is not None:
        return previous.after(value_w, gx_w=gx_w, now=now)
    return _InFlight(value_w, () if gx_w is None else (gx_w,), now + ECHO_TIMEOUT_S)


class Service:
    """The steering service around one ``Source``; construct it inside the running event loop."""

    def __init__(
        self,
        *,
        config: Config,
        source: Source,
        clock: Optional[Callable[[], float]] = None,
        dry_run: bool = False,
        persist: bool = True,
    ) -> None:
        self._config = config
        self._source = source
        # Worked out once: the evaluation runs on every change (several a second), and a
        # runtime Protocol check and a dataclass copy there are most of its own cost.
        self._readiness: Optional[Readiness] = source if isinstance(source, Readiness) else None
        self._controls = {kind: actuator.control_for(config, kind) for kind in Actuator}
        self._clock: Callable[[], float] = clock or asyncio.get_running_loop().time
        self._dry_run_flag = dry_run
        self._persist = persist  # False: never touch the journal (probe)
        self._journal_path = journal_path(config.resolved_state_dir())
        self._journal = load_journal(self._journal_path)
        # One journal per state dir: the mode the user chose in Home Assistant survives restarts.
        self._mode = self._journal.mode if self._journal is not None else "auto"
        self._ctrl = ControllerState()
        self._wstate = WriteState()  # setting (flash) writes
        self._owstate = WriteState()  # override (RAM) writes: counted apart
        self._baseline: Optional[float] = None
        self._last_written: Optional[float] = None
        self._own: Tuple[Tuple[float, float], ...] = ()  # (time, value) of our setting writes
        self._clean = True
        # A previous run that did not hand back may still hold the override (journal).
        self._override_held = self._journal is not None and self._journal.override_held
        self._act = actuator.start(config.actuator, override_held=self._override_held)
        self._choice = actuator.Choice(Actuator.NONE, "")
        self._in_flight: Optional[_InFlight] = None
        self._unconfirmed: Optional[float] = None
        self._would_be: Optional[float] = None  # dry-run: the value we would have left on the GX
        self._would_be_override: Optional[float] = None  # dry-run: the same on the override
        self._would_be_override_t: Optional[float] = None
        self._last_seen: Optional[float] = None
        self._decision: Optional[Decision] = None
        self._last_write: Optional[WriteRecord] = None
        self._connected: Optional[bool] = None
        self._warned_unreachable = False
        self._warned_no_value = False
        self._warned_journal = False
        self._started = self._clock()
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._watchers: List[asyncio.Event] = []

    # -- read-only view ------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._config.control.enabled and self._mode != "off"

    @property
    def dry_run(self) -> bool:
        return self._dry_run_flag or self._config.writes.dry_run or self._mode == "dry-run"

    @property
    def portal_id(self) -> Optional[str]:
        """Return the GX's portal id once the source knows it."""
        return self._source.portal_id

    @property
    def status(self) -> ServiceStatus:
        """Return the last decision, the last write, the counters, the baseline and the flags."""
        now = self._clock()
        snap = self._source.snapshot()
        return ServiceStatus(
            decision=self._decision,
            last_write=self._last_write,
            counters=counters(self._wstate, now),
            baseline_w=self._baseline,
            mode=self._mode,
            enabled=self.enabled,
            dry_run=self.dry_run,
            connected=bool(self._connected),
            written_w=self._last_written,
            battery_power_w=snap.battery_power_w,
            data_age_s=None if snap.alive_at is None else max(0.0, now - snap.alive_at),
            transport=self._source.name,
            actuator=self._choice.actuator.value,
            actuator_why=self._choice.why,
            override_counters=counters(self._owstate, now),
            override_w=self._act.held_w,
        )

    def watch(self) -> asyncio.Event:
        """Return an event set after every step that may have changed ``status``.

        The watcher clears it before it reads ``status``; each call returns its own event.
        """
        event = asyncio.Event()
        self._watchers.append(event)
        return event

    def _notify(self) -> None:
        for event in self._watchers:
            event.set()

    # -- control -------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Ask ``run`` to hand back the baseline and return (signal handlers call this)."""
        self._stop.set()
        self._source.wake()

    async def set_mode(self, mode: str) -> None:
        """Switch between "auto", "dry-run" and "off" (stand aside), persisted in the journal."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if self._stop.is_set():
            # Handing back is under way: a late "auto" must not steer after the restore.
            log.info("Stopping: mode change to %s ignored", mode)
            return
        async with self._lock:
            if mode == self._mode:
                return
            was_dry_run = self.dry_run
            log.info("Mode changed from %s to %s", self._mode, mode)
            self._mode = mode
            self._would_be = self._would_be_override = self._would_be_override_t = None
            self._save_journal()
            if self.dry_run and not was_dry_run:
                # Dry-run stops sending: the GX must not keep a value of ours nobody updates.
                await self._hand_back("entering dry-run: hand back the user's own value")
        await self.evaluate()

    async def run(self) -> int:
        """Steer until ``request_stop`` or a fatal error; restore the baseline; return the code."""
        source_task = asyncio.ensure_future(self._source.run())
        steer_task = asyncio.ensure_future(self._steer_then_stop([source_task]))
        tasks = [source_task, steer_task]
        await supervise(tasks)
        if steer_task.cancelled():
            # The source gave up for good: nothing can be written any more.
            log.error("The connection to the GX failed for good: cannot restore the baseline")
            exc = None if source_task.cancelled() else source_task.exception()
            if exc is not None:
                raise exc
            return EXIT_FAILURE
        return steer_task.result()

    async def evaluate(self) -> Optional[Decision]:
        """Run one step: snapshot, decision, write; return the decision (None: no baseline yet)."""
        try:
            async with self._lock:
                return await self._evaluate()
        finally:
            self._notify()

    async def restore_baseline(self) -> bool:
        """Release the override and write the baseline back, both confirmed by read-back, and
        mark the journal clean; False when either could not be confirmed."""
        try:
            async with self._lock:
                released = await self._release_override("restore")
                return await self._restore_setting() and released
        finally:
            self._notify()

    async def _restore_setting(self) -> bool:
        """Write the baseline to the setting, confirm it by read-back, mark the journal clean."""
        journal = self._journal
        learnt = self._baseline is not None
        baseline = self._baseline
        if (
            baseline is None
            and journal is not None
            and not journal.clean
            and journal.portal_id in (None, self._source.portal_id)
        ):
            # Never got as far as learning it this run, but a previous one left its value.
            baseline = self._baseline = journal.baseline_w
        if baseline is None:
            log.info("No baseline known: venus-prio never took control, nothing to restore")
            return True
        if self.dry_run and self._clean and (journal is None or journal.clean):
            # Nothing of venus-prio's on the setting. A dirty journal is restored even in
            # dry-run: dry-run stops steering, it must not leave a value of ours behind.
            log.info("Dry-run: would restore the baseline %g W; nothing written", baseline)
            return True
        snap = self._source.snapshot()
        value = baseline_to_write(baseline, snap)

        def users_change(shown: float) -> bool:
            # The look before each write: a change the user made while the transport was away
            # (a broker restart, a switch to D-Bus) is theirs and stays (fault campaign seed 1
            # round 61). Only with a baseline learnt in this run: then every value of ours is
            # known, and a value from a crashed run is never taken for the user's.
            if not learnt:
                return False
            self._observe_gx(shown, self._clock())
            # Still in flight: the GX shows a value from before our last write, which may land
            # after this look (then it, not the user's value, would stay after the stop).
            return self._in_flight is None and same_value(shown, self._baseline)

        wrote = await write_confirmed(
            self._source, value, stands=users_change, in_flight=lambda: self._in_flight is not None
        )
        if self._baseline is not None and not same_value(self._baseline, baseline):
            value = self._baseline  # adopted on the way: the GX holds the user's new value
        if wrote is None:
            log.error(
                "RESTORE NOT CONFIRMED: could not confirm MaxDischargePower = %g W on the GX "
                "(it may still hold %s W); run `venus-prio restore` once it is reachable",
                value,
                "an unknown" if self._last_written is None else f"{self._last_written:g}",
            )
            return False
        now = self._clock()
        if wrote:
            self._wstate = record_write(
                self._wstate,
                Write(value_w=value, forced=True, why="restore"),
                previous_w=self._last_written,
                now=now,
            )
            self._note_own(value, now)
        self._last_written = value
        self._in_flight = None
        if not self._clean or self._journal is None or not self._journal.clean:
            self._clean = True
            self._save_journal()
        log.info("Restored the baseline MaxDischargePower %g W (confirmed by read-back)", value)
        return True

    # -- the loop ------------------------------------------------------------------------

    async def _steer_then_stop(self, others: Sequence[asyncio.Future[None]]) -> int:
        try:
            return await self._steer()
        finally:
            # The source runs until cancelled: once steering is over, so is the source.
            await cancel_and_wait(others)

    async def _steer(self) -> int:
        fatal = False
        try:
            while not self._stop.is_set():
                await self.evaluate()
                await self._wait_for_input(self._config.control.tick_s)
            log.info("Stopping: handing back the baseline")
        except Exception:
            log.exception("Fatal error in the control loop: handing back the baseline and stopping")
            fatal = True
        restored = await self.restore_baseline()
        return EXIT_FAILURE if fatal or not restored else EXIT_OK

    async def _wait_for_input(self, timeout: float) -> None:
        """Wait for a change on the source, a stop request or the tick, whichever comes first."""
        await self._source.wait_changed(timeout)  # request_stop wakes it too

    async def _evaluate(self) -> Optional[Decision]:
        now = self._clock()
        snap = self._source.snapshot()
        self._track_connection(snap.connected, now)
        if snap.connected and self._readiness is not None and not self._readiness.ready:
            # Mid full publish: a half-known state (SOC without PV, say) must not steer.
            return None
        if snap.connected:
            if self._in_flight is not None and now >= self._in_flight.deadline:
                await self._settle_in_flight()
                snap = self._source.snapshot()
            self._observe_gx(snap.max_discharge_w, now)
        self._observe_override(snap, now)
        baseline = self._baseline
        if baseline is None:
            return None
        active = self._choice.actuator
        decision, self._ctrl = decide(
            snap,
            self._ctrl,
            self._controls[active],
            baseline_w=baseline,
            now=now,
            enabled=self.enabled,
            override_in_use=self._act.override_in_use,
        )
        self._log_decision(decision)
        self._decision = decision
        if not snap.connected:
            return decision  # nothing can be written; on reconnect this runs again at once
        if not await self._hand_back_other(active):
            return decision  # never two caps in force: not steering until that is confirmed
        if active is Actuator.OVERRIDE:
            await self._steer_override(decision, now)
        elif active is Actuator.SETTING:
            await self._steer_setting(decision, snap, baseline, now)
        return decision

    async def _steer_setting(
        self, decision: Decision, snap: Snapshot, baseline: float, now: float
    ) -> None:
        """Steer through the setting: ``writes.plan_write`` rations the flash writes."""
        if snap.max_discharge_w is None:
            if not self._warned_no_value:
                log.warning(
                    "MaxDischargePower is invalid or absent on the GX: not writing until it is back"
                )
                self._warned_no_value = True
            return
        self._warned_no_value = False
        current = self._planning_value(snap)
        write = plan_write(
            target_w=decision.target_w,
            target_class=decision.target_class,
            current_w=current,
            baseline_w=baseline,
            hold_w=self._config.control.hold_w,
            max_w=self._config.control.max_inverter_power_w,
            setting_min=snap.max_discharge_min,
            setting_max=snap.max_discharge_max,
            state=self._wstate,
            cfg=self._config.writes,
            now=now,
        )
        if write is not None:
            await self._send(
                write, decision.reason, previous_w=current, gx_w=snap.max_discharge_w, now=now
            )

    def _planning_value(self, snap: Snapshot) -> Optional[float]:
        """Return the value the write policy compares against: what the GX holds (or will)."""
        if self.dry_run and self._would_be is not None:
            return self._would_be
        if self._in_flight is not None:
            return self._in_flight.value_w
        return snap.max_discharge_w

    async def _settle_in_flight(self) -> None:
        """Ask the GX whether a write that was never echoed took effect (the echo may be lost)."""
        flight = self._in_flight
        assert flight is not None
        shown = await self._source.read_max_discharge(ECHO_READ_TIMEOUT_S)
        self._in_flight = None
        if same_value(shown, flight.value_w):
            return
        log.warning(
            "Write of %g W not confirmed: the GX shows %s",
            flight.value_w,
            "nothing" if shown is None else f"{shown:g} W",
        )
        self._unconfirmed = flight.value_w
        if shown is not None and any(same_value(shown, old) for old in flight.before):
            # What stands there was there before our write: ours or the baseline, not a change.
            self._last_written = shown

    def _track_connection(self, connected: bool, now: float) -> None:
        if connected:
            if self._connected is False and self._warned_unreachable:
                log.info("GX reachable again: re-evaluating")
            self._warned_unreachable = False
        elif (self._connected or now - self._started >= STARTUP_GRACE_S) and (
            not self._warned_unreachable
        ):
            log.warning("GX unreachable: cannot restore/steer; will re-evaluate on reconnect")
            self._warned_unreachable = True
        self._connected = connected

    # -- the override --------------------------------------------------------------------

    def _observe_override(self, snap: Snapshot, now: float) -> None:
        """Run the actuator verification on ``snap``; log a change of actuator once."""
        reason = None if self._decision is None else self._decision.reason
        self._act = actuator.observe(self._act, snap, reason=reason, config=self._config, now=now)
        if self._override_held is not self._act.may_hold:
            # Seen gone after our last write arrived (expired, reset) or taken by someone else:
            # nothing of ours stands there. Or a value of ours showing while we held none (a
            # write of ours that landed late): the stop must release it.
            self._override_held = self._act.may_hold
            self._save_journal()
        choice = actuator.choose(self._act, snap, cfg=self._config.actuator.override, now=now)
        if choice.actuator is not self._choice.actuator:
            # A trimmed PV factor belongs to the actuator it was learnt on.
            self._ctrl = dataclasses.replace(self._ctrl, pv_factor=None)
        # Until the GX has said whether it has the override, the choice is provisional (the
        # setting, steering nothing before the state is complete): not worth a log line.
        provisional = snap.override_present is None and not choice.fell_back
        if choice != self._choice and not provisional:
            level = logging.WARNING if choice.fell_back else logging.INFO
            log.log(
                level,
                "Actuator: %s%s",
                choice.actuator.value,
                f" ({choice.why})" if choice.why else " (hub4 /Overrides/MaxDischargePower)",
            )
        self._choice = choice

    async def _hand_back_other(self, active: Actuator) -> bool:
        """Hand back (confirmed) whichever other actuator holds a venus-prio value; False when
        that could not be confirmed (then nothing may steer)."""
        if self.dry_run:
            return True  # nothing of ours stands on the GX in dry-run
        for _ in range(2):
            other = actuator.hand_back_first(
                active, setting_held=not self._clean, override_held=self._override_held
            )
            if other is None:
                return True
            log.info("Switching to the %s: handing back the %s first", active.value, other.value)
            if other is Actuator.OVERRIDE:
                done = await self._release_override(f"switching to the {active.value}")
            else:
                done = await self._restore_setting()
            if not done:
                return False
        return True

    async def _steer_override(self, decision: Decision, now: float) -> None:
        """Steer through the override: ``actuator.plan_override`` every evaluation."""
        cfg = self._config.actuator.override
        dry_run = self.dry_run
        write = actuator.plan_override(
            target_w=decision.target_w,
            target_class=decision.target_class,
            current_w=self._would_be_override if dry_run else self._act.held_w,
            last_write_t=self._would_be_override_t if dry_run else self._act.last_write_t,
            cfg=cfg,
            max_w=self._config.control.max_inverter_power_w,
            now=now,
            # Not over another tool's episode: we never write while theirs owns the override.
            in_doubt=self._act.in_doubt and not dry_run and not self._act.override_in_use,
        )
        if write is None:
            return
        if dry_run:
            if write.why != "refresh":
                log.info("Dry-run: would write the override %g W (%s)", write.value_w, write.why)
            self._would_be_override, self._would_be_override_t = write.value_w, now
            self._record_override(write, decision.reason, sent=False, now=now)
            return
        if write.value_w < 0:
            await self._release_override(write.why, reason=decision.reason)
            return
        if not self._journal_ours(Actuator.OVERRIDE):
            return
        if not await self._try_write(self._source.write_override, write.value_w):
            return
        self._record_override(write, decision.reason, sent=True, now=now)
        level = logging.DEBUG if write.why == "refresh" else logging.INFO
        log.log(
            level,
            "Wrote the override %g W (%s; %s)",
            write.value_w,
            write.why,
            decision.reason.value,
        )

    async def _release_override(self, why: str, *, reason: Reason = Reason.NORMAL) -> bool:
        """Write -1 to the override and confirm it by read-back, if venus-prio may hold it."""
        if not self._override_held:  # in dry-run too: a held override of ours is released
            return True
        if self._source.snapshot().override_present is False:
            log.info("The GX shows no hub4 override any more: nothing to release")
        else:
            # A write of ours may still be on its way: a -1 shown now proves nothing.
            wrote = await write_confirmed(
                self._source, actuator.RELEASE_W, override=True, in_flight=lambda: True
            )
            if wrote is None:
                log.error(
                    "RELEASE NOT CONFIRMED: the hub4 override may still hold venus-prio's %s W "
                    "(it expires by itself within minutes)",
                    "?" if self._act.held_w is None else f"{self._act.held_w:g}",
                )
                return False
            now = self._clock()
            if wrote:
                release = actuator.OverrideWrite(actuator.RELEASE_W, why)
                self._record_override(release, reason, sent=True, now=now)
            else:
                self._act = actuator.wrote(
                    self._act, actuator.RELEASE_W, cfg=self._config.actuator.override, now=now
                )
            log.info("Released the override (-1 confirmed by read-back; %s)", why)
        self._override_held = False
        self._save_journal()
        return True

    def _record_override(
        self, write: actuator.OverrideWrite, reason: Reason, *, sent: bool, now: float
    ) -> None:
        previous = self._would_be_override if not sent else self._act.held_w
        if sent:
            self._act = actuator.wrote(
                self._act, write.value_w, cfg=self._config.actuator.override, now=now
            )
        self._owstate = record_write(
            self._owstate,
            Write(value_w=write.value_w, forced=write.value_w < 0, why=write.why),
            previous_w=previous,
            now=now,
        )
        self._last_write = WriteRecord(
            write.value_w,
            write.why,
            reason,
            write.value_w < 0,
            sent=sent,
            at=now,
            actuator=Actuator.OVERRIDE,
        )

    # -- baseline and external changes ---------------------------------------------------

    def _observe_gx(self, value: Optional[float], now: float) -> None:
        """Learn the baseline, match echoes of our writes, adopt values somebody else wrote."""
        if value is None:
            return
        if self._baseline is None:
            self._learn_baseline(value, now)
        if self._in_flight is not None:
            if same_value(value, self._in_flight.value_w):
                self._in_flight = None
            elif not any(same_value(value, old) for old in self._in_flight.before):
                self._in_flight = None  # a third value: somebody else wrote after us
            else:
                return  # the GX still shows a value from before our write
        if self._unconfirmed is not None and same_value(value, self._unconfirmed):
            self._last_written = value  # a late echo is still ours
            self._unconfirmed = None
        changed = not same_value(value, self._last_seen)
        self._last_seen = value
        if same_value(value, self._last_written) or same_value(value, self._baseline):
            return
        if self._written_recently(value, now):
            # An earlier value of ours (a late publish after a reconnect or a transport switch):
            # never the user's. Expect ours; a read-back settles it if it does not come.
            if changed:
                log.info(
                    "MaxDischargePower shows %g W, a value venus-prio wrote itself earlier: "
                    "not the user's; expecting %s",
                    value,
                    "?" if self._last_written is None else f"{self._last_written:g} W",
                )
            if self._last_written is not None:
                self._in_flight = _InFlight(self._last_written, (value,), now + ECHO_TIMEOUT_S)
            return
        if self._config.writes.baseline_w is not None:
            if changed:
                log.info(
                    "MaxDischargePower changed to %g W by someone else; keeping baseline_w %g W "
                    "from the config",
                    value,
                    self._baseline,
                )
            return
        log.info(
            "MaxDischargePower changed to %g W by someone else (GUI or another tool): "
            "adopted as the new baseline (was %g W)",
            value,
            self._baseline,
        )
        self._baseline = value
        # What the GX holds now is the user's, not venus-prio's last write: the user may come
        # back to that earlier value, and the journal must not keep it beside theirs.
        self._last_written = value
        self._save_journal()

    def _note_own(self, value: float, now: float) -> None:
        """Remember a setting value venus-prio wrote (for an hour: never the user's), unless it
        is the baseline: handing back writes the user's own value, which stays theirs."""
        if same_value(value, self._baseline):
            return
        self._own = (*((t, v) for t, v in self._own if now - t < HOUR_S), (now, value))

    def _written_recently(self, value: float, now: float) -> bool:
        return any(now - t < HOUR_S and same_value(value, v) for t, v in self._own)

    def _learn_baseline(self, gx_value: float, now: float) -> None:
        journal = self._journal
        if journal is not None and journal.portal_id != self._source.portal_id:
            log.info(
                "The journal in %s belongs to GX %s, not %s: starting afresh",
                self._journal_path,
                journal.portal_id,
                self._source.portal_id,
            )
            journal = None
            self._override_held = False
            self._act = actuator.start(self._config.actuator)
        if self._config.writes.baseline_w is not None:
            baseline, origin = self._config.writes.baseline_w, "writes.baseline_w in the config"
        elif journal is not None and journal.baseline_w is not None:
            baseline, origin = journal.baseline_w, f"the journal {self._journal_path}"
        else:
            baseline, origin = gx_value, "the value found on the GX"
        if (
            journal is not None
            and not journal.clean
            and not same_value(gx_value, journal.last_written_w)
            and not could_be_steering(gx_value, self._config.control)
        ):
            # The previous run did not restore the setting, but this value is none that
            # venus-prio writes: the user set it while venus-prio was down. It is theirs.
            if self._config.writes.baseline_w is None:
                baseline, origin = gx_value, "the user's change while venus-prio was down"
            log.warning(
                "The previous run did not restore the baseline, but %g W on the GX is not a "
                "value venus-prio writes: the user changed it meanwhile",
                gx_value,
            )
            # Nothing of venus-prio's stands there: the journal is as good as clean, and what
            # the GX holds is the user's (as after an adoption).
            journal = dataclasses.replace(journal, clean=True, last_written_w=gx_value)
        self._baseline = baseline
        if journal is not None and not journal.clean:
            # The previous run did not restore the setting: the value on the GX is venus-prio's.
            log.warning(
                "The previous run did not restore the baseline: %g W on the GX is venus-prio's "
                "own; the baseline stays %g W",
                gx_value,
                baseline,
            )
            self._last_written = gx_value
            self._clean = False
            self._note_own(gx_value, now)
            if journal.last_written_w is not None:
                self._note_own(journal.last_written_w, now)
        elif journal is not None:
            self._last_written = journal.last_written_w
        log.info("Baseline MaxDischargePower %g W (from %s)", baseline, origin)
        self._save_journal()

    # -- writes --------------------------------------------------------------------------

    async def _send(
        self,
        write: Write,
        reason: Reason,
        *,
        previous_w: Optional[float],
        gx_w: Optional[float],
        now: float,
    ) -> None:
        if self.dry_run:
            log.info("Dry-run: would write %g W (%s; %s)", write.value_w, write.why, reason.value)
            self._would_be = write.value_w
            self._wstate = record_write(self._wstate, write, previous_w=previous_w, now=now)
            self._last_write = WriteRecord(
                write.value_w, write.why, reason, write.forced, sent=False, at=now
            )
            return
        steering = not same_value(write.value_w, self._baseline)
        if steering and not self._journal_ours(Actuator.SETTING):
            return
        if not await self._try_write(self._source.write_max_discharge, write.value_w):
            return
        self._wstate = record_write(self._wstate, write, previous_w=previous_w, now=now)
        self._in_flight = _in_flight(self._in_flight, write.value_w, gx_w=gx_w, now=now)
        self._unconfirmed = None
        self._last_written = write.value_w
        self._note_own(write.value_w, now)
        self._last_write = WriteRecord(
            write.value_w, write.why, reason, write.forced, sent=True, at=now
        )
        log.info("Wrote MaxDischargePower %g W (%s; %s)", write.value_w, write.why, reason.value)

    def _journal_ours(self, where: Actuator) -> bool:
        """Journal that ``where`` may hold a value of venus-prio's, before it does (the user's
        value must be on disk first); False when the journal cannot be saved: do not write."""
        if self._override_held if where is Actuator.OVERRIDE else not self._clean:
            return True
        self._set_held(where, held=True)
        if self._save_journal():
            return True
        self._set_held(where, held=False)
        return False

    def _set_held(self, where: Actuator, *, held: bool) -> None:
        if where is Actuator.OVERRIDE:
            self._override_held = held
        else:
            self._clean = not held

    async def _try_write(self, send: Callable[[float], Awaitable[None]], value_w: float) -> bool:
        """Send a steering write; False (warned once) when the GX cannot be reached."""
        try:
            await send(value_w)
        except SourceUnavailable as exc:
            if not self._warned_unreachable:
                log.warning("GX unreachable: cannot restore/steer (%s)", exc)
                self._warned_unreachable = True
            return False
        return True

    async def _hand_back(self, why: str) -> None:
        """Release the override and write the baseline now, outside the policy (stop steering)."""
        await self._release_override(why, reason=Reason.STAND_ASIDE_DISABLED)
        snap = self._source.snapshot()
        if (
            self._baseline is None
            or not snap.connected
            or same_value(self._planning_value(snap), self._baseline)
        ):
            return
        value = baseline_to_write(self._baseline, snap)
        write = Write(value_w=value, forced=True, why=why)
        reason = Reason.STAND_ASIDE_DISABLED
        try:
            await self._source.write_max_discharge(value)
        except SourceUnavailable as exc:
            log.warning("GX unreachable: cannot restore/steer (%s)", exc)
            return
        now = self._clock()
        self._wstate = record_write(self._wstate, write, previous_w=self._last_written, now=now)
        self._in_flight = _in_flight(self._in_flight, value, gx_w=snap.max_discharge_w, now=now)
        self._last_written = value
        self._note_own(value, now)
        self._last_write = WriteRecord(value, why, reason, True, sent=True, at=now)
        log.info("Wrote MaxDischargePower %g W (%s)", value, why)

    def _save_journal(self) -> bool:
        """Persist what a restart needs (baseline, clean flag, override held, mode); False when
        that failed. Called only when one of them changes, never for a mere steering write."""
        if not self._persist:
            return True
        journal = Journal(
            portal_id=self._source.portal_id,
            baseline_w=self._baseline,
            last_written_w=self._last_written,
            clean=self._clean,
            mode=self._mode,
            updated=time.time(),
            override_held=self._override_held,
        )
        try:
            save_journal(self._journal_path, journal)
        except OSError as exc:
            if not self._warned_journal:
                log.error(
                    "Cannot write the baseline journal %s (%s): not steering until it can be saved",
                    self._journal_path,
                    exc,
                )
                self._warned_journal = True
            return False
        self._journal = journal
        if self._warned_journal:
            log.info("The baseline journal %s is writable again", self._journal_path)
            self._warned_journal = False
        return True

    def _log_decision(self, decision: Decision) -> None:
        previous = self._decision
        if previous is not None and previous.reason is decision.reason:
            return
        level = logging.WARNING if decision.reason in _LOUD_REASONS else logging.INFO
        if decision.reason.stands_aside:
            log.log(level, "%s (%s)", decision.text, decision.reason.value)
        elif previous is not None and previous.reason.stands_aside:
            log.info("Steering resumes: %s (%s)", decision.text, decision.reason.value)
        else:
            log.info("%s: %s", decision.reason.value, decision.text)
