"""``venus.transport: auto``: the broker goes away mid-run, D-Bus takes over, MQTT comes back.

Both fakes run at once and present the same plant: a value set in the test is set on both, and a
write either fake accepts is mirrored to the other (one GX seen through two doors).
"""

from __future__ import annotations

import dataclasses
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Tuple

import pytest
import yaml

from tests.integration.conftest import Broker, eventually, run_async, running
from tests.integration.harness import (
    BASELINE,
    PID,
    SETTING,
    Mirror,
    config_data,
    control_config,
    dbus_gx,
    journal_at,
    mqtt_gx,
    plant,
    reason_of,
    set_both,
    start_run,
    steering,
    venus_config,
    wait_exit,
)
from venus_prio.config import Config, HomeAssistantConfig, WritesConfig
from venus_prio.model import Reason
from venus_prio.venus import paths
from venus_prio.venus.dbus import DbusSource
from venus_prio.venus.fallback import DBUS, MQTT, FallbackSource
from venus_prio.venus.mqtt import MqttSource

if TYPE_CHECKING:  # imported by pytest_plugins below; importing it first would skip rewriting
    from tests.integration.dbus_fixtures import DbusDaemon

pytest_plugins = ["tests.integration.dbus_fixtures"]
pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("backend", ["dbus_fast", "dbus_next"]),
]

GRACE_S = 2.0


class RecordingFallback(FallbackSource):
    """The real FallbackSource, noting which transport carried each write that went out."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.records: List[Tuple[str, float]] = []

    async def write_max_discharge(self, value_w: float) -> None:
        transport = self.active_transport
        await super().write_max_discharge(value_w)
        self.records.append((transport, value_w))


def test_broker_loss_falls_back_to_dbus_and_returns_to_mqtt(
    mosquitto: Broker, dbus_daemon_process: DbusDaemon, backend: str, tmp_path: Path
) -> None:
    config = Config(
        control=control_config(),
        writes=WritesConfig(deadband_w=100.0, min_increase_interval_s=60.0),
        venus=venus_config(
            "auto",
            broker=mosquitto,
            dbus_address=dbus_daemon_process.address,
            dbus_backend=backend.replace("_", "-"),
        ),
        homeassistant=HomeAssistantConfig(enabled=False),
        state_dir=str(tmp_path),
        # The setting's writes and the late publish of our own value (issue 10.1) across a
        # transport switch: the Mirror carries the setting from one fake to the other.
        actuator=SETTING,
    )

    async def scenario() -> None:
        values = plant()
        async with mqtt_gx(mosquitto, values) as mq, dbus_gx(
            dbus_daemon_process.address, backend, values
        ) as db, running(Mirror(mq, db).run()):
            source = RecordingFallback(
                mqtt=MqttSource(venus=config.venus, control=config.control),
                dbus=DbusSource(venus=config.venus, control=config.control),
                grace_s=GRACE_S,
            )
            async with steering(config, source) as service:
                await eventually(lambda: db.setting == 750.0, what="750 W on both fakes")
                assert (source.active_transport, mq.setting) == (MQTT, 750.0)
                assert source.records == [(MQTT, 750.0)]

                # The broker dies; a cloud comes while it is down.
                mosquitto.stop()
                await set_both(mq, db, paths.PV_DC, 400.0)
                await eventually(
                    lambda: (DBUS, 300.0) in source.records,
                    timeout=10.0,
                    what="300 W written over D-Bus within 10 s of the broker's loss",
                )
                assert source.active_transport == DBUS
                assert db.setting == 300.0
                assert reason_of(service) is Reason.PV_PRIORITY
                await eventually(lambda: mq.setting == 300.0, what="300 W on the GX (one GX)")

                # The broker is back, and after the full publish a late publish shows our earlier
                # 750 W (a broker's queue or bridge delivering it after the newer value). That is
                # venus-prio's own value, never the user's (issue 10.1): before the fix it was
                # adopted as the baseline and later restored as if it were the user's. The GX
                # still holds 300 W: the read-back says so, and nothing is written again.
                mosquitto.start()
                await eventually(
                    lambda: source.active_transport == MQTT, timeout=20.0, what="back on MQTT"
                )
                assert source.snapshot().max_discharge_w == 300.0
                reads_before = len(mq.gx.reads)
                await mq.gx.publish_late(paths.MAX_DISCHARGE_POWER, 750.0)
                await eventually(
                    lambda: source.snapshot().max_discharge_w == 750.0, what="the late publish"
                )
                assert service.status.baseline_w == BASELINE
                await eventually(
                    lambda: source.snapshot().max_discharge_w == 300.0,
                    timeout=15.0,
                    what="the read-back of the value the GX holds",
                )
                assert paths.MAX_DISCHARGE_POWER.topic_suffix() in mq.gx.reads[reads_before:]
                assert source.records == [(MQTT, 750.0), (DBUS, 300.0)]
                assert service.status.baseline_w == BASELINE
                await set_both(mq, db, paths.PV_DC, 250.0)  # 0.8 * 250 - 20 = 180 W
                await eventually(
                    lambda: source.records[-1][0] == MQTT and len(source.records) == 3,
                    what="the next write over MQTT",
                )
                lowered = source.records[-1][1]
                assert lowered < 300.0
                await eventually(lambda: db.setting == lowered, what="the write on both fakes")
                assert service.status.baseline_w == BASELINE
            assert source.switches == 2

        # Stopped: the baseline went back over MQTT.
        transports = [transport for transport, _ in source.records]
        assert transports == [MQTT, DBUS, MQTT, MQTT]
        assert source.records[-1] == (MQTT, BASELINE)
        # No write lost, none sent twice: each fake saw exactly what went out through it.
        assert mq.written() == [v for t, v in source.records if t == MQTT]
        assert db.written() == [v for t, v in source.records if t == DBUS]
        journal = journal_at(tmp_path)
        assert (journal.portal_id, journal.baseline_w, journal.last_written_w, journal.clean) == (
            PID,
            BASELINE,
            BASELINE,
            True,
        )

    run_async(scenario(), timeout=90.0)


def test_run_command_with_auto_steers_over_dbus_without_a_broker(
    mosquitto: Broker, dbus_daemon_process: DbusDaemon, backend: str, tmp_path: Path
) -> None:
    log_file = tmp_path / "run.log"
    state_dir = tmp_path / "state"
    venus = venus_config(
        "auto",
        broker=mosquitto,
        dbus_address=dbus_daemon_process.address,
        dbus_backend=backend.replace("_", "-"),
    )
    config_file = tmp_path / "config.yaml"
    # The hand-back of the setting's baseline on SIGTERM and the clean journal.
    data = config_data(venus, state_dir, actuator=SETTING)
    config_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    mosquitto.stop()  # the GX's broker is off: `auto` must find the GX on D-Bus

    async def scenario() -> None:
        async with dbus_gx(dbus_daemon_process.address, backend, plant()) as db:
            process = await start_run(config_file, log_file, db.env())
            try:
                await eventually(lambda: db.setting == 750.0, timeout=20.0, what="steering")
            finally:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            code = await wait_exit(process, log_file)
            output = log_file.read_text(encoding="utf-8")
            assert code == 0, output
            assert db.written() == [750.0, BASELINE]
            assert "switching mqtt -> dbus" in output
            assert f"connected to D-Bus ({backend})" in output
            assert journal_at(state_dir).clean

    run_async(scenario(), timeout=90.0)


def test_broker_without_a_gx_runs_on_dbus_and_keeps_trying_mqtt(
    mosquitto: Broker,
    dbus_daemon_process: DbusDaemon,
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # MQTT switched off on the GX: the broker runs but no GX publishes on it, so the portal id
    # is never found. `auto` must not stop: D-Bus carries on, MQTT is retried until it works.
    venus = dataclasses.replace(
        venus_config(
            "auto",
            broker=mosquitto,
            dbus_address=dbus_daemon_process.address,
            dbus_backend=backend.replace("_", "-"),
        ),
        portal_id=None,
        portal_id_timeout_s=0.5,
    )
    control = control_config()
    caplog.set_level(logging.DEBUG, logger="venus_prio.venus.fallback")

    def attempts() -> int:
        return sum("no GX on the MQTT broker" in r.getMessage() for r in caplog.records)

    async def scenario() -> None:
        async with dbus_gx(dbus_daemon_process.address, backend, plant()):
            source = FallbackSource(
                mqtt=MqttSource(venus=venus, control=control),
                dbus=DbusSource(venus=venus, control=control),
                grace_s=GRACE_S,
            )
            async with running(source.run()) as task:
                await eventually(
                    lambda: source.active_transport == DBUS and source.ready,
                    what="running on D-Bus",
                )
                assert source.snapshot().max_discharge_w == BASELINE
                await eventually(lambda: attempts() >= 3, what="MQTT tried again, and again")
                assert not task.done()
                assert source.active_transport == DBUS
                # The user turns MQTT on again: the GX appears on the broker.
                async with mqtt_gx(mosquitto, plant()):
                    await eventually(
                        lambda: source.active_transport == MQTT,
                        timeout=20.0,
                        what="back on MQTT once a GX publishes there",
                    )
                    assert source.ready and source.portal_id == PID
                    assert source.snapshot().max_discharge_w == BASELINE
            assert source.switches == 2

    run_async(scenario(), timeout=60.0)
