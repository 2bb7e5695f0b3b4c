"""MqttSource against a real Mosquitto broker and the protocol-faithful fake GX."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
from pathlib import Path
from typing import AsyncIterator, Callable, List, Optional, Tuple

import aiomqtt
import pytest

from tests.integration.conftest import (
    Broker,
    FakeGxFactory,
    ac_values_are,
    eventually,
    run_async,
    running,
)
from tests.integration.harness import after_a_gx_reset, mqtt_gx, plant, start_command
from venus_prio.config import BrokerConfig, ControlConfig, SimConfig, VenusConfig
from venus_prio.errors import PortalIdNotFound
from venus_prio.fakes.mqtt_gx import DEFAULT_PORTAL_ID, drive_scenario, plant_values
from venus_prio.fakes.writelog import read_write_log
from venus_prio.sim import scenarios
from venus_prio.sim.plant import Plant, PlantParams
from venus_prio.venus import flashmq, paths
from venus_prio.venus.mqtt import MqttSource
from venus_prio.venus.source import write_confirmed

pytestmark = pytest.mark.integration

PID = DEFAULT_PORTAL_ID
MQTT_LOGGER = "venus_prio.venus.mqtt"


def venus_config(
    broker: Broker,
    *,
    portal_id: Optional[str] = PID,
    keepalive_interval_s: float = 30.0,
    full_publish_timeout_s: float = 2.0,
    heartbeat_timeout_s: float = 5.0,
    portal_id_timeout_s: float = 5.0,
    vrm: bool = False,
    host: Optional[str] = None,
) -> VenusConfig:
    return VenusConfig(
        transport="mqtt",
        broker=BrokerConfig(host=host or broker.host, port=broker.port),
        portal_id=portal_id,
        vrm=vrm,
        portal_id_timeout_s=portal_id_timeout_s,
        keepalive_interval_s=keepalive_interval_s,
        full_publish_timeout_s=full_publish_timeout_s,
        heartbeat_timeout_s=heartbeat_timeout_s,
        reconnect_max_s=1.0,
    )


def control_config(refresh_s: float = 20.0) -> ControlConfig:
    return ControlConfig(max_inverter_power_w=3000.0, refresh_s=refresh_s)


@contextlib.asynccontextmanager
async def ready_source(venus: VenusConfig, *, refresh_s: float = 20.0) -> AsyncIterator[MqttSource]:
    """Run an MqttSource for ``venus`` while entered, from the moment its state is complete."""
    source = MqttSource(venus=venus, control=control_config(refresh_s))
    async with running(source.run()):
        assert await source.wait_ready(5.0)
        yield source


def assert_fake_defaults(source: MqttSource) -> None:
    snap = source.snapshot()
    assert snap.soc == 55.0
    assert snap.active_soc_limit == 10.0
    assert snap.min_soc_setting == 10.0
    assert snap.pv_dc_w == 500.0
    assert snap.dc_system_w is None
    assert snap.battery_power_w == 0.0
    assert snap.ac_input_source == 1
    assert snap.hub4_mode == 1
    assert snap.battery_life_state == 1
    assert snap.dynamic_ess_mode == 0
    assert snap.max_discharge_w == -1.0
    assert (snap.max_discharge_min, snap.max_discharge_max) == (-1.0, 1_000_000.0)
    # Single-phase, no PV inverter: L2, L3 and every AC PV phase are null.
    assert (snap.ac_load_w, snap.grid_w, snap.pv_ac_w) == (500.0, 40.0, None)


class Observer:
    """A third MQTT client that records what is published on the topics it watches."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: List[Tuple[str, bytes]] = []

    async def run(self) -> None:
        async for message in self.client.messages:
            self.seen.append((message.topic.value, bytes(message.payload)))

    def payloads(self, topic: str) -> List[bytes]:
        return [payload for seen_topic, payload in self.seen if seen_topic == topic]


def test_discovers_portal_id_and_learns_unchanging_values(
    mosquitto: Broker, fake_gx: FakeGxFactory
) -> None:
    async def scenario() -> None:
        async with fake_gx(portal_id="abcdef012345") as gx:
            source = MqttSource(
                venus=venus_config(mosquitto, portal_id=None), control=control_config()
            )
            async with running(source.run()):
                assert await source.wait_ready(10.0)
                assert source.portal_id == "abcdef012345"
                # None of these values changed since the fake started: only the full
                # publish after the subscriptions can have delivered them.
                assert_fake_defaults(source)
                assert source.snapshot().connected
                assert len(gx.full_keepalives()) == 1

    run_async(scenario())


def test_portal_id_timeout_raises(mosquitto: Broker) -> None:
    async def scenario() -> None:
        source = MqttSource(
            venus=venus_config(mosquitto, portal_id=None, portal_id_timeout_s=0.5),
            control=control_config(),
        )
        with pytest.raises(PortalIdNotFound, match="N/\\+/system/0/Serial"):
            await source.run()
        assert not source.snapshot().connected

    run_async(scenario())


def test_ready_only_with_our_echo(mosquitto: Broker, fake_gx: FakeGxFactory) -> None:
    async def scenario() -> None:
        async with fake_gx() as gx, aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            gx.paused = True  # a GX that never answers: completions come from the test
            observer = Observer(client)
            await client.subscribe(flashmq.keepalive_topic(PID))
            async with running(observer.run()):
                source = MqttSource(
                    venus=venus_config(mosquitto, full_publish_timeout_s=30.0),
                    control=control_config(),
                )
                async with running(source.run()):
                    topic = flashmq.keepalive_topic(PID)
                    await eventually(lambda: bool(observer.payloads(topic)), what="keepalive")
                    full, echo = flashmq.parse_keepalive_request(observer.payloads(topic)[0])
                    assert full
                    assert echo
                    completed = flashmq.completed_topic(PID)
                    other = {flashmq.ECHO_KEY: f"not-{echo}", "value": 1}
                    await client.publish(completed, json.dumps(other))
                    assert not await source.wait_ready(0.5)
                    ours = {flashmq.ECHO_KEY: echo, "value": 1}
                    await client.publish(completed, json.dumps(ours))
                    assert await source.wait_ready(5.0)

    run_async(scenario())


def test_full_publish_retried_with_new_echo_when_not_completed(
    mosquitto: Broker, fake_gx: FakeGxFactory
) -> None:
    async def scenario() -> None:
        async with fake_gx() as gx:
            gx.paused = True
            source = MqttSource(
                venus=venus_config(mosquitto, full_publish_timeout_s=0.3),
                control=control_config(),
            )
            async with running(source.run()):
                await asyncio.sleep(1.0)
                assert not source.ready
                gx.paused = False
                assert await source.wait_ready(5.0)
            assert_fake_defaults(source)
            # The keepalives sent while paused were not seen; the one that worked carried
            # an echo, and every attempt uses a fresh one.
            echoes = [k.echo for k in gx.full_keepalives()]
            assert echoes
            assert all(echoes)
            assert len(set(echoes)) == len(echoes)

    run_async(scenario())


def test_suppress_republish_cadence(mosquitto: Broker, fake_gx: FakeGxFactory) -> None:
    async def scenario() -> None:
        async with fake_gx() as gx:
            async with ready_source(venus_config(mosquitto, keepalive_interval_s=0.3)):
                await eventually(lambda: len(gx.keepalives) >= 5, what="5 keepalives")
            first, *rest = gx.keepalives
            assert first.full
            assert first.echo
            assert rest
            assert not any(k.full for k in rest)
            times = [k.at for k in gx.keepalives]
            # Never faster than the interval (a little slack for the loop's scheduling).
            assert all(b - a >= 0.25 for a, b in zip(times, times[1:]))
            assert gx.alive

    run_async(scenario())


def test_missing_heartbeat_resends_full_keepalive(
    mosquitto: Broker, fake_gx: FakeGxFactory
) -> None:
    async def scenario() -> None:
        async with fake_gx() as gx, ready_source(
            venus_config(mosquitto, heartbeat_timeout_s=1.0)
        ) as source:
            await eventually(lambda: source.snapshot().alive_at is not None, what="alive")
            await asyncio.sleep(1.5)
            assert len(gx.full_keepalives()) == 1  # heartbeats arrive: nothing re-sent
            gx.heartbeat_enabled = False
            await eventually(lambda: len(gx.full_keepalives()) >= 2, what="a new full keepalive")
            assert gx.full_keepalives()[1].echo != gx.full_keepalives()[0].echo

    run_async(scenario())


def test_soc_read_proves_liveness_without_heartbeat(
    mosquitto: Broker, fake_gx: FakeGxFactory
) -> None:
    async def scenario() -> None:
        async with fake_gx() as gx:
            gx.heartbeat_enabled = False
            async with ready_source(venus_config(mosquitto), refresh_s=0.2) as source:
                await eventually(lambda: source.snapshot().alive_at is not None, what="alive")
                first = source.snapshot().alive_at
                assert first is not None
                await eventually(
                    lambda: (source.snapshot().alive_at or 0.0) > first + 0.3,
                    what="alive_at to advance through R/ answers",
                )
                assert paths.SOC.topic_suffix() in gx.reads
                # A GX that neither beats nor answers does not prove it is alive.
                gx.answer_reads = False
                await asyncio.sleep(0.3)
                frozen = source.snapshot().alive_at
                await asyncio.sleep(1.0)
                assert source.snapshot().alive_at == frozen

    run_async(scenario())


def test_read_back_works_when_not_alive(mosquitto: Broker, fake_gx: FakeGxFactory) -> None:
    async def scenario() -> None:
        async with fake_gx(alive_timeout_s=0.3) as gx, ready_source(
            venus_config(mosquitto)
        ) as source:
            await eventually(lambda: not gx.alive, what="the fake to stop being alive")
            before = source.snapshot().alive_at
            assert await source.read_max_discharge(2.0) == -1.0
            after = source.snapshot().alive_at
            assert after is not None
            assert before is None or after > before
            assert not gx.alive

    run_async(scenario())


def test_write_in_range_applies_and_out_of_range_is_dropped(
    mosquitto: Broker, fake_gx: FakeGxFactory
) -> None:
    async def scenario() -> None:
        async with fake_gx() as gx, aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            observer = Observer(client)
            write_topic = flashmq.w_topic(PID, paths.MAX_DISCHARGE_POWER.topic_suffix())
            await client.subscribe(write_topic)
            source = MqttSource(venus=venus_config(mosquitto), control=control_config())
            async with running(observer.run()), running(source.run()):
                assert await source.wait_ready(5.0)
                assert await write_confirmed(source, 2500.0) is True
                assert gx.setting == 2500.0
                assert [w.value for w in gx.writes] == [2500.0]
                await eventually(
                    lambda: source.snapshot().max_discharge_w == 2500.0, what="N/ of the write"
                )
                await eventually(lambda: bool(observer.payloads(write_topic)), what="W/ seen")
                sent = json.loads(observer.payloads(write_topic)[0])
                assert sent == {"value": 2500}
                assert isinstance(sent["value"], int)

                assert await write_confirmed(source, 2_000_000.0, attempts=2, timeout=0.5) is None
                assert gx.setting == 2500.0
                assert await source.read_max_discharge(2.0) == 2500.0
                assert [w.value for w in gx.writes] == [2500.0]

    run_async(scenario())


def test_broker_restart_reconnects_and_resyncs(
    mosquitto: Broker, fake_gx: FakeGxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=MQTT_LOGGER)

    async def scenario() -> None:
        async with fake_gx() as gx, ready_source(venus_config(mosquitto)) as source:
            assert source.snapshot().connected
            fulls_before = len(gx.full_keepalives())
            mosquitto.stop()
            await eventually(lambda: not source.snapshot().connected, what="disconnected")
            # Changed while nobody could hear it: only the full publish after the
            # reconnect can tell the source.
            await gx.set_value(paths.SOC, 42.0)
            await gx.set_value(paths.MIN_SOC_SETTING, 20.0)
            await asyncio.sleep(2.5)  # several failed reconnect attempts
            mosquitto.start()
            await eventually(lambda: source.snapshot().connected, what="reconnected")
            assert await source.wait_ready(10.0)
            await eventually(lambda: source.snapshot().soc == 42.0, what="SOC resynced")
            assert source.snapshot().min_soc_setting == 20.0
            assert len(gx.full_keepalives()) > fulls_before
            await gx.set_value(paths.SOC, 43.0)
            await eventually(lambda: source.snapshot().soc == 43.0, what="values resume")

    run_async(scenario())
    records = [r for r in caplog.records if r.name == MQTT_LOGGER]
    lost = [r for r in records if r.levelno == logging.WARNING and "broker" in r.getMessage()]
    back = [r for r in records if r.levelno == logging.INFO and "connected to" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]
    assert len(back) == 2  # the first connection and the recovery


def test_service_leaving_makes_values_absent(mosquitto: Broker, fake_gx: FakeGxFactory) -> None:
    async def scenario() -> None:
        async with fake_gx() as gx, ready_source(venus_config(mosquitto)) as source:
            await gx.remove_service("system")
            await eventually(
                lambda: (source.snapshot().soc, source.snapshot().pv_dc_w) == (None, None),
                what="system values absent",
            )
            assert source.snapshot().hub4_mode == 1  # settings did not leave
            await gx.set_value(paths.SOC, 30.0)
            await eventually(lambda: source.snapshot().soc == 30.0, what="SOC back")

    run_async(scenario())


def _garbage(rng: random.Random) -> bytes:
    choices: List[Callable[[], bytes]] = [
        lambda: bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 40))),
        lambda: b"not json",
        lambda: json.dumps(rng.choice(["55", [], [55], {}, True, None, "x" * 50])).encode(),
        lambda: json.dumps({"value": rng.choice(["55", [1], {"v": 1}, True, False])}).encode(),
        lambda: b'{"value": NaN}',
        lambda: b'{"value": Infinity}',
        lambda: b'{"value": -Infinity}',
        lambda: b'{"value": 1e999}',
        lambda: b'{"value": 1' + b"0" * rng.randrange(300, 5000) + b"}",
        lambda: json.dumps({"value": rng.uniform(-1e300, 1e300)}).encode(),
        lambda: json.dumps({"value": rng.randrange(-(10**30), 10**30)}).encode(),
        lambda: json.dumps({"value": 5, "min": rng.choice(["a", None, [1]])}).encode(),
        lambda: b'{"value": 5, "max": NaN}',
        lambda: b'{"value": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        lambda: json.dumps([[{"value": [1, {"value": 2}]}]]).encode(),
        lambda: json.dumps({"value": rng.random() * 100}).encode(),  # valid, for mixing
        lambda: b"",  # valid: absent
    ]
    return rng.choice(choices)()


def test_fuzzed_payloads_never_break_the_source(
    mosquitto: Broker, fake_gx: FakeGxFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=MQTT_LOGGER)
    rng = random.Random(20261124)
    topics = [*flashmq.input_topics(PID), flashmq.completed_topic(PID)]

    async def scenario() -> None:
        async with fake_gx(), aiomqtt.Client(mosquitto.host, mosquitto.port) as client:
            source = MqttSource(venus=venus_config(mosquitto), control=control_config())
            async with running(source.run()) as task:
                assert await source.wait_ready(5.0)
                for topic in topics:  # at least one sure garbage per topic
                    await client.publish(topic, b"\x00garbage")
                for i in range(2000):
                    await client.publish(rng.choice(topics), _garbage(rng))
                    if i % 100 == 0:
                        await asyncio.sleep(0.01)  # let the broker and the source keep up
                soc_topic = flashmq.n_topic(PID, paths.SOC.topic_suffix())
                await client.publish(soc_topic, b'{"value": 77.5}')
                await eventually(lambda: source.snapshot().soc == 77.5, what="the sentinel")
                assert not task.done()
                snap = source.snapshot()
                for name in (
                    "soc",
                    "active_soc_limit",
                    "min_soc_setting",
                    "pv_dc_w",
                    "dc_system_w",
                    "battery_power_w",
                    "max_discharge_w",
                    "max_discharge_min",
                    "max_discharge_max",
                ):
                    value = getattr(snap, name)
                    assert value is None or math.isfinite(value), (name, value)
                for name in ("ac_input_source", "hub4_mode", "battery_life_state"):
                    assert getattr(snap, name) is None or isinstance(getattr(snap, name), int)

    run_async(scenario(), timeout=120.0)
    warned = [
        str(r.args[0])
        for r in caplog.records
        if r.name == MQTT_LOGGER
        and "malformed payload" in r.getMessage()
        and isinstance(r.args, tuple)
    ]
    assert sorted(warned) == sorted(topics)  # exactly once per topic


def test_vrm_mode_against_a_local_broker(mosquitto: Broker, fake_gx: FakeGxFactory) -> None:
    async def scenario() -> None:
        venus = venus_config(mosquitto, vrm=True, host="localhost")
        async with fake_gx(), ready_source(venus) as source:
            assert_fake_defaults(source)

    run_async(scenario())


def test_fake_gx_scenario_drives_the_plant(mosquitto: Broker, fake_gx: FakeGxFactory) -> None:
    sim = SimConfig()
    profile = scenarios.builtin("sunny", sim.seed)
    plant = Plant(PlantParams.from_sim_config(sim, min_soc=15.0), start_soc=50.0)

    async def scenario() -> None:
        async with fake_gx() as gx:
            source = MqttSource(venus=venus_config(mosquitto), control=control_config())
            drive = drive_scenario(gx, profile=profile, plant=plant, dt_s=1.0, speed=3600.0)
            async with running(source.run()), running(drive):
                assert await source.wait_ready(5.0)
                # An hour of simulated day per real second: the SOC leaves the static 55 %.
                await eventually(
                    lambda: source.snapshot().soc not in (None, 55.0), what="SOC from the plant"
                )
                soc = source.snapshot().soc
                assert soc is not None
                assert 0.0 <= soc <= 100.0
                assert source.snapshot().battery_power_w is not None

    run_async(scenario())


def test_ac_loads_grid_and_ac_pv_follow_the_plant(
    mosquitto: Broker, fake_gx: FakeGxFactory
) -> None:
    the_plant = Plant(PlantParams.from_sim_config(SimConfig(), min_soc=10.0), start_soc=50.0)

    async def scenario() -> None:
        async with fake_gx() as gx, ready_source(venus_config(mosquitto)) as source:
            for load_w, pv_ac_w in ((1800.0, 650.0), (420.0, 0.0)):
                step = the_plant.step(
                    1.0, pv_dc_w=300.0, load_w=load_w, pv_ac_w=pv_ac_w, max_discharge_w=-1.0
                )
                for item, value in plant_values(step, ac_pv=True).items():
                    await gx.set_value(item, value)
                # The sums over L1 (from the plant) and L2, L3 (null) on the single-phase GX.
                shown = (load_w, float(round(step.grid_w)), pv_ac_w)
                await eventually(
                    ac_values_are(source, shown), what=f"the plant's AC values {shown}"
                )
            # The system service leaves: absent (0-byte payloads), not the last values.
            await gx.remove_service(paths.SYSTEM)
            await eventually(ac_values_are(source, (None,) * 3), what="AC values absent")

    run_async(scenario())


def test_fake_gx_command_serves_the_override_and_logs_writes(
    mosquitto: Broker, tmp_path: Path
) -> None:
    """``venus-prio fake-gx --override ... --write-log ...`` as the service tests run it."""
    write_log, output = tmp_path / "writes.jsonl", tmp_path / "fake-gx.log"
    args = ["--host", mosquitto.host, "--port", str(mosquitto.port), "--speed", "60"]
    override = ["--override", "reset_every_5s", "--override-expiry-s", "30"]

    async def scenario() -> None:
        fake = await start_command(
            output, "fake-gx", *args, *override, "--write-log", str(write_log)
        )
        try:
            source = MqttSource(venus=venus_config(mosquitto), control=control_config())
            async with running(source.run()):
                assert await source.wait_ready(15.0), output.read_text(encoding="utf-8")
                assert source.snapshot().override_present is True
                await after_a_gx_reset()
                await source.write_override(900.0)
                # The GX sets it back to -1 at the next 5 s boundary: the source sees both.
                await eventually(lambda: source.snapshot().override_w == 900.0, what="900 W")
                async with aiomqtt.Client(mosquitto.host, mosquitto.port) as other:
                    topic = flashmq.w_topic(PID, paths.OVERRIDE_MAX_DISCHARGE.topic_suffix())
                    await other.publish(topic, b'{"value": "x"}')  # dropped: not a number
                await eventually(
                    lambda: source.snapshot().override_w == -1.0, timeout=6.0, what="reset"
                )
        finally:
            fake.terminate()
            await fake.wait()
        logged = [(w.service, w.path, w.value, w.accepted) for w in read_write_log(write_log)]
        assert logged == [
            ("hub4", paths.OVERRIDE_MAX_DISCHARGE.path, 900, True),
            ("hub4", paths.OVERRIDE_MAX_DISCHARGE.path, "x", False),
        ]

    run_async(scenario(), timeout=60.0)


@pytest.mark.parametrize(("variant", "present"), [("honoured", True), ("absent", False)])
def test_override_presence_is_learnt_again_after_each_reconnect(
    mosquitto: Broker, variant: str, present: bool
) -> None:
    async def scenario() -> None:
        async with mqtt_gx(mosquitto, plant(), override=variant):
            source = MqttSource(venus=venus_config(mosquitto), control=control_config())
            async with running(source.run()):
                assert await source.wait_ready(10.0)
                assert source.snapshot().override_present is present
                mosquitto.stop()
                await eventually(lambda: not source.snapshot().connected, what="disconnected")
                # A GX may be updated or replaced while we are away: unknown until complete.
                assert source.snapshot().override_present is None
                mosquitto.start()
                assert await source.wait_ready(15.0)
                assert source.snapshot().override_present is present

    run_async(scenario())


class BrokenHandling(MqttSource):
    """A source whose message handling has a bug on the DC PV topic."""

    def _handle(self, message: aiomqtt.Message, *args: object) -> None:
        if message.topic.value.endswith(paths.PV_DC.topic_suffix()):
            raise RuntimeError("bug in the handling")
        super()._handle(message, *args)  # type: ignore[arg-type]


def test_an_error_in_the_handling_ends_the_source_as_raised(
    mosquitto: Broker, fake_gx: FakeGxFactory
) -> None:
    # Messages are handled in aiomqtt's read callback (DispatchQueue): a bug there must still
    # end the source with its own error, not pass for a broken connection and reconnect.
    async def scenario() -> None:
        async with fake_gx() as gx:
            source = BrokenHandling(venus=venus_config(mosquitto), control=control_config())
            task = asyncio.ensure_future(source.run())
            try:
                await source.wait_ready(5.0)  # the dump carries the PV: it may end the source first
                await gx.set_value(paths.PV_DC, 1234.0)
                done, _ = await asyncio.wait({task}, timeout=5.0)
                assert task in done
                with pytest.raises(RuntimeError, match="bug in the handling"):
                    task.result()
            finally:
                task.cancel()
                await asyncio.wait({task})

    run_async(scenario())
