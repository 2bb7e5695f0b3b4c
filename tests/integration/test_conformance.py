"""The transport conformance suite: the same service stories over MQTT and over D-Bus.

Every test runs three times: over MQTT (FakeGx on a real Mosquitto broker) and over D-Bus (FakeVenus
on a real dbus-daemon) with dbus-fast and with dbus-next. The ``gx`` fixture hands out a factory for
a ``GxHarness`` (tests/integration/harness.py) that hides which one it is. The service stories are
the setting's (its write policy, journal and restore: ``actuator: setting``); the service on the
override is in test_override_service.py.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, AsyncContextManager, Awaitable, Callable, List, Optional

import pytest

from tests.integration.conftest import eventually, run_async, running
from tests.integration.dbus_fixtures import DbusDaemon
from tests.integration.harness import (
    BASELINE,
    PID,
    SETTING,
    GxHarness,
    MqttGx,
    after_a_gx_reset,
    assert_handed_back,
    dbus_gx,
    journal_at,
    mqtt_gx,
    plant,
    reason_of,
    steered,
)
from venus_prio.model import Reason
from venus_prio.venus import paths
from venus_prio.venus.source import Readiness, Source, write_confirmed

pytestmark = pytest.mark.integration

HarnessFactory = Callable[..., AsyncContextManager[GxHarness]]


@pytest.fixture(params=["mqtt", "dbus_fast", "dbus_next"], ids=["mqtt", "dbus-fast", "dbus-next"])
def gx(request: pytest.FixtureRequest) -> HarnessFactory:
    """Return ``factory(override=, override_expiry_s=, **plant overrides)``: an async context
    manager running a fake GX (the hub4 override as ``sim.override`` would set it)."""
    transport: str = request.param
    if transport == "mqtt":
        broker = request.getfixturevalue("mosquitto")

        def make_mqtt(
            override: str = "honoured", override_expiry_s: float = 60.0, **overrides: Any
        ) -> AsyncContextManager[GxHarness]:
            return mqtt_gx(
                broker, plant(**overrides), override=override, override_expiry_s=override_expiry_s
            )

        return make_mqtt
    daemon: DbusDaemon = request.getfixturevalue("dbus_daemon_process")

    def make_dbus(
        override: str = "honoured", override_expiry_s: float = 60.0, **overrides: Any
    ) -> AsyncContextManager[GxHarness]:
        return dbus_gx(
            daemon.address,
            transport,
            plant(**overrides),
            override=override,
            override_expiry_s=override_expiry_s,
        )

    return make_dbus


def sent(service: Any, value_w: float) -> Callable[[], bool]:
    def check() -> bool:
        last = service.status.last_write
        return last is not None and last.sent and last.value_w == value_w

    return check


def test_first_write_then_pv_drop(gx: HarnessFactory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gx() as fake:
            async with steered(fake, fake.config(tmp_path, actuator=SETTING)) as service:
                # Decided on the complete state: 0.8 * 1000 - 20 -> 750 W, and only that.
                assert fake.written() == [750.0]
                if isinstance(fake, MqttGx):
                    # Over MQTT: only after the full publish that our first keepalive asked for.
                    assert fake.gx.keepalives and fake.gx.keepalives[0].full
                    assert fake.gx.keepalives[0].at <= fake.gx.writes[0].at
                assert reason_of(service) is Reason.PV_PRIORITY
                journal = journal_at(tmp_path)
                assert (journal.portal_id, journal.baseline_w, journal.clean) == (
                    PID,
                    BASELINE,
                    False,
                )
                # A cloud: the lower limit goes out at once (0.8 * 400 - 20 = 300 W).
                await fake.set_value(paths.PV_DC, 400.0)
                await eventually(sent(service, 300.0), timeout=2.0, what="300 W sent within 2 s")
                await eventually(lambda: fake.setting == 300.0, what="300 W on the GX")
                assert fake.written() == [750.0, 300.0]
            assert fake.setting == BASELINE
            assert fake.written()[-1] == BASELINE
            assert journal_at(tmp_path).clean

    run_async(scenario())


def test_below_the_floor_holds(gx: HarnessFactory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gx() as fake, steered(fake, fake.config(tmp_path, actuator=SETTING)) as service:
            await fake.set_value(paths.SOC, 9.5)
            await eventually(lambda: fake.setting == 0.0, what="hold (0 W) written")
            assert reason_of(service) is Reason.BELOW_FLOOR
            assert fake.written() == [750.0, 0.0]

    run_async(scenario())


def test_recovery_ramps_up_then_hands_back(gx: HarnessFactory, tmp_path: Path) -> None:
    # Not a multiple of the 50 W step, so no ramp step can look like the hand-back.
    baseline = 2480.0

    async def scenario() -> None:
        async with gx(max_discharge_w=baseline) as fake, steered(
            fake,
            fake.config(
                tmp_path, ramp_w_per_min=30_000.0, min_increase_interval_s=0.3, actuator=SETTING
            ),
        ) as service:
            reasons: List[Optional[Reason]] = []
            await fake.set_value(paths.SOC, 25.0)  # 15 points above the floor: recovered

            def handed_back() -> bool:
                reasons.append(reason_of(service))
                return fake.setting == baseline

            await eventually(handed_back, timeout=20.0, what="the baseline handed back")
            assert reason_of(service) is Reason.NORMAL
            assert Reason.RAMPING in reasons
            ramp = fake.written()[1:-1]
            assert ramp, "no ramp steps were written"
            assert ramp == sorted(ramp) and ramp[0] > 750.0 and ramp[-1] < 3000.0
            assert fake.written()[-1] == baseline

    run_async(scenario())


def test_silent_gx_goes_stale_and_gets_the_baseline(gx: HarnessFactory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gx() as fake, steered(
            fake, fake.config(tmp_path, stale_after_s=1.0, refresh_s=0.5, actuator=SETTING)
        ) as service:
            await fake.set_silent(True)
            await eventually(lambda: fake.setting == BASELINE, what="the baseline handed back")
            assert reason_of(service) is Reason.STAND_ASIDE_STALE
            assert fake.written() == [750.0, BASELINE]
            # The GX proves it is alive again: steering resumes.
            await fake.set_silent(False)
            await eventually(lambda: fake.setting == 750.0, what="steering resumed")
            assert fake.written() == [750.0, BASELINE, 750.0]

    run_async(scenario())


def test_external_change_is_adopted_as_the_new_baseline(gx: HarnessFactory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gx() as fake:
            async with steered(fake, fake.config(tmp_path, actuator=SETTING)) as service:
                await fake.external_write(1800.0)
                await eventually(lambda: service.status.baseline_w == 1800.0, what="1800 W adopted")
                assert journal_at(tmp_path).baseline_w == 1800.0
                # Steering goes on over the user's new value.
                await eventually(lambda: fake.setting == 750.0, what="steering kept")
            assert fake.setting == 1800.0
            assert journal_at(tmp_path).clean

    run_async(scenario())


def test_garbage_values_are_ignored(gx: HarnessFactory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gx() as fake, steered(fake, fake.config(tmp_path, actuator=SETTING)) as service:
            await fake.send_garbage(paths.PV_DC)
            await fake.send_garbage(paths.SOC)
            # A good value after the garbage (same connection, so it arrives after it).
            await fake.set_value(paths.SOC, 12.5)

            def soc_seen() -> bool:
                decision = service.status.decision
                return decision is not None and decision.soc == 12.5

            await eventually(soc_seen, what="the good SOC after the garbage")
            # The last good PV (1000 W) still counts: no stand-aside, no write.
            assert reason_of(service) is Reason.PV_PRIORITY
            assert fake.written() == [750.0]
            # And a good PV value is still followed.
            await fake.set_value(paths.PV_DC, 400.0)
            await eventually(lambda: fake.setting == 300.0, what="300 W after the garbage")

    run_async(scenario())


def test_service_leaving_makes_it_stand_aside_until_it_returns(
    gx: HarnessFactory, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with gx() as fake, steered(
            fake, fake.config(tmp_path, stale_after_s=30.0, actuator=SETTING)
        ) as service:
            await fake.set_present(paths.SYSTEM, False)
            await eventually(lambda: fake.setting == BASELINE, what="the baseline handed back")
            decision = service.status.decision
            assert decision is not None
            assert decision.reason is Reason.STAND_ASIDE_MISSING_INPUT
            assert paths.SOC.path in decision.text  # names what is missing
            await fake.set_present(paths.SYSTEM, True)
            # The PV filter saw no PV while the service was gone (and over MQTT the items
            # come back one by one): the cap starts lower, at 0 W at worst.
            await eventually(lambda: len(fake.written()) == 3, what="steering resumed")
            assert fake.written()[:2] == [750.0, BASELINE]
            assert 0.0 <= fake.written()[2] <= 750.0
            await eventually(
                lambda: reason_of(service) is Reason.PV_PRIORITY, what="PV shared again"
            )

    run_async(scenario())


# -- the real command as a subprocess ------------------------------------------------------


def test_sigterm_restores_the_baseline_before_exit(gx: HarnessFactory, tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    state_dir = tmp_path / "state"

    async def scenario() -> None:
        async with gx() as fake:
            config_file = fake.config_file(state_dir, tmp_path / "config.yaml", actuator=SETTING)
            code = await fake.run_until(config_file, log_file, stop=signal.SIGTERM)
            output = log_file.read_text(encoding="utf-8")
            assert code == 0, output
            assert fake.written() == [750.0, BASELINE]
            assert_handed_back(fake, state_dir)
            assert "confirmed by read-back" in output
            if fake.transport == "dbus":
                # The run used the D-Bus library this case is about.
                assert f"connected to D-Bus ({fake.label.replace('-', '_')})" in output

    run_async(scenario(), timeout=90.0)


def test_sigkill_then_restart_keeps_the_journaled_baseline(
    gx: HarnessFactory, tmp_path: Path
) -> None:
    log_file = tmp_path / "run.log"
    state_dir = tmp_path / "state"

    async def scenario() -> None:
        async with gx() as fake:
            config_file = fake.config_file(state_dir, tmp_path / "config.yaml", actuator=SETTING)
            await fake.run_until(config_file, log_file, stop=signal.SIGKILL)
            # venus-prio's own 750 W is left on the GX; the journal is dirty.
            assert fake.setting == 750.0
            crashed = journal_at(state_dir)
            assert (crashed.baseline_w, crashed.clean) == (BASELINE, False)

            code = await fake.run_until(
                config_file,
                log_file,
                stop=signal.SIGTERM,
                done=lambda: "the baseline stays 2500 W" in log_file.read_text(encoding="utf-8"),
                what="the restarted service to read the journal",
            )
            assert code == 0, log_file.read_text(encoding="utf-8")
            # The user's 2500 W came back, not the 750 W the crashed run left behind.
            assert_handed_back(fake, state_dir)

    run_async(scenario(), timeout=120.0)


# -- the hub4 override at the source (control.md section 8) ---------------------------------
#
# Each story gets a ready source on a fake GX whose override behaves as ``variant`` with
# ``expiry_s``; the stories are a table so every transport runs every one of them.

OVERRIDE = paths.OVERRIDE_MAX_DISCHARGE
Story = Callable[[GxHarness, Source], Awaitable[None]]


def shows(source: Source, value: Optional[float]) -> Callable[[], bool]:
    return lambda: source.snapshot().override_w == value


async def write_and_read_back(fake: GxHarness, source: Source) -> None:
    await eventually(lambda: source.snapshot().override_present is True, what="override present")
    assert source.snapshot().override_w == -1.0
    await source.write_override(850.0)
    assert await source.read_override(2.0) == 850.0
    assert fake.override_w == 850.0
    await eventually(shows(source, 850.0), what="850 W in the snapshot")
    assert fake.written_to(OVERRIDE) == [850]
    # The setting was not touched.
    assert fake.written_to(paths.MAX_DISCHARGE_POWER) == []


async def expires_back_to_none(fake: GxHarness, source: Source) -> None:
    await source.write_override(600.0)
    await eventually(shows(source, 600.0), what="600 W in the snapshot")
    # Nobody rewrites it: the GX falls back to -1 by itself, and says so.
    await eventually(shows(source, -1.0), timeout=5.0, what="the override expired to -1")
    assert fake.override_w == -1.0
    assert await source.read_override(2.0) == -1.0
    assert fake.written_to(OVERRIDE) == [600]


async def absent_path(fake: GxHarness, source: Source) -> None:
    await eventually(lambda: source.snapshot().override_present is False, what="override absent")
    await source.write_override(500.0)  # dropped by the GX, like any write to a missing path
    assert await source.read_override(0.5) is None
    assert fake.override_w is None
    assert fake.written_to(OVERRIDE, accepted_only=True) == []
    # Nothing else suffers: the source is ready, connected and alive, the inputs complete.
    snap = source.snapshot()
    assert isinstance(source, Readiness) and source.ready
    assert snap.connected and snap.alive_at is not None
    assert (snap.override_w, snap.soc, snap.max_discharge_w) == (None, 12.0, BASELINE)


async def reset_by_the_gx(fake: GxHarness, source: Source) -> None:
    # systemcalc before v3.60 sets it back to -1 at the next 5 s boundary, long before expiry.
    await after_a_gx_reset()
    await source.write_override(700.0)
    assert await source.read_override(2.0) == 700.0
    await eventually(shows(source, -1.0), timeout=6.0, what="the GX's reset seen")
    assert fake.override_w == -1.0
    assert fake.written_to(OVERRIDE) == [700]


async def foreign_value(fake: GxHarness, source: Source) -> None:
    # Dynamic ESS keeping the battery idle: max(1.0, DC PV), written by someone else.
    await fake.set_value(OVERRIDE, 1.0)
    await eventually(shows(source, 1.0), what="the foreign 1 W in the snapshot")
    assert source.snapshot().override_present is True
    assert await source.read_override(2.0) == 1.0
    assert fake.written_to(OVERRIDE) == []  # not a write over the transport


async def release_confirmed(fake: GxHarness, source: Source) -> None:
    assert await write_confirmed(source, 900.0, override=True) is True
    assert fake.override_w == 900.0
    assert await write_confirmed(source, -1.0, override=True) is True
    assert fake.override_w == -1.0
    # Already released: confirmed by the read-back alone, no write spent.
    assert await write_confirmed(source, -1.0, override=True) is False
    assert fake.written_to(OVERRIDE) == [900, -1]


async def hub4_leaves_and_returns(fake: GxHarness, source: Source) -> None:
    await source.write_override(400.0)
    await eventually(shows(source, 400.0), what="400 W in the snapshot")
    await fake.set_present(paths.HUB4, False)
    await eventually(lambda: source.snapshot().override_present is False, what="hub4 gone")
    assert source.snapshot().override_w is None
    assert await source.read_override(0.5) is None
    # hub4 is optional: its leaving makes nothing stale or unready.
    alive_at = source.snapshot().alive_at
    await eventually(lambda: source.snapshot().alive_at != alive_at, what="still proven alive")
    assert isinstance(source, Readiness) and source.ready
    # hub4control restarted: the override in its RAM is gone.
    await fake.set_present(paths.HUB4, True)
    await eventually(lambda: source.snapshot().override_present is True, what="hub4 back")
    await eventually(shows(source, -1.0), what="no override after the restart")
    assert await source.read_override(2.0) == -1.0


@pytest.mark.parametrize(
    ("variant", "expiry_s", "story"),
    [
        pytest.param("honoured", 60.0, write_and_read_back, id="write-read-back"),
        pytest.param("honoured", 1.5, expires_back_to_none, id="expiry"),
        pytest.param("absent", 60.0, absent_path, id="absent"),
        pytest.param("reset_every_5s", 60.0, reset_by_the_gx, id="reset-every-5s"),
        pytest.param("honoured", 60.0, foreign_value, id="foreign-value"),
        pytest.param("ignored", 60.0, release_confirmed, id="release-confirmed"),
        pytest.param("honoured", 60.0, hub4_leaves_and_returns, id="hub4-leaves-returns"),
    ],
)
def test_override(
    gx: HarnessFactory, tmp_path: Path, variant: str, expiry_s: float, story: Story
) -> None:
    async def scenario() -> None:
        async with gx(override=variant, override_expiry_s=expiry_s) as fake:
            source = fake.make_source(fake.config(tmp_path, refresh_s=0.3))
            async with running(source.run()):
                assert isinstance(source, Readiness)
                assert await source.wait_ready(10.0), "the source never got ready"
                await story(fake, source)

    run_async(scenario())
