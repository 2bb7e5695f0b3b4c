"""The service against a real Mosquitto broker and the fake GX: what is MQTT-specific.

The cases every transport shares (below floor, ramp, stale, external change, SIGTERM, SIGKILL)
live in test_conformance.py, parametrized over MQTT and D-Bus.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import List, Optional

import pytest
import yaml

from tests.integration.conftest import Broker, FakeGxFactory, eventually, run_async
from tests.integration.harness import (
    SETTING,
    config_data,
    journal_at,
    reason_of,
    start_command,
    start_run,
    steering,
    venus_config,
    wait_exit,
    write_yaml,
)
from venus_prio.config import (
    ActuatorConfig,
    BrokerConfig,
    Config,
    ControlConfig,
    HomeAssistantConfig,
    OverrideConfig,
    VenusConfig,
    WritesConfig,
)
from venus_prio.journal import journal_path, load_journal
from venus_prio.model import Reason
from venus_prio.sim.fakegx import DEFAULT_PORTAL_ID, FakeGx
from venus_prio.venus import paths
from venus_prio.venus.mqtt import MqttSource

pytestmark = pytest.mark.integration

PID = DEFAULT_PORTAL_ID
BASELINE = 2500.0
ROOT = Path(__file__).resolve().parents[2]


def make_config(
    broker: Broker,
    state_dir: Path,
    *,
    stale_after_s: float = 5.0,
    refresh_s: float = 1.0,
    ramp_w_per_min: float = 200.0,
    min_increase_interval_s: float = 60.0,
) -> Config:
    return Config(
        control=ControlConfig(
            max_inverter_power_w=3000.0,
            tick_s=0.1,
            stale_after_s=stale_after_s,
            refresh_s=refresh_s,
            ramp_w_per_min=ramp_w_per_min,
            # control.md's numbers rather than the tuned defaults: share = 0.8 * PV - 20.
            pv_factor=0.8,
            pv_offset_w=20.0,
            half_power_fraction=0.5,
        ),
        writes=WritesConfig(deadband_w=100.0, min_increase_interval_s=min_increase_interval_s),
        venus=VenusConfig(
            transport="mqtt",
            broker=BrokerConfig(host=broker.host, port=broker.port),
            portal_id=PID,
            keepalive_interval_s=1.0,
            full_publish_timeout_s=2.0,
            # Long: a lost heartbeat must not trigger full republishes during these tests.
            heartbeat_timeout_s=30.0,
            reconnect_max_s=1.0,
        ),
        homeassistant=HomeAssistantConfig(enabled=False),
        state_dir=str(state_dir),
        # These stories are about the setting's write policy and journal.
        actuator=SETTING,
    )


def mqtt_source(config: Config) -> MqttSource:
    return MqttSource(venus=config.venus, control=config.control)


def near_floor(
    gx: FakeGx, *, soc: float = 12.0, pv: float = 1000.0, baseline: float = BASELINE
) -> None:
    """Set the fake's state before venus-prio connects: floor 10 %, the user's own value."""
    gx.items[paths.SOC.topic_suffix()].value = soc
    gx.items[paths.PV_DC.topic_suffix()].value = pv
    gx.items[paths.MAX_DISCHARGE_POWER.topic_suffix()].value = baseline


def written(gx: FakeGx) -> List[float]:
    suffix = paths.MAX_DISCHARGE_POWER.topic_suffix()
    return [w.value for w in gx.writes if w.suffix == suffix]


def test_first_write_after_the_full_publish_then_pv_drop(
    mosquitto: Broker, fake_gx: FakeGxFactory, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with fake_gx() as gx:
            near_floor(gx)
            config = make_config(mosquitto, tmp_path)
            async with steering(config, mqtt_source(config)) as service:
                await eventually(lambda: gx.setting == 750.0, what="the PV share written")
                # The first write was decided on the complete state: 0.8 * 1000 - 20 -> 750 W.
                assert written(gx) == [750.0]
                assert gx.keepalives and gx.keepalives[0].full
                assert gx.keepalives[0].at <= gx.writes[0].at
                assert reason_of(service) is Reason.PV_PRIORITY
                journal = journal_at(tmp_path)
                assert (journal.portal_id, journal.baseline_w, journal.clean) == (
                    PID,
                    BASELINE,
                    False,
                )
                # A cloud: the lower limit goes out at once (0.8 * 400 - 20 = 300 W).
                await gx.set_value(paths.PV_DC, 400.0)

                def sent_300() -> bool:
                    last = service.status.last_write
                    return last is not None and last.sent and last.value_w == 300.0

                await eventually(sent_300, timeout=2.0, what="300 W sent within 2 s")
                await eventually(lambda: gx.setting == 300.0, what="300 W on the GX")
                assert written(gx) == [750.0, 300.0]
            # Stopped: the user's value is back and the journal is clean.
            assert gx.setting == BASELINE
            assert journal_at(tmp_path).clean

    run_async(scenario())


def test_unchanging_soc_with_heartbeats_is_not_stale(
    mosquitto: Broker, fake_gx: FakeGxFactory, tmp_path: Path
) -> None:
    async def scenario() -> None:
        config = make_config(mosquitto, tmp_path, stale_after_s=0.5, refresh_s=0.25)
        async with fake_gx() as gx:
            near_floor(gx)
            async with steering(config, mqtt_source(config)) as service:
                await eventually(lambda: gx.setting == 750.0, what="the PV share written")
                reasons = set()
                loop = asyncio.get_running_loop()
                end = loop.time() + 10 * config.control.stale_after_s
                while loop.time() < end:
                    reasons.add(reason_of(service))
                    await asyncio.sleep(0.05)
                assert reasons == {Reason.PV_PRIORITY}
                assert gx.value(paths.SOC) == 12.0
                assert written(gx) == [750.0]

    run_async(scenario())


def write_config_file(
    broker: Broker, state_dir: Path, path: Path, *, actuator: Optional[ActuatorConfig] = SETTING
) -> Path:
    """Write a config for the commands (``actuator``: the setting unless told; None: auto)."""
    venus = venus_config("mqtt", broker=broker)
    return write_yaml(path, config_data(venus, state_dir, actuator=actuator))


def test_restore_command_writes_the_journaled_baseline(
    mosquitto: Broker, fake_gx: FakeGxFactory, tmp_path: Path
) -> None:
    log_file = tmp_path / "run.log"
    state_dir = tmp_path / "state"
    config_file = write_config_file(mosquitto, state_dir, tmp_path / "config.yaml")

    async def scenario() -> None:
        async with fake_gx() as gx:
            near_floor(gx)
            process = await start_run(config_file, log_file)
            try:
                await eventually(lambda: gx.setting == 750.0, timeout=20.0, what="steering")
            finally:
                process.kill()
            await wait_exit(process, log_file)
            assert not journal_at(state_dir).clean

            code = await run_command(config_file, log_file, "restore", "--config")
            assert code == 0, log_file.read_text(encoding="utf-8")
            assert gx.setting == BASELINE
            journal = journal_at(state_dir)
            assert (journal.baseline_w, journal.last_written_w, journal.clean) == (
                BASELINE,
                BASELINE,
                True,
            )

    run_async(scenario(), timeout=90.0)


def test_restore_command_without_a_journal_does_nothing(mosquitto: Broker, tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    config_file = write_config_file(mosquitto, tmp_path / "state", tmp_path / "config.yaml")

    async def scenario() -> int:
        return await run_command(config_file, log_file, "restore", "--config")

    assert run_async(scenario()) == 0
    assert "nothing to restore" in log_file.read_text(encoding="utf-8")


# The override's PV share pinned at 1.0 x DC PV (the default is tuned and may move).
OVERRIDE_AT_PV = ActuatorConfig(override=OverrideConfig(pv_factor=1.0))


@pytest.mark.parametrize(
    "actuator, expected",
    [
        (
            SETTING,
            [
                "Actuator              setting",
                "PV_PRIORITY: target 750 W",  # 0.8 * 1000 - 20 -> 750 W
                "Would write           750 W",
            ],
        ),
        (
            OVERRIDE_AT_PV,
            [
                "Override (hub4)     -1 W",
                "Actuator              override",
                "PV_PRIORITY: target 1000 W",
                "Would write           1000 W (take the override)",
            ],
        ),
    ],
    ids=["setting", "auto-override"],
)
def test_probe_shows_the_decision_and_writes_nothing(
    mosquitto: Broker,
    fake_gx: FakeGxFactory,
    tmp_path: Path,
    actuator: ActuatorConfig,
    expected: List[str],
) -> None:
    log_file = tmp_path / "probe.log"
    state_dir = tmp_path / "state"
    config_file = write_config_file(
        mosquitto, state_dir, tmp_path / "config.yaml", actuator=actuator
    )

    async def scenario() -> None:
        async with fake_gx() as gx:
            near_floor(gx)
            code = await run_command(config_file, log_file, "check-config", "--probe")
            output = log_file.read_text(encoding="utf-8")
            assert code == 0, output
            assert [line for line in expected if line not in output] == [], output
            assert "SOC                 12 %" in output
            assert gx.write_log.entries == []  # neither the setting nor the override
            assert (gx.setting, gx.override_w) == (BASELINE, -1.0)
        assert load_journal(journal_path(state_dir)) is None

    run_async(scenario(), timeout=60.0)


def test_probe_without_a_gx_fails(mosquitto: Broker, tmp_path: Path) -> None:
    log_file = tmp_path / "probe.log"
    config_file = write_config_file(mosquitto, tmp_path / "state", tmp_path / "config.yaml")
    data = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    data["venus"]["full_publish_timeout_s"] = 0.5
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")

    async def scenario() -> int:
        return await run_command(config_file, log_file, "check-config", "--probe")

    assert run_async(scenario()) == 1
    assert "Cannot reach the GX" in log_file.read_text(encoding="utf-8")


async def run_command(config_file: Path, log_file: Path, *args: str) -> int:
    """Run ``python -m venus_prio <args> <config_file>`` to the end."""
    process = await start_command(log_file, *args, str(config_file))
    return await wait_exit(process, log_file)
