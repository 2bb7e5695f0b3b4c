"""The transport conformance suite: the same service stories over MQTT and over D-Bus.

Every test runs three times: over MQTT (FakeGx on a real Mosquitto broker) and over D-Bus (FakeVenus
on a real dbus-daemon) with dbus-fast and with dbus-next. The ``gx`` fixture hands out a factory for
a ``GxHarness`` (tests/integration/harness.py) that hides which one it is.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncContextManager, Callable, List, Optional

import pytest

from tests.integration.conftest import eventually, run_async
from tests.integration.harness import (
    BASELINE,
    PID,
    GxHarness,
    dbus_gx,
    hide_dbus_fast,
    journal_at,
    mqtt_gx,
    plant,
    reason_of,
    start_run,
    steering,
    wait_exit,
)
from venus_prio.model import Reason
from venus_prio.venus import paths

if TYPE_CHECKING:  # imported by pytest_plugins below; importing it first would skip rewriting
    from tests.integration.dbus_fixtures import DbusDaemon

pytest_plugins = ["tests.integration.dbus_fixtures"]
pytestmark = pytest.mark.integration

HarnessFactory = Callable[..., AsyncContextManager[GxHarness]]


@pytest.fixture(params=["mqtt", "dbus_fast", "dbus_next"], ids=["mqtt", "dbus-fast", "dbus-next"])
def gx(request: pytest.FixtureRequest, tmp_path: Path) -> HarnessFactory:
    """Return ``factory(**plant overrides)``: an async context manager running a fake GX."""
    transport: str = request.param
    if transport == "mqtt":
        broker = request.getfixturevalue("mosquitto")

        def make_mqtt(**overrides: Any) -> AsyncContextManager[GxHarness]:
            return mqtt_gx(broker, plant(**overrides))

        return make_mqtt
    daemon: DbusDaemon = request.getfixturevalue("dbus_daemon_process")
    shadow = hide_dbus_fast(tmp_path / "shadow")

    def make_dbus(**overrides: Any) -> AsyncContextManager[GxHarness]:
        return dbus_gx(daemon.address, transport, plant(**overrides), shadow)

    return make_dbus


def sent(service: Any, value_w: float) -> Callable[[], bool]:
    def check() -> bool:
        last = service.status.last_write
        return last is not None and last.sent and last.value_w == value_w

    return check


def test_first_write_then_pv_drop(gx: HarnessFactory, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gx() as fake:
            config = fake.config(tmp_path)
            async with steering(config, fake.make_source(config)) as service:
                await eventually(lambda: fake.setting == 750.0, what="the PV share written")
                # Decided on the complete state: 0.8 * 1000 - 20 -> 750 W, and only that.
                assert fake.written() == [750.0]
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
        async with gx() as fake:
            config = fake.config(tmp_path)
            async with steering(config, fake.make_source(config)) as service:
                await eventually(lambda: fake.setting == 750.0, what="the PV share written")
                await fake.set_value(paths.SOC, 9.5)
                await eventually(lambda: fake.setting == 0.0, what="hold (0 W) written")
                assert reason_of(service) is Reason.BELOW_FLOOR
                assert fake.written() == [750.0, 0.0]

    run_async(scenario())


def test_recovery_ramps_up_then_hands_back(gx: HarnessFactory, tmp_path: Path) -> None:
    # Not a multiple of the 50 W step, so no ramp step can look like the hand-back.
    baseline = 2480.0

    async def scenario() -> None:
        async with gx(max_discharge_w=baseline) as fake:
            config = fake.config(tmp_path, ramp_w_per_min=30_000.0, min_increase_interval_s=0.3)
            async with steering(config, fake.make_source(config)) as service:
                await eventually(lambda: fake.setting == 750.0, what="the PV share written")
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
        async with gx() as fake:
            config = fake.config(tmp_path, stale_after_s=1.0, refresh_s=0.5)
            async with steering(config, fake.make_source(config)) as service:
                await eventually(lambda: fake.setting == 750.0, what="the PV share written")
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
            config = fake.config(tmp_path)
            async with steering(config, fake.make_source(config)) as service:
                await eventually(lambda: fake.setting == 750.0, what="the PV share written")
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
        async with gx() as fake:
            config = fake.config(tmp_path)
            async with steering(config, fake.make_source(config)) as service:
                await eventually(lambda: fake.setting == 750.0, what="the PV share written")
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
        async with gx() as fake:
            config = fake.config(tmp_path, stale_after_s=30.0)
            async with steering(config, fake.make_source(config)) as service:
                await eventually(lambda: fake.setting == 750.0, what="the PV share written")
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
            config_file = fake.config_file(state_dir, tmp_path / "config.yaml")
            process = await start_run(config_file, log_file, fake.env())
            try:
                await eventually(lambda: fake.setting == 750.0, timeout=20.0, what="steering")
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            code = await wait_exit(process, log_file)
            output = log_file.read_text(encoding="utf-8")
            assert code == 0, output
            assert fake.setting == BASELINE
            assert fake.written() == [750.0, BASELINE]
            assert "confirmed by read-back" in output
            if fake.transport == "dbus":
                # The run used the D-Bus library this case is about.
                assert f"connected to D-Bus ({fake.label.replace('-', '_')})" in output
            journal = journal_at(state_dir)
            assert (journal.baseline_w, journal.last_written_w, journal.clean) == (
                BASELINE,
                BASELINE,
                True,
            )

    run_async(scenario(), timeout=90.0)


def test_sigkill_then_restart_keeps_the_journaled_baseline(
    gx: HarnessFactory, tmp_path: Path
) -> None:
    log_file = tmp_path / "run.log"
    state_dir = tmp_path / "state"

    async def scenario() -> None:
        async with gx() as fake:
            config_file = fake.config_file(state_dir, tmp_path / "config.yaml")
            process = await start_run(config_file, log_file, fake.env())
            try:
                await eventually(lambda: fake.setting == 750.0, timeout=20.0, what="steering")
            finally:
                process.kill()
            await wait_exit(process, log_file)
            # venus-prio's own 750 W is left on the GX; the journal is dirty.
            assert fake.setting == 750.0
            crashed = journal_at(state_dir)
            assert (crashed.baseline_w, crashed.clean) == (BASELINE, False)

            process = await start_run(config_file, log_file, fake.env())
            try:
                await eventually(
                    lambda: "the baseline stays 2500 W" in log_file.read_text(encoding="utf-8"),
                    timeout=20.0,
                    what="the restarted service to read the journal",
                )
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            code = await wait_exit(process, log_file)
            assert code == 0, log_file.read_text(encoding="utf-8")
            # The user's 2500 W came back, not the 750 W the crashed run left behind.
            assert fake.setting == BASELINE
            assert fake.written()[-1] == BASELINE
            journal = journal_at(state_dir)
            assert (journal.baseline_w, journal.clean) == (BASELINE, True)

    run_async(scenario(), timeout=120.0)
