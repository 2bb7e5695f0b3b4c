"""A fake Venus D-Bus: ``com.victronenergy.system``, ``.settings`` and ``.hub4`` (BusItem API).

How it works: each service is its own bus connection (as each Venus service is its own process),
so signals carry distinct senders. One message handler per connection answers the BusItem
methods for every item path and for ``/``:

    item path   GetValue -> v, GetText -> s, SetValue(v) -> i (0 ok), GetMin/GetMax/GetDefault
    /           GetItems -> a{sa{sv}} ({path: {"Value": v, "Text": s}}), GetValue -> a{sv}
    signals     PropertiesChanged(a{sv}) on the item path and ItemsChanged(a{sa{sv}}) on /,
                only when a value really changed

Invalid values are empty arrays (``ai``), which is how Venus publishes them. Settings behave like
localsettings: SetValue converts to the setting's type, refuses a value outside min/max (returns
-1, value unchanged) and only signals a change. A service can release its bus name (it
disappears, NameOwnerChanged) and take it again.

hub4 carries ``/Overrides/MaxDischargePower`` backed by a ``plant.OverrideRegister`` (variant and
expiry): SetValue takes numbers (-1 releases) and null, the value falls back to -1 by itself at
expiry or a reset (signalled like any change), and leaving the bus is hub4control stopping: the
override is gone. The ``absent`` variant keeps hub4 off the bus altogether. Every SetValue
received is in ``write_log`` (``--write-log FILE`` as a process).

Run it as a separate process with ``python -m venus_prio.fakes.dbus_gx --address ADDRESS``
(``--override VARIANT --override-expiry-s N --write-log FILE``); it prints ``READY`` when the names
are owned and then takes commands on stdin, one per line, answering ``OK`` or ``ERROR ...``:
``set <system|settings|hub4> <path> <json value>`` (on hub4: another tool's override),
``release <service>``, ``acquire <service>``, ``freeze <service>`` (take calls, never answer:
a hung service), ``thaw <service>``, ``quit``.

The handlers use the low-level message API rather than ``ServiceInterface``: the latter wants
D-Bus signature strings as annotations (``-> "v"``), which mypy and ruff reject as undefined names.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from venus_prio.config import OVERRIDE_VARIANTS
from venus_prio.fakes.mqtt_gx import override_write
from venus_prio.fakes.writelog import WriteLog
from venus_prio.sim.plant import OverrideRegister
from venus_prio.venus import paths
from venus_prio.venus.dbus import BUS_ITEM, Backend, close_bus, load_backend, open_bus, unwrap
from venus_prio.venus.paths import VenusItem

log = logging.getLogger(__name__)

ERROR_UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
ERROR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
ERROR_INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
SETVALUE_OK = 0
SETVALUE_ERROR = -1  # localsettings' answer to a conversion or range error
SETVALUE_NOT_WRITEABLE = 1  # vedbus' answer for an item that is not writeable


@dataclass(frozen=True)
class Setting:
    """A localsettings item: its type (``i``, ``f``, ``s``), default and bounds."""

    kind: str
    default: Any
    minimum: float = 0.0
    maximum: float = 0.0  # min == max == 0: no bounds, as in localsettings

    def convert(self, value: Any) -> Any:
        """Return ``value`` as this setting's type; raise ValueError when it cannot be."""
        if value is None or isinstance(value, (list, dict, bytes)):
            raise ValueError(f"cannot store {value!r}")
        if self.kind == "s":
            return str(value)
        converted: float = int(value) if self.kind == "i" else float(value)
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ValueError(f"not finite: {value!r}")
        bounded = self.minimum != 0 or self.maximum != 0
        if bounded and not self.minimum <= converted <= self.maximum:
            raise ValueError(f"{converted} outside [{self.minimum}, {self.maximum}]")
        return converted


DEFAULT_SYSTEM: Dict[str, Any] = {
    paths.SERIAL.path: "c0619ab00001",
    paths.SOC.path: 55.0,
    paths.ACTIVE_SOC_LIMIT.path: 10.0,
    paths.PV_DC.path: 800.0,
    paths.DC_SYSTEM.path: 40.0,
    paths.BATTERY_POWER.path: 120.0,
    paths.AC_INPUT_SOURCE.path: 1,
    "/Ac/ConsumptionOnOutput/L1/Power": 750.0,  # not read: must not disturb the source
    # A single-phase system without a PV inverter: systemcalc exports every phase of its summed
    # AC quantities and invalidates what the system does not have (``mqtt_gx.default_items``).
    **{item.path: None for phase_sum in paths.PHASE_SUMS for item in phase_sum.items},
    paths.AC_LOAD.items[0].path: 750.0,
    paths.GRID.items[0].path: 150.0,
}

DEFAULT_SETTINGS: Dict[str, Setting] = {
    paths.MIN_SOC_SETTING.path: Setting("f", 10.0, 0.0, 100.0),
    paths.BATTERY_LIFE_STATE.path: Setting("i", 1, 0, 12),
    paths.HUB4_MODE.path: Setting("i", 1, 0, 3),
    paths.DYNAMIC_ESS_MODE.path: Setting("i", 0, 0, 4),
    paths.MAX_DISCHARGE_POWER.path: Setting("f", -1.0, -1.0, 1_000_000.0),
    "/Settings/System/TimeZone": Setting("s", "Europe/Amsterdam"),
}


def to_variant(backend: Backend, value: Any) -> Any:
    """Wrap a Python value the way Venus puts it on the bus (None = invalid = empty array)."""
    if isinstance(value, backend.variant):
        return value
    if isinstance(value, dict):
        return backend.variant("a{sv}", {str(k): to_variant(backend, v) for k, v in value.items()})
    return backend.variant(_signature_of(value), _plain(value))


def _signature_of(value: Any) -> str:
    if value is None:
        return "ai"
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "i" if -(2**31) <= value < 2**31 else "x"
    if isinstance(value, float):
        return "d"
    if isinstance(value, str):
        return "s"
    if isinstance(value, (list, tuple)):
        return "a" + (_signature_of(value[0]) if value else "i")
    if isinstance(value, dict):
        return "a{sv}"
    raise TypeError(f"no D-Bus type for {value!r}")


def _plain(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [_plain(element) for element in value]
    return value


def _text(value: Any) -> str:
    return "---" if value is None else str(value)


class FakeService:
    """One ``com.victronenergy.*`` service on its own bus connection."""

    def __init__(
        self,
        *,
        backend: Backend,
        bus_name: str,
        values: Dict[str, Any],
        settings: Optional[Dict[str, Setting]] = None,
        get_items: bool = True,
        write_log: Optional[WriteLog] = None,
    ) -> None:
        self.bus_name = bus_name
        self.write_log = WriteLog() if write_log is None else write_log
        self._backend = backend
        self._settings: Dict[str, Setting] = dict(settings or {})
        self._values: Dict[str, Any] = dict(values)
        for path, setting in self._settings.items():
            self._values.setdefault(path, setting.default)
        self._get_items = get_items
        self._bus: Optional[Any] = None
        self.owned = False
        self.frozen = False  # True: take method calls and never answer (a hung service)
        self.set_calls: List[Tuple[str, Any, int]] = []  # (path, value asked, code answered)

    async def connect(self, address: str) -> None:
        """Open this service's own connection and take its name."""
        self._bus = await open_bus(self._backend, address)
        self._bus.add_message_handler(self._on_message)
        await self.acquire()

    async def acquire(self) -> None:
        """Take the bus name (the service appears)."""
        bus = self._require_bus()
        reply = await bus.request_name(self.bus_name, self._backend.name_flag.DO_NOT_QUEUE)
        if reply != self._backend.request_name_reply.PRIMARY_OWNER:
            raise RuntimeError(f"cannot own {self.bus_name}: {reply}")
        self.owned = True

    async def release(self) -> None:
        """Give up the bus name (the service disappears)."""
        bus = self._require_bus()
        self.owned = False
        await bus.release_name(self.bus_name)

    async def close(self) -> None:
        """Leave the bus altogether (name and connection)."""
        bus, self._bus = self._bus, None
        self.owned = False
        if bus is not None:
            bus.remove_message_handler(self._on_message)
            await close_bus(bus)

    def _require_bus(self) -> Any:
        if self._bus is None:
            raise RuntimeError(f"{self.bus_name} is not connected")
        return self._bus

    def value(self, path: str) -> Any:
        """Return the current value of ``path`` (None when invalid or unknown)."""
        return self._values.get(path)

    def set_value(self, path: str, value: Any) -> bool:
        """Set an item from Python; signal it when it changed (and the service is on the bus)."""
        if path in self._values and _same(self._values[path], value):
            return False
        self._values[path] = value
        self._emit_change(path)
        return True

    def remove(self, path: str) -> None:
        """Forget an item (this system does not publish it)."""
        self._values.pop(path, None)

    # -- signals -----------------------------------------------------------------------

    def _props(self, path: str) -> Dict[str, Any]:
        value = self._values[path]
        props = {
            "Value": to_variant(self._backend, value),
            "Text": self._backend.variant("s", _text(value)),
        }
        setting = self._settings.get(path)
        if setting is not None and setting.kind != "s":
            props["Min"] = self._typed(setting, setting.minimum)
            props["Max"] = self._typed(setting, setting.maximum)
        return props

    def _typed(self, setting: Setting, number: float) -> Any:
        if setting.kind == "i":
            return self._backend.variant("i", int(number))
        return self._backend.variant("d", float(number))

    def _emit_change(self, path: str) -> None:
        bus = self._bus
        if bus is None or not self.owned:
            return  # a service that is not on the bus says nothing
        props = self._props(path)
        message = self._backend.message
        self._send(
            message.new_signal(path, BUS_ITEM, "PropertiesChanged", "a{sv}", [props]),
        )
        self._send(
            message.new_signal("/", BUS_ITEM, "ItemsChanged", "a{sa{sv}}", [{path: props}]),
        )

    def _send(self, message: Any) -> None:
        bus = self._require_bus()
        future = bus.send(message)
        # Nobody awaits a signal; fetch a send error so asyncio does not report it as lost.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())

    # -- methods -----------------------------------------------------------------------

    def _on_message(self, message: Any) -> Any:
        """Answer a BusItem method call; None leaves the message to the library."""
        if message.message_type != self._backend.message_type.METHOD_CALL:
            return None
        if message.interface not in (BUS_ITEM, None):
            return None
        if self.frozen:
            return True  # swallowed: the caller times out
        try:
            return self._answer(message)
        except Exception as exc:  # a bad request gets an error reply, never a dead service
            log.exception("fake %s: %s on %s failed", self.bus_name, message.member, message.path)
            return self._backend.message.new_error(message, ERROR_INVALID_ARGS, str(exc))

    def _answer(self, message: Any) -> Any:
        new_return = self._backend.message.new_method_return
        new_error = self._backend.message.new_error
        path, member = message.path, message.member
        variant = self._backend.variant
        if path == "/":
            if member == "GetItems" and self._get_items:
                items = {p: self._props(p) for p in self._values}
                return new_return(message, "a{sa{sv}}", [items])
            if member == "GetValue":
                tree = {p[1:]: to_variant(self._backend, v) for p, v in self._values.items()}
                return new_return(message, "v", [variant("a{sv}", tree)])
            return new_error(message, ERROR_UNKNOWN_METHOD, f"no method {member} on /")
        if path not in self._values:
            return new_error(message, ERROR_UNKNOWN_OBJECT, f"no item {path}")
        value = self._values[path]
        setting = self._settings.get(path)
        if member == "GetValue":
            return new_return(message, "v", [to_variant(self._backend, value)])
        if member == "GetText":
            return new_return(message, "s", [_text(value)])
        if member == "SetValue" and message.signature == "v":
            code = self._set_from_bus(path, unwrap(message.body[0], variant))
            return new_return(message, "i", [code])
        if setting is not None and member in ("GetMin", "GetMax", "GetDefault"):
            if member == "GetDefault":
                return new_return(message, "v", [to_variant(self._backend, setting.default)])
            number = setting.minimum if member == "GetMin" else setting.maximum
            return new_return(message, "v", [self._typed(setting, number)])
        return new_error(message, ERROR_UNKNOWN_METHOD, f"no method {member} on {path}")

    def _set_from_bus(self, path: str, value: Any) -> int:
        setting = self._settings.get(path)
        if setting is None:
            code = SETVALUE_NOT_WRITEABLE
        else:
            try:
                converted = setting.convert(value)
            except (TypeError, ValueError) as exc:
                log.info("fake %s: SetValue %s %r refused: %s", self.bus_name, path, value, exc)
                code = SETVALUE_ERROR
            else:
                self.set_value(path, converted)
                code = SETVALUE_OK
        self._log_write(path, value, code)
        return code

    def _log_write(self, path: str, value: Any, code: int) -> None:
        self.set_calls.append((path, value, code))
        service = self.bus_name.split(".")[2]
        self.write_log.record(service, path, value, accepted=code == SETVALUE_OK, at=_now())


def _now() -> float:
    return asyncio.get_running_loop().time()


OVERRIDE_PATH = paths.OVERRIDE_MAX_DISCHARGE.path


class FakeHub4(FakeService):
    """hub4control's ``/Overrides/MaxDischargePower``: a volatile value that expires by itself.

    ``hold_writes`` keeps our writes on their way (answered, not applied) until
    ``land_held_writes``, so a reset can overtake one."""

    def __init__(
        self, *, backend: Backend, register: OverrideRegister, write_log: WriteLog
    ) -> None:
        super().__init__(
            backend=backend,
            bus_name=f"com.victronenergy.{paths.HUB4}",
            values={OVERRIDE_PATH: -1.0},
            write_log=write_log,
        )
        self.register = register
        # Override writes on their way: answered at once, applied by ``land_held_writes``.
        self.hold_writes = False
        self.held_writes: List[Optional[float]] = []
        self._rearm = asyncio.Event()
        self._timer: Optional[asyncio.Future[None]] = None

    async def connect(self, address: str) -> None:
        await super().connect(address)
        self._timer = asyncio.ensure_future(self._expire())

    async def close(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
        await super().close()

    async def release(self) -> None:
        """hub4control stops: the name goes and the override in its RAM with it."""
        await super().release()
        self.register.write(None, _now())
        self._values[OVERRIDE_PATH] = self.register.shown(_now())

    def value(self, path: str) -> Any:
        self._refresh()
        return super().value(path)

    def set_value(self, path: str, value: Any) -> bool:
        """Another writer on the GX (Dynamic ESS, scheduled charging): a number or None."""
        if path != OVERRIDE_PATH:
            return super().set_value(path, value)
        taken, number = override_write(value)
        if not taken:
            raise ValueError(f"hub4 takes a number or null as the override, not {value!r}")
        return self._apply(number)

    def _refresh(self) -> bool:
        """Show the register's value now; signal it when it changed (expiry, reset, a write)."""
        return super().set_value(OVERRIDE_PATH, self.register.shown(_now()))

    def _answer(self, message: Any) -> Any:
        self._refresh()  # a GetValue/GetItems shows the value as of now
        return super()._answer(message)

    def _set_from_bus(self, path: str, value: Any) -> int:
        if path != OVERRIDE_PATH:
            return super()._set_from_bus(path, value)
        taken, number = override_write(value)
        code = SETVALUE_OK if taken else SETVALUE_ERROR
        if taken and self.hold_writes:
            self.held_writes.append(number)
        elif taken:
            self._apply(number)
        self._log_write(path, value, code)
        return code

    def land_held_writes(self) -> None:
        """Apply the held override writes in the order they came, and hold no more."""
        self.hold_writes = False
        held, self.held_writes = self.held_writes, []
        for number in held:
            self._apply(number)

    def _apply(self, number: Optional[float]) -> bool:
        self.register.write(number, _now())
        self._rearm.set()
        return self._refresh()

    async def _expire(self) -> None:
        """Signal the fall back to -1 when the register's expiry or reset comes."""
        while True:
            due = self.register.next_change(_now())
            waiter = asyncio.ensure_future(self._rearm.wait())
            timeout = None if due is None else max(0.0, due - _now())
            try:
                await asyncio.wait({waiter}, timeout=timeout)
            finally:
                waiter.cancel()
                await asyncio.gather(waiter, return_exceptions=True)
            self._rearm.clear()
            self._refresh()


def _same(old: Any, new: Any) -> bool:
    """Compare like localsettings/vedbus do: equal value and equal type (1 != 1.0 on the bus)."""
    return type(old) is type(new) and old == new


class FakeVenus:
    """The two Venus services venus-prio reads, on the bus at ``address``."""

    def __init__(
        self,
        *,
        address: str,
        backend: Optional[str] = None,
        system: Optional[Dict[str, Any]] = None,
        settings: Optional[Dict[str, Any]] = None,
        get_items: bool = True,
        override: str = "honoured",
        override_expiry_s: float = 60.0,
        write_log: Optional[Path] = None,
    ) -> None:
        """``system``/``settings`` override the default values (path -> value); ``override`` is
        how hub4 treats the override (``absent``: no hub4 on the bus)."""
        self.address = address
        self.backend = load_backend(backend)
        self.write_log = WriteLog(write_log)
        self.override = OverrideRegister(variant=override, expiry_s=override_expiry_s)
        system_values = dict(DEFAULT_SYSTEM)
        system_values.update(system or {})
        setting_table = dict(DEFAULT_SETTINGS)
        self.services: Dict[str, FakeService] = {
            paths.SYSTEM: FakeService(
                backend=self.backend,
                bus_name=f"com.victronenergy.{paths.SYSTEM}",
                values=system_values,
                get_items=get_items,
                write_log=self.write_log,
            ),
            paths.SETTINGS: FakeService(
                backend=self.backend,
                bus_name=f"com.victronenergy.{paths.SETTINGS}",
                values=dict(settings or {}),
                settings=setting_table,
                get_items=get_items,
                write_log=self.write_log,
            ),
        }
        if self.override.present:
            self.services[paths.HUB4] = FakeHub4(
                backend=self.backend, register=self.override, write_log=self.write_log
            )

    async def start(self) -> None:
        """Connect every service and take its name."""
        for service in self.services.values():
            await service.connect(self.address)

    async def stop(self) -> None:
        """Disconnect every service."""
        for service in self.services.values():
            await service.close()

    async def __aenter__(self) -> FakeVenus:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def service(self, name: str) -> FakeService:
        """Return the service ``system``, ``settings`` or ``hub4``."""
        try:
            return self.services[name]
        except KeyError:
            raise KeyError(f"no {name} service on this fake (override variant absent?)") from None

    @property
    def override_w(self) -> Optional[float]:
        """Return the override hub4 shows now (-1 none; None: hub4 is not on the bus)."""
        hub4 = self.services.get(paths.HUB4)
        if hub4 is None or not hub4.owned:
            return None
        value = hub4.value(OVERRIDE_PATH)
        return None if value is None else float(value)

    def override_in_force(self) -> float:
        """Return the cap the inverter obeys now (-1 none; ``ignored``: always -1)."""
        if self.override_w is None:
            return -1.0
        return self.override.in_force(_now())

    def set_value(self, item: VenusItem, value: Any) -> bool:
        """Set an item from Python (None = invalid); True when it changed and was signalled."""
        return self.services[item.service].set_value(item.path, value)

    def value(self, item: VenusItem) -> Any:
        """Return the current value of ``item``."""
        return self.services[item.service].value(item.path)

    async def release(self, service: str) -> None:
        """Make ``system``, ``settings`` or ``hub4`` disappear from the bus."""
        await self.service(service).release()

    async def acquire(self, service: str) -> None:
        """Bring ``system``, ``settings`` or ``hub4`` back."""
        await self.service(service).acquire()


# -- running as a process --------------------------------------------------------------------


async def _command(fake: FakeVenus, line: str) -> bool:
    """Carry out one stdin command; False for ``quit``."""
    words = line.split(maxsplit=3)
    if not words:
        return True
    verb = words[0]
    if verb == "quit":
        return False
    if verb == "set" and len(words) == 4:
        fake.service(words[1]).set_value(words[2], json.loads(words[3]))
    elif verb == "release" and len(words) == 2:
        await fake.release(words[1])
    elif verb == "acquire" and len(words) == 2:
        await fake.acquire(words[1])
    elif verb in ("freeze", "thaw") and len(words) == 2:
        fake.service(words[1]).frozen = verb == "freeze"
    else:
        raise ValueError(f"unknown command {line!r}")
    return True


async def _serve(args: argparse.Namespace) -> None:
    overrides: Dict[str, Dict[str, Any]] = {paths.SYSTEM: {}, paths.SETTINGS: {}}
    for assignment in args.set:
        target, _, raw = assignment.partition("=")
        service, _, path = target.partition(":")
        overrides[service][path] = json.loads(raw)
    fake = FakeVenus(
        address=args.address,
        backend=args.backend,
        system=overrides[paths.SYSTEM],
        settings=overrides[paths.SETTINGS],
        get_items=not args.no_get_items,
        override=args.override,
        override_expiry_s=args.override_expiry_s,
        write_log=args.write_log,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with fake:
        print("READY", flush=True)
        reader = asyncio.StreamReader()
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        except (OSError, ValueError):  # stdin is a file or /dev/null: no commands, just serve
            await stop.wait()
            return
        while not stop.is_set():
            reading = asyncio.ensure_future(reader.readline())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in (reading, stopping):
                task.cancel()
            await asyncio.gather(reading, stopping, return_exceptions=True)
            if reading.cancelled() or reading.exception() is not None:
                continue
            line = reading.result().decode().strip()
            if not line and reader.at_eof():
                await stop.wait()  # stdin closed: keep serving until a signal
                continue
            try:
                if not await _command(fake, line):
                    stop.set()
            except (ValueError, KeyError, RuntimeError) as exc:
                print(f"ERROR {exc}", flush=True)
            else:
                print("OK", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve the fake Venus services until SIGTERM/SIGINT or ``quit``."""
    parser = argparse.ArgumentParser(prog="python -m venus_prio.fakes.dbus_gx")
    parser.add_argument("--address", required=True, help="D-Bus address, e.g. unix:path=/tmp/bus")
    parser.add_argument("--backend", choices=("dbus_fast", "dbus_next"), default=None)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SERVICE:PATH=JSON",
        help="initial value, e.g. system:/Dc/Battery/Soc=42.5 (repeatable)",
    )
    parser.add_argument("--no-get-items", action="store_true", help="act like an old service")
    parser.add_argument(
        "--override", choices=OVERRIDE_VARIANTS, default="honoured", help="how hub4 treats it"
    )
    parser.add_argument(
        "--override-expiry-s", type=float, default=60.0, help="the override's expiry"
    )
    parser.add_argument("--write-log", type=Path, help="append every SetValue as a JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args))
    return 0


__all__ = [
    "DEFAULT_SETTINGS",
    "DEFAULT_SYSTEM",
    "FakeHub4",
    "FakeService",
    "FakeVenus",
    "Setting",
    "main",
    "to_variant",
]

if __name__ == "__main__":
    sys.exit(main())
