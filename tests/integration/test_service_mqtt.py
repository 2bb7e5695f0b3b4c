"""The service against a real Mosquitto broker and the fake GX: what is MQTT-specific.

The cases every transport shares (first write, below floor, ramp, stale, external change,
SIGTERM, SIGKILL) live in test_conformance.py, parametrized over MQTT and D-Bus.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import List

import pytest
import yaml

from tests.integration.conftest import Broker, run_async
from tests.integration.harness import (
    BASELINE,
    PLANT,
    SETTING,
    assert_handed_back,
    journal_at,
    mqtt_config_file,
    mqtt_gx,
    reason_of,
    run_command,
    steered,
)
from venus_prio.config import ActuatorConfig, OverrideConfig
from venus_prio.journal import journal_path, load_journal
from venus_prio.model import Reason
from venus_prio.venus import paths

pytestmark = pytest.mark.integration


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    """Return where ``python -m venus_prio`` writes its output."""
    return tmp_path / "venus-prio.log"


@pytest.fixture
def config_file(mosquitto: Broker, state_dir: Path, tmp_path: Path) -> Path:
    """Return a config file for ``python -m venus_prio`` on the test's broker."""
    return mqtt_config_file(mosquitto, state_dir, tmp_path / "config.yaml", actuator=SETTING)


def test_unchanging_soc_with_heartbeats_is_not_stale(mosquitto: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with mqtt_gx(mosquitto, PLANT) as fake:
            config = fake.config(tmp_path, stale_after_s=0.5, refresh_s=0.25, actuator=SETTING)
            async with steered(fake, config) as service:
                reasons = set()
                loop = asyncio.get_running_loop()
                end = loop.time() + 10 * config.control.stale_after_s
                while loop.time() < end:
                    reasons.add(reason_of(service))
                    await asyncio.sleep(0.05)
                assert reasons == {Reason.PV_PRIORITY}
                assert fake.gx.value(paths.SOC) == 12.0
                assert fake.written() == [750.0]

    run_async(scenario())


def test_restore_command_writes_the_journaled_baseline(
    mosquitto: Broker, config_file: Path, state_dir: Path, log_file: Path
) -> None:
    async def scenario() -> None:
        async with mqtt_gx(mosquitto, PLANT) as fake:
            await fake.run_until(config_file, log_file, stop=signal.SIGKILL)
            assert not journal_at(state_dir).clean

            code = await run_command(log_file, "restore", "--config", str(config_file))
            assert code == 0, log_file.read_text(encoding="utf-8")
            assert_handed_back(fake, state_dir)

    run_async(scenario(), timeout=90.0)


def test_restore_command_without_a_journal_does_nothing(config_file: Path, log_file: Path) -> None:
    code = run_async(run_command(log_file, "restore", "--config", str(config_file)))
    assert code == 0
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
    mosquitto: Broker, tmp_path: Path, actuator: ActuatorConfig, expected: List[str]
) -> None:
    log_file = tmp_path / "probe.log"
    state_dir = tmp_path / "state"
    config_file = mqtt_config_file(
        mosquitto, state_dir, tmp_path / "config.yaml", actuator=actuator
    )

    async def scenario() -> None:
        async with mqtt_gx(mosquitto, PLANT) as fake:
            code = await run_command(log_file, "check-config", "--probe", str(config_file))
            output = log_file.read_text(encoding="utf-8")
            assert code == 0, output
            assert [line for line in expected if line not in output] == [], output
            assert "SOC                 12 %" in output
            assert fake.received() == []  # neither the setting nor the override
            assert (fake.setting, fake.override_w) == (BASELINE, -1.0)
        assert load_journal(journal_path(state_dir)) is None

    run_async(scenario(), timeout=60.0)


def test_probe_without_a_gx_fails(config_file: Path, log_file: Path) -> None:
    data = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    data["venus"]["full_publish_timeout_s"] = 0.5
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")

    assert run_async(run_command(log_file, "check-config", "--probe", str(config_file))) == 1
    assert "Cannot reach the GX" in log_file.read_text(encoding="utf-8")
