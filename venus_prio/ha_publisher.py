"""The Home Assistant side of the service: one MQTT client publishing discovery, state, controls.

How it works: ``HomeAssistantPublisher.run`` keeps one aiomqtt client connected to the GX broker
(the default: ``venus.broker``) or to ``homeassistant.broker``, reconnecting with capped backoff.
Each connection leaves ``offline`` as its retained last will on the availability topic, publishes
``online``, the retained discovery configs and the state, and then waits for the next message,
the next status change of the service or the state heartbeat, whichever comes first. Discovery is
published again whenever Home Assistant announces itself with ``online`` on
``<discovery_prefix>/status``. Commands (``homeassistant.controls``) go through the pure
``parse_command``; valid ones reach the service through ``on_command``, anything else is logged
once per topic and ignored. Everything that builds a message lives in ``homeassistant.py``.

The publisher never steers: it reads ``ServiceStatus`` and hands commands over. Its own failures
(broker down, a bug) are logged and retried; they never reach the control loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Dict, List, Optional, Protocol

import aiomqtt

from venus_prio import __version__
from venus_prio.config import ENV_HA_PASSWORD, Config, HomeAssistantConfig, VenusConfig
from venus_prio.homeassistant import (
    PAYLOAD_ONLINE,
    STATE_HEARTBEAT_S,
    Command,
    CommandKind,
    Message,
    Topics,
    availability_message,
    cleanup_messages,
    discovery_messages,
    parse_command,
    state_document,
    state_message,
    state_prefix,
    state_topics,
)
from venus_prio.status import ServiceStatus
from venus_prio.venus import flashmq
from venus_prio.venus.mqtt import (
    Endpoint,
    MessagePump,
    Reconnect,
    WarnOnce,
    login_problem,
    make_client,
    resolve_endpoint,
)

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1

FIRST_BACKOFF_S = 1.0
QOS = 1  # retained configs and the availability must arrive; the broker keeps them
# On a clean stop the ``offline`` publication gets this long; the caller cancels again soon after.
OFFLINE_TIMEOUT_S = 0.4
# Keys of the state document that change on their own: no reason to publish before the heartbeat.
_VOLATILE_KEYS = frozenset({"data_age_s"})
_MIN_WAIT_S = 0.001

CommandCallback = Callable[[Command], Awaitable[None]]


class Controls(Protocol):
    """What a Home Assistant command can ask of the service."""

    async def set_mode(self, mode: str) -> None: ...

    async def restore_baseline(self) -> bool: ...


def command_mode(command: Command) -> Optional[str]:
    """Return the mode a command asks for: the switch maps on/off to "auto"/"off"; None if none."""
    if command.kind is CommandKind.SET_MODE:
        return command.mode
    if command.kind is CommandKind.SET_ENABLED:
        return "auto" if command.enabled else "off"
    return None


def command_handler(controls: Controls) -> CommandCallback:
    """Return the callback that carries out a command on ``controls`` (the ``Service``)."""

    async def handle(command: Command) -> None:
        mode = command_mode(command)
        if mode is not None:
            log.info("Home Assistant asks for mode %s", mode)
            await controls.set_mode(mode)
        elif command.kind is CommandKind.RESTORE:
            log.info("Home Assistant asks to restore the baseline now")
            await controls.restore_baseline()

    return handle


def ha_endpoint(homeassistant: HomeAssistantConfig, venus: VenusConfig) -> Endpoint:
    """Return the broker Home Assistant listens on: ``homeassistant.broker``, else the GX's."""
    broker = homeassistant.broker
    if broker is None:
        return resolve_endpoint(venus)
    username = broker.username
    if broker.password is not None and username is None:
        # MQTT can carry a password only together with a user name.
        username = "venus-prio"
    return Endpoint(
        broker.host,
        broker.port,
        broker.tls,
        username,
        broker.password,
        key="homeassistant.broker",
        password_env=ENV_HA_PASSWORD,
        # A regular broker: its certificate names the host it is reached at, as TLS expects.
        server_name=broker.tls.server_name,
    )


def _client(endpoint: Endpoint, *, will: Optional[Message] = None) -> aiomqtt.Client:
    last_will = (
        None
        if will is None
        else aiomqtt.Will(will.topic, will.payload.encode("utf-8"), qos=QOS, retain=will.retain)
    )
    return make_client(endpoint, name="venus-prio-ha", will=last_will)


async def _publish(client: aiomqtt.Client, message: Message) -> None:
    await client.publish(
        message.topic, message.payload.encode("utf-8"), qos=QOS, retain=message.retain
    )


def _state_fields(status: ServiceStatus) -> Dict[str, Any]:
    """Return the keyword arguments of ``state_document``/``state_message`` besides the decision."""
    return {
        "written_w": status.written_w,
        "battery_power_w": status.battery_power_w,
        "data_age_s": status.data_age_s,
        "transport": status.transport,
        "writes": status.counters,
        "dry_run": status.dry_run,
        "enabled": status.enabled,
        "mode": status.mode,
        "baseline_w": status.baseline_w,
        "actuator": status.actuator,
        "actuator_why": status.actuator_why,
        "override_writes": status.override_counters,
        "benefit": status.benefit,
    }


class HomeAssistantPublisher:
    """Publish the service to Home Assistant over MQTT and hand its commands to the service.

    ``changed`` is set by the service after every step that may change ``status()`` (see
    ``Service.watch``); the publisher clears it. Construct it inside the running event loop.
    """

    def __init__(
        self,
        *,
        homeassistant: HomeAssistantConfig,
        venus: VenusConfig,
        portal_id: str,
        status: Callable[[], ServiceStatus],
        changed: asyncio.Event,
        on_command: CommandCallback,
        sw_version: str = __version__,
    ) -> None:
        self._ha = homeassistant
        self._reconnect_max_s = venus.reconnect_max_s
        self._endpoint = ha_endpoint(homeassistant, venus)
        self._status = status
        self._changed = changed
        self._on_command = on_command
        self.topics: Topics = state_topics(state_prefix(homeassistant, portal_id=portal_id))
        self._discovery = discovery_messages(
            homeassistant,
            portal_id=portal_id,
            sw_version=sw_version,
            controls=homeassistant.controls,
        )
        self._ha_status_topic = f"{homeassistant.discovery_prefix}/status"
        self._last_state: Optional[Dict[str, Any]] = None
        self._next_heartbeat = 0.0
        self._warn_malformed = WarnOnce(log, "Home Assistant: ignoring malformed command")
        self._failed_once = False

    # -- public --------------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected and publishing until cancelled; never raise anything else."""
        retry = Reconnect(self._endpoint, self._reconnect_max_s, who="Home Assistant: ", logger=log)
        while True:
            connected = False
            wait = FIRST_BACKOFF_S
            try:
                will = availability_message(self.topics, online=False)
                async with _client(self._endpoint, will=will) as client:
                    connected = True
                    retry.connected()
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                wait = await retry.failed(exc, was_connected=connected, note="; steering goes on")
            except Exception:
                # A bug here must not stop steering: log it (once in full) and start afresh.
                if not self._failed_once:
                    log.exception("Home Assistant publisher failed; retrying")
                    self._failed_once = True
                else:
                    log.debug("Home Assistant publisher failed again", exc_info=True)
            await asyncio.sleep(wait)

    # -- one connection ------------------------------------------------------------------

    async def _serve(self, client: aiomqtt.Client) -> None:
        subscriptions = [(self._ha_status_topic, 0)]
        if self._ha.controls:
            subscriptions += [(topic, QOS) for topic in self.topics.commands]
        await client.subscribe(subscriptions)
        await self._announce(client)
        pump = MessagePump(client)
        try:
            await self._loop(client, pump)
        except asyncio.CancelledError:
            await self._say_offline(client)
            raise
        finally:
            await pump.aclose()

    async def _loop(self, client: aiomqtt.Client, pump: MessagePump) -> None:
        loop = asyncio.get_running_loop()
        change: Optional[asyncio.Future[Any]] = None
        read: Optional[asyncio.Future[Optional[aiomqtt.Message]]] = None
        try:
            while True:
                if change is None:
                    change = asyncio.ensure_future(self._changed.wait())
                # Cancelling a read loses nothing: the pump keeps its pending read for the next.
                read = asyncio.ensure_future(
                    pump.get(max(self._next_heartbeat - loop.time(), _MIN_WAIT_S))
                )
                await asyncio.wait({read, change}, return_when=asyncio.FIRST_COMPLETED)
                if change.done():
                    change = None
                    self._changed.clear()
                message = None
                if read.done():
                    message = read.result()
                else:
                    read.cancel()
                    await asyncio.wait({read})
                read = None
                if message is not None:
                    await self._handle(client, message)
                await self._publish_state(client, force=False)
        finally:
            for task in (change, read):
                if task is None:
                    continue
                if not task.done():
                    task.cancel()
                    await asyncio.wait({task})
                if not task.cancelled():
                    task.exception()  # retrieved: a lost connection is reported by ``run``

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Publish ``online``, every discovery config and the state."""
        await _publish(client, availability_message(self.topics, online=True))
        for message in self._discovery:
            await _publish(client, message)
        await self._publish_state(client, force=True)

    async def _say_offline(self, client: aiomqtt.Client) -> None:
        """Mark the device offline on a clean stop (the last will covers only a lost connection)."""
        publish = asyncio.ensure_future(
            _publish(client, availability_message(self.topics, online=False))
        )
        await asyncio.wait({publish}, timeout=OFFLINE_TIMEOUT_S)
        if not publish.done():
            publish.cancel()
            await asyncio.wait({publish})
        if not publish.cancelled() and publish.exception() is not None:
            log.debug("Home Assistant: could not publish offline: %s", publish.exception())

    async def _publish_state(self, client: aiomqtt.Client, *, force: bool) -> None:
        """Publish the state when it changed, when the heartbeat is due, or when forced."""
        status = self._status()
        decision = status.decision
        if decision is None:
            return  # no baseline yet: nothing to show, the entities stay unknown
        fields = _state_fields(status)
        document = state_document(decision, **fields)
        steady = {key: value for key, value in document.items() if key not in _VOLATILE_KEYS}
        now = asyncio.get_running_loop().time()
        if not force and steady == self._last_state and now < self._next_heartbeat:
            return
        await _publish(client, state_message(self.topics, document))
        self._last_state = steady
        self._next_heartbeat = now + STATE_HEARTBEAT_S

    async def _handle(self, client: aiomqtt.Client, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        if message.retain:
            # A retained command would be carried out again on every reconnect; a retained
            # birth message is old news.
            log.debug("Home Assistant: ignoring a retained message on %s", topic)
            return
        if topic == self._ha_status_topic:
            if message.payload in (PAYLOAD_ONLINE, PAYLOAD_ONLINE.encode("utf-8")):
                log.info("Home Assistant came online: publishing discovery again")
                await self._announce(client)
            return
        if topic not in self.topics.commands:
            return
        command = parse_command(topic, message.payload, self.topics)
        if command is None:
            self._warn_malformed(topic, message.payload, "not a payload this command takes")
            return
        try:
            await self._on_command(command)
        except Exception:
            log.exception("Home Assistant command %s failed", command)
        await self._publish_state(client, force=False)


# -- ha-cleanup ---------------------------------------------------------------------------


async def _discover_portal_id(venus: VenusConfig) -> Optional[str]:
    """Return the portal id from the GX broker's retained ``N/+/system/0/Serial``; None if none."""
    async with _client(resolve_endpoint(venus)) as client:
        await client.subscribe(flashmq.SERIAL_DISCOVERY_TOPIC, qos=0)
        pump = MessagePump(client)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + venus.portal_id_timeout_s
        try:
            while loop.time() < deadline:
                message = await pump.get(deadline - loop.time())
                if message is not None:
                    portal_id = flashmq.portal_id_from_serial_topic(message.topic.value)
                    if portal_id is not None:
                        return portal_id
        finally:
            await pump.aclose()
    return None


async def _cleanup(config: Config) -> int:
    ha = config.homeassistant
    endpoint = ha_endpoint(ha, config.venus)
    try:
        portal_id = config.venus.portal_id or await _discover_portal_id(config.venus)
        if portal_id is None:
            log.error(
                "No portal id on the GX broker within %gs: set venus.portal_id; nothing removed",
                config.venus.portal_id_timeout_s,
            )
            return EXIT_FAILURE
        messages: List[Message] = cleanup_messages(ha, portal_id=portal_id)
        async with _client(endpoint) as client:
            for message in messages:
                await _publish(client, message)
    except aiomqtt.MqttError as exc:
        log.error(
            "Cannot reach the MQTT broker %s:%s (%s): nothing removed",
            endpoint.host,
            endpoint.port,
            login_problem(exc, endpoint) or exc,
        )
        return EXIT_FAILURE
    log.info(
        "Removed the Home Assistant entities of GX %s: %d retained topics cleared on %s:%s",
        portal_id,
        len(messages),
        endpoint.host,
        endpoint.port,
    )
    return EXIT_OK


def cleanup(config: Config) -> int:
    """Publish the empty retained messages that remove venus-prio from Home Assistant."""
    return asyncio.run(_cleanup(config))


__all__: List[str] = [
    "Controls",
    "HomeAssistantPublisher",
    "cleanup",
    "command_handler",
    "command_mode",
    "ha_endpoint",
]
