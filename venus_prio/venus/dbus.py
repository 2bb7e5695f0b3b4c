"""The D-Bus transport: read the Venus items straight from ``com.victronenergy.*`` on the bus.

How it works: one connection to the system bus (or ``venus.dbus.address``) per session. A session
first subscribes (AddMatch) to ``NameOwnerChanged`` of the two services and to the BusItem
signals of the items we read (``PropertiesChanged`` on each item path, ``ItemsChanged`` on ``/``),
then looks up who owns each service and reads it whole (``GetItems`` on ``/``, per-path
``GetValue`` when the service is too old to have it; ``GetMin``/``GetMax`` of MaxDischargePower).
Subscribing before reading means no change can slip in between. Signals carry the sender's unique
name, so the owner map tells which service a signal came from.

``com.victronenergy.hub4`` (the override, control.md section 8) is optional: a GX without it
(older firmware, no ESS) or a hub4control that restarts makes the override absent
(``override_present`` False), never the source not ready, stale or disconnected.

Liveness (control.md section 5): every ``refresh_s`` a ``GetValue`` of the SOC proves the GX is
alive. A service that leaves the bus makes its items absent (None) and stops the proof; when it
comes back it is read again. A dropped bus connection ends the session; ``run`` reconnects with
capped exponential backoff.

Works with ``dbus_fast`` (preinstalled on Venus OS) and ``dbus_next``: the two share the low-level
API used here (``MessageBus``, ``Message``, ``Variant``, ``call``, ``add_message_handler``), so
there is one code path. ``venus.dbus.backend`` picks one (``auto``: dbus-fast when importable).
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from venus_prio.config import ControlConfig, VenusConfig
from venus_prio.errors import ConfigError, SourceUnavailable
from venus_prio.venus import paths
from venus_prio.venus.paths import VenusItem
from venus_prio.venus.source import GxSource, InputStore, override_shown

log = logging.getLogger(__name__)

BACKENDS: Tuple[str, ...] = ("dbus_fast", "dbus_next")
BUS_ITEM = "com.victronenergy.BusItem"
DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
ERROR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
SYSTEM_SERVICE = f"com.victronenergy.{paths.SYSTEM}"
SETTINGS_SERVICE = f"com.victronenergy.{paths.SETTINGS}"
HUB4_SERVICE = f"com.victronenergy.{paths.HUB4}"
SERVICES: Tuple[str, ...] = (SYSTEM_SERVICE, SETTINGS_SERVICE)  # required: the inputs
WATCHED: Tuple[str, ...] = (*SERVICES, HUB4_SERVICE)  # plus the optional override
CALL_TIMEOUT_S = 5.0
RECONNECT_MIN_S = 0.5


@dataclass(frozen=True)
class Backend:
    """The few names both D-Bus libraries share, taken from the one that was imported."""

    name: str
    message_bus: Any  # <lib>.aio.MessageBus
    message: Any  # <lib>.Message
    variant: Any  # <lib>.Variant
    bus_type: Any  # <lib>.BusType
    message_type: Any  # <lib>.MessageType
    name_flag: Any  # <lib>.NameFlag
    request_name_reply: Any  # <lib>.RequestNameReply


def load_backend(name: Optional[str] = None) -> Backend:
    """Import ``name`` (dbus_fast or dbus_next), or the first of them that is installed."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"unknown D-Bus backend {name!r}; choose one of {', '.join(BACKENDS)}")
    for candidate in BACKENDS if name is None else (name,):
        try:
            top = importlib.import_module(candidate)
            aio = importlib.import_module(f"{candidate}.aio")
        except ImportError:
            continue
        return Backend(
            name=candidate,
            message_bus=aio.MessageBus,
            message=top.Message,
            variant=top.Variant,
            bus_type=top.BusType,
            message_type=top.MessageType,
            name_flag=top.NameFlag,
            request_name_reply=top.RequestNameReply,
        )
    wanted = name or " or ".join(BACKENDS)
    raise SourceUnavailable(f"D-Bus transport needs {wanted}, which is not installed")


def configured_backend(venus: VenusConfig) -> Backend:
    """Load the library ``venus.dbus.backend`` names (``auto``: the first one installed).

    An explicit choice that is not installed is the user's mistake: a ``ConfigError`` naming the
    key. ``auto`` with neither installed raises ``SourceUnavailable`` (not a GX: no D-Bus).
    """
    choice = venus.dbus.backend
    if choice == "auto":
        return load_backend()
    module = choice.replace("-", "_")
    try:
        return load_backend(module)
    except SourceUnavailable as exc:
        raise ConfigError(
            f"venus.dbus.backend: {choice} is not installed (pip install {choice}, "
            "or set auto to use whichever is)"
        ) from exc


async def open_bus(backend: Backend, address: Optional[str]) -> Any:
    """Connect to ``address`` (None = the system bus); raise ``SourceUnavailable`` on failure."""
    kwargs: Dict[str, Any] = {"bus_type": backend.bus_type.SYSTEM}
    if address:
        kwargs["bus_address"] = address
    error: Optional[str] = None
    # A failed connect leaves the library's half-made socket open until the garbage collector
    # finds it (a ResourceWarning then, and one file descriptor per retry until then): collect
    # it here, at once, and keep the warning about it out of the log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            bus = backend.message_bus(**kwargs)
            return await asyncio.wait_for(bus.connect(), CALL_TIMEOUT_S)
        except asyncio.TimeoutError:
            error = "no answer from the bus"
        except Exception as exc:  # the libraries raise OSError, EOFError, their own AuthError...
            error = str(exc) or type(exc).__name__
        gc.collect()
    raise SourceUnavailable(f"cannot connect to D-Bus {address or '(system bus)'}: {error}")


async def close_bus(bus: Any) -> None:
    """Disconnect (unless the bus already dropped us) and release the socket."""
    if bus.connected:
        bus.disconnect()
    await asyncio.gather(bus.wait_for_disconnect(), return_exceptions=True)
    # dbus-next shuts its socket down but never closes it: one leaked fd per reconnect.
    for attribute in ("_stream", "_sock"):
        close = getattr(getattr(bus, attribute, None), "close", None)
        if close is not None:
            close()


def unwrap(value: Any, variant_type: Any) -> Any:
    """Open (nested) Variants; an empty array is how Venus says "invalid" and becomes None."""
    while isinstance(value, variant_type):
        value = value.value
    if isinstance(value, (list, bytes)) and len(value) == 0:
        return None
    return value


def is_error(reply: Any, backend: Backend) -> bool:
    """Return whether a reply is a D-Bus error rather than a method return."""
    return bool(reply.message_type == backend.message_type.ERROR)


def _describe(reply: Any) -> str:
    text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
    return f"{reply.error_name}: {text}" if text else str(reply.error_name)


def _items_by_service() -> Dict[str, Dict[str, VenusItem]]:
    table: Dict[str, Dict[str, VenusItem]] = {name: {} for name in WATCHED}
    for item in (*paths.INPUTS, paths.SERIAL, paths.OVERRIDE_MAX_DISCHARGE):
        table[item.bus_name][item.path] = item
    return table


class DbusSource(GxSource):
    """Read the GX's inputs from D-Bus; write MaxDischargePower and the override with ``SetValue``.

    ``ready`` / ``wait_ready`` tell when the state is complete after a (re)connect: every
    service on the bus has been read once. ``portal_id`` comes from system ``/Serial``.
    ``backend`` (``dbus_fast``/``dbus_next``) overrides ``venus.dbus.backend``.
    """

    name = "dbus"

    def __init__(
        self,
        *,
        venus: VenusConfig,
        control: ControlConfig,
        backend: Optional[str] = None,
    ) -> None:
        super().__init__(venus, control)
        self._backend = configured_backend(venus) if backend is None else load_backend(backend)
        self._items = _items_by_service()
        self._bus: Optional[Any] = None
        self._owners: Dict[str, Optional[str]] = dict.fromkeys(WATCHED)
        self._pending: Set[str] = set()  # services to (re-)read
        self._wake: Optional[asyncio.Event] = None  # made in the loop (3.8 binds it at creation)
        self._garbage: Set[str] = set()  # item paths whose last value was garbage (logged once)
        self._absent_logged: Set[str] = set()  # services reported missing
        self._unanswered: Set[str] = set()  # services reported not answering a read
        self._down = False  # the bus connection is lost and that was logged
        self._bus_was_up = False  # the last session got as far as serving
        self._liveness_failing = False
        self._tracking = False  # NameOwnerChanged is acted on (a session is set up)
        self._owner_events: Set[str] = set()  # services whose owner changed during set-up
        # Answers to reads can be older than signals handled while the read was in flight:
        # every signal gets a sequence number, and a read only applies to items not signalled
        # since it started.
        self._seq = 0
        self._last_signal: Dict[Tuple[str, str], int] = {}
        self.last_write_code: Optional[int] = None  # SetValue's answer to the last write

    @property
    def backend(self) -> str:
        """Return the name of the D-Bus library in use (dbus_fast or dbus_next)."""
        return self._backend.name

    def has_service(self, service: str) -> bool:
        """Return whether ``service`` (e.g. ``com.victronenergy.system``) is on the bus now."""
        return self._bus is not None and self._owners.get(service) is not None

    # -- connection ------------------------------------------------------------------------

    async def run(self) -> None:
        """Stay connected to the bus, reconnecting with capped backoff, until cancelled."""
        first_delay = min(RECONNECT_MIN_S, self._venus.reconnect_max_s)
        delay = first_delay
        while True:
            try:
                await self._session()
            except SourceUnavailable as exc:
                if self._bus_was_up:
                    delay = first_delay  # it worked for a while: start the backoff over
                if not self._down:
                    log.warning("D-Bus unavailable: %s; retrying", exc)
                    self._down = True
                else:
                    log.debug("D-Bus still unavailable: %s", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._venus.reconnect_max_s)

    async def _session(self) -> None:
        self._bus_was_up = False
        self._wake = wake = asyncio.Event()
        bus = await open_bus(self._backend, self._venus.dbus.address)
        disconnected = asyncio.ensure_future(bus.wait_for_disconnect())
        bus.add_message_handler(self._on_message)
        self._tracking = True
        self._owner_events.clear()
        try:
            await self._subscribe(bus)
            for service in WATCHED:
                owner = await self._name_owner(bus, service)
                if service in self._owner_events:
                    continue  # a NameOwnerChanged handled meanwhile is newer than this answer
                self._owners[service] = owner
                if owner is None:
                    self._service_absent(service)
                else:
                    self._pending.add(service)
            self._bus = bus
            self._bus_was_up = True
            self.store.set_connected(True)
            if self._down:
                log.info("D-Bus connection restored")
                self._down = False
            else:
                log.info("connected to D-Bus (%s)", self._backend.name)
            await self._serve(bus, disconnected, wake)
        finally:
            self._bus = None
            self._ready.clear()
            self._tracking = False
            bus.remove_message_handler(self._on_message)
            await close_bus(bus)
            await asyncio.gather(disconnected, return_exceptions=True)
            self._owners = dict.fromkeys(WATCHED)
            self._pending.clear()
            for service in WATCHED:
                self._forget(service)
            self.store.set_override_present(None)  # known again once hub4 is looked up
            self.store.set_connected(False)

    async def _serve(
        self, bus: Any, disconnected: asyncio.Future[Any], wake: asyncio.Event
    ) -> None:
        """Read what is pending, prove liveness every ``refresh_s``, until the bus drops."""
        loop = asyncio.get_running_loop()
        next_refresh = loop.time()
        retry: Set[str] = set()  # services that did not answer a read: try again next refresh
        while True:
            wake.clear()
            read_any = False
            while self._pending:
                service = self._pending.pop()
                if self._owners[service] is not None:
                    if await self._read_service(bus, service):
                        read_any = True
                    else:
                        retry.add(service)
            if read_any or loop.time() >= next_refresh:
                self._pending |= retry
                retry.clear()
                await self._prove_alive(bus)
                next_refresh = loop.time() + self._control.refresh_s
            self._ready.set()  # the first pass is done: all there is to know is known
            woken = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait(
                    {disconnected, woken},
                    timeout=max(0.0, next_refresh - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                woken.cancel()
                await asyncio.gather(woken, return_exceptions=True)
            if disconnected.done():
                error = disconnected.exception() if not disconnected.cancelled() else None
                raise SourceUnavailable(f"connection to D-Bus lost: {error or 'closed'}")

    async def _subscribe(self, bus: Any) -> None:
        rules: List[str] = []
        for service, items in self._items.items():
            rules.append(
                f"type='signal',sender='{DBUS_NAME}',path='{DBUS_PATH}',"
                f"interface='{DBUS_NAME}',member='NameOwnerChanged',arg0='{service}'"
            )
            rules.append(
                f"type='signal',sender='{service}',path='/',"
                f"interface='{BUS_ITEM}',member='ItemsChanged'"
            )
            # One rule per item rather than per service: systemcalc changes hundreds of paths a
            # second and we want only ours.
            rules.extend(
                f"type='signal',sender='{service}',path='{path}',"
                f"interface='{BUS_ITEM}',member='PropertiesChanged'"
                for path in items
            )
        for rule in rules:
            reply = await self._call(
                bus,
                DBUS_NAME,
                DBUS_PATH,
                "AddMatch",
                interface=DBUS_NAME,
                signature="s",
                body=[rule],
            )
            if reply is None or is_error(reply, self._backend):
                problem = "no answer" if reply is None else _describe(reply)
                raise SourceUnavailable(f"D-Bus refused the subscription {rule}: {problem}")

    async def _name_owner(self, bus: Any, service: str) -> Optional[str]:
        reply = await self._call(
            bus, DBUS_NAME, DBUS_PATH, "GetNameOwner", interface=DBUS_NAME, signature="s",
            body=[service],
        )  # fmt: skip
        if reply is None:
            raise SourceUnavailable("D-Bus did not answer GetNameOwner")
        if is_error(reply, self._backend):
            return None  # NameHasNoOwner: the service is not running
        owner = reply.body[0]
        return owner if isinstance(owner, str) and owner else None

    async def _call(
        self,
        bus: Any,
        destination: str,
        path: str,
        member: str,
        *,
        interface: str = BUS_ITEM,
        signature: str = "",
        body: Sequence[Any] = (),
        timeout: float = CALL_TIMEOUT_S,
    ) -> Optional[Any]:
        """Call a method; return the reply (maybe an error reply), None when it timed out."""
        message = self._backend.message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=list(body),
        )
        try:
            return await asyncio.wait_for(bus.call(message), timeout)
        except asyncio.TimeoutError:
            return None
        except Exception as exc:  # a broken connection surfaces as assorted library errors
            raise SourceUnavailable(f"D-Bus {member} {destination}{path} failed: {exc}") from exc

    # -- reading ---------------------------------------------------------------------------

    async def _read_service(self, bus: Any, service: str) -> bool:
        """Read every item of ``service``: GetItems on ``/``, else GetValue per path.

        Return False when the service did not answer in time (nothing was changed).
        """
        items = self._items[service]
        owner, start = self._owners[service], self._seq
        found: Dict[str, Dict[str, Any]] = {}
        reply = await self._call(bus, service, "/", "GetItems")
        if reply is None:
            if service not in self._unanswered:
                log.warning("%s did not answer GetItems; trying again later", service)
                self._unanswered.add(service)
            return False
        if service in self._unanswered:
            log.info("%s answers again", service)
            self._unanswered.discard(service)
        if not is_error(reply, self._backend) and reply.signature == "a{sa{sv}}":
            found = {
                path: props
                for path, props in reply.body[0].items()
                if path in items and isinstance(props, dict)
            }
        else:
            if reply.error_name != ERROR_UNKNOWN_METHOD:
                log.debug("GetItems on %s failed; reading item by item", service)
            for path in items:
                value_reply = await self._call(bus, service, path, "GetValue")
                if value_reply is not None and not is_error(value_reply, self._backend):
                    found[path] = {"Value": value_reply.body[0]}
        bounds = await self._read_bounds(bus) if service == SETTINGS_SERVICE else None
        if self._owners[service] != owner:
            # It left or changed hands meanwhile: that owner change decides what follows.
            return True
        for path, item in items.items():
            if not self._unsignalled_since(service, path, start):
                continue
            if path in found:
                self._apply(service, path, found[path])
            elif item.field:
                self.store.set(item, None)  # this system does not publish it: absent
                if item is paths.OVERRIDE_MAX_DISCHARGE:
                    self.store.set_override_present(False)  # hub4 without the override
        if bounds is not None:
            self.store.set_bounds(*bounds)
        if service in self._absent_logged:
            log.info("%s is back on D-Bus; values re-read", service)
            self._absent_logged.discard(service)
        return True

    def _unsignalled_since(self, service: str, path: str, start: int) -> bool:
        return self._last_signal.get((service, path), -1) <= start

    async def _read_bounds(self, bus: Any) -> Tuple[Optional[float], Optional[float]]:
        bounds: List[Optional[float]] = []
        for member in ("GetMin", "GetMax"):
            reply = await self._call(bus, SETTINGS_SERVICE, paths.MAX_DISCHARGE_POWER.path, member)
            ok = reply is not None and not is_error(reply, self._backend)
            bounds.append(self._number(reply.body[0]) if ok and reply is not None else None)
        return bounds[0], bounds[1]

    def _number(self, raw: Any) -> Optional[float]:
        value = unwrap(raw, self._backend.variant)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    def _inputs_on_bus(self) -> bool:
        """Return whether every service the inputs come from is on the bus (hub4 is optional)."""
        return all(self._owners[service] is not None for service in SERVICES)

    async def _prove_alive(self, bus: Any) -> None:
        """GetValue of the SOC; an answer while both services are present proves liveness."""
        if not self._inputs_on_bus():
            return  # a service is gone: nothing to prove, the inputs go stale
        timeout = min(CALL_TIMEOUT_S, self._control.refresh_s)
        start = self._seq
        reply = await self._call(bus, SYSTEM_SERVICE, paths.SOC.path, "GetValue", timeout=timeout)
        if not self._inputs_on_bus():
            return  # it left while we asked
        if reply is None or is_error(reply, self._backend):
            if not self._liveness_failing:
                problem = "no answer" if reply is None else _describe(reply)
                log.warning("GetValue %s on %s failed: %s", paths.SOC.path, SYSTEM_SERVICE, problem)
                self._liveness_failing = True
            return
        if self._liveness_failing:
            log.info("GetValue %s answers again", paths.SOC.path)
            self._liveness_failing = False
        if self._unsignalled_since(SYSTEM_SERVICE, paths.SOC.path, start):
            self._apply(SYSTEM_SERVICE, paths.SOC.path, {"Value": reply.body[0]})
        self.store.mark_alive(self._clock())

    # -- signals ---------------------------------------------------------------------------

    def _on_message(self, message: Any) -> None:
        """Route a signal from the bus; never raises (the libraries would log a traceback)."""
        if message.message_type != self._backend.message_type.SIGNAL:
            return
        try:
            if (
                message.member == "NameOwnerChanged"
                and message.sender == DBUS_NAME
                and message.interface == DBUS_NAME
                and message.signature == "sss"
            ):
                name, _old, new = message.body
                self._owner_changed(name, new)
                return
            if message.interface != BUS_ITEM:
                return
            service = self._service_of(message.sender)
            if service is None:
                return
            if message.member == "PropertiesChanged" and message.signature == "a{sv}":
                self._signalled(service, message.path, message.body[0])
            elif message.member == "ItemsChanged" and message.signature == "a{sa{sv}}":
                for path, props in message.body[0].items():
                    if isinstance(props, dict):
                        self._signalled(service, path, props)
        except Exception:  # a malformed signal must not take the transport down
            log.exception("ignoring a malformed D-Bus signal %s", message.member)

    def _signalled(self, service: str, path: str, props: Dict[str, Any]) -> None:
        if path in self._items[service]:
            self._seq += 1
            self._last_signal[(service, path)] = self._seq
            self._apply(service, path, props)

    def _service_of(self, sender: Optional[str]) -> Optional[str]:
        for service, owner in self._owners.items():
            if owner is not None and owner == sender:
                return service
        return None

    def _owner_changed(self, name: str, new_owner: str) -> None:
        if name not in self._owners or not self._tracking:
            return
        self._owner_events.add(name)
        if new_owner:
            self._owners[name] = new_owner
            self._pending.add(name)
            if self._wake is not None:
                self._wake.set()
        else:
            self._owners[name] = None
            self._service_absent(name)
            self._forget(name)

    def _service_absent(self, service: str) -> None:
        if service == HUB4_SERVICE:
            self.store.set_override_present(False)
        if service in self._absent_logged:
            return
        self._absent_logged.add(service)
        if service == HUB4_SERVICE:
            # Normal on older firmware or without ESS: the setting is the actuator then.
            log.info("%s is not on D-Bus: no hub4 override", service)
        else:
            log.warning("%s is not on D-Bus; its values are absent", service)

    def _forget(self, service: str) -> None:
        for path, item in self._items[service].items():
            self._garbage.discard(path)
            if item.field:
                self.store.set(item, None)
        if service == SETTINGS_SERVICE:
            self.store.set_bounds(None, None)

    def _apply(self, service: str, path: str, props: Dict[str, Any]) -> None:
        """Take ``Value`` (and Min/Max of the setting) from one item's properties."""
        item = self._items[service].get(path)
        if item is None:
            return
        if item is paths.MAX_DISCHARGE_POWER and ("Min" in props or "Max" in props):
            low = self._number(props["Min"]) if "Min" in props else self.store.setting_min
            high = self._number(props["Max"]) if "Max" in props else self.store.setting_max
            self.store.set_bounds(low, high)
        if "Value" not in props:
            return
        value = unwrap(props["Value"], self._backend.variant)
        if item is paths.SERIAL:
            if isinstance(value, str) and value:
                self.portal_id = value
            return
        try:
            number = InputStore.coerce(item, value)
        except ValueError as exc:
            if path not in self._garbage:
                log.warning("ignoring a value of %s on %s: %s", path, service, exc)
                self._garbage.add(path)
            return
        self._garbage.discard(path)
        self.store.set(item, number)
        if item is paths.OVERRIDE_MAX_DISCHARGE:
            self.store.set_override_present(True)

    # -- writing ---------------------------------------------------------------------------

    async def set_max_discharge(
        self, value_w: float, *, timeout: float = CALL_TIMEOUT_S
    ) -> Optional[int]:
        """Send ``SetValue``; return its code (0 = accepted), None when it did not answer."""
        return await self._set_value(paths.MAX_DISCHARGE_POWER, value_w, timeout)

    async def write_max_discharge(self, value_w: float) -> None:
        """Write MaxDischargePower; a rejection is logged and left in ``last_write_code``."""
        if await self.set_max_discharge(value_w) is None:
            raise SourceUnavailable("SetValue of MaxDischargePower: no answer from the GX")

    async def read_max_discharge(self, timeout: float) -> Optional[float]:
        """GetValue MaxDischargePower; None when there is no (valid) answer in time."""
        answered, value = await self._read_back(paths.MAX_DISCHARGE_POWER, timeout)
        return value if answered else None

    async def write_override(self, value_w: float) -> None:
        """SetValue the hub4 override (-1 releases it).

        On a GX without hub4 the write is dropped with a debug line, as dbus-flashmq drops a W/
        to a path that does not exist: whether the value holds is what the read-back tells.
        """
        if self._bus is not None and self._owners[HUB4_SERVICE] is None:
            log.debug("%s is not on D-Bus: override write of %g dropped", HUB4_SERVICE, value_w)
            return
        if await self._set_value(paths.OVERRIDE_MAX_DISCHARGE, value_w) is None:
            raise SourceUnavailable("SetValue of the hub4 override: no answer from the GX")

    async def read_override(self, timeout: float) -> Optional[float]:
        """GetValue the override: -1 for none (or invalid); None without hub4 or an answer."""
        answered, value = await self._read_back(paths.OVERRIDE_MAX_DISCHARGE, timeout)
        return override_shown(value) if answered else None

    async def _set_value(
        self, item: VenusItem, value_w: float, timeout: float = CALL_TIMEOUT_S
    ) -> Optional[int]:
        bus = self._bus
        if bus is None:
            raise SourceUnavailable("not connected to D-Bus")
        service = item.bus_name
        reply = await self._call(
            bus,
            service,
            item.path,
            "SetValue",
            signature="v",
            body=[self._backend.variant("d", float(value_w))],
            timeout=timeout,
        )
        if reply is None:
            return None
        if is_error(reply, self._backend):
            raise SourceUnavailable(f"SetValue {item.path} on {service} failed: {_describe(reply)}")
        code = reply.body[0] if reply.body else None
        if isinstance(code, bool) or not isinstance(code, int):
            raise SourceUnavailable(f"SetValue {item.path} on {service} answered {reply.body!r}")
        self.last_write_code = code
        if code != 0:
            log.warning(
                "the GX rejected %s %s (SetValue returned %d); value unchanged",
                item.path,
                value_w,
                code,
            )
        return code

    async def _read_back(self, item: VenusItem, timeout: float) -> Tuple[bool, Optional[float]]:
        """GetValue ``item``: (answered, value); an answer from a complete GX proves liveness."""
        bus, service = self._bus, item.bus_name
        if bus is None or self._owners[service] is None:
            return False, None
        start = self._seq
        reply = await self._call(bus, service, item.path, "GetValue", timeout=timeout)
        if reply is None or is_error(reply, self._backend):
            return False, None
        if self._owners[service] is None:
            return False, None  # it left while we asked
        if self._unsignalled_since(service, item.path, start):
            self._apply(service, item.path, {"Value": reply.body[0]})
        if self._inputs_on_bus():
            self.store.mark_alive(self._clock())
        return True, self._number(reply.body[0])
