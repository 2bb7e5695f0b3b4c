"""The MQTT transport: a dbus-flashmq client (aiomqtt) that implements ``Source``.

How it works: ``run`` connects, and for every connection runs one session. The session
discovers the portal id (once), subscribes narrowly, sends a full keepalive and then runs two
tasks: one handles the messages as they come (``DispatchQueue``: in aiomqtt's read callback,
no event-loop pass of their own, as they are most of the CPU on a busy GX) and waits for the
connection to end, the other sleeps until the next timer is due. The timers are:
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
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Set, Type, Union, cast

import aiomqtt

from venus_prio.config import (
    ENV_MQTT_PASSWORD,
    BrokerConfig,
    ControlConfig,
    TlsConfig,
    VenusConfig,
)
from venus_prio.errors import ConfigError, PortalIdNotFound, SourceUnavailable
from venus_prio.tasks import supervise
from venus_prio.venus import flashmq, paths
from venus_prio.venus.flashmq import PayloadError
from venus_prio.venus.paths import VenusItem
from venus_prio.venus.source import GxSource, override_shown, wait_event, wait_future

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
# A minimum wait between loop turns so a timer that is due never spins the loop.
_MIN_WAIT_S = 0.001


# Every GX's own certificate carries this name (CN), whatever address the GX is reached at.
GX_CERTIFICATE_NAME = "venus.local"
# CONNACK codes for a refused login: MQTT 3.1.1 (4, 5) and their MQTT 5 reason codes (134, 135).
_LOGIN_REFUSED = frozenset({4, 5, 134, 135})


@dataclass(frozen=True)
class Endpoint:
    """Where to connect and how to log in, resolved from ``VenusConfig``.

    ``key`` is where the settings live in the config file and ``password_env`` the environment
    variable that can hold the password: error messages name them. ``server_name`` is the name
    the certificate must carry; None means the host.
    """

    host: str
    port: int
    tls: TlsConfig
    username: Optional[str]
    password: Optional[str] = field(repr=False)  # never in a repr or a log
    vrm: bool = False
    key: str = "venus"
    password_env: str = ENV_MQTT_PASSWORD
    server_name: Optional[str] = None


def resolve_endpoint(venus: VenusConfig) -> Endpoint:
    """Return the broker endpoint for the config (the VRM cloud broker when ``venus.vrm``).

    VRM mode derives the host from the portal id unless ``venus.broker.host`` was set to
    something else than the default (tests point it at a local broker); only the derived host
    forces port 8883 with TLS. The configured password is the VRM token.

    On the LAN the certificate is checked for ``venus.local`` unless ``venus.tls.server_name``
    says otherwise: a GX's self-signed certificate names venus.local and never the address
    the user dials, so checking the host would fail on every GX reached by its IP.
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
    server_name = broker.tls.server_name or GX_CERTIFICATE_NAME
    return Endpoint(
        broker.host, broker.port, broker.tls, username, password, server_name=server_name
    )


class _ClientContext(ssl.SSLContext):
    """The SSL context of venus-prio's MQTT clients.

    Two things paho does not do: check the certificate for ``server_name`` rather than the host
    dialled (paho passes the host; a GX reached at 192.168.1.5 presents a certificate for
    venus.local; the chain is still verified against the CA file), and close the socket when
    the handshake fails (paho leaves it to the garbage collector, once per retry).
    """

    server_name: Optional[str] = None  # None: the host paho dials

    def wrap_socket(  # noqa: PLR0917  (ssl.SSLContext.wrap_socket's own signature)
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: Union[str, bytes, None] = None,
        session: Optional[ssl.SSLSession] = None,
    ) -> ssl.SSLSocket:
        wrapped = super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=False,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=self.server_name or server_hostname,
            session=session,
        )
        try:
            # Here rather than in paho, to close the socket on failure; paho's own
            # do_handshake afterwards finds it done.
            wrapped.do_handshake()
        except BaseException:
            wrapped.close()
            raise
        return wrapped


def tls_context(tls: TlsConfig, server_name: Optional[str] = None) -> Optional[ssl.SSLContext]:
    """Return the SSL context for the broker, None for a plain connection.

    ``server_name``: the name the certificate must carry when it is not the host connected to.
    """
    if not tls.enabled:
        return None
    context = _ClientContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the chain and the name
    if tls.insecure:
        # The GX serves a self-signed certificate (CN=venus.local): the user chose not to verify.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls.ca_file is not None:
        context.load_verify_locations(cafile=str(Path(tls.ca_file).expanduser()))
        context.server_name = server_name
    else:
        context.load_default_certs()
        context.server_name = server_name
    return context


if TYPE_CHECKING:
    _MessageQueue = asyncio.Queue[aiomqtt.Message]
else:
    _MessageQueue = asyncio.Queue  # not subscriptable at runtime before Python 3.9


class DispatchQueue(_MessageQueue):
    """aiomqtt's queue of incoming messages, which can hand each to a handler at once instead.

    aiomqtt puts every message in its queue from the socket's read callback, and a reader takes
    it out through ``client.messages``: a task, an ``asyncio.wait`` and three event-loop passes
    per message, most of what a GX's stream of changes costs. Once ``start_dispatch`` is
    called, ``put_nowait`` hands each message to the handler right there, in the same order;
    until then (portal id discovery) and after ``stop_dispatch`` it queues as usual.
    ``client.messages`` still raises ``MqttError`` when the connection is cut.
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)
        self._dispatch: Optional[Callable[[aiomqtt.Message], None]] = None

    def put_nowait(self, item: aiomqtt.Message) -> None:
        dispatch = self._dispatch
        if dispatch is None:
            super().put_nowait(item)
        else:
            dispatch(item)

    def start_dispatch(self, dispatch: Callable[[aiomqtt.Message], None]) -> None:
        """Hand the messages queued so far, then every later one, to ``dispatch``."""
        while not self.empty():
            dispatch(self.get_nowait())
        self._dispatch = dispatch

    def stop_dispatch(self) -> None:
        """Queue the messages again."""
        self._dispatch = None


class HandlingFailed(Exception):
    """An error in a dispatched message's handling, carried through aiomqtt's disconnect."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


def make_client(
    endpoint: Endpoint,
    *,
    name: str,
    will: Optional[aiomqtt.Will] = None,
    queue: Optional[DispatchQueue] = None,
) -> aiomqtt.Client:
    """Return an aiomqtt client for ``endpoint`` with a unique client id starting with ``name``
    (``queue``: the queue of incoming messages it is to use)."""
    queue_type = None
    if queue is not None:
        # aiomqtt makes its queue by calling queue_type(maxsize=...): hand it this one.
        queue_type = cast("Type[asyncio.Queue[aiomqtt.Message]]", lambda maxsize=0: queue)
    return aiomqtt.Client(
        endpoint.host,
        endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        tls_context=tls_context(endpoint.tls, endpoint.server_name),
        identifier=f"{name}-{secrets.token_hex(4)}",
        will=will,
        queue_type=queue_type,
    )


def login_problem(exc: aiomqtt.MqttError, endpoint: Endpoint) -> Optional[str]:
    """Return what is wrong with the settings when ``exc`` says so, naming the setting; else None.

    A refused certificate or login does not heal by retrying: the user must change a setting
    (or the GX's password). A refused or lost connection (None) is the network or the broker.
    """
    where = f"{endpoint.host}:{endpoint.port}"
    key = endpoint.key
    # aiomqtt raises ``MqttError(str(exc)) from None``: the TLS error is still the context.
    cause = exc.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = cause.verify_message or str(cause)
        name = endpoint.server_name or endpoint.host
        if "mismatch" in reason:
            return (
                f"{key}.tls.server_name: the certificate of {where} is not for {name!r} "
                f"({reason}); set {key}.tls.server_name to the name it carries"
            )
        if endpoint.tls.ca_file is None:
            return (
                f"{key}.tls.ca_file: the certificate of {where} is not signed by a CA this "
                f"system trusts ({reason}); give the broker's certificate or its CA as "
                f"{key}.tls.ca_file (a GX's: /data/keys/mosquitto.crt), or set "
                f"{key}.tls.insecure: true"
            )
        return (
            f"{key}.tls.ca_file: the certificate of {where} is not signed by "
            f"{endpoint.tls.ca_file} ({reason}); give that broker's certificate or its CA "
            f"(a GX's: /data/keys/mosquitto.crt), or set {key}.tls.insecure: true"
        )
    if isinstance(cause, ssl.SSLError):
        return (
            f"{key}.tls: the TLS handshake with {where} failed ({cause}); is {endpoint.port} "
            "the broker's TLS port (8883 on a GX)?"
        )
    if isinstance(exc, aiomqtt.MqttCodeError) and _code(exc.rc) in _LOGIN_REFUSED:
        secret = f"{key}.password, {key}.password_file or {endpoint.password_env}"
        if endpoint.password is None:
            return (
                f"{key}.password: {where} refused the login without a password ({exc}); a GX "
                f'in the "Secured" profile wants its password: set {secret}'
            )
        return f"{key}.password: {where} refused the login ({exc}); check {secret}"
    return None


# How long the check "does this port speak TLS?" may take.
TLS_SNIFF_TIMEOUT_S = 2.0


async def speaks_tls(host: str, port: int, timeout: float) -> Optional[bool]:
    """Return whether ``host:port`` completes a TLS handshake (certificate not checked): True,
    False when it takes the connection but not the handshake, None when it cannot be told
    (no connection, no answer in time)."""
    loop = asyncio.get_running_loop()
    # A blocking socket in a thread: StreamWriter.start_tls is Python 3.11+ and the GX has 3.8.
    return await loop.run_in_executor(None, _speaks_tls, host, port, timeout)


def _speaks_tls(host: str, port: int, timeout: float) -> Optional[bool]:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    try:
        with context.wrap_socket(sock, do_handshake_on_connect=False) as wrapped:
            wrapped.do_handshake()
    except socket.timeout:
        return None
    except OSError:  # ssl.SSLError, a reset or an EOF: something that is not TLS answered
        return False
    finally:
        sock.close()
    return True


async def settings_problem(exc: aiomqtt.MqttError, endpoint: Endpoint) -> Optional[str]:
    """Return what is wrong with the settings when ``exc`` says so, naming the setting; else None.

    ``login_problem``, and what it cannot tell from the error (``port_problem``): a broker just
    drops a client that speaks plain MQTT to its TLS port, or TLS to its plain one, as it drops
    every client on its way down. A refused connection (nothing listens) is not checked.
    """
    problem = login_problem(exc, endpoint)
    if problem is not None or isinstance(exc.__context__, ConnectionRefusedError):
        return problem
    return await port_problem(endpoint)


async def port_problem(endpoint: Endpoint) -> Optional[str]:
    """Return the problem when the port speaks TLS and ``endpoint`` does not, or the reverse."""
    tls = await speaks_tls(endpoint.host, endpoint.port, TLS_SNIFF_TIMEOUT_S)
    where = f"{endpoint.host}:{endpoint.port}"
    key = endpoint.key
    if tls is True and not endpoint.tls.enabled:
        return (
            f"{key}.tls.enabled: {where} speaks TLS, not plain MQTT; set {key}.tls.enabled: "
            f"true (with {key}.tls.ca_file), or {key}.port to the plain port (1883 on a GX)"
        )
    if tls is False and endpoint.tls.enabled:
        return (
            f"{key}.tls: {where} does not speak TLS; set {key}.port to the broker's TLS port "
            f"(8883 on a GX), or {key}.tls.enabled: false for this plain port"
        )
    return None


def _code(rc: object) -> Optional[int]:
    value = getattr(rc, "value", rc)  # paho's ReasonCode, or a plain int
    return value if isinstance(value, int) else None


_NETWORK = "network"  # what ``Reconnect`` last logged: a network failure (the text varies)


class Reconnect:
    """When to try a broker again and what to log, for every venus-prio MQTT client.

    A network failure is logged once (WARNING) and retried with doubling backoff up to
    ``cap_s``. A refused certificate or login, or a plain client on a TLS port
    (``settings_problem``) is logged once as an ERROR
    naming the setting and retried every ``cap_s``: it only heals when someone changes a
    setting, and a login storm against the GX helps no one. Each new problem is logged again.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        cap_s: float,
        *,
        who: str = "",
        logger: logging.Logger = log,
        report_problems: bool = True,
    ) -> None:
        self._log = logger  # the client's own logger: its messages stay under its name
        self._endpoint = endpoint
        self._cap_s = cap_s
        self._who = who
        # False: a settings problem is only kept in ``problem`` (the probe reports it itself).
        self._report_problems = report_problems
        self._backoff = FIRST_BACKOFF_S
        self._logged: Optional[str] = None
        self._ever_connected = False
        # The settings problem of the last failure; None after a network failure or a connect.
        self.problem: Optional[str] = None

    @property
    def where(self) -> str:
        return f"{self._endpoint.host}:{self._endpoint.port}"

    def connected(self) -> None:
        """Note a connection: log it when it is the first or ends an outage."""
        if self._logged is not None or not self._ever_connected:
            self._log.info("%sconnected to the MQTT broker %s", self._who, self.where)
        self._ever_connected = True
        self._logged = None
        self.problem = None
        self._backoff = FIRST_BACKOFF_S

    async def failed(self, exc: aiomqtt.MqttError, *, was_connected: bool, note: str = "") -> float:
        """Log the failure once and return how long to wait before the next attempt."""
        problem = None if was_connected else await settings_problem(exc, self._endpoint)
        self.problem = problem
        if problem is not None:
            wait = self._cap_s
            if problem != self._logged and self._report_problems:
                self._log.error(
                    "%scannot connect to the MQTT broker %s: %s; trying again every %gs%s",
                    self._who,
                    self.where,
                    problem,
                    wait,
                    note,
                )
            self._logged = problem
            return wait
        wait, self._backoff = self._backoff, min(self._backoff * 2, self._cap_s)
        if self._logged != _NETWORK:
            what = "lost the connection to" if was_connected else "cannot connect to"
            self._log.warning(
                "%s%s the MQTT broker %s (%s); retrying with backoff up to %gs%s",
                self._who,
                what,
                self.where,
                exc,
                self._cap_s,
                note,
            )
            self._logged = _NETWORK
        return wait


class WarnOnce:
    """Log a topic's malformed payloads: a warning the first time, DEBUG after that, so that a
    sender that repeats a bad payload cannot flood the log. ``what`` opens each message."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._again = what.replace("%", "%%") + " on %s: %s (%r)"
        self._first = self._again + "; further ones on this topic are logged at DEBUG"
        self._warned: Set[str] = set()

    def __call__(self, topic: str, payload: object, problem: str) -> None:
        shown = payload[:80] if isinstance(payload, (bytes, bytearray, str)) else payload
        if topic in self._warned:
            self._log.debug(self._again, topic, problem, shown)
            return
        self._warned.add(topic)
        self._log.warning(self._first, topic, problem, shown)


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
        # Whether the hub4 override was published since our last full keepalive: its absence
        # from a completed full publish means this GX has no such path.
        self.override_seen = False


class MqttSource(GxSource):
    """A ``Source`` over the GX's MQTT broker (dbus-flashmq), on the LAN or via VRM.

    ``ready`` / ``wait_ready`` tell when the state is complete after a (re)connect: the
    ``full_publish_completed`` carrying our echo arrived. Firmware before Venus 3.50 ignores
    the echo (a completion without one is accepted) and firmware before late 2023 sends no
    completion at all: when the wait times out but values did arrive, the state is taken as
    complete; when nothing arrived, the full keepalive is sent again with a new echo.

    VRM mode (``venus.vrm``) talks to the remote cloud broker: it is remote, depends on the
    internet and Victron's servers, and is not for safety-critical use.
    """

    name = "mqtt"

    def __init__(
        self, *, venus: VenusConfig, control: ControlConfig, report_problems: bool = True
    ) -> None:
        super().__init__(venus, control)
        self._endpoint = resolve_endpoint(venus)
        self._retry = Reconnect(
            self._endpoint, venus.reconnect_max_s, report_problems=report_problems
        )
        # Set while the last attempt failed on a setting (``settings_problem``).
        self._problem_seen = asyncio.Event()
        self.portal_id = venus.portal_id
        self._client: Optional[aiomqtt.Client] = None
        # The GX answered one of our full keepalives with our echo: its firmware has the echo,
        # so a missing completion later means the full publish is not over (not old firmware).
        self._echo_seen = False
        self._session: Optional[_Session] = None
        self._topics: Dict[str, VenusItem] = {}
        self._warn_once = WarnOnce(log, "ignoring malformed payload")
        # Read-backs waiting for the N/ answer to their R/, per item (setting and override).
        self._waiters: Dict[VenusItem, List[asyncio.Future[Optional[float]]]] = {}
        self._queue = DispatchQueue()  # the incoming messages of the current client

    # -- public --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and stay connected, reconnecting with capped backoff, until cancelled.

        Raises ``PortalIdNotFound`` when the portal id must be discovered and the broker
        does not show one in time.
        """
        retry = self._retry
        while True:
            connected = False
            wait = FIRST_BACKOFF_S
            try:
                async with self._make_client() as client:
                    connected = True
                    retry.connected()
                    self._problem_seen.clear()
                    self._client = client
                    self.store.set_connected(True)
                    await self._run_session(client)
            except aiomqtt.MqttError as exc:
                wait = await retry.failed(exc, was_connected=connected)
                if retry.problem is None:
                    self._problem_seen.clear()
                else:
                    self._problem_seen.set()
            finally:
                self._client = None
                self._session = None
                self._ready.clear()
                # Whether this GX has the override is known again after the next full publish.
                self.store.set_override_present(None)
                self.store.set_connected(False)
                self._fail_waiters()
            await asyncio.sleep(wait)

    async def wait_settings_problem(self, timeout: float) -> Optional[str]:
        """Return the setting that made the last attempt fail, once there is one; None when
        there is none after ``timeout``."""
        if not self.store.connected:
            # A broker drops a plain client on its TLS port without a word: the client only
            # gives up when its CONNECT times out (10 s). Ask the port at once instead.
            problem = await port_problem(self._endpoint)
            if problem is not None:
                return problem
        if not await wait_event(self._problem_seen, timeout):
            return None
        return self._retry.problem

    async def write_max_discharge(self, value_w: float) -> None:
        """Publish a write of MaxDischargePower (QoS 0, not retained; no ack exists)."""
        await self._write(paths.MAX_DISCHARGE_POWER, value_w)

    async def read_max_discharge(self, timeout: float) -> Optional[float]:
        """Ask the GX for MaxDischargePower with an ``R/``; None when no answer in time."""
        return await self._read_back(paths.MAX_DISCHARGE_POWER, timeout)

    async def write_override(self, value_w: float) -> None:
        """Publish a write of the hub4 override (QoS 0, not retained; -1 releases it).

        Like every W/ it has no ack: on a GX without the path it is silently dropped.
        """
        await self._write(paths.OVERRIDE_MAX_DISCHARGE, value_w)

    async def read_override(self, timeout: float) -> Optional[float]:
        """Ask the GX for the override with an ``R/``: -1 for none (or null), None when the GX
        did not answer in time or has no such path (the plugin does not answer those)."""
        if self.store.override_present is False:
            return None
        return await self._read_back(paths.OVERRIDE_MAX_DISCHARGE, timeout)

    async def _write(self, item: VenusItem, value_w: float) -> None:
        client, portal_id = self._client, self.portal_id
        if client is None or portal_id is None or self._session is None:
            raise SourceUnavailable("not connected to the GX broker")
        topic = flashmq.w_topic(portal_id, item.topic_suffix())
        try:
            await client.publish(topic, flashmq.write_payload(value_w), qos=0, retain=False)
        except aiomqtt.MqttError as exc:
            raise SourceUnavailable(f"write of {topic} failed: {exc}") from exc

    async def _read_back(self, item: VenusItem, timeout: float) -> Optional[float]:
        """Publish ``R/`` for ``item`` and return the value of the N/ answer, None without one."""
        client, portal_id = self._client, self.portal_id
        if client is None or portal_id is None or self._session is None:
            return None
        waiter: asyncio.Future[Optional[float]] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(item, [])
        waiters.append(waiter)
        try:
            topic = flashmq.r_topic(portal_id, item.topic_suffix())
            await client.publish(topic, b"", qos=0, retain=False)
            return await wait_future(waiter, timeout)
        except (aiomqtt.MqttError, SourceUnavailable):
            return None
        finally:
            if waiter in waiters:
                waiters.remove(waiter)

    # -- connection ----------------------------------------------------------------------

    def _make_client(self) -> aiomqtt.Client:
        self._queue = DispatchQueue()
        return make_client(self._endpoint, name="venus-prio", queue=self._queue)

    def _fail_waiters(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(SourceUnavailable("connection lost"))
        self._waiters.clear()

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
        portal_id = self.portal_id
        if portal_id is None:
            pump = MessagePump(client)
            try:
                portal_id = await self._discover_portal_id(client, pump)
            finally:
                # Only the discovery topic is subscribed so far: a read cut short loses
                # nothing the session needs.
                await pump.aclose()
            self.portal_id = portal_id
        await self._serve(client, portal_id)

    async def _serve(self, client: aiomqtt.Client, portal_id: str) -> None:
        self._topics = flashmq.input_topics(portal_id)
        # Subscribe before the full keepalive, or the republish it triggers passes us by.
        await client.subscribe([(topic, 0) for topic in flashmq.subscriptions(portal_id)])
        session = _Session(self._clock())
        self._session = session
        self.store.forget_values()
        await self._send_full_keepalive(client, session, portal_id)
        tasks = [
            asyncio.ensure_future(self._read(client, session, portal_id)),
            asyncio.ensure_future(self._keep_time(client, session, portal_id)),
        ]
        await supervise(tasks)  # until one fails (the connection is cut); the other is ended
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        raise aiomqtt.MqttError("the session ended")  # not reached: both run until they fail

    async def _read(self, client: aiomqtt.Client, session: _Session, portal_id: str) -> None:
        """Handle every message; raise ``MqttError`` when the connection is cut.

        The messages are handled as aiomqtt receives them (``DispatchQueue``); this waits on
        ``client.messages`` for the end of the connection. An error in the handling (a bug)
        ends the session as if it were raised here: aiomqtt carries it as the disconnect's
        cause.
        """

        def dispatch(message: aiomqtt.Message) -> None:
            try:
                self._handle(message, session, portal_id, self._clock())
            except Exception as exc:
                raise HandlingFailed(exc) from exc

        queue = self._queue
        try:
            queue.start_dispatch(dispatch)
            async for message in client.messages:  # none: they are dispatched
                self._handle(message, session, portal_id, self._clock())
        except aiomqtt.MqttError as exc:
            if isinstance(exc.__cause__, HandlingFailed):
                raise exc.__cause__.error from None
            raise
        except HandlingFailed as exc:  # raised by a queued message in start_dispatch
            raise exc.error from None
        finally:
            queue.stop_dispatch()  # a session that ended handles nothing more

    async def _keep_time(self, client: aiomqtt.Client, session: _Session, portal_id: str) -> None:
        """Run the timers when they are due. Messages only move deadlines later (a heartbeat,
        a completed full publish): waking at an old one finds nothing due and sleeps again."""
        while True:
            delay = self._next_deadline(session) - self._clock()
            await asyncio.sleep(max(delay, _MIN_WAIT_S))
            await self._run_timers(client, session, portal_id, self._clock())

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
        session.override_seen = False
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
                self._full_publish_done(session)
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
        item = self._topics.get(topic)
        if item is not None:
            self._handle_item(item, topic, payload, session, now)
            return
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
                if not self._ready.is_set():
                    log.info("full publish completed: the GX state is complete")
                self._full_publish_done(session)

    def _handle_item(
        self, item: VenusItem, topic: str, payload: bytes, session: _Session, now: float
    ) -> None:
        """Take an N/ of a followed item into the store (most messages: items are looked up
        first, and compared by identity, as ``_topics`` holds the ``paths`` objects)."""
        try:
            update = flashmq.parse_item_payload(item, payload)
        except PayloadError as exc:
            self._warn_once(topic, payload, str(exc))
            return
        if item is paths.MAX_DISCHARGE_POWER and not flashmq.plausible_setting_bounds(
            update.minimum, update.maximum
        ):
            self._warn_once(topic, payload, "min/max cannot be this setting's range")
            return
        # Evidence of a dump from firmware that ignores the echo: a value we did not ask for.
        # The answer to our own SOC liveness read is not (it once made a half-refreshed state
        # "complete" after a broker restart).
        waiters = self._waiters  # read-backs waiting, by item: usually none
        if not (item is paths.SOC and session.soc_read_pending) and not (
            waiters and waiters.get(item)
        ):
            session.values_since_full = True
        if update.absent:
            self.store.set(item, None)
        else:
            self.store.set(item, update.value)
        if item is paths.SOC and session.soc_read_pending:
            # The answer to our R/ read (or a fresher change): the GX is alive.
            session.soc_read_pending = False
            self.store.mark_alive(now)
        if item is paths.MAX_DISCHARGE_POWER and (
            update.minimum is not None or update.maximum is not None
        ):
            self.store.set_bounds(update.minimum, update.maximum)
        if item is paths.OVERRIDE_MAX_DISCHARGE:
            # A 0-byte payload: hub4 left the bus, the path is gone with it.
            session.override_seen = not update.absent
            self.store.set_override_present(not update.absent)
        if waiters:
            self._answer_waiters(item, update, now)

    def _answer_waiters(self, item: VenusItem, update: flashmq.ItemUpdate, now: float) -> None:
        """Hand an N/ to the read-backs of ``item``: an answer to an R/ proves the GX is alive."""
        waiters = self._waiters.pop(item, [])
        if not waiters:
            return
        self.store.mark_alive(now)
        value = update.value
        if item == paths.OVERRIDE_MAX_DISCHARGE and not update.absent:
            value = override_shown(value)  # null: no override in force
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(value)

    def _full_publish_done(self, session: _Session) -> None:
        """The state is complete: every item this GX has was published since our keepalive."""
        session.full_deadline = None
        if not session.override_seen:
            self.store.set_override_present(False)
        self._ready.set()
