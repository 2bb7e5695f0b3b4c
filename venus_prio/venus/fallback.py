"""``venus.transport: auto``: MQTT preferred, D-Bus when the broker is gone and we are on the GX.

How it works: ``FallbackSource`` runs an ``MqttSource`` and a ``DbusSource`` side by side, each
keeping itself connected. Exactly one of them is *active*: its snapshot is what the service sees
and it carries the writes and read-backs. A small follower loop re-applies the pure rule
``choose_transport`` whenever either source reports a change (and at the grace deadline):

    active  MQTT ready   MQTT down for >= grace and system on D-Bus   ->  next
    mqtt    yes          -                                            ->  mqtt
    mqtt    no           yes                                          ->  dbus
    mqtt    no           no                                           ->  mqtt (recheck at grace)
    dbus    yes          -                                            ->  mqtt
    dbus    no           -                                            ->  dbus

"MQTT ready" means connected and the full publish completed, so switching back happens only
when the MQTT state is complete again.

A broker without a GX publishing on it (MQTT switched off on the GX, so no portal id can be
discovered: ``PortalIdNotFound``) is not fatal while the GX is on D-Bus: MQTT is tried again in
the background with capped backoff, and taken back when it turns ready (issue 10.2).

The service sees one ``Source`` throughout, so its controller state, write state and journal
survive a switch by construction.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Callable, List, Optional, Union

from venus_prio.config import ControlConfig, VenusConfig
from venus_prio.errors import PortalIdNotFound, SourceUnavailable
from venus_prio.model import Snapshot
from venus_prio.tasks import cancel_and_wait
from venus_prio.venus.dbus import SYSTEM_SERVICE, DbusSource
from venus_prio.venus.mqtt import FIRST_BACKOFF_S, MqttSource
from venus_prio.venus.source import Source

log = logging.getLogger(__name__)

MQTT = "mqtt"
DBUS = "dbus"
# How long MQTT may be down before D-Bus takes over: rides out a broker restart without a switch.
FALLBACK_GRACE_S = 3.0
# Backstop for changes no source signals (MQTT turning ready without a new value).
FOLLOW_POLL_S = 0.5


@dataclass(frozen=True)
class Choice:
    """Which transport should be active, and when to look again if nothing else changes."""

    transport: str
    recheck_at: Optional[float]


def choose_transport(
    active: str,
    *,
    mqtt_ready: bool,
    mqtt_down_since: Optional[float],
    gx_on_dbus: bool,
    now: float,
    grace_s: float,
) -> Choice:
    """Return the transport that should be active (see the table in the module docstring)."""
    if mqtt_ready:
        return Choice(MQTT, None)
    if active == DBUS:
        # Stay until MQTT is complete again: no flapping while the broker reconnects.
        return Choice(DBUS, None)
    if mqtt_down_since is None or not gx_on_dbus:
        return Choice(MQTT, None)
    deadline = mqtt_down_since + grace_s
    if now >= deadline:
        return Choice(DBUS, None)
    return Choice(MQTT, deadline)


class FallbackSource(Source):
    """One ``Source`` over two transports: MQTT preferred, D-Bus while MQTT is down on a GX.

    Construct it inside the running event loop (as its sub-sources).
    """

    def __init__(
        self,
        *,
        mqtt: MqttSource,
        dbus: DbusSource,
        grace_s: float = FALLBACK_GRACE_S,
        clock: Optional[Callable[[], float]] = None,
    ) -> None:
        super().__init__()
        self._mqtt = mqtt
        self._dbus = dbus
        self._grace_s = grace_s
        self._clock = clock
        self._active: str = MQTT
        self.switches = 0  # how often the active transport changed (for status and tests)

    # -- what the service sees -------------------------------------------------------------

    @property
    def active_transport(self) -> str:
        """Return the name of the transport in use: ``mqtt`` or ``dbus``."""
        return self._active

    @property  # type: ignore[override]
    def name(self) -> str:
        """Return the transport in use (``mqtt`` or ``dbus``): what status and probe show."""
        return self._active

    @property
    def portal_id(self) -> Optional[str]:
        """Return the active transport's portal id, else the other's (both name the same GX)."""
        return self._current().portal_id or self._other().portal_id

    @portal_id.setter
    def portal_id(self, value: Optional[str]) -> None:
        # Source.__init__ assigns None; the sub-sources own the real value.
        del value

    @property
    def ready(self) -> bool:
        """Return whether the active transport's state is complete."""
        return self._current().ready

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the active transport (whichever it becomes) is ready; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.ready:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            # In slices: the active transport may change while we wait.
            await self._current().wait_ready(min(remaining, FOLLOW_POLL_S))
        return True

    def snapshot(self) -> Snapshot:
        return self._current().snapshot()

    async def write_max_discharge(self, value_w: float) -> None:
        await self._current().write_max_discharge(value_w)

    async def read_max_discharge(self, timeout: float) -> Optional[float]:
        return await self._current().read_max_discharge(timeout)

    async def write_override(self, value_w: float) -> None:
        await self._current().write_override(value_w)

    async def read_override(self, timeout: float) -> Optional[float]:
        return await self._current().read_override(timeout)

    async def run(self) -> None:
        """Run both transports and the follower until cancelled; a failing one fails this."""
        tasks: List[asyncio.Future[None]] = [
            asyncio.ensure_future(self._run_mqtt()),
            asyncio.ensure_future(self._dbus.run()),
            asyncio.ensure_future(self._follow()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            await cancel_and_wait(tasks)
        for task in done:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure
        raise SourceUnavailable("the transports stopped")

    async def _run_mqtt(self) -> None:
        """Run MQTT; without a GX on the broker keep trying while the GX is on D-Bus.

        ``PortalIdNotFound`` stays fatal when D-Bus does not show the GX either: then the
        configuration is wrong (not a GX broker, not on a GX), and retrying would hide it.
        """
        backoff = FIRST_BACKOFF_S
        logged = False
        while True:
            try:
                await self._mqtt.run()
            except PortalIdNotFound as exc:
                if not self._dbus.has_service(SYSTEM_SERVICE):
                    raise
                cap = self._mqtt.reconnect_max_s
                if not logged:
                    log.warning(
                        "no GX on the MQTT broker (%s); staying on D-Bus and trying MQTT again "
                        "with backoff up to %gs",
                        exc,
                        cap,
                    )
                    logged = True
                else:
                    log.debug("still no GX on the MQTT broker: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, cap)

    # -- the follower ------------------------------------------------------------------------

    def _current(self) -> Union[MqttSource, DbusSource]:
        return self._mqtt if self._active == MQTT else self._dbus

    def _other(self) -> Union[MqttSource, DbusSource]:
        return self._dbus if self._active == MQTT else self._mqtt

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _mqtt_ready(self) -> bool:
        return self._mqtt.ready and self._mqtt.store.connected

    async def _follow(self) -> None:
        """Apply ``choose_transport`` whenever something changed; forward the active's changes."""
        down_since: Optional[float] = self._now()  # not ready until the first full publish
        while True:
            now = self._now()
            mqtt_ready = self._mqtt_ready()
            if mqtt_ready:
                down_since = None
            elif down_since is None:
                down_since = now
            choice = choose_transport(
                self._active,
                mqtt_ready=mqtt_ready,
                mqtt_down_since=down_since,
                gx_on_dbus=self._dbus.has_service(SYSTEM_SERVICE),
                now=now,
                grace_s=self._grace_s,
            )
            if choice.transport != self._active:
                self._switch(choice.transport, now=now, down_since=down_since)
            timeout = FOLLOW_POLL_S
            if choice.recheck_at is not None:
                timeout = min(timeout, max(0.0, choice.recheck_at - now))
            await self._wait_for_change(timeout, mqtt_ready=mqtt_ready)

    def _switch(self, transport: str, *, now: float, down_since: Optional[float]) -> None:
        previous, self._active = self._active, transport
        self.switches += 1
        if transport == DBUS:
            log.warning(
                "MQTT broker unavailable for %.1fs and the GX is on D-Bus: switching %s -> %s",
                now - (now if down_since is None else down_since),
                previous,
                transport,
            )
        else:
            log.info("MQTT is back and complete: switching %s -> %s", previous, transport)
        self.store.changed.set()  # the service re-evaluates on the new transport at once

    async def _wait_for_change(self, timeout: float, *, mqtt_ready: bool) -> None:
        """Wait for a change on either transport (forwarding the active one's) or ``timeout``."""
        waiters: List[asyncio.Future[object]] = [
            asyncio.ensure_future(self._mqtt.store.changed.wait()),
            asyncio.ensure_future(self._dbus.store.changed.wait()),
        ]
        if not mqtt_ready:
            # Completion of a full publish changes no value: wait for it explicitly.
            waiters.append(asyncio.ensure_future(self._mqtt.wait_ready(timeout)))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        for source in (self._mqtt, self._dbus):
            if source.store.changed.is_set():
                source.store.changed.clear()
                if source is self._current():
                    self.store.changed.set()


def build_auto_source(
    *, venus: VenusConfig, control: ControlConfig, grace_s: float = FALLBACK_GRACE_S
) -> Source:
    """Return the source for ``transport: auto``: MQTT with D-Bus fallback when D-Bus exists."""
    mqtt = MqttSource(venus=venus, control=control)
    try:
        dbus = DbusSource(venus=venus, control=control)
    except SourceUnavailable as exc:  # no D-Bus library: not a GX, MQTT only
        log.info("transport auto: no D-Bus fallback (%s); using MQTT only", exc)
        return mqtt
    return FallbackSource(mqtt=mqtt, dbus=dbus, grace_s=grace_s)
