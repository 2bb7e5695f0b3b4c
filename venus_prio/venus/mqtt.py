"""The MQTT transport: a dbus-flashmq client (aiomqtt) that implements ``Source``.

How it works: ``run`` connects, and for every connection runs one session loop in a single
task. The session discovers the portal id (once), subscribes narrowly, sends a full keepalive
and then waits for the next message or the next timer, whichever comes first. The timers are:
the full-publish wait (retry with a new echo), the suppress-republish keepalive, the heartbeat
watch (re-send a full keepalive when heartbeats stop) and the periodic ``R/`` read of the SOC
that proves liveness between heartbeats. Every payload goes through the pure parsers in
``venus_prio.venus.flashmq`` before it reaches the ``InputStore``.

Liveness is not message age (control.md section 5): a heartbeat or an answer to an ``R/`` read
marks the source alive; the controller decides staleness from ``Snapshot.alive_at``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Set

import aiomqtt

from venus_prio.config import BrokerConfig, ControlConfig, TlsConfig, VenusConfig
from venus_prio.errors import ConfigError, PortalIdNotFound, SourceUnavailable
from venus_prio.venus import flashmq, paths
from venus_prio.venus.flashmq import PayloadError
from venus_prio.venus.paths import VenusItem
from venus_prio.venus.source import Source, wait_event, wait_future

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
# A minimum wait between loop turns so a timer that is due never spins the loop.
_MIN_WAIT_S = 0.001


@dataclass(frozen=True)
class Endpoint:
    """Where to connect and how to log in, resolved from ``VenusConfig``."""

    host: str
    port: int
    tls: TlsConfig
    username: Optional[str]
    password: Optional[str]
    vrm: bool = False


def resolve_endpoint(venus: VenusConfig) -> Endpoint:
    """Return the broker endpoint for the config (the VRM cloud broker when ``venus.vrm``).

    VRM mode derives the host from the portal id unless ``venus.broker.host`` was set to
    something else than the default (tests point it at a local broker); only the derived host
    forces port 8883 with TLS. The configured password is the VRM token.
    """
    broker = venus.broker
    username = broker.username
    password = broker.password
    if venus.vrm:
        if not venus.portal_id:
            raise ConfigError("venus.portal_id: the VRM broker needs the portal id set explicitly")
        if password is not None:
            password = flashmq.vrm_password(password)
        if broker.host == BrokerConfig().host:
            tls = broker.tls if broker.tls.enabled else TlsConfig(enabled=True)
            host = flashmq.vrm_broker_host(venus.portal_id)
            return Endpoint(host, flashmq.VRM_PORT, tls, username, password, vrm=True)
        return Endpoint(broker.host, broker.port, broker.tls, username, password, vrm=True)
    if password is not None and username is None:
        # The GX checks only the password; MQTT needs a user name to carry one.
        username = "venus-prio"
    return Endpoint(broker.host, broker.port, broker.tls, username, password)


def tls_context(tls: TlsConfig) -> Optional[ssl.SSLContext]:
    """Return the SSL context for the broker, None for a plain connection."""
    if not tls.enabled:
        return None
    if tls.insecure:
        # The GX serves a self-signed certificate (CN=venus.local): the user chose not to verify.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=tls.ca_file)


def make_client(
    endpoint: Endpoint, *, name: str, will: Optional[aiomqtt.Will] = None
) -> aiomqtt.Client:
    """Return an aiomqtt client for ``endpoint`` with a unique client id starting with ``name``."""
    return aiomqtt.Client(
        endpoint.host,
        endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        tls_context=tls_context(endpoint.tls),
        identifier=f"{name}-{secrets.token_hex(4)}",
        will=will,
    )


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class MessagePump:
    """Hand out a client's messages one at a time, with a timeout, never losing a cancellation.

    ``asyncio.wait_for`` before Python 3.12 swallows a cancellation that arrives together with
    the awaited result (bpo-42130), which would keep a cancelled session running. Waiting with
    ``asyncio.wait`` on one kept task cannot: a timeout leaves the task for the next call.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        self._next: Optional[asyncio.Future[aiomqtt.Message]] = None

    async def get(self, timeout: float) -> Optional[aiomqtt.Message]:
        """Return the next message, None after ``timeout``; raise ``MqttError`` when cut off."""
        if self._next is None:
            self._next = asyncio.ensure_future(self._client.messages.__anext__())
        done, _ = await asyncio.wait({self._next}, timeout=max(timeout, _MIN_WAIT_S))
        if not done:
            return None
        task, self._next = self._next, None
        return task.result()

    async def aclose(self) -> None:
        """Cancel the pending read, if any."""
        task, self._next = self._next, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the connection error is reported elsewhere


class _Session:
    """Timers and bookkeeping of one broker connection."""

    def __init__(self, now: float) -> None:
        self.echo: Optional[str] = None
        self.full_deadline: Optional[float] = None
        self.values_since_full = False
        self.next_keepalive = now
        self.next_refresh = now
        self.heartbeat_at = now  # the heartbeat watch starts at connect
        self.heartbeat_lost = False
        self.soc_read_pending = False


class MqttSource(Source):
    """A ``Source`` over the GX's MQTT broker (dbus-flashmq), on the LAN or via VRM.

    ``ready`` / ``wait_ready`` tell when the state is complete after a (re)connect: the
    ``full_publish_completed`` carrying our echo arrived. Firmware before Venus 3.50 ignores
    the echo (a completion without one is accepted) and firmware before late 2023 sends no
    completion at all: when the wait times out but values did arrive, the state is taken as
    complete; when nothing arrived, the full keepalive is sent again with a new echo.

    VRM mode (``venus.vrm``) talks to the remote cloud broker: it is remote, depends on the
    internet and Victron's servers, and is not for safety-critical use.

    Construct it inside the running event loop (the store holds asyncio events).
    """

    name = "mqtt"

    def __init__(
        self,
        *,
        venus: VenusConfig,
        control: ControlConfig,
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        super().__init__()
        self._venus = venus
        self._control = control
        self._endpoint = resolve_endpoint(venus)
        self._clock: Callable[[], float] = clock or _loop_time
        self.portal_id = venus.portal_id
        self._client: Optional[aiomqtt.Client] = None
        self._ready = asyncio.Event()
        # The GX answered one of our full keepalives with our echo: its firmware has the echo,
        # so a missing completion later means the full publish is not over (not old firmware).
        self._echo_seen = False
        self._session: Optional[_Session] = None
        self._topics: Dict[str, VenusItem] = {}
        self._warned_topics: Set[str] = set()
        self._setting_waiters: List[asyncio.Future[Optional[float]]] = []

    # -- public --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Return whether the full publish of the current connection has completed."""
        return self._ready.is_set()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the state is complete after a (re)connect; False on timeout."""
        return await wait_event(self._ready, timeout)

    async def run(self) -> None:
        """Connect and stay connected, reconnecting with capped backoff, until cancelled.

        Raises ``PortalIdNotFound`` when the portal id must be discovered and the broker
        does not show one in time.
        """
        backoff = FIRST_BACKOFF_S
        down_logged = False
        ever_connected = False
        endpoint = self._endpoint
        while True:
            connected = False
            try:
                async with self._make_client() as client:
                    connected = True
                    if down_logged or not ever_connected:
                        log.info("connected to the MQTT broker %s:%s", endpoint.host, endpoint.port)
                    ever_connected = True
                    down_logged = False
                    backoff = FIRST_BACKOFF_S
                    self._client = client
                    self.store.set_connected(True)
                    await self._run_session(client)
            except aiomqtt.MqttError as exc:
                if not down_logged:
                    what = "lost the connection to" if connected else "cannot connect to"
                    log.warning(
                        "%s the MQTT broker %s:%s (%s); retrying with backoff up to %gs",
                        what,
                        endpoint.host,
                        endpoint.port,
                        exc,
                        self._venus.reconnect_max_s,
                    )
                    down_logged = True
            finally:
                self._client = None
                self._session = None
                self._ready.clear()
                self.store.set_connected(False)
                self._fail_waiters()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._venus.reconnect_max_s)

    async def write_max_discharge(self, value_w: float) -> None:
        """Publish a write of MaxDischargePower (QoS 0, not retained; no ack exists)."""
        client, portal_id = self._client, self.portal_id
        if client is None or portal_id is None or self._session is None:
            raise SourceUnavailable("not connected to the GX broker")
        topic = flashmq.w_topic(portal_id, paths.MAX_DISCHARGE_POWER.topic_suffix())
        try:
            await client.publish(topic, flashmq.write_payload(value_w), qos=0, retain=False)
        except aiomqtt.MqttError as exc:
            raise SourceUnavailable(f"write of {topic} failed: {exc}") from exc

    async def read_max_discharge(self, timeout: float) -> Optional[float]:
        """Ask the GX for MaxDischargePower with an ``R/``; None when no answer in time."""
        client, portal_id = self._client, self.portal_id
        if client is None or portal_id is None or self._session is None:
            return None
        waiter: asyncio.Future[Optional[float]] = asyncio.get_running_loop().create_future()
        self._setting_waiters.append(waiter)
        try:
            topic = flashmq.r_topic(portal_id, paths.MAX_DISCHARGE_POWER.topic_suffix())
            await client.publish(topic, b"", qos=0, retain=False)
            return await wait_future(waiter, timeout)
        except (aiomqtt.MqttError, SourceUnavailable):
            return None
        finally:
            if waiter in self._setting_waiters:
                self._setting_waiters.remove(waiter)

    # -- connection ----------------------------------------------------------------------

    async def write_override(self, value_w: float) -> None:
        raise SourceUnavailable("the hub4 override is not implemented on this transport yet")

    async def read_override(self, timeout: float) -> Optional[float]:
        return None

    def _make_client(self) -> aiomqtt.Client:
        return make_client(self._endpoint, name="venus-prio")

    def _fail_waiters(self) -> None:
        for waiter in self._setting_waiters:
            if not waiter.done():
                waiter.set_exception(SourceUnavailable("connection lost"))
        self._setting_waiters.clear()

    async def _discover_portal_id(self, client: aiomqtt.Client, pump: MessagePump) -> str:
        """Return the portal id from the retained ``N/+/system/0/Serial``."""
        timeout = self._venus.portal_id_timeout_s
        await client.subscribe(flashmq.SERIAL_DISCOVERY_TOPIC, qos=0)
        deadline = self._clock() + timeout
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise PortalIdNotFound(
                    f"no {flashmq.SERIAL_DISCOVERY_TOPIC} on the broker within {timeout:g} s; "
                    "is this a GX broker? set venus.portal_id"
                )
            message = await pump.get(remaining)
            if message is not None:
                portal_id = flashmq.portal_id_from_serial_topic(message.topic.value)
                if portal_id is not None:
                    await client.unsubscribe(flashmq.SERIAL_DISCOVERY_TOPIC)
                    log.info("discovered the GX portal id %s", portal_id)
                    return portal_id

    async def _run_session(self, client: aiomqtt.Client) -> None:
        pump = MessagePump(client)
        try:
            await self._serve(client, pump)
        finally:
            await pump.aclose()

    async def _serve(self, client: aiomqtt.Client, pump: MessagePump) -> None:
        portal_id = self.portal_id
        if portal_id is None:
            portal_id = await self._discover_portal_id(client, pump)
            self.portal_id = portal_id
        self._topics = flashmq.input_topics(portal_id)
        # Subscribe before the full keepalive, or the republish it triggers passes us by.
        await client.subscribe([(topic, 0) for topic in flashmq.subscriptions(portal_id)])
        session = _Session(self._clock())
        self._session = session
        await self._send_full_keepalive(client, session, portal_id)
        while True:
            now = self._clock()
            message = await pump.get(self._next_deadline(session) - now)
            now = self._clock()
            if message is not None:
                self._handle(message, session, portal_id, now)
            await self._run_timers(client, session, portal_id, now)

    # -- timers --------------------------------------------------------------------------

    def _next_deadline(self, session: _Session) -> float:
        deadlines = [
            session.next_keepalive,
            session.next_refresh,
            session.heartbeat_at + self._venus.heartbeat_timeout_s,
        ]
        if session.full_deadline is not None:
            deadlines.append(session.full_deadline)
        return min(deadlines)

    async def _send_full_keepalive(
        self, client: aiomqtt.Client, session: _Session, portal_id: str
    ) -> None:
        session.echo = secrets.token_hex(8)
        session.values_since_full = False
        session.full_deadline = self._clock() + self._venus.full_publish_timeout_s
        # A full keepalive also keeps the GX alive: the next plain one is due an interval later.
        session.next_keepalive = self._clock() + self._venus.keepalive_interval_s
        await client.publish(
            flashmq.keepalive_topic(portal_id),
            flashmq.full_keepalive_payload(session.echo),
            qos=0,
            retain=False,
        )

    async def _run_timers(
        self, client: aiomqtt.Client, session: _Session, portal_id: str, now: float
    ) -> None:
        if session.full_deadline is not None and now >= session.full_deadline:
            if session.values_since_full and not self._echo_seen:
                # Firmware before Venus 3.50 ignores the echo and before late 2023 sends no
                # full_publish_completed at all: values did arrive, so take the state as full.
                log.info(
                    "no full_publish_completed with our echo within %gs; values arrived, "
                    "assuming firmware without the echo",
                    self._venus.full_publish_timeout_s,
                )
                session.full_deadline = None
                self._ready.set()
            else:
                # Full republishes are limited to 3 per second across all clients: ask again.
                log.debug("full publish not completed in time; asking again")
                await self._send_full_keepalive(client, session, portal_id)
        if now >= session.next_keepalive:
            session.next_keepalive = now + self._venus.keepalive_interval_s
            await client.publish(
                flashmq.keepalive_topic(portal_id),
                flashmq.suppress_keepalive_payload(),
                qos=0,
                retain=False,
            )
        if now >= session.heartbeat_at + self._venus.heartbeat_timeout_s:
            if not session.heartbeat_lost:
                log.warning(
                    "no heartbeat from the GX for %gs; sending a full keepalive",
                    self._venus.heartbeat_timeout_s,
                )
                session.heartbeat_lost = True
            session.heartbeat_at = now  # wait a full timeout again before the next attempt
            if session.full_deadline is None:  # else one is already on its way
                await self._send_full_keepalive(client, session, portal_id)
        if now >= session.next_refresh:
            session.next_refresh = now + self._control.refresh_s
            session.soc_read_pending = True
            await client.publish(
                flashmq.r_topic(portal_id, paths.SOC.topic_suffix()), b"", qos=0, retain=False
            )

    # -- messages ------------------------------------------------------------------------

    def _handle(
        self, message: aiomqtt.Message, session: _Session, portal_id: str, now: float
    ) -> None:
        topic = message.topic.value
        payload = bytes(message.payload)
        if topic == flashmq.heartbeat_topic(portal_id):
            # Any heartbeat proves the plugin runs; its timestamp is not needed.
            session.heartbeat_at = now
            if session.heartbeat_lost:
                log.info("heartbeat from the GX is back")
                session.heartbeat_lost = False
            self.store.mark_alive(now)
            return
        if topic == flashmq.completed_topic(portal_id):
            well_formed, echo = flashmq.parse_completion_echo(payload)
            if not well_formed:
                self._warn_once(topic, payload, "not a JSON object")
            elif session.full_deadline is not None and echo in (None, session.echo):
                self._echo_seen = self._echo_seen or echo is not None
                session.full_deadline = None
                if not self._ready.is_set():
                    log.info("full publish completed: the GX state is complete")
                self._ready.set()
            return
        item = self._topics.get(topic)
        if item is None:
            return
        try:
            update = flashmq.parse_item_payload(item, payload)
        except PayloadError as exc:
            self._warn_once(topic, payload, str(exc))
            return
        if item == paths.MAX_DISCHARGE_POWER and not flashmq.plausible_setting_bounds(
            update.minimum, update.maximum
        ):
            self._warn_once(topic, payload, "min/max cannot be this setting's range")
            return
        session.values_since_full = True
        if update.absent:
            self.store.set(item, None)
        else:
            self.store.set(item, update.value)
        if item == paths.SOC and session.soc_read_pending:
            # The answer to our R/ read (or a fresher change): the GX is alive.
            session.soc_read_pending = False
            self.store.mark_alive(now)
        if item == paths.MAX_DISCHARGE_POWER:
            if update.minimum is not None or update.maximum is not None:
                self.store.set_bounds(update.minimum, update.maximum)
            if self._setting_waiters:
                self.store.mark_alive(now)
            for waiter in self._setting_waiters:
                if not waiter.done():
                    waiter.set_result(update.value)
            self._setting_waiters.clear()

    def _warn_once(self, topic: str, payload: bytes, problem: str) -> None:
        if topic in self._warned_topics:
            log.debug("ignoring malformed payload on %s: %s", topic, problem)
            return
        self._warned_topics.add(topic)
        log.warning(
            "ignoring malformed payload on %s: %s (%r); further ones on this topic are "
            "logged at DEBUG",
            topic,
            problem,
            payload[:80],
        )
