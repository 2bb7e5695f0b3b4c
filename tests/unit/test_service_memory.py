"""The service shell, driven step by step against ``MemorySource`` with a fake clock."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Callable, Coroutine, List, NamedTuple, Optional, Tuple, TypeVar

import pytest

from venus_prio.config import ActuatorConfig, Config, ControlConfig, OverrideConfig, WritesConfig
from venus_prio.journal import Journal, journal_path, load_journal, save_journal
from venus_prio.model import Decision, Reason
from venus_prio.service import Service
from venus_prio.venus import paths
from venus_prio.venus.source import MemorySource

T = TypeVar("T")
BASELINE = 2500.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class LaggingSource(MemorySource):
    """A GX whose echo of a write arrives only when the test delivers it (like MQTT's N/).

    ``lose_echoes``: writes land at once but their echo never comes; ``drop_writes``: writes
    are silently dropped. A read-back updates the store, as the real transports do.
    """

    def __init__(self, *, setting_w: float) -> None:
        super().__init__(setting_w=setting_w)
        self.pending: List[float] = []
        self.lose_echoes = False
        self.drop_writes = False

    async def write_max_discharge(self, value_w: float) -> None:
        self.writes.append(value_w)
        if self.lose_echoes:
            self.setting_w = value_w
        elif not self.drop_writes:
            self.pending.append(value_w)

    async def read_max_discharge(self, timeout: float) -> Optional[float]:
        self.store.set(paths.MAX_DISCHARGE_POWER, self.setting_w)
        return self.setting_w

    def deliver(self, count: Optional[int] = None) -> None:
        """Let the GX apply and echo the oldest ``count`` pending writes (all by default)."""
        count = len(self.pending) if count is None else count
        for value in self.pending[:count]:
            self.setting_w = value
            self.store.set(paths.MAX_DISCHARGE_POWER, value)
        del self.pending[:count]


class JournalWitness(MemorySource):
    """A GX that notes what the journal said at the moment of each write."""

    def __init__(self, *, setting_w: float, journal: Path) -> None:
        super().__init__(setting_w=setting_w)
        self.journal = journal
        self.seen: List[Optional[Journal]] = []

    async def write_max_discharge(self, value_w: float) -> None:
        self.seen.append(load_journal(self.journal))
        await super().write_max_discharge(value_w)


def make_config(
    tmp_path: Path, *, tick_s: float = 1.0, kind: str = "setting", **writes: Any
) -> Config:
    """Return a config with control.md's numbers (not the tuned defaults), so the figures below
    read as in the spec: share = 0.8 * PV - 20, deadband 100 W, increases once a minute.

    ``kind``: the actuator; the setting by default (most tests here are about the setting's
    write policy and journal), "auto" for the override's tests, with section 8's numbers
    (PV factor 1.0, deadband 20 W) rather than the tuned defaults."""
    return Config(
        actuator=ActuatorConfig(
            kind=kind, override=OverrideConfig(pv_factor=1.0, pv_offset_w=0.0, deadband_w=20.0)
        ),
        control=ControlConfig(
            max_inverter_power_w=3000.0,
            tick_s=tick_s,
            pv_factor=0.8,
            pv_offset_w=20.0,
            half_power_fraction=0.5,
        ),
        writes=WritesConfig(**{"deadband_w": 100.0, "min_increase_interval_s": 60.0, **writes}),
        state_dir=str(tmp_path),
    )


def gx_state(source: MemorySource, clock: Clock, *, soc: float = 12.0, pv: float = 1000.0) -> None:
    """Fill the source like a GX near the floor (MinimumSocLimit 10 %) with DC PV."""
    store = source.store
    store.set(paths.SOC, soc)
    store.set(paths.MIN_SOC_SETTING, 10.0)
    store.set(paths.PV_DC, pv)
    store.set(paths.AC_INPUT_SOURCE, 1.0)
    store.set(paths.HUB4_MODE, 1.0)
    store.set(paths.BATTERY_LIFE_STATE, 10.0)
    store.set(paths.DYNAMIC_ESS_MODE, 0.0)
    store.set_connected(True)
    store.mark_alive(clock())


S = TypeVar("S", bound=MemorySource)


def started(
    tmp_path: Path, source: S, *, soc: float = 12.0, pv: float = 1000.0
) -> Tuple[Clock, S, Service]:
    """Return a clock, ``source`` filled by ``gx_state`` and a Service over both (spec config)."""
    clock = Clock()
    gx_state(source, clock, soc=soc, pv=pv)
    return clock, source, Service(config=make_config(tmp_path), source=source, clock=clock)


async def steering(tmp_path: Path, source: S) -> Tuple[Clock, S, Service]:
    """Return what ``started`` returns after the first evaluation: 1000 W PV near the floor,
    so the service steers and has written 750 W."""
    clock, source, service = started(tmp_path, source)
    await service.evaluate()
    return clock, source, service


def journal_of(tmp_path: Path) -> Journal:
    journal = load_journal(journal_path(tmp_path))
    assert journal is not None
    return journal


def previous_run(
    tmp_path: Path,
    *,
    last_written_w: float,
    clean: bool = False,
    baseline_w: float = BASELINE,
    portal_id: Optional[str] = None,
) -> None:
    """Leave the journal a previous run ended with (by default: dirty, after a crash)."""
    journal = Journal(
        portal_id=portal_id, baseline_w=baseline_w, last_written_w=last_written_w, clean=clean
    )
    save_journal(journal_path(tmp_path), journal)


async def next_tick(
    clock: Clock,
    source: MemorySource,
    service: Service,
    *,
    after: float = 1.0,
    pv: Optional[float] = None,
) -> Optional[Decision]:
    """Move ``after`` seconds on, let the GX show DC PV ``pv`` (if given) and prove it alive,
    then evaluate."""
    clock.advance(after)
    if pv is not None:
        source.store.set(paths.PV_DC, pv)
    source.store.mark_alive(clock())
    return await service.evaluate()


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(scenario())


def test_first_decision_writes_the_pv_share_after_journaling_the_baseline(tmp_path: Path) -> None:
    async def scenario() -> None:
        _clock, source, service = started(
            tmp_path,
            JournalWitness(setting_w=BASELINE, journal=journal_path(tmp_path)),
            soc=12.0,
            pv=1000.0,
        )
        decision = await service.evaluate()
        assert decision is not None
        assert decision.reason is Reason.PV_PRIORITY
        # 0.8 * 1000 W - 20 W = 780 W, down to the 50 W step.
        assert source.writes == [750.0]
        witnessed = source.seen[0]
        assert witnessed is not None
        assert witnessed.baseline_w == BASELINE and not witnessed.clean
        # Saved once, before the write (dirty); the write itself does not rewrite it.
        assert journal_of(tmp_path) == witnessed
        status = service.status
        assert status.baseline_w == BASELINE
        assert status.last_write is not None and status.last_write.sent
        assert status.last_write.value_w == 750.0
        assert status.counters.total == 1 and status.counters.hour == 1

    run(scenario)


def test_pv_drop_writes_a_lower_value_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = await steering(tmp_path, MemorySource(setting_w=BASELINE))
        journaled = journal_of(tmp_path)
        decision = await next_tick(clock, source, service, after=2.0, pv=400.0)
        assert decision is not None and decision.pv_f == 400.0
        # 0.8 * 400 - 20 = 300 W; a decrease goes out at once.
        assert source.writes == [750.0, 300.0]
        # A steering write changes nothing a restart needs: the journal is not rewritten.
        assert journal_of(tmp_path) == journaled

    run(scenario)


def test_small_pv_change_within_the_deadband_writes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = await steering(tmp_path, MemorySource(setting_w=BASELINE))
        for pv in (950.0, 900.0, 960.0):
            await next_tick(clock, source, service, pv=pv)
        assert source.writes == [750.0]

    run(scenario)


def test_below_floor_holds(tmp_path: Path) -> None:
    async def scenario() -> None:
        _clock, source, service = started(
            tmp_path, MemorySource(setting_w=BASELINE), soc=9.0, pv=1000.0
        )
        decision = await service.evaluate()
        assert decision is not None and decision.reason is Reason.BELOW_FLOOR
        assert source.writes == [0.0]
        assert source.setting_w == 0.0

    run(scenario)


def test_stale_inputs_hand_back_the_baseline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        clock, source, service = await steering(tmp_path, MemorySource(setting_w=BASELINE))
        assert source.writes == [750.0]
        # The SOC does not change and nothing proves the GX alive for 31 s.
        for _ in range(31):
            clock.advance(1.0)
            await service.evaluate()
        status = service.status
        assert status.decision is not None
        assert status.decision.reason is Reason.STAND_ASIDE_STALE
        assert source.writes == [750.0, BASELINE]
        # Liveness comes back: steering resumes.
        source.store.mark_alive(clock())
        decision = await service.evaluate()
        assert decision is not None and decision.reason is Reason.PV_PRIORITY
        assert source.writes == [750.0, BASELINE, 750.0]

    with caplog.at_level(logging.INFO, logger="venus_prio.service"):
        run(scenario)
    stale_lines = [r for r in caplog.records if r.getMessage().startswith("standing aside")]
    assert len(stale_lines) == 1  # a state change is logged once, not every tick
    assert stale_lines[0].levelno == logging.WARNING


def test_unchanged_soc_with_liveness_is_not_stale(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = started(tmp_path, MemorySource(setting_w=BASELINE), pv=1000.0)
        for _ in range(300):
            clock.advance(1.0)
            if int(clock()) % 3 == 0:
                source.store.mark_alive(clock())  # a heartbeat every 3 s, no value changes
            decision = await service.evaluate()
            assert decision is not None and decision.reason is Reason.PV_PRIORITY
        assert source.writes == [750.0]

    run(scenario)


def test_external_change_is_adopted_as_the_new_baseline(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        clock, source, service = await steering(tmp_path, MemorySource(setting_w=BASELINE))
        # The user sets 1800 W in the GUI.
        clock.advance(1.0)
        source.setting_w = 1800.0
        source.store.set(paths.MAX_DISCHARGE_POWER, 1800.0)
        source.store.mark_alive(clock())
        await service.evaluate()
        assert service.status.baseline_w == 1800.0
        assert journal_of(tmp_path).baseline_w == 1800.0
        # Steering goes on: the PV share is written again over the user's value.
        assert source.writes == [750.0, 750.0]
        # Standing aside now hands back the adopted value.
        await service.set_mode("off")
        assert source.writes == [750.0, 750.0, 1800.0]

    with caplog.at_level(logging.INFO, logger="venus_prio.service"):
        run(scenario)
    adopted = [r for r in caplog.records if "adopted as the new baseline" in r.getMessage()]
    assert len(adopted) == 1


def test_external_change_does_not_override_a_configured_baseline(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        source = MemorySource(setting_w=BASELINE)
        gx_state(source, clock, pv=1000.0)
        config = make_config(tmp_path, baseline_w=3000.0)
        service = Service(config=config, source=source, clock=clock)
        await service.evaluate()
        assert service.status.baseline_w == 3000.0
        source.store.set(paths.MAX_DISCHARGE_POWER, 1800.0)
        await service.evaluate()
        assert service.status.baseline_w == 3000.0
        assert journal_of(tmp_path).baseline_w == 3000.0

    run(scenario)


def test_old_value_before_the_echo_is_not_an_external_change(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = await steering(tmp_path, LaggingSource(setting_w=BASELINE))
        assert source.writes == [750.0]
        # The GX still shows the old value: no second write, no adoption.
        await next_tick(clock, source, service)
        assert source.writes == [750.0]
        source.deliver()
        await next_tick(clock, source, service, pv=400.0)
        assert source.writes == [750.0, 300.0]
        # Our own 300 W arrives while the GX still shows 750 W: neither is somebody else's.
        clock.advance(1.0)
        await service.evaluate()
        source.deliver()
        await service.evaluate()
        assert service.status.baseline_w == BASELINE
        assert source.writes == [750.0, 300.0]

    run(scenario)


def test_dry_run_computes_and_counts_but_writes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        source = MemorySource(setting_w=BASELINE)
        gx_state(source, clock, pv=1000.0)
        service = Service(config=make_config(tmp_path), source=source, clock=clock, dry_run=True)
        await service.evaluate()
        status = service.status
        assert status.dry_run
        assert status.last_write is not None
        assert (status.last_write.value_w, status.last_write.sent) == (750.0, False)
        # The policy compares with the would-be 750 W, not the 2500 W still on the GX:
        # 900 W of PV gives 700 W, within the deadband of 750 W.
        await next_tick(clock, source, service, pv=900.0)
        assert service.status.last_write is not None
        assert service.status.last_write.value_w == 750.0
        await next_tick(clock, source, service, pv=400.0)
        assert service.status.last_write is not None
        assert service.status.last_write.value_w == 300.0
        assert service.status.counters.total == 2
        assert source.writes == []
        assert source.setting_w == BASELINE
        assert await service.restore_baseline()
        assert source.writes == []

    run(scenario)


def test_dry_run_from_the_config_writes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        source = MemorySource(setting_w=BASELINE)
        gx_state(source, clock, soc=9.0)
        service = Service(config=make_config(tmp_path, dry_run=True), source=source, clock=clock)
        await service.evaluate()
        assert source.writes == []
        assert service.status.last_write is not None
        assert service.status.last_write.value_w == 0.0

    run(scenario)


def test_shutdown_restores_the_baseline_and_marks_the_journal_clean(tmp_path: Path) -> None:
    async def scenario() -> int:
        clock = Clock()
        source = MemorySource(setting_w=BASELINE)
        gx_state(source, clock, pv=1000.0)
        service = Service(config=make_config(tmp_path, tick_s=0.05), source=source, clock=clock)
        task = asyncio.ensure_future(service.run())
        for _ in range(200):
            if source.writes:
                break
            await asyncio.sleep(0.01)
        assert source.writes == [750.0]
        assert not journal_of(tmp_path).clean
        service.request_stop()
        return await asyncio.wait_for(task, 5.0)

    assert run(scenario) == 0
    journal = journal_of(tmp_path)
    assert (journal.baseline_w, journal.last_written_w, journal.clean) == (BASELINE, BASELINE, True)


def test_shutdown_without_the_gx_reports_failure_and_stays_dirty(tmp_path: Path) -> None:
    async def scenario() -> bool:
        _clock, source, service = await steering(tmp_path, MemorySource(setting_w=BASELINE))
        source.reachable = False
        return await service.restore_baseline()

    assert run(scenario) is False
    journal = journal_of(tmp_path)
    assert (journal.baseline_w, journal.clean) == (BASELINE, False)


def test_crash_keeps_the_journaled_baseline(tmp_path: Path) -> None:
    # The previous run crashed while 750 W (its own value) stood on the GX.
    previous_run(tmp_path, last_written_w=300.0)

    async def scenario() -> None:
        clock = Clock()
        source = MemorySource(setting_w=750.0)
        gx_state(source, clock, soc=25.0, pv=1000.0)  # recovered: NORMAL hands back
        service = Service(config=make_config(tmp_path), source=source, clock=clock)
        decision = await service.evaluate()
        assert decision is not None and decision.reason is Reason.NORMAL
        assert service.status.baseline_w == BASELINE
        assert source.writes == [BASELINE]
        assert journal_of(tmp_path).baseline_w == BASELINE
        assert await service.restore_baseline()

    run(scenario)
    assert journal_of(tmp_path).clean


def test_clean_journal_with_another_value_on_the_gx_adopts_it(tmp_path: Path) -> None:
    # Venus-prio was stopped cleanly; meanwhile the user set 2000 W in the GUI.
    previous_run(tmp_path, last_written_w=BASELINE, clean=True)

    async def scenario() -> None:
        _clock, source, service = started(tmp_path, MemorySource(setting_w=2000.0), soc=25.0)
        await service.evaluate()  # learns the journal's baseline
        await service.evaluate()  # sees a value it did not write
        assert service.status.baseline_w == 2000.0
        assert source.writes == []

    run(scenario)


def test_journal_of_another_gx_is_ignored(tmp_path: Path) -> None:
    previous_run(tmp_path, last_written_w=0.0, baseline_w=1234.0, portal_id="otherportal")

    async def scenario() -> None:
        clock = Clock()
        source = MemorySource(setting_w=BASELINE)
        source.portal_id = "c0619ab00001"
        gx_state(source, clock, soc=25.0)
        service = Service(config=make_config(tmp_path), source=source, clock=clock)
        await service.evaluate()
        assert service.status.baseline_w == BASELINE
        assert journal_of(tmp_path).portal_id == "c0619ab00001"

    run(scenario)


def test_disconnection_writes_nothing_and_reconnect_writes_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        clock, source, service = await steering(tmp_path, MemorySource(setting_w=BASELINE))
        source.store.set_connected(False)
        source.reachable = False
        for pv in (400.0, 390.0):
            clock.advance(1.0)
            source.store.set(paths.PV_DC, pv)
            decision = await service.evaluate()
            assert decision is not None
            assert decision.reason is Reason.STAND_ASIDE_DISCONNECTED
        assert source.writes == [750.0]
        source.reachable = True
        source.store.set_connected(True)
        source.store.mark_alive(clock())
        decision = await service.evaluate()
        assert decision is not None and decision.reason is Reason.PV_PRIORITY
        # 0.8 * 390 - 20 = 292 -> 250 W
        assert source.writes == [750.0, 250.0]

    with caplog.at_level(logging.INFO, logger="venus_prio.service"):
        run(scenario)
    unreachable = [r for r in caplog.records if "GX unreachable" in r.getMessage()]
    assert len(unreachable) == 1
    assert unreachable[0].levelno == logging.WARNING


def test_mode_off_stands_aside_and_is_persisted(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = await steering(tmp_path, MemorySource(setting_w=BASELINE))
        await service.set_mode("off")
        status = service.status
        assert not status.enabled
        assert status.decision is not None
        assert status.decision.reason is Reason.STAND_ASIDE_DISABLED
        assert source.writes == [750.0, BASELINE]
        assert journal_of(tmp_path).mode == "off"
        # A restart keeps the mode.
        again = Service(config=make_config(tmp_path), source=source, clock=clock)
        assert again.status.mode == "off" and not again.status.enabled
        with pytest.raises(ValueError, match="mode"):
            await service.set_mode("turbo")

    run(scenario)


def test_mode_dry_run_hands_back_then_sends_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = await steering(tmp_path, MemorySource(setting_w=BASELINE))
        await service.set_mode("dry-run")
        assert service.status.dry_run
        assert source.writes == [750.0, BASELINE]
        await next_tick(clock, source, service, pv=400.0)
        assert source.writes == [750.0, BASELINE]
        assert service.status.last_write is not None
        assert not service.status.last_write.sent
        await service.set_mode("auto")
        assert source.writes == [750.0, BASELINE, 300.0]

    run(scenario)


def test_nothing_happens_before_the_gx_shows_its_value(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        source = MemorySource(setting_w=BASELINE)
        gx_state(source, clock)
        source.store.set(paths.MAX_DISCHARGE_POWER, None)
        service = Service(config=make_config(tmp_path), source=source, clock=clock)
        assert await service.evaluate() is None
        assert source.writes == []
        assert load_journal(journal_path(tmp_path)) is None

    run(scenario)


def test_echoes_of_two_quick_writes_arrive_in_turn(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = await steering(tmp_path, LaggingSource(setting_w=BASELINE))
        await next_tick(clock, source, service, pv=400.0)
        assert source.writes == [750.0, 300.0]
        source.deliver(1)  # the GX shows 750 W (ours, superseded), then 300 W
        await service.evaluate()
        source.deliver(1)
        await service.evaluate()
        assert service.status.baseline_w == BASELINE
        assert source.writes == [750.0, 300.0]

    run(scenario)


class Unechoed(NamedTuple):
    """A write whose echo never comes: the fault, the seconds run, what the test then sees."""

    fault: str  # the LaggingSource flag
    seconds: int
    writes: List[float]
    shown: float  # what the GX holds at the end
    warnings: int  # "not confirmed" warnings


@pytest.mark.parametrize(
    "case",
    [
        # The write lands but its echo never comes: a read-back settles it, nothing to warn.
        Unechoed("lose_echoes", 8, [750.0], 750.0, 0),
        # The write is dropped: after the echo timeout the read-back shows 2500 W, so the write
        # is sent once more, with one warning.
        Unechoed("drop_writes", 6, [750.0, 750.0], BASELINE, 1),
    ],
)
def test_an_unechoed_write_is_settled_by_a_read_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: Unechoed
) -> None:
    async def scenario() -> None:
        clock, source, service = started(tmp_path, LaggingSource(setting_w=BASELINE), pv=1000.0)
        setattr(source, case.fault, True)
        await service.evaluate()
        for _ in range(case.seconds):
            await next_tick(clock, source, service)
        assert source.writes == case.writes
        assert source.snapshot().max_discharge_w == case.shown
        assert service.status.baseline_w == BASELINE

    with caplog.at_level(logging.WARNING, logger="venus_prio.service"):
        run(scenario)
    assert len([r for r in caplog.records if "not confirmed" in r.getMessage()]) == case.warnings


def test_shutdown_before_the_gx_was_seen_still_restores_a_dirty_journal(tmp_path: Path) -> None:
    previous_run(tmp_path, last_written_w=750.0)

    async def scenario() -> bool:
        clock = Clock()
        source = MemorySource(setting_w=750.0)
        service = Service(config=make_config(tmp_path), source=source, clock=clock)
        return await service.restore_baseline()

    assert run(scenario) is True
    journal = journal_of(tmp_path)
    assert (journal.baseline_w, journal.last_written_w, journal.clean) == (BASELINE, BASELINE, True)


@pytest.mark.parametrize(
    ("on_gx", "kept"),
    [
        (2781.0, True),  # never one of venus-prio's values: the user's, set while it was down
        (750.0, False),  # the previous run's own value: handed back
        (800.0, False),  # a value venus-prio could have written (the journal lags): handed back
    ],
)
def test_shutdown_before_the_gx_was_seen_keeps_a_users_change_made_while_down(
    tmp_path: Path, on_gx: float, kept: bool
) -> None:
    # Fault campaign seed 7 round 80: a run crashed with 750 W on the GX, the user set 2781 W,
    # and the next run was stopped before it saw the GX: its restore wrote 2500 W over theirs.
    previous_run(tmp_path, last_written_w=750.0)

    async def scenario() -> MemorySource:
        source = MemorySource(setting_w=on_gx)
        service = Service(config=make_config(tmp_path), source=source, clock=Clock())
        assert await service.restore_baseline()
        return source

    source = run(scenario)
    users = on_gx if kept else BASELINE
    assert source.setting_w == users
    assert source.writes == ([] if kept else [BASELINE])
    journal = journal_of(tmp_path)
    assert (journal.baseline_w, journal.last_written_w, journal.clean) == (users, users, True)


def test_an_earlier_value_of_ours_is_never_taken_for_the_users(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10.1: after a reconnect or a transport switch a full publish may carry a value from
    before our last write; it is ours, not the user's. A genuine change is adopted at once."""

    async def scenario() -> None:
        clock, source, service = await steering(tmp_path, LaggingSource(setting_w=BASELINE))
        source.deliver()
        await next_tick(clock, source, service, pv=400.0)
        source.deliver()
        await service.evaluate()
        assert (source.writes, source.setting_w) == ([750.0, 300.0], 300.0)
        # A late full publish shows our earlier 750 W while the GX holds 300 W.
        source.store.set(paths.MAX_DISCHARGE_POWER, 750.0)
        for _ in range(8):  # past the echo timeout: the read-back shows 300 W
            await next_tick(clock, source, service)
        assert service.status.baseline_w == BASELINE
        assert source.writes == [750.0, 300.0]  # nothing to correct: the GX holds ours
        assert journal_of(tmp_path).baseline_w == BASELINE
        # The user really sets 1800 W: adopted at once, then steered over.
        source.setting_w = 1800.0
        source.store.set(paths.MAX_DISCHARGE_POWER, 1800.0)
        await service.evaluate()
        assert service.status.baseline_w == 1800.0
        assert journal_of(tmp_path).baseline_w == 1800.0
        # A stale publish that stays (the GX really holds our old value) is corrected, not adopted.
        source.deliver()
        source.setting_w = 750.0
        source.store.set(paths.MAX_DISCHARGE_POWER, 750.0)
        for _ in range(8):
            await next_tick(clock, source, service)
        source.deliver()
        assert service.status.baseline_w == 1800.0
        assert source.setting_w == 300.0

    with caplog.at_level(logging.INFO, logger="venus_prio.service"):
        run(scenario)
    adopted = [r.getMessage() for r in caplog.records if "adopted" in r.getMessage()]
    assert len(adopted) == 1 and "1800 W" in adopted[0]


@pytest.mark.parametrize(
    ("on_gx", "expected_baseline", "writes"),
    [
        # A value venus-prio could have written (a step of 50 W): taken as its own, the journal's
        # baseline is written back.
        (750.0, BASELINE, [BASELINE]),
        # A value venus-prio never writes (not a step, or above max_inverter_power_w): the user
        # set it while venus-prio was down. It is theirs: adopted, nothing written over it.
        (1234.0, 1234.0, []),
        (4000.0, 4000.0, []),
        (-1.0, -1.0, []),
    ],
)
def test_dirty_journal_tells_the_users_change_while_down_from_our_value(
    tmp_path: Path, on_gx: float, expected_baseline: float, writes: List[float]
) -> None:
    previous_run(tmp_path, last_written_w=300.0)

    async def scenario() -> None:
        _clock, source, service = started(tmp_path, MemorySource(setting_w=on_gx), soc=25.0)
        decision = await service.evaluate()
        assert decision is not None and decision.reason is Reason.NORMAL
        assert service.status.baseline_w == expected_baseline
        assert source.writes == writes
        assert await service.restore_baseline()
        assert source.setting_w == expected_baseline

    run(scenario)
    journal = journal_of(tmp_path)
    assert (journal.clean, journal.baseline_w) == (True, expected_baseline)
    assert journal.last_written_w == expected_baseline  # what the GX holds, never a stale value


def test_stop_in_dry_run_still_hands_back_a_value_of_ours(tmp_path: Path) -> None:
    # Found by the fault campaign: dry-run entered while steering, then a stop that wrote nothing
    # left the journal dirty, and the next start took the user's later value for venus-prio's.
    async def scenario() -> None:
        _clock, source, service = await steering(tmp_path, MemorySource(setting_w=BASELINE))
        assert source.setting_w == 750.0 and not journal_of(tmp_path).clean
        source.reachable = False  # the hand-back on entering dry-run does not get through
        await service.set_mode("dry-run")
        source.reachable = True
        assert source.setting_w == 750.0
        assert await service.restore_baseline()
        assert source.setting_w == BASELINE

    run(scenario)
    assert journal_of(tmp_path).clean


def test_the_user_going_back_to_an_earlier_value_of_theirs_is_adopted(tmp_path: Path) -> None:
    # Found by the fault campaign (users who return to an earlier value): the hand-back had
    # written 2500 W, so 2500 W counted as venus-prio's own (the last value written, and one
    # written within the hour) and the user's return to it was ignored; the stop then restored
    # 1234 W. The journal, clean, kept a stale last value written beside the user's value.
    async def scenario() -> None:
        clock, source, service = started(tmp_path, MemorySource(setting_w=BASELINE), pv=1000.0)
        await service.evaluate()
        await service.set_mode("off")
        assert source.writes == [750.0, BASELINE]
        for value in (1234.0, BASELINE):  # the user in the GUI, then back to their old value
            clock.advance(1.0)
            source.setting_w = value
            source.store.set(paths.MAX_DISCHARGE_POWER, value)
            source.store.mark_alive(clock())
            await service.evaluate()
            assert service.status.baseline_w == value
            assert journal_of(tmp_path).baseline_w == value
        assert await service.restore_baseline()
        assert source.setting_w == BASELINE

    run(scenario)
    journal = journal_of(tmp_path)
    assert (journal.clean, journal.baseline_w, journal.last_written_w) == (True, BASELINE, BASELINE)


def test_restore_never_writes_over_a_users_change_it_has_not_seen_yet(tmp_path: Path) -> None:
    # Fault campaign seed 1 round 61: the broker was down, the user set 1871 W, then SIGTERM.
    # The restore's read-back is the first sight of that value: it is the user's, not ours.
    async def scenario() -> None:
        _clock, source, service = started(tmp_path, LaggingSource(setting_w=BASELINE))
        await service.evaluate()
        source.deliver()
        assert source.setting_w == 750.0
        source.setting_w = 1871.0  # set in the GUI; the GX's announcement never reached us
        assert await service.restore_baseline()
        assert source.setting_w == 1871.0
        assert source.writes == [750.0]
        assert service.status.baseline_w == 1871.0

    run(scenario)
    assert (journal_of(tmp_path).clean, journal_of(tmp_path).baseline_w) == (True, 1871.0)


def test_restore_writes_the_baseline_while_a_write_of_ours_is_on_its_way(tmp_path: Path) -> None:
    # Issue 18's shape on the setting: our 750 W is on its way, so the GX still shows the
    # user's 2500 W when the restore looks. That proves nothing: 750 W lands after the look.
    async def scenario() -> None:
        _clock, source, service = started(tmp_path, LaggingSource(setting_w=BASELINE))
        await service.evaluate()
        assert source.pending == [750.0] and source.setting_w == BASELINE
        assert await service.restore_baseline()
        source.deliver()  # ours, then the restore's, in the order they were sent
        assert source.setting_w == BASELINE
        assert source.writes == [750.0, BASELINE]

    run(scenario)
    assert journal_of(tmp_path).clean
