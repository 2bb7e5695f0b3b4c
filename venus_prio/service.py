"""The asyncio shell: wires a ``Source``, the controller, the two caps and the journal.

How it works: ``Service.run`` runs the source and the steering loop side by side under one small
supervisor. The loop wakes when the source reports a change or after ``control.tick_s``, and
``Service.evaluate`` does one step (``_evaluate``):

    snapshot -> setting: learn the baseline / settle an overdue echo / spot external changes
             -> override: actuator.observe, then actuator.choose
             -> decide -> hand back the other cap if it holds ours -> steer the chosen one

Everything that decides lives in ``controller.py``, ``actuator.py`` (where the cap goes and why)
and ``writes.py``. Every write of the cap, with its bookkeeping, lives in ``caps.py``:
``SettingCap`` (baseline, budget, echoes, the one ``restore``) and ``OverrideCap``
(verification, refresh, release); they reach back here through ``caps.Shell`` (the clock,
dry-run, the journal, the last write, the unreachable warning). This module keeps the loop, the
mode, the journal file and the status, and logs changes of state once.

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
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Callable, List, Optional, Sequence

from venus_prio import actuator
from venus_prio.benefit import DayLedger
from venus_prio.caps import OverrideCap, SettingCap
from venus_prio.config import Config
from venus_prio.controller import ControllerState, decide
from venus_prio.errors import SourceUnavailable
from venus_prio.journal import MODES, Journal, journal_path, load_journal, save_journal
from venus_prio.model import Actuator, Decision, Reason, Snapshot
from venus_prio.recorder import LocalDayFn, Recorder, system_local_day
from venus_prio.recording import is_current
from venus_prio.status import ServiceStatus, WriteRecord
from venus_prio.tasks import cancel_and_wait, supervise
from venus_prio.venus.source import Readiness, Source
from venus_prio.writes import counters

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1

# At start-up the source needs a moment to connect: only then is "unreachable" worth a warning.
STARTUP_GRACE_S = 5.0
# How often the recording task asks whether a flush is due (the recorder's FLUSH_S decides).
RECORD_POLL_S = 5.0

_LOUD_REASONS = frozenset(
    {Reason.STAND_ASIDE_STALE, Reason.STAND_ASIDE_DISCONNECTED, Reason.STAND_ASIDE_MISSING_INPUT}
)


class Service:
    """The steering service around one ``Source``; construct it inside the running event loop."""

    def __init__(
        self,
        *,
        config: Config,
        source: Source,
        clock: Optional[Callable[[], float]] = None,
        wall_clock: Callable[[], float] = time.time,
        local_day: LocalDayFn = system_local_day,
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
        self._persist = persist  # False: never touch the journal nor record (probe)
        # The day's recording and ledger are in local time, on the wall clock (``clock`` is the
        # loop's monotonic one); tests give both, the fake GX's faster day among them.
        self._wall_clock = wall_clock
        self._ledger = DayLedger(config, local_day=local_day)
        self._recorder: Optional[Recorder] = None
        if persist and config.record.enabled:
            self._recorder = Recorder(
                directory=config.resolved_state_dir() / "recordings",
                interval_s=config.record.interval_s,
                keep_days=config.record.keep_days,
                local_day=local_day,
            )
        self._flushing: Optional[asyncio.Future[None]] = None
        self._accounting = True  # False after an error in the measuring (``_account``)
        self._journal_path = journal_path(config.resolved_state_dir())
        self._journal = load_journal(self._journal_path)
        # One journal per state dir: the mode the user chose in Home Assistant survives restarts.
        self._mode = self._journal.mode if self._journal is not None else "auto"
        self._ctrl = ControllerState()
        self._setting = SettingCap(self)
        # A previous run that did not hand back may still hold the override (journal).
        self._override = OverrideCap(
            self, held=self._journal is not None and self._journal.override_held
        )
        self._choice = actuator.Choice(Actuator.NONE, "")
        self._decision: Optional[Decision] = None
        self._last_write: Optional[WriteRecord] = None
        self._connected: Optional[bool] = None
        self._warned_unreachable = False
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
            counters=counters(self._setting.wstate, now),
            baseline_w=self._setting.baseline,
            mode=self._mode,
            enabled=self.enabled,
            dry_run=self.dry_run,
            connected=bool(self._connected),
            written_w=self._setting.last_written,
            battery_power_w=snap.battery_power_w,
            data_age_s=None if snap.alive_at is None else max(0.0, now - snap.alive_at),
            transport=self._source.name,
            actuator=self._choice.actuator.value,
            actuator_why=self._choice.why,
            override_counters=counters(self._override.wstate, now),
            override_w=self._override.act.held_w,
            benefit=self._ledger.benefit,
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

    # -- what the caps need (caps.Shell) -------------------------------------------------

    @property
    def source(self) -> Source:
        return self._source

    @property
    def config(self) -> Config:
        return self._config

    @property
    def journal(self) -> Optional[Journal]:
        """Return the journal as last loaded or saved."""
        return self._journal

    def now(self) -> float:
        return self._clock()

    def save_journal(self) -> bool:
        """Persist what a restart needs; False when that failed (see ``_save_journal``)."""
        return self._save_journal()

    def wrote(self, record: WriteRecord) -> None:
        """Note the last write (sent or, in dry-run, not) for the status."""
        self._last_write = record

    def unreachable(self, exc: SourceUnavailable, *, once: bool) -> None:
        """Warn that a write could not reach the GX (``once``: until it is reachable again)."""
        if once and self._warned_unreachable:
            return
        log.warning("GX unreachable: cannot restore/steer (%s)", exc)
        if once:
            self._warned_unreachable = True

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
            self._setting.forget_dry_run()
            self._override.forget_dry_run()
            self._save_journal()
            if self.dry_run and not was_dry_run:
                # Dry-run stops sending: the GX must not keep a value of ours nobody updates.
                why = "entering dry-run: hand back the user's own value"
                await self._override.release(why, reason=Reason.STAND_ASIDE_DISABLED)
                await self._setting.restore(why, confirm=False)
        await self.evaluate()

    async def run(self) -> int:
        """Steer until ``request_stop`` or a fatal error; restore the baseline; return the code."""
        source_task = asyncio.ensure_future(self._source.run())
        background = [source_task]
        if self._recorder is not None:
            background.append(asyncio.ensure_future(self._keep_recording(self._recorder)))
        steer_task = asyncio.ensure_future(self._steer_then_stop(background))
        tasks = [*background, steer_task]
        try:
            await supervise(tasks)
        finally:
            if self._recorder is not None:
                await self._flush_recording(self._recorder)  # a stop loses no row
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
                decision = await self._evaluate()
                if self._accounting:
                    self._account(decision)
                return decision
        finally:
            self._notify()

    async def restore_baseline(self) -> bool:
        """Release the override and write the baseline back, both confirmed by read-back, and
        mark the journal clean; False when either could not be confirmed."""
        try:
            async with self._lock:
                released = await self._override.release("restore")
                return await self._setting.restore("restore", confirm=True) and released
        finally:
            self._notify()

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
        """One step. What it saw (``snap``), what it decided (``decision``) and where the cap
        goes (``active``, the cap's own state in ``self._setting`` / ``self._override``) are all
        at hand after the steering below: the place for anything that follows each step."""
        now = self._clock()
        snap = self._source.snapshot()
        self._track_connection(snap.connected, now)
        if snap.connected and self._readiness is not None and not self._readiness.ready:
            # Mid full publish: a half-known state (SOC without PV, say) must not steer.
            return None
        if snap.connected:
            snap = await self._observe_setting(snap, now)
        self._observe_override(snap, now)
        baseline = self._setting.baseline
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
            override_in_use=self._override.act.override_in_use,
        )
        self._log_decision(decision)
        self._decision = decision
        if not snap.connected:
            return decision  # nothing can be written; on reconnect this runs again at once
        if not await self._hand_back_other(active):
            return decision  # never two caps in force: not steering until that is confirmed
        if active is Actuator.OVERRIDE:
            await self._override.steer(decision, now)
        elif active is Actuator.SETTING:
            await self._setting.steer(decision, snap, baseline, now)
        return decision

    def _account(self, decision: Optional[Decision]) -> None:
        """Count the step in today's ledger and, when a row is due, in the day's recording.

        Runs after every step, also while the GX is away: the ledger then counts no time and
        the row shows the gap (empty measurements, the reason why).
        """
        try:
            now = self._wall_clock()
            snap = self._source.snapshot()
            current = is_current(snap, decision, connected=bool(self._connected))
            floor = None if decision is None else decision.floor
            self._ledger.observe(now, snap, current=current, floor=floor)
            recorder = self._recorder
            if recorder is not None and recorder.due(now):
                recorder.add(now, snapshot=snap, status=self.status)
        except Exception:
            # Measuring must never stop steering: a bug here ends the measuring only.
            log.exception("Recording and today's figures stopped after an error; steering goes on")
            self._accounting = False

    async def _keep_recording(self, recorder: Recorder) -> None:
        """Flush the recording about once a minute, until cancelled."""
        while self._accounting:
            await asyncio.sleep(RECORD_POLL_S)
            if recorder.flush_due(self._wall_clock()):
                await self._flush_recording(recorder)

    async def _flush_recording(self, recorder: Recorder) -> None:
        """Write the buffered rows in a worker thread: the file I/O (a day's gzip at midnight)
        must not hold up steering. One flush at a time, even across a cancellation."""
        if self._flushing is not None and not self._flushing.done():
            await asyncio.wait({self._flushing})  # a cancelled waiter left it running
        loop = asyncio.get_running_loop()
        self._flushing = loop.run_in_executor(None, recorder.flush, self._wall_clock())
        # Shielded: cancelling the task must not leave the thread running unseen.
        await asyncio.shield(self._flushing)

    async def _observe_setting(self, snap: Snapshot, now: float) -> Snapshot:
        """Learn the baseline, settle an overdue echo, spot changes; return the snapshot (a
        fresh one after a read-back)."""
        if await self._setting.settle():
            snap = self._source.snapshot()
        value = snap.max_discharge_w
        if value is not None and self._setting.baseline is None:
            self._learn_baseline(value, now)
        self._setting.observe(value, now)
        return snap

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

    def _observe_override(self, snap: Snapshot, now: float) -> None:
        """Run the actuator verification on ``snap``; log a change of actuator once."""
        reason = None if self._decision is None else self._decision.reason
        self._override.observe(snap, reason=reason, now=now)
        choice = actuator.choose(
            self._override.act, snap, cfg=self._config.actuator.override, now=now
        )
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
        """Hand back (confirmed) whichever other cap holds a venus-prio value; False when that
        could not be confirmed (then nothing may steer)."""
        if self.dry_run:
            return True  # nothing of ours stands on the GX in dry-run
        for _ in range(2):
            other = actuator.hand_back_first(
                active, setting_held=self._setting.held, override_held=self._override.held
            )
            if other is None:
                return True
            log.info("Switching to the %s: handing back the %s first", active.value, other.value)
            if other is Actuator.OVERRIDE:
                done = await self._override.release(f"switching to the {active.value}")
            else:
                done = await self._setting.restore("restore", confirm=True)
            if not done:
                return False
        return True

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
            self._override.forget()
        self._setting.learn_baseline(
            gx_value, journal=journal, journal_name=str(self._journal_path), now=now
        )
        self._save_journal()

    # -- the journal and the log ---------------------------------------------------------

    def _save_journal(self) -> bool:
        """Persist what a restart needs (baseline, clean flag, override held, mode); False when
        that failed. Called only when one of them changes, never for a mere steering write."""
        if not self._persist:
            return True
        journal = Journal(
            portal_id=self._source.portal_id,
            baseline_w=self._setting.baseline,
            last_written_w=self._setting.last_written,
            clean=not self._setting.held,
            mode=self._mode,
            updated=time.time(),
            override_held=self._override.held,
        )
        previous = self._journal
        if self._setting.baseline is None and previous is not None:
            # The setting is not seen yet (settings away from the GX): what the previous run
            # left there stands until ``_learn_baseline`` reads it. Saving the override's or the
            # mode's change must not lose it (fault campaign seed 8 round 59: a dirty journal
            # overwritten as clean without a baseline, then venus-prio's 750 W on the GX taken
            # for the user's baseline).
            journal = dataclasses.replace(
                journal,
                portal_id=previous.portal_id,
                baseline_w=previous.baseline_w,
                last_written_w=previous.last_written_w,
                clean=previous.clean,
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
