"""The two places a cap is written, each with its own writes and bookkeeping (control.md 6, 8).

How it works: ``Service`` (service.py) is the loop that decides; it delegates every write of the
cap to one of two small classes here, which talk to the ``Source`` and keep what their writes
need between steps:

- ``SettingCap``: the persisted ``/Settings/CGwacs/MaxDischargePower``. Its baseline (the user's
  value: learnt, adopted when somebody else changes it), the flash write budget
  (``writes.plan_write``), the writes in flight until the GX echoes them (read back when the
  echo does not come), the values venus-prio wrote in the last hour (never the user's), the
  journal's clean flag, and ``restore``: the one way to put the user's value back, confirmed by
  read-back (stop, ``restore``, switching to the override) or not (entering dry-run).
- ``OverrideCap``: the hub4 ``/Overrides/MaxDischargePower``. The ``actuator.ActuatorState``
  (verification, someone else's override, ours until our release is confirmed), the journal's
  override-held flag, the RAM write counters, ``steer`` (``actuator.plan_override``: refresh,
  moves) and ``release`` (-1, confirmed by read-back).

The decisions stay pure in ``writes.py`` and ``actuator.py``; the service owns the journal file,
the mode and the lock. The classes reach back to it through ``Shell``: the clock, dry-run, saving
the journal, the last write for the status, the warning that the GX is unreachable.

Writes have no ack (venus-mqtt.md point 8): a setting write is "in flight" until the GX echoes
it; until then the old value on the GX is not mistaken for somebody else's change, nor for proof
that nothing of ours stands there: the restore, and the override's release, write even when the
GX already shows the value they want (``actuator.py`` point 4).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Optional, Protocol, Tuple

from venus_prio import actuator
from venus_prio.config import Config
from venus_prio.errors import SourceUnavailable
from venus_prio.journal import Journal
from venus_prio.model import Actuator, Decision, Reason, Snapshot, Write, same_value
from venus_prio.status import WriteRecord
from venus_prio.venus.source import Source, write_confirmed
from venus_prio.writes import (
    HOUR_S,
    WriteState,
    baseline_to_write,
    could_be_steering,
    plan_write,
    record_write,
)

log = logging.getLogger("venus_prio.service")  # one log for the service and its writes

# How long a write may stay unechoed before the old value on the GX counts as the truth again.
ECHO_TIMEOUT_S = 5.0
ECHO_READ_TIMEOUT_S = 1.0  # then a read-back settles it


class Shell(Protocol):
    """What the caps need from the service around them."""

    @property
    def source(self) -> Source: ...

    @property
    def config(self) -> Config: ...

    @property
    def dry_run(self) -> bool: ...

    @property
    def journal(self) -> Optional[Journal]: ...

    def now(self) -> float: ...

    def save_journal(self) -> bool:
        """Persist what a restart needs; False when that failed (then do not write)."""

    def wrote(self, record: WriteRecord) -> None:
        """Note the last write (sent or, in dry-run, not) for the status."""

    def unreachable(self, exc: SourceUnavailable, *, once: bool) -> None:
        """Warn that a write could not reach the GX (``once``: only until it is reachable)."""


async def _try_write(
    shell: Shell, send: Callable[[float], Awaitable[None]], value_w: float
) -> bool:
    """Send a steering write; False (warned once) when the GX cannot be reached."""
    try:
        await send(value_w)
    except SourceUnavailable as exc:
        shell.unreachable(exc, once=True)
        return False
    return True


@dataclass(frozen=True)
class _InFlight:
    """A setting write the GX has not echoed yet."""

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


class _Cap:
    """What both caps share: ``held``, journaled before a value of ours may stand there."""

    def __init__(self, shell: Shell, *, held: bool) -> None:
        self._shell = shell
        self.held = held  # a value of venus-prio's may stand there (the journal says so)

    def _journal_ours(self) -> bool:
        """Journal that this cap may hold a value of venus-prio's, before it does (the user's
        value must be on disk first); False when the journal cannot be saved: do not write."""
        if self.held:
            return True
        self.held = True
        if self._shell.save_journal():
            return True
        self.held = False
        return False


class SettingCap(_Cap):
    """The persisted setting: baseline, budget, echoes, restore (see the module docstring).

    ``held`` is the journal's clean flag inverted: the setting may hold a value of ours."""

    def __init__(self, shell: Shell) -> None:
        super().__init__(shell, held=False)
        self.wstate = WriteState()  # flash writes: the budget
        self.baseline: Optional[float] = None
        self.last_written: Optional[float] = None
        self._own: Tuple[Tuple[float, float], ...] = ()  # (time, value) of our writes
        self._in_flight: Optional[_InFlight] = None
        self._unconfirmed: Optional[float] = None
        self._would_be: Optional[float] = None  # dry-run: the value we would have left
        self._last_seen: Optional[float] = None
        self._warned_no_value = False

    def forget_dry_run(self) -> None:
        """The mode changed: what dry-run would have written is no longer the reference."""
        self._would_be = None

    # -- what the GX shows ------------------------------------------------------------------

    async def settle(self) -> bool:
        """Read back a write whose echo is overdue; True when it asked the GX."""
        flight = self._in_flight
        if flight is None or self._shell.now() < flight.deadline:
            return False
        shown = await self._shell.source.read_max_discharge(ECHO_READ_TIMEOUT_S)
        self._in_flight = None
        if same_value(shown, flight.value_w):
            return True
        log.warning(
            "Write of %g W not confirmed: the GX shows %s",
            flight.value_w,
            "nothing" if shown is None else f"{shown:g} W",
        )
        self._unconfirmed = flight.value_w
        if shown is not None and any(same_value(shown, old) for old in flight.before):
            # What stands there was there before our write: ours or the baseline, not a change.
            self.last_written = shown
        return True

    def observe(self, value: Optional[float], now: float) -> None:
        """Match echoes of our writes, adopt values somebody else wrote (baseline known)."""
        if value is None:
            return
        if self._in_flight is not None:
            if same_value(value, self._in_flight.value_w):
                self._in_flight = None
            elif not any(same_value(value, old) for old in self._in_flight.before):
                self._in_flight = None  # a third value: somebody else wrote after us
            else:
                return  # the GX still shows a value from before our write
        if self._unconfirmed is not None and same_value(value, self._unconfirmed):
            self.last_written = value  # a late echo is still ours
            self._unconfirmed = None
        changed = not same_value(value, self._last_seen)
        self._last_seen = value
        if same_value(value, self.last_written) or same_value(value, self.baseline):
            return
        if self._written_recently(value, now):
            # An earlier value of ours (a late publish after a reconnect or a transport switch):
            # never the user's. Expect ours; a read-back settles it if it does not come.
            if changed:
                log.info(
                    "MaxDischargePower shows %g W, a value venus-prio wrote itself earlier: "
                    "not the user's; expecting %s",
                    value,
                    "?" if self.last_written is None else f"{self.last_written:g} W",
                )
            if self.last_written is not None:
                self._in_flight = _InFlight(self.last_written, (value,), now + ECHO_TIMEOUT_S)
            return
        if self._shell.config.writes.baseline_w is not None:
            if changed:
                log.info(
                    "MaxDischargePower changed to %g W by someone else; keeping baseline_w %g W "
                    "from the config",
                    value,
                    self.baseline,
                )
            return
        log.info(
            "MaxDischargePower changed to %g W by someone else (GUI or another tool): "
            "adopted as the new baseline (was %g W)",
            value,
            self.baseline,
        )
        self.baseline = value
        # What the GX holds now is the user's, not venus-prio's last write: the user may come
        # back to that earlier value, and the journal must not keep it beside theirs.
        self.last_written = value
        self._shell.save_journal()

    def learn_baseline(
        self, gx_value: float, *, journal: Optional[Journal], journal_name: str, now: float
    ) -> None:
        """Learn the baseline from the config, this GX's ``journal`` (``journal_name``: its
        path, for the log) or the value on the GX."""
        config = self._shell.config
        if config.writes.baseline_w is not None:
            baseline, origin = config.writes.baseline_w, "writes.baseline_w in the config"
        elif journal is not None and journal.baseline_w is not None:
            baseline, origin = journal.baseline_w, f"the journal {journal_name}"
        else:
            baseline, origin = gx_value, "the value found on the GX"
        if self._set_while_down(gx_value, journal):
            assert journal is not None
            if config.writes.baseline_w is None:
                baseline, origin = gx_value, "the user's change while venus-prio was down"
            # Nothing of venus-prio's stands there: the journal is as good as clean, and what
            # the GX holds is the user's (as after an adoption).
            journal = dataclasses.replace(journal, clean=True, last_written_w=gx_value)
        self.baseline = baseline
        if journal is not None and not journal.clean:
            # The previous run did not restore the setting: the value on the GX is venus-prio's.
            log.warning(
                "The previous run did not restore the baseline: %g W on the GX is venus-prio's "
                "own; the baseline stays %g W",
                gx_value,
                baseline,
            )
            self.last_written = gx_value
            self.held = True
            self._note_own(gx_value, now)
            if journal.last_written_w is not None:
                self._note_own(journal.last_written_w, now)
        elif journal is not None:
            self.last_written = journal.last_written_w
        log.info("Baseline MaxDischargePower %g W (from %s)", baseline, origin)

    def _set_while_down(self, value: float, journal: Optional[Journal]) -> bool:
        """Return (warned) whether ``value`` on the GX is the user's, set while venus-prio was
        down: the previous run did not restore the setting (``journal`` dirty), but this is
        neither its last value nor one venus-prio ever writes."""
        if (
            journal is None
            or journal.clean
            or same_value(value, journal.last_written_w)
            or could_be_steering(value, self._shell.config.control)
        ):
            return False
        log.warning(
            "The previous run did not restore the baseline, but %g W on the GX is not a "
            "value venus-prio writes: the user changed it meanwhile",
            value,
        )
        return True

    def _note_own(self, value: float, now: float) -> None:
        """Remember a value venus-prio wrote (for an hour: never the user's), unless it is the
        baseline: handing back writes the user's own value, which stays theirs."""
        if same_value(value, self.baseline):
            return
        self._own = (*((t, v) for t, v in self._own if now - t < HOUR_S), (now, value))

    def _written_recently(self, value: float, now: float) -> bool:
        return any(now - t < HOUR_S and same_value(value, v) for t, v in self._own)

    def planning_value(self, snap: Snapshot) -> Optional[float]:
        """Return the value the write policy compares against: what the GX holds (or will)."""
        if self._shell.dry_run and self._would_be is not None:
            return self._would_be
        if self._in_flight is not None:
            return self._in_flight.value_w
        return snap.max_discharge_w

    # -- steering ---------------------------------------------------------------------------

    async def steer(self, decision: Decision, snap: Snapshot, baseline: float, now: float) -> None:
        """Steer through the setting: ``writes.plan_write`` rations the flash writes."""
        config = self._shell.config
        if snap.max_discharge_w is None:
            if not self._warned_no_value:
                log.warning(
                    "MaxDischargePower is invalid or absent on the GX: not writing until it is back"
                )
                self._warned_no_value = True
            return
        self._warned_no_value = False
        current = self.planning_value(snap)
        write = plan_write(
            target_w=decision.target_w,
            target_class=decision.target_class,
            current_w=current,
            baseline_w=baseline,
            hold_w=config.control.hold_w,
            max_w=config.control.max_inverter_power_w,
            setting_min=snap.max_discharge_min,
            setting_max=snap.max_discharge_max,
            state=self.wstate,
            cfg=config.writes,
            now=now,
        )
        if write is not None:
            await self._send(
                write, decision.reason, previous_w=current, gx_w=snap.max_discharge_w, now=now
            )

    async def _send(
        self,
        write: Write,
        reason: Reason,
        *,
        previous_w: Optional[float],
        gx_w: Optional[float],
        now: float,
    ) -> None:
        shell = self._shell
        if shell.dry_run:
            log.info("Dry-run: would write %g W (%s; %s)", write.value_w, write.why, reason.value)
            self._would_be = write.value_w
            self.wstate = record_write(self.wstate, write, previous_w=previous_w, now=now)
            shell.wrote(
                WriteRecord(write.value_w, write.why, reason, write.forced, sent=False, at=now)
            )
            return
        steering = not same_value(write.value_w, self.baseline)
        if steering and not self._journal_ours():
            return
        if not await _try_write(shell, shell.source.write_max_discharge, write.value_w):
            return
        self._sent(write, previous_w=previous_w, gx_w=gx_w, now=now)
        self._unconfirmed = None
        shell.wrote(WriteRecord(write.value_w, write.why, reason, write.forced, sent=True, at=now))
        log.info("Wrote MaxDischargePower %g W (%s; %s)", write.value_w, write.why, reason.value)

    def _sent(
        self, write: Write, *, previous_w: Optional[float], gx_w: Optional[float], now: float
    ) -> None:
        """Count a write that went out; expect its echo."""
        self.wstate = record_write(self.wstate, write, previous_w=previous_w, now=now)
        self._in_flight = _in_flight(self._in_flight, write.value_w, gx_w=gx_w, now=now)
        self.last_written = write.value_w
        self._note_own(write.value_w, now)

    # -- handing back -----------------------------------------------------------------------

    async def restore(self, why: str, *, confirm: bool) -> bool:
        """Put the user's value (the baseline) back on the setting; False when that could not
        be confirmed.

        ``confirm``: by read-back, then mark the journal clean (stop, ``restore``, switching to
        the override; a dirty journal from a previous run is restored even in dry-run).
        Otherwise (entering dry-run) one write now when the GX holds another value, its echo
        awaited like a steering write's.
        """
        if confirm:
            return await self._restore_confirmed(why)
        if not self.held:
            # Nothing of ours on the setting (venus-prio steered the override, or handed back
            # already): the GX holds the user's value, which our view may not show yet (fault
            # campaign seed 8 round 7: the user's 2270 W, set while settings was away,
            # overwritten with the baseline on entering dry-run).
            return True
        snap = self._shell.source.snapshot()
        baseline = self.baseline
        if (
            baseline is None
            or not snap.connected
            or same_value(self.planning_value(snap), baseline)
        ):
            return True
        value = baseline_to_write(baseline, snap)
        try:
            await self._shell.source.write_max_discharge(value)
        except SourceUnavailable as exc:
            self._shell.unreachable(exc, once=False)
            return False
        now = self._shell.now()
        write = Write(value_w=value, forced=True, why=why)
        self._sent(write, previous_w=self.last_written, gx_w=snap.max_discharge_w, now=now)
        self._shell.wrote(
            WriteRecord(value, why, Reason.STAND_ASIDE_DISABLED, True, sent=True, at=now)
        )
        log.info("Wrote MaxDischargePower %g W (%s)", value, why)
        return True

    async def _restore_confirmed(self, why: str) -> bool:
        shell = self._shell
        journal = shell.journal
        learnt = self.baseline is not None
        config_baseline = shell.config.writes.baseline_w
        baseline = self.baseline
        if (
            baseline is None
            and journal is not None
            and not journal.clean
            and journal.portal_id in (None, shell.source.portal_id)
        ):
            # Never got as far as learning it this run, but a previous one left its value.
            baseline = self.baseline = journal.baseline_w
        if baseline is None:
            log.info("No baseline known: venus-prio never took control, nothing to restore")
            return True
        if shell.dry_run and not self.held and (journal is None or journal.clean):
            # Nothing of venus-prio's on the setting. A dirty journal is restored even in
            # dry-run: dry-run stops steering, it must not leave a value of ours behind.
            log.info("Dry-run: would restore the baseline %g W; nothing written", baseline)
            return True
        value = baseline_to_write(baseline, shell.source.snapshot())

        def users_change(shown: float) -> bool:
            # The look before each write: a change the user made while the transport was away
            # (a broker restart, a switch to D-Bus) is theirs and stays (fault campaign seed 1
            # round 61). With a baseline learnt in this run every value of ours is known. With
            # the baseline of a dirty journal, only a value venus-prio never writes is known to
            # be the user's, set while it was down (fault campaign seed 7 round 80: the user's
            # 2781 W, set between a crash and a stop before the GX was seen, overwritten).
            if not learnt:
                if config_baseline is None and self._set_while_down(shown, journal):
                    self.baseline = self.last_written = shown
                    return True
                return False
            self.observe(shown, shell.now())
            # Still in flight: the GX shows a value from before our last write, which may land
            # after this look (then it, not the user's value, would stay after the stop).
            return self._in_flight is None and same_value(shown, self.baseline)

        wrote = await write_confirmed(
            shell.source, value, stands=users_change, in_flight=lambda: self._in_flight is not None
        )
        if self.baseline is not None and not same_value(self.baseline, baseline):
            value = self.baseline  # adopted on the way: the GX holds the user's new value
        if wrote is None:
            log.error(
                "RESTORE NOT CONFIRMED: could not confirm MaxDischargePower = %g W on the GX "
                "(it may still hold %s W); run `venus-prio restore` once it is reachable",
                value,
                "an unknown" if self.last_written is None else f"{self.last_written:g}",
            )
            return False
        now = shell.now()
        if wrote:
            self.wstate = record_write(
                self.wstate,
                Write(value_w=value, forced=True, why=why),
                previous_w=self.last_written,
                now=now,
            )
            self._note_own(value, now)
        self.last_written = value
        self._in_flight = None
        if self.held or journal is None or not journal.clean:
            self.held = False
            shell.save_journal()
        log.info("Restored the baseline MaxDischargePower %g W (confirmed by read-back)", value)
        return True


class OverrideCap(_Cap):
    """The hub4 override: verification, refresh, release (see the module docstring)."""

    def __init__(self, shell: Shell, *, held: bool) -> None:
        """``held``: the journal says a previous run (which did not hand back) may hold it."""
        super().__init__(shell, held=held)
        self.act = actuator.start(shell.config.actuator, override_held=held)
        self.wstate = WriteState()  # RAM writes: counted apart from the setting's
        self._would_be: Optional[float] = None  # dry-run: the value we would have left
        self._would_be_t: Optional[float] = None

    def forget(self) -> None:
        """The journal was another GX's: nothing of ours can stand on this one."""
        self.held = False
        self.act = actuator.start(self._shell.config.actuator)

    def forget_dry_run(self) -> None:
        """The mode changed: what dry-run would have written is no longer the reference."""
        self._would_be = self._would_be_t = None

    def observe(self, snap: Snapshot, *, reason: Optional[Reason], now: float) -> None:
        """Run the actuator verification on ``snap``; journal whether ours may stand there."""
        self.act = actuator.observe(
            self.act, snap, reason=reason, config=self._shell.config, now=now
        )
        if self.held is not self.act.may_hold:
            # Our release confirmed, another tool's value over ours, or hub4 gone: nothing of
            # ours stands there. Or a value of ours showing while we held none (a write of ours
            # that landed late): the stop must release it.
            self.held = self.act.may_hold
            self._shell.save_journal()

    async def steer(self, decision: Decision, now: float) -> None:
        """Steer through the override: ``actuator.plan_override`` every evaluation."""
        shell = self._shell
        cfg = shell.config.actuator.override
        dry_run = shell.dry_run
        write = actuator.plan_override(
            target_w=decision.target_w,
            target_class=decision.target_class,
            current_w=self._would_be if dry_run else self.act.held_w,
            last_write_t=self._would_be_t if dry_run else self.act.last_write_t,
            cfg=cfg,
            max_w=shell.config.control.max_inverter_power_w,
            now=now,
            # Not over another tool's episode: we never write while theirs owns the override.
            in_doubt=self.act.in_doubt and not dry_run and not self.act.override_in_use,
        )
        if write is None:
            return
        if dry_run:
            if write.why != "refresh":
                log.info("Dry-run: would write the override %g W (%s)", write.value_w, write.why)
            self._would_be, self._would_be_t = write.value_w, now
            self._record(write, decision.reason, sent=False, now=now)
            return
        if write.value_w < 0:
            await self.release(write.why, reason=decision.reason)
            return
        if not self._journal_ours():
            return
        if not await _try_write(shell, shell.source.write_override, write.value_w):
            return
        self._record(write, decision.reason, sent=True, now=now)
        level = logging.DEBUG if write.why == "refresh" else logging.INFO
        log.log(
            level,
            "Wrote the override %g W (%s; %s)",
            write.value_w,
            write.why,
            decision.reason.value,
        )

    async def release(self, why: str, *, reason: Reason = Reason.NORMAL) -> bool:
        """Write -1 to the override and confirm it by read-back, if venus-prio may hold it."""
        shell = self._shell
        if not self.held:  # in dry-run too: a held override of ours is released
            return True
        if shell.source.snapshot().override_present is False:
            log.info("The GX shows no hub4 override any more: nothing to release")
        else:
            # A write of ours may still be on its way: a -1 shown now proves nothing.
            wrote = await write_confirmed(
                shell.source, actuator.RELEASE_W, override=True, in_flight=lambda: True
            )
            if wrote is None:
                log.error(
                    "RELEASE NOT CONFIRMED: the hub4 override may still hold venus-prio's %s W "
                    "(it expires by itself within minutes)",
                    "?" if self.act.held_w is None else f"{self.act.held_w:g}",
                )
                return False
            now = shell.now()
            if wrote:
                release = actuator.OverrideWrite(actuator.RELEASE_W, why)
                self._record(release, reason, sent=True, now=now)
            else:
                self.act = actuator.wrote(
                    self.act, actuator.RELEASE_W, cfg=shell.config.actuator.override, now=now
                )
            log.info("Released the override (-1 confirmed by read-back; %s)", why)
        self.held = False
        shell.save_journal()
        return True

    def _record(
        self, write: actuator.OverrideWrite, reason: Reason, *, sent: bool, now: float
    ) -> None:
        previous = self._would_be if not sent else self.act.held_w
        if sent:
            self.act = actuator.wrote(
                self.act, write.value_w, cfg=self._shell.config.actuator.override, now=now
            )
        self.wstate = record_write(
            self.wstate,
            Write(value_w=write.value_w, forced=write.value_w < 0, why=write.why),
            previous_w=previous,
            now=now,
        )
        self._shell.wrote(
            WriteRecord(
                write.value_w,
                write.why,
                reason,
                write.value_w < 0,
                sent=sent,
                at=now,
                actuator=Actuator.OVERRIDE,
            )
        )
