"""Home Assistant over a real Mosquitto broker: discovery, state, availability, commands, cleanup.

A listener subscribes as Home Assistant would (``homeassistant/#`` and the state prefix) while
the service steers the fake GX; commands are published the way Home Assistant publishes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncContextManager, AsyncIterator, Dict, Iterator, List, Optional, Tuple

import aiomqtt
import pytest

from tests.integration.conftest import Broker, eventually, run_async, running, started
from tests.integration.harness import (
    BASELINE,
    PID,
    PLANT,
    SETTING,
    MqttGx,
    mqtt_config_file,
    mqtt_gx,
    reason_of,
    run_command,
    serving,
    steered,
)
from venus_prio.config import BrokerConfig, Config, HomeAssistantConfig
from venus_prio.homeassistant import (
    PAYLOAD_OFFLINE,
    PAYLOAD_ONLINE,
    discovery_messages,
    parse_command,
    state_prefix,
    state_topics,
)
from venus_prio.journal import journal_path, load_journal
from venus_prio.model import Reason
from venus_prio.service import Service
from venus_prio.venus import paths

pytestmark = pytest.mark.integration

HA = HomeAssistantConfig()
TOPICS = state_topics(state_prefix(HA, portal_id=PID))
ALL_CONFIGS = {
    m.topic for m in discovery_messages(HA, portal_id=PID, sw_version="x", controls=True)
}
READ_ONLY_CONFIGS = len(discovery_messages(HA, portal_id=PID, sw_version="x", controls=False))
HA_STATUS = f"{HA.discovery_prefix}/status"
PUBLISHER_LOG = "venus_prio.ha_publisher"


# -- helpers ------------------------------------------------------------------------------


def ha_config(
    gx: MqttGx, state_dir: Path, *, ha_broker: Optional[Broker] = None, controls: bool = True
) -> Config:
    """Return the test config for ``gx`` with Home Assistant on (on ``ha_broker`` if given)."""
    own = None if ha_broker is None else BrokerConfig(host=ha_broker.host, port=ha_broker.port)
    # The state is checked against the setting on the GX (written_w, the baseline that mode
    # "off" restores); the service on the override is in test_override_service.py.
    return gx.config(
        state_dir,
        homeassistant=HomeAssistantConfig(controls=controls, broker=own),
        actuator=SETTING,
    )


def steered_with_ha(gx: MqttGx, state_dir: Path, **options: Any) -> AsyncContextManager[Service]:
    """Run the service and its publisher (``ha_config`` ``options``); enter once it steers."""
    return steered(gx, ha_config(gx, state_dir, **options), publish=True)


def steering_now(gx: MqttGx) -> bool:
    """Return True when the GX holds a value of venus-prio's own (not the baseline)."""
    return bool(gx.written()) and gx.setting != BASELINE


@dataclass(frozen=True)
class Seen:
    topic: str
    payload: bytes
    retain: bool


class HaListener:
    """An MQTT client subscribed like Home Assistant: records every message it receives."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: List[Seen] = []

    async def collect(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            assert isinstance(payload, (bytes, bytearray))
            self.seen.append(Seen(message.topic.value, bytes(payload), message.retain))

    def on(self, topic: str) -> List[Seen]:
        return [s for s in self.seen if s.topic == topic]

    def last(self, topic: str) -> Optional[bytes]:
        found = self.on(topic)
        return found[-1].payload if found else None

    def states(self) -> List[Dict[str, Any]]:
        return [json.loads(s.payload) for s in self.on(TOPICS.state) if s.payload]

    def state(self) -> Dict[str, Any]:
        states = self.states()
        return states[-1] if states else {}

    def configs(self) -> List[Seen]:
        return [s for s in self.seen if s.topic in ALL_CONFIGS]

    def ha_topics(self) -> List[str]:
        return [
            s.topic for s in self.seen if s.topic.split("/")[0] in ("homeassistant", "venus_prio")
        ]

    async def command(self, topic: str, payload: bytes) -> None:
        await self.client.publish(topic, payload, qos=1)


@contextlib.asynccontextmanager
async def listening(broker: Broker) -> AsyncIterator[HaListener]:
    """Yield a listener on ``homeassistant/#`` and the state prefix of ``broker``."""
    async with aiomqtt.Client(broker.host, broker.port) as client:
        listener = HaListener(client)
        await client.subscribe([("homeassistant/#", 1), (f"{TOPICS.base}/#", 1)])
        async with running(listener.collect()):
            yield listener


@contextlib.asynccontextmanager
async def gx_and_ha(broker: Broker) -> AsyncIterator[Tuple[MqttGx, HaListener]]:
    """Yield the fake GX on ``broker`` (``PLANT``) and a Home Assistant listener there."""
    async with mqtt_gx(broker, PLANT) as gx, listening(broker) as ha:
        yield gx, ha


def actuator_writes(state: Dict[str, Any]) -> Tuple[Optional[int], Optional[int]]:
    """Return the (flash, override) write totals of a state document."""
    return state.get("writes_total"), state.get("override_writes_total")


def status_writes(service: Service) -> Tuple[Optional[int], Optional[int]]:
    override = service.status.override_counters
    return service.status.counters.total, None if override is None else override.total


def warnings_by_topic(caplog: pytest.LogCaptureFixture) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for record in caplog.records:
        if record.name == PUBLISHER_LOG and record.levelno >= logging.WARNING:
            topic = str(record.args[0]) if isinstance(record.args, tuple) else ""
            counts[topic] = counts.get(topic, 0) + 1
    return counts


@pytest.fixture
def ha_broker(mosquitto: Broker, tmp_path: Path) -> Iterator[Broker]:
    """Yield a second Mosquitto (Home Assistant's own broker) beside the GX broker."""
    workdir = tmp_path / "ha-broker"
    workdir.mkdir()
    with started(Broker(mosquitto.binary, workdir)) as broker:
        yield broker


# -- in-process ---------------------------------------------------------------------------


def test_discovery_is_retained_and_the_state_follows_decisions(
    mosquitto: Broker, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with gx_and_ha(mosquitto) as (gx, ha):
            async with steered_with_ha(gx, tmp_path) as service:
                # The decision is published first, the write that follows it in the next state.
                await eventually(
                    lambda: ha.state().get("target_w") == ha.state().get("written_w") == gx.setting,
                    what="the written target in the state",
                )
                state = ha.state()
                assert state["reason"] == Reason.PV_PRIORITY.value
                assert (state["written_w"], state["baseline_w"]) == (gx.setting, BASELINE)
                assert (state["mode"], state["enabled"], state["ac_priority"]) == (
                    "auto",
                    True,
                    True,
                )
                assert ha.last(TOPICS.availability) == PAYLOAD_ONLINE.encode()
                assert {s.topic for s in ha.configs()} == ALL_CONFIGS
                # The actuator in use and the two kinds of writes, as the service counts them.
                await eventually(
                    lambda: (
                        ha.state().get("actuator") == service.status.actuator
                        and actuator_writes(ha.state()) == status_writes(service)
                    ),
                    what="the actuator and its write counters in the state",
                )
                assert sum(w for w in actuator_writes(ha.state()) if w is not None) >= 1
                config = json.loads(ha.last(sorted(ALL_CONFIGS)[0]) or b"{}")
                assert config["availability_topic"] == TOPICS.availability

                # A late subscriber (Home Assistant started later) still gets it all, retained.
                async with listening(mosquitto) as late:
                    await eventually(
                        lambda: (
                            {s.topic for s in late.configs()} == ALL_CONFIGS
                            and late.state().get("reason") == Reason.PV_PRIORITY.value
                        ),
                        what="retained discovery and state",
                    )
                    assert all(s.retain for s in late.seen)
                    assert late.last(TOPICS.availability) == PAYLOAD_ONLINE.encode()

                # The SOC drops below the floor: a new decision, a new state document.
                await gx.set_value(paths.SOC, 9.5)
                await eventually(
                    lambda: ha.state().get("reason") == Reason.BELOW_FLOOR.value,
                    what="BELOW_FLOOR in the state",
                )
                assert reason_of(service) is Reason.BELOW_FLOOR
                await eventually(lambda: gx.setting == 0.0, what="hold written")
                await eventually(
                    lambda: ha.state().get("written_w") == 0, what="the hold in the state"
                )
                assert ha.state()["target_w"] == 0
                assert ha.state()["soc"] == 9.5
            # A clean stop: the baseline is back, and Home Assistant is told the device is gone.
            await eventually(
                lambda: ha.last(TOPICS.availability) == PAYLOAD_OFFLINE.encode(),
                what="offline after a clean stop",
            )
            assert gx.setting == BASELINE

    run_async(scenario())


def test_home_assistant_online_triggers_a_republish(mosquitto: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gx_and_ha(mosquitto) as (gx, ha), steered_with_ha(gx, tmp_path):
            await eventually(lambda: len(ha.configs()) == len(ALL_CONFIGS), what="discovery")
            await eventually(lambda: bool(ha.states()), what="a state")
            await asyncio.sleep(0.3)
            assert len(ha.configs()) == len(ALL_CONFIGS)  # published once, not per tick
            # Anything but "online" on the status topic is not a restart of Home Assistant.
            await ha.command(HA_STATUS, b"offline")
            await ha.command(HA_STATUS, PAYLOAD_ONLINE.encode())
            await eventually(
                lambda: len(ha.configs()) == 2 * len(ALL_CONFIGS), what="discovery again"
            )
            republished = ha.configs()[len(ALL_CONFIGS) :]
            assert {s.topic for s in republished} == ALL_CONFIGS
            assert ha.on(TOPICS.availability)[-1].payload == PAYLOAD_ONLINE.encode()
            await asyncio.sleep(0.3)
            assert len(ha.configs()) == 2 * len(ALL_CONFIGS)

    run_async(scenario())


def test_commands_switch_the_mode_and_restore_the_baseline(
    mosquitto: Broker, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with gx_and_ha(mosquitto) as (gx, ha), steered_with_ha(gx, tmp_path) as service:
            steering_w = gx.setting

            await ha.command(TOPICS.set_mode, b"off")
            await eventually(lambda: gx.setting == BASELINE, what="the baseline written")
            assert gx.written()[-1] == BASELINE
            assert service.status.mode == "off"
            assert reason_of(service) is Reason.STAND_ASIDE_DISABLED
            await eventually(
                lambda: (ha.state().get("mode"), ha.state().get("enabled")) == ("off", False),
                what="mode off in the state",
            )
            journal = load_journal(journal_path(tmp_path))
            assert journal is not None and journal.mode == "off"

            await ha.command(TOPICS.set_mode, b"auto")
            await eventually(lambda: gx.setting == steering_w, what="steering resumed")
            await eventually(lambda: ha.state().get("mode") == "auto", what="mode auto")

            # The switch: OFF is mode off, ON is mode auto.
            await ha.command(TOPICS.set_enabled, b"OFF")
            await eventually(lambda: gx.setting == BASELINE, what="switched off")
            assert service.status.mode == "off"
            await ha.command(TOPICS.set_enabled, b"ON")
            await eventually(lambda: gx.setting == steering_w, what="switched on")
            assert service.status.mode == "auto"

            # The button writes the user's own value back (steering then goes on).
            before = len(gx.written())
            await ha.command(TOPICS.set_restore, b"PRESS")
            await eventually(
                lambda: BASELINE in gx.written()[before:], what="the baseline restored"
            )
            assert service.status.mode == "auto"

    run_async(scenario())


def test_the_mode_survives_a_restart(mosquitto: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gx_and_ha(mosquitto) as (gx, ha):
            async with steered_with_ha(gx, tmp_path) as service:
                await ha.command(TOPICS.set_mode, b"dry-run")
                await eventually(lambda: service.status.mode == "dry-run", what="dry-run")
                await eventually(lambda: gx.setting == BASELINE, what="handed back")
            count = len(gx.written())

            async with serving(ha_config(gx, tmp_path)) as again:
                assert again.status.mode == "dry-run"
                await eventually(
                    lambda: (
                        reason_of(again) is Reason.PV_PRIORITY
                        and ha.state().get("dry_run") is True
                        and ha.state().get("mode") == "dry-run"
                    ),
                    what="dry-run in the state after the restart",
                )
                await asyncio.sleep(0.5)
                # Decided, but nothing written: the mode came back from the journal.
                assert len(gx.written()) == count
                assert gx.setting == BASELINE

    run_async(scenario())


def _fuzz_payloads(seed: int, count: int) -> List[bytes]:
    """Return ``count`` payloads, none of them a valid command on any command topic."""
    rng = random.Random(seed)
    near = [b"on", b"off", b"On", b"ON ", b" OFF", b"press", b"PRESS\n", b"Auto", b"auto ", b"",
            b"dry_run", b"DRY-RUN", b"\x00", b"null", b"1", b"true", b'{"mode": "off"}',
            "ON\u200b".encode(), b"\xff\xfe", b"OFFF"]  # fmt: skip
    payloads: List[bytes] = []
    while len(payloads) < count:
        kind = rng.randrange(3)
        if kind == 0:
            payload = rng.choice(near)
        elif kind == 1:
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        else:
            alphabet = "abcdefghijklmnopqrstuvwxyzONFPRESUTD-_ \n{}\"'"
            payload = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 12))).encode()
        if all(parse_command(topic, payload, TOPICS) is None for topic in TOPICS.commands):
            payloads.append(payload)
    return payloads


def test_malformed_commands_change_nothing_and_warn_once_per_topic(
    mosquitto: Broker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(20261124)
    payloads = _fuzz_payloads(seed=7, count=1000)

    async def scenario() -> None:
        async with gx_and_ha(mosquitto) as (gx, ha), steered_with_ha(gx, tmp_path) as service:
            await eventually(lambda: len(ha.configs()) == len(ALL_CONFIGS), what="discovery")
            before = list(gx.written())
            for payload in payloads:
                await ha.command(rng.choice(TOPICS.commands), payload)
            # Commands are handled in order: once the re-publish that an "online" asks for
            # arrives, every malformed command before it was dealt with.
            await ha.command(HA_STATUS, PAYLOAD_ONLINE.encode())
            await eventually(
                lambda: len(ha.configs()) == 2 * len(ALL_CONFIGS),
                timeout=30.0,
                what="the re-publish after the fuzz",
            )
            assert gx.written() == before
            assert service.status.mode == "auto"
            assert ha.state()["mode"] == "auto"
            journal = load_journal(journal_path(tmp_path))
            assert journal is not None and journal.mode == "auto"

    with caplog.at_level(logging.WARNING, logger=PUBLISHER_LOG):
        run_async(scenario(), timeout=90.0)
    assert warnings_by_topic(caplog) == {topic: 1 for topic in TOPICS.commands}


def test_read_only_without_controls(mosquitto: Broker, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with gx_and_ha(mosquitto) as (gx, ha), steered_with_ha(
            gx, tmp_path, controls=False
        ) as service:
            await eventually(lambda: bool(ha.states()), what="a state")
            components = {s.topic.split("/")[1] for s in ha.configs()}
            assert components == {"sensor", "binary_sensor"}
            await ha.command(TOPICS.set_mode, b"off")
            await ha.command(HA_STATUS, PAYLOAD_ONLINE.encode())
            await eventually(lambda: len(ha.configs()) > READ_ONLY_CONFIGS, what="the re-publish")
            assert service.status.mode == "auto"
            assert steering_now(gx)

    run_async(scenario())


def test_a_separate_broker_keeps_the_gx_broker_clean(
    mosquitto: Broker, ha_broker: Broker, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with gx_and_ha(mosquitto) as (gx, on_gx), listening(ha_broker) as ha:
            async with steered_with_ha(gx, tmp_path, ha_broker=ha_broker) as service:
                await eventually(
                    lambda: (
                        {s.topic for s in ha.configs()} == ALL_CONFIGS
                        and ha.state().get("target_w") == gx.setting
                    ),
                    what="discovery and state on Home Assistant's broker",
                )
                # Commands arrive over Home Assistant's broker too.
                await ha.command(TOPICS.set_mode, b"off")
                await eventually(lambda: gx.setting == BASELINE, what="mode off")
                assert service.status.mode == "off"
            await eventually(
                lambda: ha.last(TOPICS.availability) == PAYLOAD_OFFLINE.encode(), what="offline"
            )
            assert on_gx.ha_topics() == []
        # Nothing retained either: a late subscriber on the GX broker gets nothing.
        async with listening(mosquitto) as late:
            await asyncio.sleep(0.5)
            assert late.seen == []

    run_async(scenario())


def test_an_unreachable_home_assistant_broker_does_not_stop_steering(
    mosquitto: Broker,
    ha_broker: Broker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ha_broker.stop()  # its port is now closed: every connection attempt is refused

    async def scenario() -> None:
        async with mqtt_gx(mosquitto, PLANT) as gx:
            async with steered_with_ha(gx, tmp_path, ha_broker=ha_broker) as service:
                assert reason_of(service) is Reason.PV_PRIORITY
                await asyncio.sleep(2.5)  # a few reconnect attempts
                # Home Assistant's broker comes up: the publisher connects and catches up.
                ha_broker.start()
                async with listening(ha_broker) as ha:
                    await eventually(
                        lambda: ha.state().get("target_w") == gx.setting,
                        what="the state once the broker is up",
                    )
            assert gx.setting == BASELINE

    with caplog.at_level(logging.INFO, logger=PUBLISHER_LOG):
        run_async(scenario())
    messages = [r.getMessage() for r in caplog.records if r.name == PUBLISHER_LOG]
    assert sum("cannot connect" in m for m in messages) == 1, messages
    assert sum("connected to the MQTT broker" in m for m in messages) == 1, messages


# -- the real command as a subprocess ------------------------------------------------------


def write_config_file(
    broker: Broker, tmp_path: Path, *, ha_broker: Optional[Broker] = None
) -> Path:
    """Write ``tmp_path/config.yaml`` for ``python -m venus_prio`` with Home Assistant on."""
    homeassistant: Dict[str, Any] = {"enabled": True}
    if ha_broker is not None:
        homeassistant["broker"] = {"host": ha_broker.host, "port": ha_broker.port}
    return mqtt_config_file(
        broker,
        tmp_path / "state",
        tmp_path / "config.yaml",
        homeassistant=homeassistant,
        actuator=SETTING,
    )


def test_sigkill_leaves_the_device_offline(mosquitto: Broker, tmp_path: Path) -> None:
    log_file = tmp_path / "run.log"
    config_file = write_config_file(mosquitto, tmp_path)

    async def scenario() -> None:
        async with gx_and_ha(mosquitto) as (gx, ha):
            await gx.run_until(
                config_file,
                log_file,
                stop=signal.SIGKILL,
                done=lambda: (
                    ha.last(TOPICS.availability) == PAYLOAD_ONLINE.encode()
                    and ha.state().get("target_w") == gx.setting != BASELINE
                ),
                what="online and steering",
            )
            # The broker sends the last will: no clean stop happened, yet the device is offline.
            await eventually(
                lambda: ha.last(TOPICS.availability) == PAYLOAD_OFFLINE.encode(),
                what="the last will",
            )
            assert gx.setting != BASELINE  # nothing handed back: it really was killed
        async with listening(mosquitto) as late:
            await eventually(
                lambda: late.last(TOPICS.availability) == PAYLOAD_OFFLINE.encode(),
                what="offline retained",
            )

    run_async(scenario(), timeout=90.0)


def test_ha_cleanup_removes_the_retained_topics(
    mosquitto: Broker, ha_broker: Broker, tmp_path: Path
) -> None:
    log_file = tmp_path / "cleanup.log"
    config_file = write_config_file(mosquitto, tmp_path, ha_broker=ha_broker)

    async def scenario() -> None:
        async with mqtt_gx(mosquitto, PLANT) as gx, steered_with_ha(
            gx, tmp_path, ha_broker=ha_broker
        ):
            pass  # steered once: the clean stop leaves the retained topics behind
        async with listening(ha_broker) as before:
            await eventually(
                lambda: (
                    {s.topic for s in before.configs()} == ALL_CONFIGS
                    and bool(before.states())
                    and before.last(TOPICS.availability) == PAYLOAD_OFFLINE.encode()
                ),
                what="the retained topics the service left",
            )
        code = await run_command(log_file, "ha-cleanup", "--config", str(config_file))
        assert code == 0, log_file.read_text(encoding="utf-8")
        async with listening(ha_broker) as late:
            await asyncio.sleep(0.5)
            assert late.seen == [], [s.topic for s in late.seen]

    run_async(scenario(), timeout=90.0)


def test_ha_cleanup_fails_without_a_broker(ha_broker: Broker, tmp_path: Path) -> None:
    log_file = tmp_path / "cleanup.log"
    config_file = write_config_file(ha_broker, tmp_path, ha_broker=ha_broker)
    ha_broker.stop()

    code = run_async(run_command(log_file, "ha-cleanup", "--config", str(config_file)))
    assert code == 1
    assert "Cannot reach the MQTT broker" in log_file.read_text(encoding="utf-8")
