"""A fake GX: the dbus-flashmq plugin's MQTT behaviour over a real broker, for tests and demos.

How it works: ``FakeGx.run`` connects an aiomqtt client to a broker (reconnecting when it goes
away), publishes the retained ``N/<id>/system/0/Serial`` and then serves, in one loop, what
venus-mqtt.md describes: ``R/<id>/keepalive`` makes the system "alive" for ``alive_timeout_s``
(a full keepalive republishes every item, then ``full_publish_completed`` with the echo, at
most 3 full republishes per second); while alive a heartbeat goes out every
``heartbeat_interval_s`` and changed values are published; ``R/<id>/<path>`` is answered even
when not alive; ``W/<id>/settings/0/<path>`` is applied only when it is valid and in range,
anything else is silently dropped, exactly like localsettings.

hub4's ``/Overrides/MaxDischargePower`` is served from a ``plant.OverrideRegister`` (``override``
variant and expiry): ``W/`` applies it like hub4control (numbers only, -1 or null releases), the
N/ goes out on every change of what it shows, including its own fall back to -1 at expiry or a
reset (while alive, like any item); the ``absent`` variant has no such path at all (never
published, writes dropped, reads unanswered). Every ``W/`` received, accepted or dropped, is in
``write_log`` (and in ``--write-log FILE`` when run as ``venus-prio fake-gx``).

The knobs ``heartbeat_enabled``, ``answer_reads`` and ``paused`` let tests break the GX in
the ways a real one breaks; ``hold_override_writes`` keeps override writes on their way (received,
not applied) until ``land_held_override_writes``, so a reset can overtake one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Tuple, Union

import aiomqtt

from venus_prio.config import default_config, load_config
from venus_prio.errors import SourceUnavailable
from venus_prio.fakes.writelog import WriteLog
from venus_prio.sim import scenarios
from venus_prio.sim.plant import OverrideRegister, Plant, PlantParams, PlantStep
from venus_prio.sim.scenarios import Profile
from venus_prio.tasks import cancel_and_wait
from venus_prio.venus import flashmq, paths
from venus_prio.venus.mqtt import MessagePump
from venus_prio.venus.paths import VenusItem
from venus_prio.venus.source import wait_event

log = logging.getLogger(__name__)

DEFAULT_PORTAL_ID = "c0619ab00001"
FULL_REPUBLISH_LIMIT = 3  # per second, across all clients (dbus-flashmq)
OVERRIDE_SUFFIX = paths.OVERRIDE_MAX_DISCHARGE.topic_suffix()
ItemValue = Union[int, float, str, None]


@dataclass
class _Entry:
    """One item of the fake D-Bus: its value, and bounds for settings."""

    value: ItemValue
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    present: bool = True  # False after remove_service: the service left


@dataclass(frozen=True)
class AcceptedWrite:
    """A W/ that the fake applied (localsettings, or hub4 for the override; a release is -1)."""

    suffix: str
    value: float
    at: float  # loop time


@dataclass(frozen=True)
class KeepaliveSeen:
    """An ``R/<id>/keepalive`` the fake received."""

    at: float  # loop time
    full: bool
    echo: Optional[str]
    dumped: bool  # False when over the full-republish rate limit


def default_items() -> Dict[str, _Entry]:
    """Return the static values a fresh fake GX serves (an ESS near its floor at noon).

    Like a single-phase GX without a PV inverter: systemcalc publishes every phase of its summed
    AC quantities and invalidates (null) what the system does not have, here L2 and L3 and all
    AC PV (dbus-systemcalc-py sets each of them, every update, to None when it has no value).
    """
    items = {
        paths.SERIAL.topic_suffix(): _Entry(DEFAULT_PORTAL_ID),
        paths.SOC.topic_suffix(): _Entry(55.0),
        paths.ACTIVE_SOC_LIMIT.topic_suffix(): _Entry(10.0),
        paths.PV_DC.topic_suffix(): _Entry(500.0),
        paths.DC_SYSTEM.topic_suffix(): _Entry(None),  # no DC system measurement: null
        paths.BATTERY_POWER.topic_suffix(): _Entry(0.0),
        paths.AC_INPUT_SOURCE.topic_suffix(): _Entry(1),
        paths.MIN_SOC_SETTING.topic_suffix(): _Entry(10.0, 0.0, 100.0),
        paths.BATTERY_LIFE_STATE.topic_suffix(): _Entry(1, 0.0, 12.0),
        paths.HUB4_MODE.topic_suffix(): _Entry(1, 1.0, 3.0),
        paths.DYNAMIC_ESS_MODE.topic_suffix(): _Entry(0, 0.0, 4.0),
        paths.MAX_DISCHARGE_POWER.topic_suffix(): _Entry(-1.0, -1.0, 1_000_000.0),
        "system/0/Ac/ConsumptionOnOutput/L1/Power": _Entry(500.0),  # not subscribed to
    }
    for phase_sum in paths.PHASE_SUMS:
        for item in phase_sum.items:
            items[item.topic_suffix()] = _Entry(None)
    items[paths.AC_LOAD.items[0].topic_suffix()].value = 500.0
    items[paths.GRID.items[0].topic_suffix()].value = 40.0
    return items


def entry_payload(entry: _Entry) -> bytes:
    """Return the N/ payload of an item: 0 bytes when absent, settings with min/max."""
    if not entry.present:
        return b""
    obj: Dict[str, Any] = {"value": entry.value}
    if entry.minimum is not None and entry.maximum is not None:
        obj = {"max": entry.maximum, "min": entry.minimum, "value": entry.value}
    return json.dumps(obj).encode()


_NO_VALUE = object()  # a W/ payload that is not {"value": ...}


def written_value(payload: bytes) -> Any:
    """Return the ``value`` of a W/ payload; ``_NO_VALUE`` (dropped by the plugin) without one."""
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return _NO_VALUE
    if not isinstance(obj, dict) or "value" not in obj:
        return _NO_VALUE
    return obj["value"]


def override_write(raw: Any) -> Tuple[bool, Optional[float]]:
    """Return (taken, value) of a written override as hub4control sees it: a finite number, or
    null (None) that releases it; anything else is dropped."""
    if raw is None:
        return True, None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
        return False, None
    return True, float(raw)


def apply_write(entry: _Entry, payload: bytes) -> Optional[Union[int, float]]:
    """Return the value a W/ payload sets on a setting, None when localsettings drops it."""
    raw = written_value(payload)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not entry.present:
        return None
    if not math.isfinite(float(raw)):
        return None
    # localsettings converts to the setting's own type, then checks the range.
    new: Union[int, float] = int(raw) if isinstance(entry.value, int) else float(raw)
    if entry.minimum is not None and new < entry.minimum:
        return None
    if entry.maximum is not None and new > entry.maximum:
        return None
    return new


class FakeGx:
    """The dbus-flashmq side of a GX, talking to a real MQTT broker."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        portal_id: str = DEFAULT_PORTAL_ID,
        alive_timeout_s: float = 60.0,
        heartbeat_interval_s: float = 3.0,
        reconnect_s: float = 0.2,
        override: str = "honoured",
        override_expiry_s: float = 60.0,
        write_log: Optional[Path] = None,
    ) -> None:
        self.host = host
        self.port = port
        self.portal_id = portal_id
        self.alive_timeout_s = alive_timeout_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.reconnect_s = reconnect_s
        self.items = default_items()
        self.items[paths.SERIAL.topic_suffix()].value = portal_id
        self.writes: List[AcceptedWrite] = []
        self.write_log = WriteLog(write_log)  # every W/ received, accepted or not
        self.override = OverrideRegister(variant=override, expiry_s=override_expiry_s)
        if self.override.present:
            self.items[OVERRIDE_SUFFIX] = _Entry(-1.0)
        self.keepalives: List[KeepaliveSeen] = []
        self.reads: List[str] = []  # suffixes of the R/ reads answered
        self.heartbeat_enabled = True
        self.answer_reads = True
        self.paused = False
        self.hold_override_writes = False
        self.held_override_writes: List[Optional[float]] = []  # received, not applied yet
        self._alive_until = -math.inf
        self._full_times: Deque[float] = collections.deque()
        self._client: Optional[aiomqtt.Client] = None
        self._started = False
        self._connected = asyncio.Event()
        self.connections = 0

    # -- state for tests -----------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Return whether some client's keepalive keeps the system publishing."""
        return _now() < self._alive_until

    @property
    def setting(self) -> float:
        """Return the current MaxDischargePower setting."""
        value = self.items[paths.MAX_DISCHARGE_POWER.topic_suffix()].value
        assert isinstance(value, (int, float))
        return float(value)

    def value(self, item_or_suffix: Union[VenusItem, str]) -> ItemValue:
        return self.items[_suffix(item_or_suffix)].value

    @property
    def override_w(self) -> Optional[float]:
        """Return the override the GX shows now (-1 none; None: no such path or hub4 gone)."""
        entry = self.items.get(OVERRIDE_SUFFIX)
        if entry is None or not entry.present:
            return None
        return self.override.shown(_now())

    def override_in_force(self) -> float:
        """Return the cap the inverter obeys now (-1 none; the ``ignored`` variant: always -1)."""
        entry = self.items.get(OVERRIDE_SUFFIX)
        if entry is None or not entry.present:
            return -1.0
        return self.override.in_force(_now())

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the fake is connected and has published its Serial."""
        if not await wait_event(self._connected, timeout):
            raise SourceUnavailable(f"fake GX not connected within {timeout:g}s")

    def full_keepalives(self) -> List[KeepaliveSeen]:
        return [k for k in self.keepalives if k.full]

    # -- changing the plant --------------------------------------------------------------

    async def set_value(
        self,
        item_or_suffix: Union[VenusItem, str],
        value: ItemValue,
        *,
        minimum: Optional[float] = None,
        maximum: Optional[float] = None,
    ) -> None:
        """Change an item; publish N/ only when it changed and only while alive.

        The override goes through its register, as another writer on the GX would (Dynamic
        ESS, scheduled charging): a number holds until it expires, -1 or None releases it.
        """
        suffix = _suffix(item_or_suffix)
        if suffix == OVERRIDE_SUFFIX:
            await self._set_override(value)
            return
        entry = self.items.get(suffix)
        if entry is None:
            entry = self.items[suffix] = _Entry(value, minimum, maximum, present=False)
        changed = not entry.present or entry.value != value or type(entry.value) is not type(value)
        entry.value = value
        entry.present = True
        if minimum is not None:
            entry.minimum = minimum
        if maximum is not None:
            entry.maximum = maximum
        if changed and self.alive:
            await self._publish_item(suffix)

    async def _set_override(self, value: ItemValue) -> None:
        entry = self.items.get(OVERRIDE_SUFFIX)
        if entry is None:
            raise ValueError("this fake GX has no hub4 override (variant 'absent')")
        taken, number = override_write(value)
        if not taken:
            raise ValueError(f"hub4 takes a number or null as the override, not {value!r}")
        self.override.write(number, _now())
        if not entry.present:
            entry.present = True
            entry.value = self.override.shown(_now())
            if self.alive:
                await self._publish_item(OVERRIDE_SUFFIX)
        await self._sync_override()

    def _refresh_override(self) -> bool:
        """Bring the override's item up to date with its register; True when it changed."""
        entry = self.items.get(OVERRIDE_SUFFIX)
        if entry is None or not entry.present:
            return False
        shown = self.override.shown(_now())
        if entry.value == shown:
            return False
        entry.value = shown
        return True

    async def _sync_override(self) -> None:
        """Publish the override when it changed (its own expiry or reset too), while alive."""
        if self._refresh_override() and self.alive:
            await self._publish_item(OVERRIDE_SUFFIX)

    async def remove_service(self, service: str) -> None:
        """Make a service leave the bus: its items become 0-byte payloads.

        hub4 leaving is hub4control stopping: the override in its RAM is gone with it.
        """
        if service == paths.HUB4:
            self.override.write(None, _now())
            self._refresh_override()
        for suffix, entry in self.items.items():
            if suffix.startswith(f"{service}/") and entry.present:
                entry.present = False
                if self.alive:
                    await self._publish_item(suffix)

    async def publish_late(self, item_or_suffix: Union[VenusItem, str], value: ItemValue) -> None:
        """Publish an earlier ``value`` of an item without changing the item: a late publish
        (a broker's queue or bridge delivering it after a newer one). The item keeps its value:
        a read or the next change shows it again, as on a real GX."""
        suffix = _suffix(item_or_suffix)
        entry = self.items[suffix]
        late = _Entry(value, entry.minimum, entry.maximum)
        await self._publish(flashmq.n_topic(self.portal_id, suffix), entry_payload(late))

    async def publish_raw(self, suffix: str, payload: bytes) -> None:
        """Publish an arbitrary payload on ``N/<id>/<suffix>`` (garbage tests)."""
        await self._publish(flashmq.n_topic(self.portal_id, suffix), payload)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the broker until cancelled, reconnecting when it goes away."""
        while True:
            try:
                async with aiomqtt.Client(
                    self.host, self.port, identifier=f"fake-gx-{self.portal_id}"
                ) as client:
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                log.debug("fake GX lost the broker: %s", exc)
            finally:
                self._client = None
                self._connected.clear()
            await asyncio.sleep(self.reconnect_s)

    async def _serve(self, client: aiomqtt.Client) -> None:
        pid = self.portal_id
        await client.subscribe([(f"R/{pid}/#", 0), (f"W/{pid}/#", 0)])
        self._client = client
        self.connections += 1
        await client.publish(
            flashmq.n_topic(pid, paths.SERIAL.topic_suffix()),
            entry_payload(self.items[paths.SERIAL.topic_suffix()]),
            retain=True,
        )
        if not self._started:
            self._started = True
            await client.publish(flashmq.n_topic(pid, "keepalive"), b"1")
        self._connected.set()
        next_heartbeat = _now()
        pump = MessagePump(client)
        try:
            while True:
                wake_at = next_heartbeat
                expires_at = self.override.next_change(_now())
                if expires_at is not None:
                    wake_at = min(wake_at, expires_at)
                message = await pump.get(wake_at - _now())
                if message is not None and not self.paused:
                    await self._on_message(message.topic.value, bytes(message.payload))
                if not self.paused:
                    await self._sync_override()
                if _now() >= next_heartbeat:
                    next_heartbeat = _now() + self.heartbeat_interval_s
                    if self.alive and self.heartbeat_enabled and not self.paused:
                        heartbeat = json.dumps({"value": int(time.time())}).encode()
                        await self._publish(flashmq.heartbeat_topic(pid), heartbeat)
        finally:
            await pump.aclose()

    async def _on_message(self, topic: str, payload: bytes) -> None:
        parts = topic.split("/", 2)
        if len(parts) != 3 or parts[1] != self.portal_id:
            return
        kind, suffix = parts[0], parts[2]
        if kind == "R" and suffix == "keepalive":
            await self._on_keepalive(payload)
        elif kind == "R":
            if self.answer_reads:
                await self._on_read(suffix)
        elif kind == "W":
            await self._on_write(suffix, payload)

    async def _on_keepalive(self, payload: bytes) -> None:
        now = _now()
        full, echo = flashmq.parse_keepalive_request(payload)
        self._alive_until = now + self.alive_timeout_s
        dumped = False
        if full:
            while self._full_times and now - self._full_times[0] >= 1.0:
                self._full_times.popleft()
            if len(self._full_times) < FULL_REPUBLISH_LIMIT:
                self._full_times.append(now)
                dumped = True
        self.keepalives.append(KeepaliveSeen(at=now, full=full, echo=echo, dumped=dumped))
        if not dumped:
            return
        self._refresh_override()  # the dump shows the value as of now
        for suffix in list(self.items):
            await self._publish_item(suffix)
        completion: Dict[str, Any] = {"value": int(time.time())}
        if echo is not None:
            completion = {flashmq.ECHO_KEY: echo, "value": int(time.time())}
        await self._publish(
            flashmq.completed_topic(self.portal_id), json.dumps(completion).encode()
        )

    async def _on_read(self, suffix: str) -> None:
        # A read of a subtree fans out into its leaves.
        self._refresh_override()
        hits = [s for s in self.items if s == suffix or s.startswith(f"{suffix.rstrip('/')}/")]
        for hit in hits:
            self.reads.append(hit)
            await self._publish_item(hit)

    async def _on_write(self, suffix: str, payload: bytes) -> None:
        if suffix == OVERRIDE_SUFFIX:
            await self._on_override_write(payload)
            return
        entry = self.items.get(suffix)
        # An unknown path (or a read-only system path) is silently dropped, like a bad value.
        settable = entry is not None and suffix.startswith("settings/0/")
        new = apply_write(entry, payload) if entry is not None and settable else None
        self._log_write(suffix, payload, accepted=new is not None)
        if entry is None or new is None:
            return
        self.writes.append(AcceptedWrite(suffix=suffix, value=float(new), at=_now()))
        changed = entry.value != new or type(entry.value) is not type(new)
        entry.value = new
        if changed and self.alive:
            await self._publish_item(suffix)

    async def _on_override_write(self, payload: bytes) -> None:
        entry = self.items.get(OVERRIDE_SUFFIX)
        raw = written_value(payload)
        taken, value = (False, None) if raw is _NO_VALUE else override_write(raw)
        accepted = taken and entry is not None and entry.present
        self._log_write(OVERRIDE_SUFFIX, payload, accepted=accepted)
        if not accepted:
            return
        if self.hold_override_writes:
            self.held_override_writes.append(value)
            return
        await self._apply_override_write(value)

    async def land_held_override_writes(self) -> None:
        """Apply the held override writes in the order they came, and hold no more."""
        self.hold_override_writes = False
        held, self.held_override_writes = self.held_override_writes, []
        for value in held:
            await self._apply_override_write(value)

    async def _apply_override_write(self, value: Optional[float]) -> None:
        self.override.write(value, _now())
        self.writes.append(
            AcceptedWrite(suffix=OVERRIDE_SUFFIX, value=-1.0 if value is None else value, at=_now())
        )
        await self._sync_override()

    def _log_write(self, suffix: str, payload: bytes, *, accepted: bool) -> None:
        service, _, rest = suffix.partition("/")
        path = "/" + rest.partition("/")[2]  # drop the instance: <service>/<instance>/<path>
        raw = written_value(payload)
        value = payload.decode("utf-8", "replace") if raw is _NO_VALUE else raw
        self.write_log.record(service, path, value, accepted=accepted, at=_now())

    async def _publish_item(self, suffix: str) -> None:
        await self._publish(
            flashmq.n_topic(self.portal_id, suffix), entry_payload(self.items[suffix])
        )

    async def _publish(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is None or self.paused:
            return
        try:
            await client.publish(topic, payload, qos=0)
        except aiomqtt.MqttError as exc:
            log.debug("fake GX could not publish %s: %s", topic, exc)


def _now() -> float:
    return asyncio.get_running_loop().time()


def _suffix(item_or_suffix: Union[VenusItem, str]) -> str:
    if isinstance(item_or_suffix, VenusItem):
        return item_or_suffix.topic_suffix()
    return item_or_suffix


def plant_values(step: PlantStep, *, ac_pv: bool = False) -> Dict[VenusItem, float]:
    """Return what systemcalc would publish after a plant step (rounded like the GUI shows).

    A single-phase system: the AC loads and the grid on L1, and with ``ac_pv`` (a PV inverter,
    on the output) the AC PV on output L1. Without one that item stays invalid (null) and the
    other phases are never touched: they stay as the fake started them (``default_items``).
    """
    values = {
        paths.SOC: round(step.soc, 1),
        paths.PV_DC: float(round(step.pv_dc_w - step.curtailed_w)),
        paths.BATTERY_POWER: float(round(step.battery_w)),
        paths.AC_LOAD.items[0]: float(round(step.load_w)),
        paths.GRID.items[0]: float(round(step.grid_w)),
    }
    if ac_pv:
        values[paths.PV_AC.items[0]] = float(round(step.pv_ac_w))
    return values


class SimulatedClock:
    """Where ``drive_scenario`` is in its day: the profile's ``time_s`` of the values the fake
    publishes now. Tests that run the service against a fake faster than real time derive the
    service's wall clock from it, so the day's recording and ledger see the plant's time."""

    def __init__(self) -> None:
        self.time_s = 0.0


async def drive_scenario(
    gx: FakeGx,
    *,
    profile: Profile,
    plant: Plant,
    dt_s: float,
    speed: float,
    tick_s: float = 0.2,
    start_s: Optional[float] = None,
    clock: Optional[SimulatedClock] = None,
) -> None:
    """Step ``plant`` through ``profile`` on a clock ``speed`` times real time, until cancelled.

    Each real tick advances the plant by ``speed * tick_s`` simulated seconds (in steps of
    ``dt_s``) with the fake's current MaxDischargePower, then publishes the new values. The
    day starts at ``start_s`` (by default the profile's start) and starts over when it ends.
    ``clock``, when given, follows the simulated time (set before each tick's values go out).
    """
    t = profile.start_s if start_s is None else start_s
    if clock is not None:
        clock.time_s = t
    carry = 0.0
    ac_pv = any(profile.pv_ac_w)  # a PV inverter only where the day has AC PV at all
    while True:
        carry += speed * tick_s
        last: Optional[PlantStep] = None
        while carry >= dt_s:
            carry -= dt_s
            row = profile.index_at(t)
            last = plant.step(
                dt_s,
                pv_dc_w=profile.pv_dc_w[row],
                load_w=profile.load_w[row],
                pv_ac_w=profile.pv_ac_w[row],
                max_discharge_w=gx.setting,
                override_w=gx.override_in_force(),
            )
            t += dt_s
            if t >= profile.end_s:
                t = profile.start_s
        if last is not None:
            if clock is not None:
                clock.time_s = t
            for item, value in plant_values(last, ac_pv=ac_pv).items():
                await gx.set_value(item, value)
        await asyncio.sleep(tick_s)


def fake_gx_command(args: argparse.Namespace) -> int:
    """Run the fake GX for the ``fake-gx`` sub-command until interrupted."""
    config = default_config() if args.config is None else load_config(args.config)
    sim = config.sim
    profile = scenarios.builtin(args.scenario, sim.seed)
    start_soc = sim.start_soc if sim.start_soc is not None else sim.reserve_soc + 1.0
    plant = Plant(PlantParams.from_sim_config(sim, min_soc=sim.reserve_soc), start_soc=start_soc)
    variant = sim.override if args.override is None else args.override
    expiry_s = sim.override_expiry_s if args.override_expiry_s is None else args.override_expiry_s
    log.info(
        "fake GX %s on %s:%s playing %r from %02d:%02d at %gx speed; hub4 override %s, "
        "expiring after %gs",
        args.portal_id,
        args.host,
        args.port,
        args.scenario,
        args.start // 3600,
        args.start % 3600 // 60,
        args.speed,
        variant,
        expiry_s,
    )

    async def main() -> None:
        gx = FakeGx(
            host=args.host,
            port=args.port,
            portal_id=args.portal_id,
            override=variant,
            override_expiry_s=expiry_s,
            write_log=args.write_log,
        )
        for item in (paths.MIN_SOC_SETTING, paths.ACTIVE_SOC_LIMIT):
            gx.items[item.topic_suffix()].value = sim.reserve_soc
        gx.items[paths.SOC.topic_suffix()].value = round(start_soc, 1)
        drive = drive_scenario(
            gx, profile=profile, plant=plant, dt_s=sim.dt_s, speed=args.speed, start_s=args.start
        )
        tasks = [asyncio.ensure_future(gx.run()), asyncio.ensure_future(drive)]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            # Repeats the cancel: the fake survives one that lands as a publish completes.
            await cancel_and_wait(tasks)

    asyncio.run(main())
    return 0
