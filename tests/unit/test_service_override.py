"""The service steering through the hub4 override (control.md section 8), against ``MemorySource``
with a fake clock: verification, hand-backs, someone else's override, the journal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from tests.unit.test_service_memory import (
    BASELINE,
    Clock,
    gx_state,
    journal_of,
    make_config,
    run,
)
from venus_prio.journal import Journal, journal_path, save_journal
from venus_prio.model import Reason
from venus_prio.service import Service
from venus_prio.venus import paths
from venus_prio.venus.source import MemorySource


class OrderedGx(MemorySource):
    """A GX that notes every write to either place, in order: ("setting" | "override", value)."""

    def __init__(self, **kwargs: float) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.log: List[Tuple[str, float]] = []

    async def write_max_discharge(self, value_w: float) -> None:
        await super().write_max_discharge(value_w)
        self.log.append(("setting", value_w))

    async def write_override(self, value_w: float) -> None:
        await super().write_override(value_w)
        self.log.append(("override", value_w))


def start(
    tmp_path: Path, *, soc: float = 12.0, pv: float = 1000.0, setting_w: float = BASELINE
) -> Tuple[Clock, OrderedGx, Service]:
    clock = Clock()
    source = OrderedGx(setting_w=setting_w)
    gx_state(source, clock, soc=soc, pv=pv)
    return (
        clock,
        source,
        Service(config=make_config(tmp_path, kind="auto"), source=source, clock=clock),
    )


async def tick(
    clock: Clock, source: MemorySource, service: Service, seconds: int = 1, **values: float
) -> None:
    """Let ``seconds`` pass one by one with a heartbeat, evaluating each second."""
    for name, value in values.items():
        source.store.set(getattr(paths, name), value)
    for _ in range(seconds):
        clock.advance(1.0)
        source.store.mark_alive(clock())
        await service.evaluate()


def reason(service: Service) -> Optional[Reason]:
    decision = service.status.decision
    return None if decision is None else decision.reason


def test_steers_the_override_and_never_touches_the_setting(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = start(tmp_path)
        await service.evaluate()
        # The override's PV share: 1.0 x 1000 W of DC PV, no offset.
        assert source.log == [("override", 1000.0)]
        journal = journal_of(tmp_path)
        assert (journal.override_held, journal.clean) == (True, True)
        status = service.status
        assert (status.actuator, status.actuator_why) == ("override", "")
        assert status.override_w == 1000.0
        assert status.override_counters is not None and status.override_counters.total == 1
        assert status.counters.total == 0
        # Refreshed every 5 s while steering; small moves stay within the 20 W deadband.
        await tick(clock, source, service, 12, PV_DC=1010.0)
        assert source.override_writes == [1000.0, 1000.0, 1000.0]
        assert journal_of(tmp_path) == journal  # refreshes change nothing a restart needs
        await tick(clock, source, service, PV_DC=950.0)  # drops are followed at once
        assert source.override_writes[-1] == 950.0
        # Recovered: the ramp reaches the maximum, NORMAL releases the override (confirmed).
        await tick(clock, source, service, SOC=25.0)
        while reason(service) is Reason.RAMPING:
            await tick(clock, source, service)
        assert reason(service) is Reason.NORMAL
        assert source.override_writes[-1] == -1.0 and source.override_w == -1.0
        assert not journal_of(tmp_path).override_held
        assert source.writes == []
        # Nothing of ours stands there: no more writes, no refresh of -1.
        before = len(source.override_writes)
        await tick(clock, source, service, 30)
        assert len(source.override_writes) == before

    run(scenario)


def test_stop_releases_the_override_and_leaves_the_setting_alone(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = start(tmp_path)
        await tick(clock, source, service, 3)
        assert await service.restore_baseline()
        assert source.override_w == -1.0 and source.override_writes[-1] == -1.0
        assert source.writes == []
        journal = journal_of(tmp_path)
        assert (journal.override_held, journal.clean, journal.baseline_w) == (False, True, BASELINE)

    run(scenario)


def test_a_gx_that_resets_the_override_makes_it_fall_back_to_the_setting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        clock, source, service = start(tmp_path)
        await service.evaluate()
        await tick(clock, source, service)  # the GX shows our value ...
        source.set_override(-1.0)  # ... and systemcalc before v3.60 rewrites it within seconds
        await tick(clock, source, service)
        status = service.status
        assert status.actuator == "setting" and "resets" in status.actuator_why
        # Seen gone, but only our own release, confirmed, proves it (actuator.py point 4): then
        # the setting steers (0.8 x 1000 - 20).
        assert source.log == [("override", 1000.0), ("override", -1.0), ("setting", 750.0)]
        assert not journal_of(tmp_path).clean
        # A day later the override is tried again: the setting's baseline goes back first.
        await tick(clock, source, service, 86400 // 3600)
        clock.advance(86400.0)
        await tick(clock, source, service)
        assert service.status.actuator == "override"
        assert source.log[-2:] == [("setting", BASELINE), ("override", 1000.0)]
        assert journal_of(tmp_path).clean

    with caplog.at_level(logging.INFO, logger="venus_prio.service"):
        run(scenario)
    fallbacks = [r for r in caplog.records if "resets the hub4 override" in r.getMessage()]
    assert len(fallbacks) == 1 and fallbacks[0].levelno == logging.WARNING


def test_a_reset_seen_before_our_refresh_arrived_is_released_before_the_setting_steers(
    tmp_path: Path,
) -> None:
    # Issue 18: a refresh never shows arriving (the value does not change), so a -1 seen after
    # it may have overtaken it on the wire, and the refresh may land after the -1. Falling back,
    # the service releases the override (-1 confirmed) before the setting steers.
    async def scenario() -> None:
        clock, source, service = start(tmp_path)
        await service.evaluate()
        await tick(clock, source, service, 5)  # our 1000 W shown, then refreshed at 5 s
        assert source.override_writes == [1000.0, 1000.0]
        source.set_override(-1.0)  # the GX's reset
        await tick(clock, source, service)
        assert service.status.actuator == "setting"
        assert source.log[-2:] == [("override", -1.0), ("setting", 750.0)]
        assert not journal_of(tmp_path).override_held

    run(scenario)


def test_entering_dry_run_leaves_a_setting_that_holds_nothing_of_ours(tmp_path: Path) -> None:
    # Fault campaign seed 8 round 7: venus-prio steered the override, never the setting; the
    # user set 2270 W while settings was away; entering dry-run wrote the baseline over it.
    async def scenario() -> None:
        clock, source, service = start(tmp_path)
        await tick(clock, source, service, 2)
        # settings left the GX (its items absent) and the user set 2270 W meanwhile
        source.store.set(paths.MAX_DISCHARGE_POWER, None)
        source.setting_w = 2270.0
        await service.set_mode("dry-run")
        assert source.setting_w == 2270.0
        assert source.log == [("override", 1000.0), ("override", -1.0)]

    run(scenario)


def test_an_override_without_effect_is_released_before_the_setting_steers(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = start(tmp_path, pv=300.0)
        # The GX keeps our 300 W but the battery still discharges 1 kW (ESS ignores it).
        await tick(clock, source, service, 63, BATTERY_POWER=-1000.0)
        assert source.override_writes[0] == 300.0
        assert service.status.actuator == "setting"
        assert "no effect" in service.status.actuator_why
        released = source.log.index(("override", -1.0))
        assert [kind for kind, _ in source.log[released + 1 :]] == ["setting"]
        assert source.override_w == -1.0
        # No retry until restart.
        await tick(clock, source, service, 200, BATTERY_POWER=0.0)
        assert service.status.actuator == "setting"
        assert source.override_writes[-1] == -1.0

    run(scenario)


def test_someone_elses_override_makes_it_stand_aside_without_a_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = start(tmp_path)
        source.set_override(0.0)  # scheduled charging holds the battery
        await service.evaluate()
        assert reason(service) is Reason.STAND_ASIDE_OVERRIDE_IN_USE
        await tick(clock, source, service, 30)
        source.set_override(-1.0)  # its window ended
        await tick(clock, source, service, 60)  # seen -1 from the first of these: 59 s
        assert reason(service) is Reason.STAND_ASIDE_OVERRIDE_IN_USE
        assert source.log == []
        await tick(clock, source, service, 1)
        assert reason(service) is Reason.PV_PRIORITY
        assert source.log == [("override", 1000.0)]

    run(scenario)


def test_someone_elses_override_replacing_ours_is_never_overwritten(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock, source, service = start(tmp_path)
        await tick(clock, source, service, 2)
        source.set_override(1.0)  # Dynamic ESS's idle strategy: max(1, DC PV)
        await tick(clock, source, service, 40)
        assert reason(service) is Reason.STAND_ASIDE_OVERRIDE_IN_USE
        assert source.override_w == 1.0
        assert source.log == [("override", 1000.0)]
        assert not journal_of(tmp_path).override_held  # nothing of ours stands there
        assert await service.restore_baseline()
        assert source.override_w == 1.0 and source.log == [("override", 1000.0)]

    run(scenario)


def test_a_dirty_setting_from_a_crashed_run_goes_back_before_the_override_steers(
    tmp_path: Path,
) -> None:
    save_journal(
        journal_path(tmp_path),
        Journal(portal_id=None, baseline_w=BASELINE, last_written_w=750.0, clean=False),
    )

    async def scenario() -> None:
        _clock, source, service = start(tmp_path, setting_w=750.0)
        await service.evaluate()
        assert service.status.baseline_w == BASELINE
        assert source.log == [("setting", BASELINE), ("override", 1000.0)]
        journal = journal_of(tmp_path)
        assert (journal.clean, journal.override_held) == (True, True)

    run(scenario)


def test_an_override_held_by_a_crashed_run_is_ours_and_released_on_stop(tmp_path: Path) -> None:
    save_journal(
        journal_path(tmp_path),
        Journal(
            portal_id=None, baseline_w=BASELINE, last_written_w=None, clean=True, override_held=True
        ),
    )

    async def scenario() -> None:
        clock, source, service = start(tmp_path, soc=25.0)
        source.set_override(730.0)  # what the crashed run left; it has not expired yet
        await service.evaluate()
        assert reason(service) is Reason.NORMAL  # not "someone else's override"
        assert source.override_writes == [-1.0] and source.override_w == -1.0
        assert not journal_of(tmp_path).override_held
        await tick(clock, source, service, 2)
        assert await service.restore_baseline()
        assert source.writes == [] and source.override_writes == [-1.0]

    run(scenario)
